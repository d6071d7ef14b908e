"""Write party CSVs of scikit-learn's bundled wine data set: the format of :mod:`clients.vertical.party_csv`.

``python -m clients.vertical.csv_example --parties 3 --out DIR`` writes ``DIR/party{k}.csv`` (plus a
``party{k}.json`` of reading settings each) as separate sites would hold them: string IDs (``w0001``), the
13 wine measurements cut into contiguous column blocks (party 0 also holds the label ``cultivar``), a
categorical column derived per party (``<first column>_band``: ``low``/``mid``/``high`` terciles of
the party's first column), about 5 % of the feature cells left empty (seeded), the held-out
users (``split`` = ``val`` / ``test``, 15 % each) at every party, and of the training users a fraction
``--aligned-fraction`` at every party, the rest at one party each. No statistic is computed across parties.
``--names`` adds a free-text column to party 1, ``name`` (a made-up label per wine, one distinct value
per user, like a passenger's name): the reader refuses it until ``party1.json`` drops it or declares it
(``clients.tabular``). The files are written by
:func:`clients.vertical.party_export.write_party_csvs`.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from clients.vertical.party_export import PartyColumns, SourceTable, write_party_csvs

MISSING_RATE = 0.05


NAME_WORDS = (("Old", "Red", "Dry", "Late", "Wild", "Stone"),
              ("Hill", "Creek", "Vine", "Oak", "Field", "Gate"))
"""Words of the made-up ``name`` column (``--names``): with the wine's number, one name per wine."""


def write_wine_parties(out: Path, *, parties: int = 3, aligned_fraction: float = 0.3,
                       seed: int = 0, names: bool = False) -> list[Path]:
    """Write the wine party CSVs into ``out`` (with ``names``: party 1's free-text ``name`` column);
    return their paths (party order)."""
    from sklearn.datasets import load_wine

    if not 2 <= parties <= 4 or not 0 < aligned_fraction <= 1:
        raise ValueError(f"need 2..4 parties and aligned_fraction in (0, 1], got {parties}, "
                         f"{aligned_fraction}")
    bunch = load_wine()
    columns_of = [n.replace("/", "_") for n in bunch.feature_names]
    table = SourceTable(features=dict(zip(columns_of, bunch.data.T, strict=True)),
                        labels=np.array(bunch.target_names)[bunch.target], classes=tuple(bunch.target_names),
                        label_column="cultivar", ids=np.array([f"w{i:04d}" for i in range(len(bunch.data))]))
    blocks = np.array_split(np.arange(len(columns_of)), parties)
    columns = [PartyColumns("id", tuple(columns_of[j] for j in block)) for block in blocks]
    extra = {1: ("name", _wine_name)} if names else None
    return write_party_csvs(out, table, columns, aligned_fraction=aligned_fraction, seed=seed,
                            missing_rate=MISSING_RATE, bands=True, extra=extra)


def _wine_name(i: int) -> str:
    """Wine ``i``'s made-up name (:data:`NAME_WORDS`)."""
    return f"{NAME_WORDS[0][i % 6]} {NAME_WORDS[1][i // 6 % 6]} No. {i}"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--parties", type=int, default=3)
    parser.add_argument("--aligned-fraction", type=float, default=0.3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--names", action="store_true", help="party 1 also holds a free-text 'name' column")
    args = parser.parse_args(argv)
    for path in write_wine_parties(args.out, parties=args.parties, aligned_fraction=args.aligned_fraction,
                                   seed=args.seed, names=args.names):
        print(path)


if __name__ == "__main__":
    main()
