"""Write one table as vertical party CSVs (the format of :mod:`clients.vertical.party_csv`).

:func:`write_party_csvs` cuts a table's columns over the parties (:class:`PartyColumns`, party 0 the
label holder), as separate sites would hold them: every party keys its rows by the table's string IDs in
its own ID column and stores them in its own (seeded) order; the held-out users (``split`` = ``val`` /
``test``, :data:`HELD_OUT` each) are at every party; of the training users a fraction
``aligned_fraction`` is at every party and each other one at one party (``remainder="one"``) or at one or
two parties (``remainder="one_or_two"``: a uniformly drawn non-empty subset smaller than all, with three
parties each of the six subsets). Optionally a share of feature cells is left empty, a party gets a
categorical column derived from its first column (``<column>_band``: terciles ``low``/``mid``/``high``)
or an extra text column. Beside each ``party{k}.csv`` goes ``party{k}.json``, its reading settings (ID
column, classes, the label column at party 0). No statistic is computed across parties.
"""

from __future__ import annotations

import csv
import itertools
import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

HELD_OUT = 0.15
"""Share of users in each of the validation and test splits."""
REMAINDERS = ("one", "one_or_two")


@dataclass(frozen=True)
class PartyColumns:
    """One party's part of the table: its ID column's name and its feature columns (by name)."""

    id_column: str
    columns: tuple[str, ...]


@dataclass(frozen=True)
class SourceTable:
    """A table to cut: feature columns by name, one string label per row, the class order, string IDs."""

    features: Mapping[str, np.ndarray]  # column name -> (N,) float values
    labels: np.ndarray  # str, (N,)
    classes: tuple[str, ...]
    label_column: str
    ids: np.ndarray  # str, (N,), unique

    @property
    def n_rows(self) -> int:
        return len(self.labels)


def holder_sets(n_parties: int, remainder: str) -> list[tuple[int, ...]]:
    """The party sets a non-aligned training user can be held by under ``remainder``."""
    if remainder not in REMAINDERS:
        raise ValueError(f"remainder must be one of {REMAINDERS}, got {remainder!r}")
    sizes = (1,) if remainder == "one" else range(1, n_parties)
    return [s for size in sizes for s in itertools.combinations(range(n_parties), size)]


def write_party_csvs(out: Path, table: SourceTable, parties: Sequence[PartyColumns], *,
                     aligned_fraction: float, seed: int = 0, remainder: str = "one",
                     missing_rate: float = 0.0, bands: bool = False,
                     extra: Mapping[int, tuple[str, Callable[[int], str]]] | None = None) -> list[Path]:
    """Write ``out/party{k}.csv`` and ``out/party{k}.json`` for every party; return the CSV paths.

    ``extra`` maps a party to a text column it also holds: (name, row index → cell). ``bands`` adds the
    ``<first column>_band`` category at every party; ``missing_rate`` empties that share of feature and
    band cells (seeded). The draws depend on ``seed`` only, so a call is reproducible.

    Raises
    ------
    ValueError
        If there are fewer than 2 parties, ``aligned_fraction`` is not in (0, 1], ``remainder`` is unknown,
        or a party names a column the table has not.
    """
    if len(parties) < 2 or not 0 < aligned_fraction <= 1:
        raise ValueError(f"need >= 2 parties and aligned_fraction in (0, 1], got {len(parties)}, "
                         f"{aligned_fraction}")
    unknown = [c for p in parties for c in p.columns if c not in table.features]
    if unknown:
        raise ValueError(f"columns {unknown} are not in the table (columns: {list(table.features)})")
    sets = holder_sets(len(parties), remainder)
    extra = extra or {}
    rng = np.random.default_rng(seed)
    n = table.n_rows
    order = rng.permutation(n)
    n_val = n_test = round(HELD_OUT * n)
    split = np.full(n, "train", dtype=object)
    split[order[:n_val]], split[order[n_val:n_val + n_test]] = "val", "test"
    train = order[n_val + n_test:]
    n_aligned = round(aligned_fraction * len(train))
    holds = np.zeros((n, len(parties)), dtype=bool)
    holds[split != "train"] = True
    holds[train[:n_aligned]] = True
    for i, s in zip(train[n_aligned:], rng.integers(0, len(sets), len(train) - n_aligned), strict=True):
        holds[i, list(sets[s])] = True
    out.mkdir(parents=True, exist_ok=True)
    paths = []
    for k, party in enumerate(parties):
        values = [table.features[c] for c in party.columns]
        band = (np.digitize(values[0], np.quantile(values[0], [1 / 3, 2 / 3])) if bands else None)
        text = extra.get(k)
        header = [party.id_column, "split", *party.columns, *([f"{party.columns[0]}_band"] if bands else []),
                  *([table.label_column] if k == 0 else []), *([text[0]] if text else [])]
        path = out / f"party{k}.csv"
        with path.open("w", newline="") as handle:
            writer = csv.writer(handle)
            writer.writerow(header)
            for i in rng.permutation(n):  # every site stores its rows in its own order
                if not holds[i, k]:
                    continue
                cells = [f"{v[i]:.4g}" if rng.random() >= missing_rate else "" for v in values]
                if band is not None:
                    cells.append(("low", "mid", "high")[band[i]] if rng.random() >= missing_rate else "")
                writer.writerow([table.ids[i], split[i], *cells, *([table.labels[i]] if k == 0 else []),
                                 *([text[1](i)] if text else [])])
        settings = {"id-column": party.id_column, "classes": ",".join(table.classes)}
        if k == 0:
            settings["label-column"] = table.label_column
        path.with_suffix(".json").write_text(json.dumps(settings))
        paths.append(path)
    return paths
