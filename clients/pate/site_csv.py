"""CSV site files of PATE nodes: columns to features, labels to class indices (``clients.pate.site_files``).

A CSV has a header row and one row per sample. The node's ``node_config`` says how to read it:
``label-column``; optional ``id-column`` (non-empty unique IDs, not a feature), ``classes`` (the run's
class names in label order; default: the sorted labels the node holds) and ``categories``
(``"colour=red|green|blue;size=S|M|L"``: a categorical column's categories in one-hot order). A column not
declared is numeric when every value parses as a number, else categorical over its sorted values. Every
cell must be filled; NaN/inf, an unknown class or category are refused with the file, row and column.
Numeric values are used as they are: no statistic is shared between sites.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

LABEL_COLUMN_KEY = "label-column"
ID_COLUMN_KEY = "id-column"
CLASSES_KEY = "classes"
CATEGORIES_KEY = "categories"
CSV_KEYS = (LABEL_COLUMN_KEY, ID_COLUMN_KEY, CLASSES_KEY, CATEGORIES_KEY)
"""``node_config`` keys that say how a node reads its CSV files."""


@dataclass(frozen=True)
class FeatureSchema:
    """What one sample is: its input shape and, for CSV, its columns (kind and categories)."""

    input_shape: tuple[int, ...]
    columns: tuple[tuple[str, tuple[str, ...] | None], ...] = ()  # (name, categories or None = numeric)

    def text(self) -> str:
        """Canonical JSON text: equal at two nodes exactly when their samples mean the same."""
        if not self.columns:
            return json.dumps({"array": list(self.input_shape)})
        cols = [{"name": n, "kind": "numeric"} if c is None else {"name": n, "kind": "categorical",
                                                                   "categories": list(c)}
                for n, c in self.columns]
        return json.dumps({"csv": cols, "input_shape": list(self.input_shape)})


def array_schema(input_shape: Sequence[int]) -> FeatureSchema:
    """The schema of array samples (``.npz`` files and the bundled datasets)."""
    return FeatureSchema(tuple(int(d) for d in input_shape))


def read_teacher_csv(
    path: Path, settings: Mapping[str, Any]
) -> tuple[np.ndarray, np.ndarray, tuple[str, ...], FeatureSchema]:
    """A teacher site's CSV: features ``(N, F)``, labels ``(N,)``, class names and schema.

    Raises
    ------
    ValueError
        If the file is empty, lacks the label, ID or a feature column, has an empty cell, NaN/inf, a
        repeated ID, or an unknown class or category (named with the file and row).
    """
    label = _label_column(settings, path)
    table = _read_csv(path)
    classes = _declared_classes(settings) or _sorted_labels([table], label)
    schema = _infer_schema([table], settings, exclude={label, settings.get(ID_COLUMN_KEY)})
    x = _encode(table, schema, path)
    y = _encode_labels(table, label, classes, path)
    return x, y, classes, schema


def read_student_csv(path: Path, held_out: Sequence[Path], settings: Mapping[str, Any]) -> tuple[Any, ...]:
    """A student site's unlabeled pool CSV and its labelled ``held_out`` (validation, test) CSV files:
    ``(pool_x, val_x, val_y, test_x, test_y, classes, schema)``, categories typed over all three files.

    Raises
    ------
    ValueError
        As :func:`read_teacher_csv`; also if the pool has the label column or the held-out files' feature
        columns differ from the pool's.
    """
    label = _label_column(settings, path)
    pool = _read_csv(path)
    if label in pool.header:
        raise ValueError(f"site file {path}: the student's pool must be unlabeled, but it has the label "
                         f"column {label!r}")
    val, test = (_read_csv(p) for p in held_out)
    for table in (val, test):
        if label not in table.header:
            raise ValueError(f"site file {table.path}: no label column {label!r} (columns: {table.header})")
    classes = _declared_classes(settings) or _sorted_labels([val, test], label)
    exclude = {label, settings.get(ID_COLUMN_KEY)}
    schema = _infer_schema([pool, val, test], settings, exclude=exclude)
    pool_x, val_x, test_x = (_encode(t, schema, t.path) for t in (pool, val, test))
    return (pool_x, val_x, _encode_labels(val, label, classes, val.path), test_x,
            _encode_labels(test, label, classes, test.path), classes, schema)


@dataclass(frozen=True)
class _Table:
    path: Path
    header: tuple[str, ...]
    rows: tuple[tuple[str, ...], ...]
    line_numbers: tuple[int, ...]  # of each row in the file (1 = the header), for error messages

    def column(self, name: str) -> list[str]:
        j = self.header.index(name)
        return [row[j] for row in self.rows]


def _read_csv(path: Path) -> _Table:
    with path.open(newline="", encoding="utf-8") as handle:
        reader = csv.reader(handle)
        numbered = [(reader.line_num, [cell.strip() for cell in row]) for row in reader
                    if any(cell.strip() for cell in row)]
    if not numbered:
        raise ValueError(f"site file {path} is empty (no header row)")
    header = tuple(numbered[0][1])
    if "" in header or len(set(header)) != len(header):
        raise ValueError(f"site file {path}: header has empty or repeated column names: {list(header)}")
    if len(numbered) == 1:
        raise ValueError(f"site file {path} has a header but no samples")
    for line, row in numbered[1:]:
        if len(row) != len(header):
            raise ValueError(f"site file {path}, row {line}: {len(row)} cells, the header has {len(header)}")
        if "" in row:
            raise ValueError(f"site file {path}, row {line}: empty cell in column {header[row.index('')]!r} "
                             "(missing values are not allowed)")
    return _Table(path, header, tuple(tuple(r) for _, r in numbered[1:]), tuple(n for n, _ in numbered[1:]))


def _label_column(settings: Mapping[str, Any], path: Path) -> str:
    if LABEL_COLUMN_KEY not in settings:
        raise ValueError(f"site file {path}: a CSV site needs node_config {LABEL_COLUMN_KEY!r}")
    return str(settings[LABEL_COLUMN_KEY])


def _declared_classes(settings: Mapping[str, Any]) -> tuple[str, ...]:
    if CLASSES_KEY not in settings:
        return ()
    names = tuple(c.strip() for c in str(settings[CLASSES_KEY]).split(","))
    if len(names) < 2 or "" in names or len(set(names)) != len(names):
        raise ValueError(f"node_config {CLASSES_KEY!r} must name >= 2 distinct classes, got "
                         f"{settings[CLASSES_KEY]!r}")
    return names


def _sorted_labels(tables: Sequence[_Table], label: str) -> tuple[str, ...]:
    for table in tables:
        if label not in table.header:
            raise ValueError(f"site file {table.path}: no label column {label!r} "
                             f"(columns: {list(table.header)})")
    values = sorted({v for t in tables for v in t.column(label)})
    if all(_is_int(v) for v in values):
        values.sort(key=int)
    if len(values) < 2:
        raise ValueError(f"site file {tables[0].path}: the labels hold one class only ({values}); declare "
                         f"the run's classes with node_config {CLASSES_KEY!r}")
    return tuple(values)


def _declared_categories(settings: Mapping[str, Any]) -> dict[str, tuple[str, ...]]:
    text = str(settings.get(CATEGORIES_KEY, "")).strip()
    declared: dict[str, tuple[str, ...]] = {}
    for part in filter(None, (p.strip() for p in text.split(";"))):
        name, _, values = part.partition("=")
        cats = tuple(v.strip() for v in values.split("|"))
        if not name.strip() or "" in cats or len(set(cats)) != len(cats):
            raise ValueError(f"node_config {CATEGORIES_KEY!r} must read 'column=a|b|c;other=x|y' with "
                             f"distinct categories, got {text!r}")
        declared[name.strip()] = cats
    return declared


def _infer_schema(tables: Sequence[_Table], settings: Mapping[str, Any], *, exclude: set) -> FeatureSchema:
    """Feature columns of the first table (in header order), typed over all ``tables``."""
    first = tables[0]
    id_column = settings.get(ID_COLUMN_KEY)
    features = [c for c in first.header if c not in exclude]
    if id_column is not None and id_column not in first.header:
        raise ValueError(f"site file {first.path}: no ID column {id_column!r} "
                         f"(columns: {list(first.header)})")
    for table in tables:
        if id_column is not None:
            ids = table.column(id_column) if id_column in table.header else []
            if len(set(ids)) != len(table.rows):
                raise ValueError(f"site file {table.path}: ID column {id_column!r} is missing or repeats IDs")
        other = [c for c in table.header if c not in exclude]
        if other != features:
            raise ValueError(f"site file {table.path}: feature columns {other} differ from {first.path}'s "
                             f"{features}")
    if not features:
        raise ValueError(f"site file {first.path}: no feature column (columns: {list(first.header)})")
    declared = _declared_categories(settings)
    unknown = sorted(set(declared) - set(features))
    if unknown:
        raise ValueError(f"node_config {CATEGORIES_KEY!r} names columns {unknown} that {first.path} lacks")
    columns: list[tuple[str, tuple[str, ...] | None]] = []
    for name in features:
        values = {v for t in tables for v in t.column(name)}
        if name in declared:
            columns.append((name, declared[name]))
        elif all(_is_number(v) for v in values):
            columns.append((name, None))
        else:
            columns.append((name, tuple(sorted(values))))
    width = sum(1 if c is None else len(c) for _, c in columns)
    return FeatureSchema((width,), tuple(columns))


def _encode(table: _Table, schema: FeatureSchema, path: Path) -> np.ndarray:
    """Numeric columns as they are, categorical ones one-hot in the schema's category order."""
    blocks = []
    for name, categories in schema.columns:
        values = table.column(name)
        if categories is None:
            column = np.array([float(v) for v in values], dtype=np.float64)
            bad = np.flatnonzero(~np.isfinite(column))
            if len(bad):
                raise ValueError(f"site file {path}, row {table.line_numbers[bad[0]]}: column {name!r} is "
                                 f"{values[bad[0]]!r} (NaN/inf are not allowed)")
            blocks.append(column[:, None])
        else:
            index = {c: i for i, c in enumerate(categories)}
            stray = next((i for i, v in enumerate(values) if v not in index), None)
            if stray is not None:
                raise ValueError(f"site file {path}, row {table.line_numbers[stray]}: unknown category "
                                 f"{values[stray]!r} in column {name!r} (categories: {list(categories)})")
            blocks.append(np.eye(len(categories))[[index[v] for v in values]])
    return np.ascontiguousarray(np.concatenate(blocks, axis=1), dtype=np.float32)


def _encode_labels(table: _Table, label: str, classes: tuple[str, ...], path: Path) -> np.ndarray:
    if label not in table.header:
        raise ValueError(f"site file {path}: no label column {label!r} (columns: {list(table.header)})")
    index = {c: i for i, c in enumerate(classes)}
    values = table.column(label)
    stray = next((i for i, v in enumerate(values) if v not in index), None)
    if stray is not None:
        raise ValueError(f"site file {path}, row {table.line_numbers[stray]}: unknown class "
                         f"{values[stray]!r} in column {label!r} (classes: {list(classes)})")
    return np.array([index[v] for v in values], dtype=np.int64)


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def _is_int(text: str) -> bool:
    try:
        int(text)
    except ValueError:
        return False
    return True
