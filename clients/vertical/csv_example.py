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
(``clients.tabular``).
"""

from __future__ import annotations

import argparse
import csv
import json
from pathlib import Path

import numpy as np

MISSING_RATE = 0.05
HELD_OUT = 0.15


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
    x, columns_of = bunch.data, [n.replace("/", "_") for n in bunch.feature_names]
    labels = np.array(bunch.target_names)[bunch.target]
    rng = np.random.default_rng(seed)
    n = len(x)
    order = rng.permutation(n)
    n_val = n_test = round(HELD_OUT * n)
    split = np.full(n, "train", dtype=object)
    split[order[:n_val]], split[order[n_val:n_val + n_test]] = "val", "test"
    train = order[n_val + n_test:]
    n_aligned = round(aligned_fraction * len(train))
    owner = np.full(n, -1)  # -1: at every party
    owner[train[n_aligned:]] = rng.integers(0, parties, len(train) - n_aligned)
    blocks = np.array_split(np.arange(x.shape[1]), parties)
    paths = []
    for k, columns in enumerate(blocks):
        first = columns_of[columns[0]]
        band = np.digitize(x[:, columns[0]], np.quantile(x[:, columns[0]], [1 / 3, 2 / 3]))
        text_column = names and k == 1
        header = ["id", "split", *(columns_of[j] for j in columns), f"{first}_band",
                  *(["cultivar"] if k == 0 else []), *(["name"] if text_column else [])]
        out.mkdir(parents=True, exist_ok=True)
        path = out / f"party{k}.csv"
        with path.open("w", newline="") as handle:
            writer = csv.writer(handle)
            writer.writerow(header)
            for i in rng.permutation(n):  # every site stores its rows in its own order
                if owner[i] not in (-1, k):
                    continue
                cells = [f"{x[i, j]:.4g}" if rng.random() >= MISSING_RATE else "" for j in columns]
                text_band = ("low", "mid", "high")[band[i]] if rng.random() >= MISSING_RATE else ""
                name = [f"{NAME_WORDS[0][i % 6]} {NAME_WORDS[1][i // 6 % 6]} No. {i}"] if text_column else []
                writer.writerow([f"w{i:04d}", split[i], *cells, text_band, *([labels[i]] if k == 0 else []),
                                 *name])
        settings = {"id-column": "id", "classes": ",".join(bunch.target_names)}
        if k == 0:
            settings["label-column"] = "cultivar"
        path.with_suffix(".json").write_text(json.dumps(settings))
        paths.append(path)
    return paths


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
