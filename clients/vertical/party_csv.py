"""A vertical party's CSV file and its feature preparation, fitted on the party's own training rows only.

A party CSV has a header row and one row per user:

- the ID column (``node_config`` ``id-column``, default ``id``): non-empty, unique string IDs;
- ``split``: ``train``, ``val`` or ``test``. The validation and test users are declared in the file and
  must be the same users at every party (the protocol compares a digest of the two ID sets at
  alignment, :func:`clients.vertical.party_files.held_out_digest`); training users are found by PSI;
- at the label holder (party 0) only, the label column (``label-column``, default ``label``), every cell
  filled; ``classes`` (``"no,yes"``) fixes the class order, else the sorted training labels are used.
  A passive party declares ``classes`` too (it needs the class count), or ``n-classes``;
- every other column is a feature, unless ``drop-columns`` names it (``"Name,Ticket"``): numeric when each
  filled training cell parses as a number, categorical when most do not (mostly numbers with a stray text
  cell is refused naming the cell), or as ``column-types`` declares
  (``"Pclass=categorical;Fare=numeric"``: a numeric-coded category such as ``Pclass`` 1/2/3 is a number
  unless declared) or ``categories`` fixes (``"colour=red|green;size=S|M|L"``). Empty cells and ``NA``
  are missing; a number must be finite in float32. An undeclared column that looks like an identifier
  (free text or IDs with nearly one distinct value per user, or distinct integers in file order) is
  refused naming the column (:mod:`clients.tabular`); a categorical one whose held-out values are mostly
  unseen in training is warned about (:mod:`clients.vertical.columns`).

The file is read by :mod:`clients.tabular`. :class:`~clients.tabular_transform.FeatureTransform`
(scikit-learn's transformers, saved as JSON numbers) is fitted on the party's ``train`` rows only (no
statistic crosses parties):
a numeric column is filled with its training median, gets a 0/1 missing flag when a training value was
missing, and is standardised by the training mean and standard deviation of the filled column; a
categorical column is one-hot over its training categories (a missing or unseen value: all zeros, plus
a missing flag when training had missing values). A node writes the fitted transform to its output
folder (``node_config`` ``output-dir``; a simulation's run directory) as ``party{k}.features.json``,
never beside the CSV, whose folder may be read-only; ``python -m clients.vertical.party_csv --transform
T --csv NEW --out x.npy`` applies it to new rows (a bad input: one ``error:`` line, exit status 2), the
inputs of ``python -m clients.vertical.predict``.

Reading settings come from ``node_config``; in a ``dataset.data_dir`` run (no per-node config) from an
optional ``<name>.json`` beside the CSV (``{"id-column": "PassengerId", "classes": "0,1"}``).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import traceback
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from clients.tabular import (
    CATEGORICAL,
    CATEGORIES_KEY,
    CLASSES_KEY,
    COLUMN_KEYS,
    ID_COLUMN_KEY,
    LABEL_COLUMN_KEY,
    NUMERIC,
    Table,
    check_not_id_like,
    column_kind,
    is_number,
    read_settings,
    read_table,
    setting_text,
    sorted_classes,
)
from clients.tabular_transform import FeatureTransform, fit_transform
from clients.vertical.columns import UnseenCategoryWarning, unseen_note
from clients.vertical.data import PartyData

N_CLASSES_KEY = "n-classes"
CSV_KEYS = (ID_COLUMN_KEY, LABEL_COLUMN_KEY, CLASSES_KEY, N_CLASSES_KEY, CATEGORIES_KEY, *COLUMN_KEYS)
"""``node_config`` keys (or keys of the settings file beside the CSV) that say how to read it."""
DEFAULTS = {ID_COLUMN_KEY: "id", LABEL_COLUMN_KEY: "label"}
SPLIT_COLUMN = "split"
SPLITS = ("train", "val", "test")
MISSING = frozenset({"", "NA", "N/A", "nan", "NaN"})
TRANSFORM_SUFFIX = ".features.json"


def fit_party_transform(table: Table, features: Sequence[str], train_rows: Sequence[int],
                        declared: Mapping[str, tuple[str, ...]],
                        types: Mapping[str, str] | None = None) -> FeatureTransform:
    """Fit every feature column's preparation on ``train_rows`` only (see the module docstring).

    A column is categorical when ``declared`` fixes its categories, ``types`` declares it so, or (not
    declared) most filled training cells are not numbers; else numeric.

    Raises
    ------
    ValueError
        If a column has no training value, a declared category list misses a value, a numeric column has a
        cell that is not a number finite in float32, or an undeclared column looks like free text or an ID
        (:func:`clients.tabular.check_not_id_like`).
    """
    types = types or {}
    kinds: dict[str, tuple[str, ...] | None] = {}
    for name in features:
        filled = [v for v in table.column(name, train_rows) if v not in MISSING]
        kind = (CATEGORICAL if name in declared
                else types.get(name) or column_kind(table, name, train_rows, MISSING))
        if name not in declared and name not in types:
            check_not_id_like(table, name, filled, kind, train=" train")
        if kind == NUMERIC:
            kinds[name] = None
            continue
        cats = declared.get(name) or tuple(sorted(set(filled), key=_category_order))
        if not cats:
            raise ValueError(f"{table.where()}: column {name!r} has no value in the train rows")
        cells = table.column(name)
        stray = next((i for i, v in enumerate(cells)
                      if name in declared and v not in MISSING and v not in cats), None)
        if stray is not None:
            raise ValueError(f"{table.where(stray)}: unknown category {cells[stray]!r} in column {name!r} "
                             f"(categories: {list(cats)})")
        kinds[name] = cats
    return fit_transform(table, kinds, train_rows, missing=MISSING)


def csv_settings(path: Path, node_config: Mapping[str, Any]) -> dict[str, str]:
    """Reading settings: the defaults, then ``<name>.json`` beside the CSV if present, then ``node_config``.

    Raises
    ------
    ValueError
        If the settings file is not a JSON object of known keys.
    """
    settings = dict(DEFAULTS)
    side = path.with_suffix(".json")
    if side.is_file():
        try:
            loaded = json.loads(side.read_text())
        except (ValueError, UnicodeDecodeError) as err:
            raise ValueError(f"settings file {side} is not JSON ({err})") from None
        if not isinstance(loaded, dict) or set(loaded) - set(CSV_KEYS):
            raise ValueError(f"settings file {side} must be a JSON object with keys from {list(CSV_KEYS)}, "
                             f"got {loaded!r}")
        settings.update({k: setting_text(v) for k, v in loaded.items()})
    settings.update({k: setting_text(v) for k, v in node_config.items() if k in CSV_KEYS})
    return settings


def load_party_csv(path: str | Path, index: int, settings: Mapping[str, Any],
                   output_dir: str | Path | None = None) -> PartyData:
    """Read party ``index``'s CSV and fit its transform (:func:`read_party_csv`); with ``output_dir``, write
    the transform there as ``party{index}.features.json`` (:func:`transform_path`; never beside the CSV,
    whose folder may be read-only). Return the party's data.
    """
    data, transform = read_party_csv(path, index, settings)
    if output_dir is not None:
        save_transform(transform, transform_path(output_dir, index))
    return data


def read_party_csv(path: str | Path, index: int,
                   settings: Mapping[str, Any]) -> tuple[PartyData, FeatureTransform]:
    """Read party ``index``'s CSV (see the module docstring) and fit its transform on its training rows;
    return the party's data and the transform. Writes nothing.

    Raises
    ------
    FileNotFoundError
        If ``path`` does not exist.
    ValueError
        If a required column is absent, an ID is empty or repeated, a ``split`` value or label is unknown
        or missing, labels are at a passive party, the class count is not declared at a passive party, or
        a numeric cell is not a finite number; the message names the file and the row.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"party file {path} does not exist")
    table = read_table(path, "party file")
    id_col, label_col = str(settings[ID_COLUMN_KEY]), str(settings[LABEL_COLUMN_KEY])
    ids = table.column(id_col)
    seen: dict[str, int] = {}
    for r, value in enumerate(ids):
        if value in MISSING:
            raise ValueError(f"party file {path}, row {table.lines[r]}: empty ID in column {id_col!r}")
        if value in seen:
            raise ValueError(f"party file {path}, row {table.lines[r]}: ID {value!r} repeats row "
                             f"{table.lines[seen[value]]}")
        seen[value] = r
    split = table.column(SPLIT_COLUMN)
    stray = next((r for r, s in enumerate(split) if s not in SPLITS), None)
    if stray is not None:
        raise ValueError(f"party file {path}, row {table.lines[stray]}: {SPLIT_COLUMN} is {split[stray]!r}, "
                         f"must be one of {list(SPLITS)}")
    rows = {s: [r for r in range(len(split)) if split[r] == s] for s in SPLITS}
    for s, members in rows.items():
        if not members:
            raise ValueError(f"party file {path}: no row has {SPLIT_COLUMN}={s!r}")
    active = index == 0
    if not active and label_col in table.header:
        raise ValueError(f"party file {path}: a passive party must not hold labels, found column "
                         f"{label_col!r}")
    reserved = {id_col, SPLIT_COLUMN, label_col}
    columns = read_settings(settings, table.header, reserved, f"party file {path}",
                            classes_where=f"party file {path}: ", categories_where="")
    classes = columns.classes
    labels = None
    if active:
        column = table.column(label_col)
        classes = classes or _sorted_labels([column[r] for r in rows["train"]], path)
        lookup = {c: k for k, c in enumerate(classes)}
        bad = next((r for r, v in enumerate(column) if v not in lookup), None)
        if bad is not None:
            raise ValueError(f"party file {path}, row {table.lines[bad]}: label {column[bad]!r} in column "
                             f"{label_col!r} is missing or not a class of {list(classes)}")
        labels = np.array([lookup[v] for v in column], dtype=np.int64)
    n_classes = len(classes) if classes else _n_classes(settings, path)
    features = [c for c in table.header if c not in reserved | columns.dropped]
    if not features:
        raise ValueError(f"party file {path}: no feature column (columns: {list(table.header)})")
    declared = columns.categories
    transform = fit_party_transform(table, features, rows["train"], declared, columns.types)
    held_out = rows["val"] + rows["test"]
    notes = [note for col in transform.columns if col.categories is not None and col.name not in declared
             and (note := unseen_note(path, col.name, col.categories, [
                 v for v in table.column(col.name, held_out) if v not in MISSING]))]
    for note in notes:
        warnings.warn(note, UnseenCategoryWarning, stacklevel=2)
    parts = {}
    for s, members in rows.items():
        order = members if s == "train" else sorted(members, key=lambda r: ids[r])
        parts[s] = (np.array([ids[r] for r in order], dtype=str), transform.apply(table, order, MISSING),
                    None if labels is None else labels[order])
    data = PartyData(index=index, role="active" if active else "passive",
                     ids=parts["train"][0], x=parts["train"][1], y=parts["train"][2],
                     val_ids=parts["val"][0], val_x=parts["val"][1], val_y=parts["val"][2],
                     test_ids=parts["test"][0], test_x=parts["test"][1], test_y=parts["test"][2],
                     n_classes=n_classes, notes=tuple(notes), class_names=tuple(classes) if active else ())
    return data, transform


def transform_path(output_dir: str | Path, index: int) -> Path:
    """Where party ``index``'s fitted transform is saved: ``party{index}.features.json`` in ``output_dir``
    (the run's or the node's output folder)."""
    return Path(output_dir) / f"party{index}{TRANSFORM_SUFFIX}"


def save_transform(transform: FeatureTransform, path: Path) -> Path:
    """Write ``transform`` to ``path`` atomically (a reader never sees half a file) unless ``path``
    already holds it; create the folder if needed; return ``path``."""
    text = transform.to_json()
    if path.is_file() and path.read_text() == text:
        return path
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=path.name, suffix=".tmp")
    with os.fdopen(handle, "w") as out:
        out.write(text)
    os.replace(temporary, path)
    return path


def _n_classes(settings: Mapping[str, Any], path: Path) -> int:
    value = str(settings.get(N_CLASSES_KEY, ""))
    if not value.isdigit() or int(value) < 2:
        raise ValueError(f"party file {path}: a passive party must declare its run's classes "
                         f"({CLASSES_KEY!r} or {N_CLASSES_KEY!r} >= 2), got {value or 'none'!r}")
    return int(value)


def _sorted_labels(values: Sequence[str], path: Path) -> tuple[str, ...]:
    labels = sorted_classes(set(values) - MISSING)
    if len(labels) < 2:
        raise ValueError(f"party file {path}: the train rows hold one class only ({labels}); declare "
                         f"the run's classes with {CLASSES_KEY!r}")
    return tuple(labels)


def _category_order(value: str) -> tuple[int, float, str]:
    """Sort key of categories: numeric codes by value (``2`` before ``10``), then text."""
    return (0, float(value), value) if is_number(value) else (1, 0.0, value)


def main(argv: list[str] | None = None) -> None:
    """Apply a saved transform to new rows: the inputs ``python -m clients.vertical.predict`` predicts on.

    A bad input (a missing or unreadable transform or CSV, a missing column, a bad cell, an output folder
    that does not exist) ends with one ``error:`` line and exit status 2; ``--verbose`` adds the traceback.
    """
    parser = argparse.ArgumentParser(description="prepare a party's new CSV rows with its saved transform")
    parser.add_argument("--transform", type=Path, required=True,
                        help="party{k}.features.json of the party (in the run's or node's output folder)")
    parser.add_argument("--csv", type=Path, required=True, help="rows with the party's feature columns")
    parser.add_argument("--out", type=Path, required=True,
                        help="output .npy, (N, width), written to this exact path (suffix or not)")
    parser.add_argument("--verbose", action="store_true", help="print the traceback of an error")
    args = parser.parse_args(argv)
    try:
        out = prepare_rows(args.transform, args.csv, args.out)
    except (OSError, ValueError) as err:
        if args.verbose:
            traceback.print_exc()
        print(f"error: {err}", file=sys.stderr)
        raise SystemExit(2) from None
    print(out)


def prepare_rows(transform: Path, csv: Path, out: Path) -> Path:
    """Apply the transform saved at ``transform`` to the rows of ``csv``; save them as ``.npy`` at exactly
    ``out`` (no suffix appended) and return it.

    Raises
    ------
    FileNotFoundError
        If the transform or CSV file is missing, or ``out``'s folder does not exist.
    ValueError
        If the transform is not a saved transform, or the CSV is not readable, lacks a column, or has a bad
        cell (named with the file and row).
    """
    for path, what in ((transform, "transform file"), (csv, "CSV file")):
        if not path.is_file():
            raise FileNotFoundError(f"{what} {path} does not exist")
    if not out.parent.is_dir():
        raise FileNotFoundError(f"output folder {out.parent} of --out {out} does not exist")
    try:
        fitted = FeatureTransform.from_json(transform.read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError) as err:
        raise ValueError(f"transform file {transform}: {err}") from None
    features = fitted.apply(read_table(csv, "party file"), missing=MISSING)
    with out.open("wb") as handle:  # the name as given: np.save(name) would append .npy
        np.save(handle, features)
    return out


if __name__ == "__main__":
    main()
