"""Real tables shipped with installed packages, cut over three parties by column groups (issue 26 §3).

Nothing is downloaded: scikit-learn ships the breast cancer and wine sets, mlxtend (a project
dependency) the Auto MPG set. Each table's columns go to three sites the way separate organisations would
hold them (:data:`TABLES`, rationale per table); party 0 holds the label. Every row is keyed by one
string ID, a hash of a shared identifier (as sites that share customers share, say, a hashed e-mail),
which each site stores under its own ID column name; PSI finds the shared users from it. The files
are written by :func:`clients.vertical.party_export.write_party_csvs` with ``remainder="one_or_two"``:
a fraction ``f`` of the training users at all three sites, each other one at one or two sites.

``python -m clients.vertical.real_tables --table breast_cancer --aligned-fraction 0.1 --out DIR``
writes ``DIR/party{0,1,2}.csv`` and their ``.json`` settings, for ``simulations.vertical
dataset.data_dir=DIR`` or ``benchmarks.vertical_tables``.
"""

from __future__ import annotations

import argparse
import hashlib
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import numpy as np

from clients.vertical.party_export import PartyColumns, SourceTable, write_party_csvs


@dataclass(frozen=True)
class TableSplit:
    """A bundled table and its three-party column split: the loader, the parties and why so."""

    load: Callable[[], SourceTable]
    parties: tuple[PartyColumns, ...]
    rationale: str


def hashed_ids(table: str, n: int) -> np.ndarray:
    """Row ``i``'s string ID: ``u`` + 16 hex digits of SHA-256 of ``<table>:<i>``, the same at every site."""
    return np.array([f"u{hashlib.sha256(f'{table}:{i}'.encode()).hexdigest()[:16]}" for i in range(n)])


def _sklearn_table(name: str, label_column: str) -> SourceTable:
    """scikit-learn's bundled ``load_<name>()`` set: columns named without spaces or slashes, the target
    names as labels."""
    from sklearn import datasets

    bunch = getattr(datasets, f"load_{name}")()
    names = [n.replace(" ", "_").replace("/", "_") for n in bunch.feature_names]
    return SourceTable(features=dict(zip(names, bunch.data.T, strict=True)),
                       labels=np.array(bunch.target_names)[bunch.target], classes=tuple(bunch.target_names),
                       label_column=label_column, ids=hashed_ids(name, len(bunch.data)))


AUTO_COLUMNS = ("cylinders", "displacement", "horsepower", "weight", "acceleration", "model_year")
AUTO_ORIGINS = ("usa", "europe", "japan")  # mlxtend's origin codes 1, 2, 3


def _auto_mpg() -> SourceTable:
    from mlxtend.data import autompg_data

    x, mpg = autompg_data()  # columns: AUTO_COLUMNS, origin, car name (NaN: the names are not shipped)
    features = {**dict(zip(AUTO_COLUMNS, x[:, :6].T, strict=True)), "mpg": mpg}
    return SourceTable(features=features, labels=np.array(AUTO_ORIGINS)[x[:, 6].astype(int) - 1],
                       classes=AUTO_ORIGINS, label_column="origin", ids=hashed_ids("auto_mpg", len(mpg)))


def _measures(*kinds: str) -> tuple[str, ...]:
    """The breast cancer columns of ``kinds``: each as mean, standard error and worst value."""
    return tuple(c for k in kinds for c in (f"mean_{k}", f"{k}_error", f"worst_{k}"))


TABLES: dict[str, TableSplit] = {
    "breast_cancer": TableSplit(
        partial(_sklearn_table, "breast_cancer", "diagnosis"),
        (PartyColumns("patient_id", _measures("texture", "smoothness", "symmetry", "fractal_dimension")),
         PartyColumns("scan_ref", _measures("radius", "perimeter", "area")),
         PartyColumns("record_key", _measures("compactness", "concavity", "concave_points"))),
        "no customer table is bundled, so three clinical sites stand in for bank, shop and insurer: "
        "the pathology lab (label holder: the diagnosis) holds the texture and contour-regularity "
        "measures of the nuclei (texture, smoothness, symmetry, fractal dimension; 12 columns), an "
        "imaging unit their size (radius, perimeter, area; 9) and a second unit their shape "
        "(compactness, concavity, concave points; 9)"),
    "auto_mpg": TableSplit(
        _auto_mpg,
        (PartyColumns("vehicle_id", ("model_year", "acceleration")),
         PartyColumns("policy_vehicle", ("weight", "horsepower", "cylinders")),
         PartyColumns("card_vehicle", ("mpg", "displacement"))),
        "a car's records at three firms: the dealer (label holder: the car's market of origin, usa / "
        "europe / japan) holds its sales sheet (model year, acceleration), the insurer its rating "
        "factors (weight, horsepower, cylinders) and the bank's fuel-card arm its running costs "
        "(mpg, engine displacement)"),
    "wine": TableSplit(
        partial(_sklearn_table, "wine", "cultivar"),
        (PartyColumns("lot_id", ("alcohol", "malic_acid", "ash", "alcalinity_of_ash", "magnesium")),
         PartyColumns("sample_ref", ("total_phenols", "flavanoids", "nonflavanoid_phenols",
                                     "proanthocyanins")),
         PartyColumns("assay_key", ("color_intensity", "hue", "od280_od315_of_diluted_wines", "proline"))),
        "the cellar (label holder: the cultivar) holds its routine measurements (alcohol, malic acid, "
        "ash, its alkalinity, magnesium), a phenolics lab the phenol assays and a colour lab the colour, "
        "hue, OD280/OD315 and proline; the csv_example's contiguous blocks"),
}
"""Bundled tables by name and their three-party splits."""


def write_table_parties(name: str, out: Path, *, aligned_fraction: float, seed: int = 0) -> list[Path]:
    """Write table ``name``'s three party CSVs (and settings) into ``out``; return the CSV paths.

    Raises
    ------
    KeyError
        If ``name`` is not in :data:`TABLES`.
    """
    spec = TABLES[name]
    return write_party_csvs(out, spec.load(), spec.parties, aligned_fraction=aligned_fraction, seed=seed,
                            remainder="one_or_two")


def main(argv: list[str] | None = None) -> None:
    """Command line: ``--table``, ``--aligned-fraction``, ``--seed``, ``--out``."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--table", choices=list(TABLES), required=True)
    parser.add_argument("--aligned-fraction", type=float, default=0.1)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args(argv)
    for path in write_table_parties(args.table, args.out, aligned_fraction=args.aligned_fraction,
                                    seed=args.seed):
        print(path)


if __name__ == "__main__":
    main()
