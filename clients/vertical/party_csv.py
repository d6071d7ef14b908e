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
  filled cell parses as a number, else categorical, or as ``column-types`` declares
  (``"Pclass=categorical;Fare=numeric"``: a numeric-coded category such as ``Pclass`` 1/2/3 is a number
  unless declared) or ``categories`` fixes (``"colour=red|green;size=S|M|L"``). Empty cells and ``NA``
  are missing. A column read as categorical without a declaration whose distinct training values
  approach its row count (free text, an ID) is refused naming the column; one whose held-out values are
  mostly unseen in training is warned about (:mod:`clients.vertical.columns`).

:class:`FeatureTransform` is fitted on the party's ``train`` rows only (no statistic crosses parties):
a numeric column is filled with its training median, gets a 0/1 missing flag when a training value was
missing, and is standardised by the training mean and standard deviation of the filled column; a
categorical column is one-hot over its training categories (a missing or unseen value: all zeros, plus
a missing flag when training had missing values). A node writes the fitted transform to its output
folder (``node_config`` ``output-dir``; a simulation's run directory) as ``party{k}.features.json``,
never beside the CSV, whose folder may be read-only; ``python -m clients.vertical.party_csv --transform
T --csv NEW --out x.npy`` applies it to new rows, the inputs of ``python -m clients.vertical.predict``.

Reading settings come from ``node_config``; in a ``dataset.data_dir`` run (no per-node config) from an
optional ``<name>.json`` beside the CSV (``{"id-column": "PassengerId", "classes": "0,1"}``).
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import tempfile
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from clients.vertical.columns import (
    CATEGORICAL,
    COLUMN_KEYS,
    NUMERIC,
    UnseenCategoryWarning,
    check_not_id_like,
    column_types,
    dropped_columns,
    setting_text,
    unseen_note,
)
from clients.vertical.data import PartyData

ID_COLUMN_KEY, LABEL_COLUMN_KEY, CLASSES_KEY, N_CLASSES_KEY, CATEGORIES_KEY = (
    "id-column", "label-column", "classes", "n-classes", "categories")
CSV_KEYS = (ID_COLUMN_KEY, LABEL_COLUMN_KEY, CLASSES_KEY, N_CLASSES_KEY, CATEGORIES_KEY, *COLUMN_KEYS)
"""``node_config`` keys (or keys of the settings file beside the CSV) that say how to read it."""
DEFAULTS = {ID_COLUMN_KEY: "id", LABEL_COLUMN_KEY: "label"}
SPLIT_COLUMN = "split"
SPLITS = ("train", "val", "test")
MISSING = frozenset({"", "NA", "N/A", "nan", "NaN"})
TRANSFORM_SUFFIX = ".features.json"


@dataclass(frozen=True)
class Column:
    """One feature column's fitted preparation (statistics from the party's training rows only)."""

    name: str
    categories: tuple[str, ...] | None  # None: numeric
    flag: bool  # a missing-value indicator column follows
    median: float = 0.0
    mean: float = 0.0
    std: float = 1.0

    @property
    def width(self) -> int:
        return (1 if self.categories is None else len(self.categories)) + int(self.flag)


@dataclass(frozen=True)
class FeatureTransform:
    """The fitted preparation of one party's feature columns: fill, flag, standardise, one-hot."""

    columns: tuple[Column, ...]

    @property
    def width(self) -> int:
        return sum(c.width for c in self.columns)

    def apply(self, table: Table, rows: Sequence[int] | None = None) -> np.ndarray:
        """Features ``(len(rows), width)`` of ``table``'s ``rows`` (default all).

        Raises
        ------
        ValueError
            If a column is absent, or a numeric cell is not a finite number (named with file and row).
        """
        rows = range(len(table.rows)) if rows is None else rows
        blocks = []
        for col in self.columns:
            values = [table.rows[i][table.index(col.name)] for i in rows]
            missing = np.array([v in MISSING for v in values], dtype=bool)
            if col.categories is None:
                column = np.array([col.median if m else _number(table, i, col.name, v)
                                   for i, m, v in zip(rows, missing, values, strict=True)])
                blocks.append(((column - col.mean) / col.std)[:, None])
            else:
                index = {c: j for j, c in enumerate(col.categories)}
                onehot = np.zeros((len(values), len(col.categories)))
                for r, v in enumerate(values):
                    if v in index:
                        onehot[r, index[v]] = 1.0
                blocks.append(onehot)
            if col.flag:
                blocks.append(missing[:, None].astype(np.float64))
        return np.ascontiguousarray(np.concatenate(blocks, axis=1), dtype=np.float32)

    def to_json(self) -> str:
        return json.dumps({"columns": [{"name": c.name, "categories": None if c.categories is None
                                        else list(c.categories), "flag": c.flag, "median": c.median,
                                        "mean": c.mean, "std": c.std} for c in self.columns]}, indent=1)

    @classmethod
    def from_json(cls, text: str) -> FeatureTransform:
        cols = json.loads(text)["columns"]
        return cls(tuple(Column(c["name"], None if c["categories"] is None else tuple(c["categories"]),
                                bool(c["flag"]), float(c["median"]), float(c["mean"]), float(c["std"]))
                         for c in cols))


def fit_transform(table: Table, features: Sequence[str], train_rows: Sequence[int],
                  declared: Mapping[str, tuple[str, ...]],
                  types: Mapping[str, str] | None = None) -> FeatureTransform:
    """Fit every feature column's preparation on ``train_rows`` only (see the module docstring).

    A column is categorical when ``declared`` fixes its categories, ``types`` declares it so, or (not
    declared ``numeric``) a filled training cell is not a number; else numeric.

    Raises
    ------
    ValueError
        If a column has no training value, a declared category list misses a value, or a column read as
        categorical without a declaration looks like free text or an ID
        (:func:`clients.vertical.columns.check_not_id_like`).
    """
    types = types or {}
    columns = []
    for name in features:
        j = table.index(name)
        values = [table.rows[i][j] for i in train_rows]
        filled = [v for v in values if v not in MISSING]
        flag = len(filled) < len(values)
        kind = types.get(name)
        inferred = kind is None and not all(_is_number(v) for v in filled)
        if name in declared or kind == CATEGORICAL or inferred:
            cats = declared.get(name) or tuple(sorted(set(filled), key=_category_order))
            if not cats:
                raise ValueError(f"party file {table.path}: column {name!r} has no value in the train rows")
            if name not in declared and kind is None:
                check_not_id_like(table.path, name, len(cats), len(filled))
            stray = next((i for i in range(len(table.rows)) if table.rows[i][j] not in MISSING
                          and name in declared and table.rows[i][j] not in cats), None)
            if stray is not None:
                raise ValueError(f"party file {table.path}, row {table.lines[stray]}: unknown category "
                                 f"{table.rows[stray][j]!r} in column {name!r} (categories: {list(cats)})")
            columns.append(Column(name, cats, flag))
            continue
        if not filled:
            raise ValueError(f"party file {table.path}: column {name!r} has no value in the train rows")
        numbers = np.array([_number(table, i, name, table.rows[i][j]) for i in train_rows
                            if table.rows[i][j] not in MISSING])
        median = float(np.median(numbers))
        full = np.array([median if v in MISSING else float(v) for v in values])
        std = float(full.std())
        columns.append(Column(name, None, flag, median, float(full.mean()), std if std > 0 else 1.0))
    return FeatureTransform(tuple(columns))


@dataclass(frozen=True)
class Table:
    """A CSV's header and non-blank rows, with each row's line number (1 = the header) for errors."""

    path: Path
    header: tuple[str, ...]
    rows: tuple[tuple[str, ...], ...]
    lines: tuple[int, ...]

    def index(self, name: str) -> int:
        if name not in self.header:
            raise ValueError(f"party file {self.path}: no column {name!r} (columns: {list(self.header)})")
        return self.header.index(name)


def read_table(path: Path) -> Table:
    """The CSV at ``path``; empty cells are kept (missing values).

    Raises
    ------
    ValueError
        If the file is empty, not UTF-8 text, its header has empty or repeated names, it has no rows, or a
        row has another number of cells than the header (named with its row).
    """
    try:
        with path.open(newline="", encoding="utf-8") as handle:
            reader = csv.reader(handle)
            numbered = [(reader.line_num, [c.strip() for c in row]) for row in reader
                        if any(c.strip() for c in row)]
    except UnicodeDecodeError as err:
        raise ValueError(f"party file {path} is not UTF-8 CSV text ({err.reason} at byte {err.start}); "
                         "an .npz party file must end in .npz") from err
    if not numbered:
        raise ValueError(f"party file {path} is empty (no header row)")
    header = tuple(numbered[0][1])
    if "" in header or len(set(header)) != len(header):
        raise ValueError(f"party file {path}: header has empty or repeated column names: {list(header)}")
    if len(numbered) == 1:
        raise ValueError(f"party file {path} has a header but no rows")
    for line, row in numbered[1:]:
        if len(row) != len(header):
            raise ValueError(f"party file {path}, row {line}: {len(row)} cells, the header has {len(header)}")
    return Table(path, header, tuple(tuple(r) for _, r in numbered[1:]), tuple(n for n, _ in numbered[1:]))


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
        loaded = json.loads(side.read_text())
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
    table = read_table(path)
    id_col, label_col = str(settings[ID_COLUMN_KEY]), str(settings[LABEL_COLUMN_KEY])
    ids = [row[table.index(id_col)] for row in table.rows]
    seen: dict[str, int] = {}
    for r, value in enumerate(ids):
        if value in MISSING:
            raise ValueError(f"party file {path}, row {table.lines[r]}: empty ID in column {id_col!r}")
        if value in seen:
            raise ValueError(f"party file {path}, row {table.lines[r]}: ID {value!r} repeats row "
                             f"{table.lines[seen[value]]}")
        seen[value] = r
    split = [row[table.index(SPLIT_COLUMN)] for row in table.rows]
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
    classes = _classes(settings, path)
    labels = None
    if active:
        column = [row[table.index(label_col)] for row in table.rows]
        classes = classes or _sorted_labels([column[r] for r in rows["train"]], path)
        lookup = {c: k for k, c in enumerate(classes)}
        bad = next((r for r, v in enumerate(column) if v not in lookup), None)
        if bad is not None:
            raise ValueError(f"party file {path}, row {table.lines[bad]}: label {column[bad]!r} in column "
                             f"{label_col!r} is missing or not a class of {list(classes)}")
        labels = np.array([lookup[v] for v in column], dtype=np.int64)
    n_classes = len(classes) if classes else _n_classes(settings, path)
    reserved = {id_col, SPLIT_COLUMN, label_col}
    dropped = dropped_columns(settings, table.header, reserved, f"party file {path}")
    features = [c for c in table.header if c not in reserved | dropped]
    if not features:
        raise ValueError(f"party file {path}: no feature column (columns: {list(table.header)})")
    declared = _declared_categories(settings)
    types = column_types(settings, table.header, f"party file {path}")
    clash = sorted(c for c in declared if types.get(c) == NUMERIC)
    if clash:
        raise ValueError(f"party file {path}: columns {clash} have categories but are declared numeric")
    transform = fit_transform(table, features, rows["train"], declared, types)
    held_out = rows["val"] + rows["test"]
    notes = [note for col in transform.columns if col.categories is not None and col.name not in declared
             and (note := unseen_note(path, col.name, col.categories, [
                 v for v in (table.rows[i][table.index(col.name)] for i in held_out) if v not in MISSING]))]
    for note in notes:
        warnings.warn(note, UnseenCategoryWarning, stacklevel=2)
    parts = {}
    for s, members in rows.items():
        order = members if s == "train" else sorted(members, key=lambda r: ids[r])
        parts[s] = (np.array([ids[r] for r in order], dtype=str), transform.apply(table, order),
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


def _classes(settings: Mapping[str, Any], path: Path) -> tuple[str, ...]:
    if CLASSES_KEY not in settings:
        return ()
    names = tuple(c.strip() for c in str(settings[CLASSES_KEY]).split(","))
    if len(names) < 2 or "" in names or len(set(names)) != len(names):
        raise ValueError(f"party file {path}: {CLASSES_KEY!r} must name >= 2 distinct classes, got "
                         f"{settings[CLASSES_KEY]!r}")
    return names


def _n_classes(settings: Mapping[str, Any], path: Path) -> int:
    value = str(settings.get(N_CLASSES_KEY, ""))
    if not value.isdigit() or int(value) < 2:
        raise ValueError(f"party file {path}: a passive party must declare its run's classes "
                         f"({CLASSES_KEY!r} or {N_CLASSES_KEY!r} >= 2), got {value or 'none'!r}")
    return int(value)


def _sorted_labels(values: Sequence[str], path: Path) -> tuple[str, ...]:
    labels = sorted(set(values) - MISSING)
    if all(v.lstrip("-").isdigit() for v in labels):
        labels.sort(key=int)
    if len(labels) < 2:
        raise ValueError(f"party file {path}: the train rows hold one class only ({labels}); declare "
                         f"the run's classes with {CLASSES_KEY!r}")
    return tuple(labels)


def _declared_categories(settings: Mapping[str, Any]) -> dict[str, tuple[str, ...]]:
    text = str(settings.get(CATEGORIES_KEY, "")).strip()
    declared: dict[str, tuple[str, ...]] = {}
    for part in filter(None, (p.strip() for p in text.split(";"))):
        name, _, values = part.partition("=")
        cats = tuple(v.strip() for v in values.split("|"))
        if not name.strip() or "" in cats or len(set(cats)) != len(cats):
            raise ValueError(f"{CATEGORIES_KEY!r} must read 'column=a|b|c;other=x|y' with distinct "
                             f"categories, got {text!r}")
        declared[name.strip()] = cats
    return declared


def _category_order(value: str) -> tuple[int, float, str]:
    """Sort key of categories: numeric codes by value (``2`` before ``10``), then text."""
    return (0, float(value), value) if _is_number(value) else (1, 0.0, value)


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def _number(table: Table, row: int, column: str, text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = float("nan")
    if not np.isfinite(value):
        raise ValueError(f"party file {table.path}, row {table.lines[row]}: column {column!r} is {text!r}, "
                         "not a finite number")
    return value


def main(argv: list[str] | None = None) -> None:
    """Apply a saved transform to new rows: the inputs ``python -m clients.vertical.predict`` predicts on."""
    parser = argparse.ArgumentParser(description="prepare a party's new CSV rows with its saved transform")
    parser.add_argument("--transform", type=Path, required=True,
                        help="party{k}.features.json of the party (in the run's or node's output folder)")
    parser.add_argument("--csv", type=Path, required=True, help="rows with the party's feature columns")
    parser.add_argument("--out", type=Path, required=True, help="output .npy, (N, width)")
    args = parser.parse_args(argv)
    transform = FeatureTransform.from_json(args.transform.read_text())
    np.save(args.out, transform.apply(read_table(args.csv)))
    print(args.out)


if __name__ == "__main__":
    main()
