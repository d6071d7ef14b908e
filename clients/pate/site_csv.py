"""CSV site files of PATE nodes: columns to features, labels to class indices (``clients.pate.site_files``).

A CSV has a header row and one row per sample, read by :mod:`clients.tabular`. The node's ``node_config``
says how to read it: ``label-column``; optional ``id-column`` (non-empty unique IDs, not a feature),
``classes`` (the run's class names in label order; default: the sorted labels the node holds),
``categories`` (``"colour=red|green|blue;size=S|M|L"``: a categorical column's categories in one-hot
order), ``drop-columns`` (columns that are not features) and ``column-types``
(``"code=categorical;count=numeric"``). A column not declared is numeric when every value parses as a
number, categorical over its sorted values when most do not; a column of numbers with a stray text cell,
or one that looks like an ID, is refused (:func:`clients.tabular.column_kind`,
:func:`clients.tabular.check_not_id_like`). Every cell must be filled; a number not finite in float32, an
unknown class or category are refused with the file, row and column. Numeric values are used as they
are (:func:`clients.tabular_transform.fit_transform` without statistics): no statistic is shared between
sites.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from clients.tabular import (
    CATEGORICAL,
    CATEGORIES_KEY,
    CLASSES_KEY,
    COLUMN_KEYS,
    COLUMN_TYPES_KEY,
    ID_COLUMN_KEY,
    LABEL_COLUMN_KEY,
    NUMERIC,
    ColumnSettings,
    Table,
    check_not_id_like,
    column_kind,
    read_settings,
    read_table,
    sorted_classes,
)
from clients.tabular_transform import fit_transform

CSV_KEYS = (LABEL_COLUMN_KEY, ID_COLUMN_KEY, CLASSES_KEY, CATEGORIES_KEY, *COLUMN_KEYS)
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
        If the file is empty or not UTF-8, lacks the label, ID or a feature column, has an empty cell, a
        number not finite in float32, a stray text cell in a numeric column, an ID-like feature column, a
        repeated ID, or an unknown class or category (named with the file and row).
    """
    label = _label_column(settings, path)
    table = _read_csv(path)
    columns = _column_settings(settings, table, label)
    classes = columns.classes or _sorted_labels([table], label)
    schema = _infer_schema([table], columns, settings.get(ID_COLUMN_KEY), label)
    return _encode(table, schema), _encode_labels(table, label, classes), classes, schema


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
    columns = _column_settings(settings, pool, label)
    classes = columns.classes or _sorted_labels([val, test], label)
    schema = _infer_schema([pool, val, test], columns, settings.get(ID_COLUMN_KEY), label)
    pool_x, val_x, test_x = (_encode(t, schema) for t in (pool, val, test))
    return (pool_x, val_x, _encode_labels(val, label, classes), test_x, _encode_labels(test, label, classes),
            classes, schema)


def _read_csv(path: Path) -> Table:
    """The CSV at ``path`` with every cell filled."""
    table = read_table(path, "site file", unit="samples")
    empty = (table.frame == "").to_numpy()
    if empty.any():
        row, col = (int(i[0]) for i in np.nonzero(empty))
        raise ValueError(f"{table.where(row)}: empty cell in column {table.header[col]!r} "
                         "(missing values are not allowed)")
    return table


def _label_column(settings: Mapping[str, Any], path: Path) -> str:
    if LABEL_COLUMN_KEY not in settings:
        raise ValueError(f"site file {path}: a CSV site needs node_config {LABEL_COLUMN_KEY!r}")
    return str(settings[LABEL_COLUMN_KEY])


def _column_settings(settings: Mapping[str, Any], first: Table, label: str) -> ColumnSettings:
    """The node_config's reading settings (:func:`clients.tabular.read_settings`) for ``first``'s header."""
    reserved = {label, settings.get(ID_COLUMN_KEY)} - {None}
    return read_settings(settings, first.header, reserved, f"site file {first.path}",
                         classes_where="node_config ", categories_where="node_config ",
                         clash_note=f" ({COLUMN_TYPES_KEY!r})")


def _sorted_labels(tables: Sequence[Table], label: str) -> tuple[str, ...]:
    for table in tables:
        if label not in table.header:
            raise ValueError(f"site file {table.path}: no label column {label!r} "
                             f"(columns: {list(table.header)})")
    values = sorted_classes(v for t in tables for v in t.column(label))
    if len(values) < 2:
        raise ValueError(f"site file {tables[0].path}: the labels hold one class only ({values}); declare "
                         f"the run's classes with node_config {CLASSES_KEY!r}")
    return tuple(values)


def _infer_schema(tables: Sequence[Table], settings: ColumnSettings, id_column: str | None,
                  label: str) -> FeatureSchema:
    """Feature columns of the first table (in header order), typed over all ``tables``."""
    first = tables[0]
    if id_column is not None and id_column not in first.header:
        raise ValueError(f"site file {first.path}: no ID column {id_column!r} "
                         f"(columns: {list(first.header)})")
    reserved, dropped = {label, id_column}, settings.dropped
    features = [c for c in first.header if c not in reserved | dropped]
    for table in tables:
        if id_column is not None:
            ids = table.column(id_column) if id_column in table.header else []
            if len(set(ids)) != len(table.frame):
                raise ValueError(f"site file {table.path}: ID column {id_column!r} is missing or repeats IDs")
        other = [c for c in table.header if c not in reserved | dropped]
        if other != features:
            raise ValueError(f"site file {table.path}: feature columns {other} differ from {first.path}'s "
                             f"{features}")
    if not features:
        raise ValueError(f"site file {first.path}: no feature column (columns: {list(first.header)})")
    declared, types = settings.categories, settings.types
    unknown = sorted(set(declared) - set(features))
    if unknown:
        raise ValueError(f"node_config {CATEGORIES_KEY!r} names columns {unknown} that {first.path} lacks")
    columns: list[tuple[str, tuple[str, ...] | None]] = []
    for name in features:
        if name in declared:
            columns.append((name, declared[name]))
            continue
        kind = types.get(name) or _kind_over(tables, name)
        values = [v for t in tables for v in t.column(name)]
        if name not in types:
            check_not_id_like(first, name, values, kind)
        columns.append((name, None if kind == NUMERIC else tuple(sorted(set(values)))))
    width = sum(1 if c is None else len(c) for _, c in columns)
    return FeatureSchema((width,), tuple(columns))


def _kind_over(tables: Sequence[Table], name: str) -> str:
    """One kind for column ``name`` over all ``tables``: categorical if any table's cells are mostly text."""
    kinds = {column_kind(t, name, range(len(t.frame))) for t in tables}
    return CATEGORICAL if CATEGORICAL in kinds else NUMERIC


def _encode(table: Table, schema: FeatureSchema) -> np.ndarray:
    """Numeric columns as they are, categorical ones one-hot in the schema's category order."""
    for name, categories in schema.columns:
        if categories is not None:
            values = table.column(name)
            stray = next((i for i, v in enumerate(values) if v not in set(categories)), None)
            if stray is not None:
                raise ValueError(f"{table.where(stray)}: unknown category {values[stray]!r} in column "
                                 f"{name!r} (categories: {list(categories)})")
    transform = fit_transform(table, dict(schema.columns), range(len(table.frame)), standardise=False)
    return transform.apply(table)


def _encode_labels(table: Table, label: str, classes: tuple[str, ...]) -> np.ndarray:
    if label not in table.header:
        raise ValueError(f"site file {table.path}: no label column {label!r} (columns: {list(table.header)})")
    index = {c: i for i, c in enumerate(classes)}
    values = table.column(label)
    stray = next((i for i, v in enumerate(values) if v not in index), None)
    if stray is not None:
        raise ValueError(f"{table.where(stray)}: unknown class {values[stray]!r} in column {label!r} "
                         f"(classes: {list(classes)})")
    return np.array([index[v] for v in values], dtype=np.int64)
