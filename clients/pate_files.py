"""A PATE site's own data as files: the formats a teacher or student node reads (``.npz`` or CSV).

A teacher node with ``node_config`` ``role="teacher" teachers="0-49" data-file=PATH`` trains its 50
hosted teachers on the labelled samples of PATH only, split into 50 disjoint shards (seeded); a student
node with ``role="student" data-file=PATH`` queries the unlabeled samples of PATH and evaluates on its
own labelled validation and test samples. Without ``data-file`` a node rebuilds its part of the bundled
dataset (``clients.data``), which only rehearses a deployment.

``.npz`` files (``allow_pickle`` off):

- teacher: ``x`` ``(N, *input_shape)`` finite reals, ``y`` ``(N,)`` integer labels in ``[0, C)``,
  ``classes`` ``(C,)`` the class names (strings) that the labels index; optional ``teacher`` ``(N,)``:
  the hosted teacher each sample belongs to (a site whose samples already come per device); without it
  the node deals its samples out itself;
- student: ``x`` the unlabeled pool (a ``y`` is refused: the pool has no labels), ``val_x`` / ``val_y``
  and ``test_x`` / ``test_y`` its labelled held-out samples, ``classes``.

CSV files (a header row, then one row per sample), read with the node's ``node_config``:

- ``label-column`` (teachers and the student's held-out files): the label; at the student's pool the
  column must be absent;
- ``id-column`` (optional): sample IDs, non-empty and unique, not a feature;
- ``classes`` (optional, e.g. ``classes="benign,malignant"``): the run's class names in label order;
  without it, the sorted labels the node holds (a site missing a class must then declare them);
- ``categories`` (optional, e.g. ``categories="colour=red|green|blue;size=S|M|L"``): the categories of
  categorical columns, one-hot encoded in that order; a column not declared is numeric when every value
  parses as a number, else categorical over its sorted values;
- the student's held-out samples: ``validation-file`` and ``test-file`` (CSV, with the label column).

Empty cells, NaN/inf, empty files, an unknown class or category, a label column in the student's pool and
a file that is not there are refused with an error naming the file and the problem. Every node reports
its input shape, feature schema (:meth:`FeatureSchema.text`) and class names at ``describe``, so the
server refuses a run whose sites disagree.

``python -m clients.pate_files --dataset mnist1d --teacher-nodes 5 --out DIR`` writes a bundled split as
site files and prints each node's ``--node-config``, to rehearse a multi-site run.
"""

from __future__ import annotations

import argparse
import csv
import dataclasses
import functools
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from clients.data import DATASETS, load_pate_data
from protocol.pate import DataSpec

DATA_FILE_KEY = "data-file"
LABEL_COLUMN_KEY = "label-column"
ID_COLUMN_KEY = "id-column"
CLASSES_KEY = "classes"
CATEGORIES_KEY = "categories"
VALIDATION_FILE_KEY = "validation-file"
TEST_FILE_KEY = "test-file"
CSV_KEYS = (LABEL_COLUMN_KEY, ID_COLUMN_KEY, CLASSES_KEY, CATEGORIES_KEY)


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


@dataclass(frozen=True)
class TeacherSite:
    """A teacher site's labelled samples; ``teacher`` is the per-sample hosted teacher, if the file has it."""

    x: np.ndarray
    y: np.ndarray
    classes: tuple[str, ...]
    schema: FeatureSchema
    teacher: np.ndarray | None = None


@dataclass(frozen=True)
class StudentSite:
    """A student site's unlabeled pool and its labelled validation and test samples."""

    pool_x: np.ndarray
    val_x: np.ndarray
    val_y: np.ndarray
    test_x: np.ndarray
    test_y: np.ndarray
    classes: tuple[str, ...]
    schema: FeatureSchema


def array_schema(input_shape: Sequence[int]) -> FeatureSchema:
    """The schema of array samples (``.npz`` files and the bundled datasets)."""
    return FeatureSchema(tuple(int(d) for d in input_shape))


def site_shards(site: TeacherSite, teachers: Sequence[int], seed: int) -> list[np.ndarray]:
    """Disjoint, non-empty index sets of ``site``, one per hosted teacher (in ``teachers`` order).

    With the file's ``teacher`` array each teacher gets its samples in file order; otherwise a
    permutation drawn from ``seed`` is dealt out evenly (the iid scheme of ``clients.data``).

    Raises
    ------
    ValueError
        If the site has fewer samples than teachers, or its ``teacher`` array names a teacher this node
        does not host or leaves a hosted teacher without samples.
    """
    teachers = [int(t) for t in teachers]
    if site.teacher is not None:
        stray = sorted(set(np.unique(site.teacher).tolist()) - set(teachers))
        if stray:
            raise ValueError(f"the site file assigns samples to teachers {stray[:5]}, which this node does "
                             f"not host (node_config teachers: {teachers[:5]}...)")
        shards = [np.flatnonzero(site.teacher == t) for t in teachers]
        empty = [t for t, s in zip(teachers, shards, strict=True) if len(s) == 0]
        if empty:
            raise ValueError(f"the site file gives hosted teachers {empty[:5]} no sample")
        return shards
    if len(site.y) < len(teachers):
        raise ValueError(f"the site holds {len(site.y)} samples, too few for its {len(teachers)} teachers")
    order = np.random.default_rng(seed).permutation(len(site.y))
    return [np.asarray(s, dtype=np.int64) for s in np.array_split(order, len(teachers))]


# -- reading -------------------------------------------------------------------------------------------


def read_teacher_site(path: str | Path, settings: Mapping[str, Any] | None = None) -> TeacherSite:
    """Read and check a teacher site file (``.npz`` or ``.csv``, see the module docstring).

    ``settings`` holds the node_config's CSV keys (:data:`CSV_KEYS`). Cached per file version.

    Raises
    ------
    FileNotFoundError
        If the file does not exist.
    ValueError
        If it is empty, lacks an array or column, holds NaN/inf or empty cells, labels outside the classes,
        or is neither ``.npz`` nor ``.csv``.
    """
    path = _existing(path)
    return _cached(_read_teacher, path, _csv_settings(settings))


def read_student_site(path: str | Path, settings: Mapping[str, Any] | None = None) -> StudentSite:
    """Read and check a student site file (``.npz``, or a pool ``.csv`` with its held-out CSV files).

    Raises
    ------
    FileNotFoundError
        If a file does not exist.
    ValueError
        As :func:`read_teacher_site`; also if the pool holds labels, or a CSV pool comes without
        ``validation-file`` / ``test-file``, or the held-out files' features differ from the pool's.
    """
    path = _existing(path)
    frozen = _csv_settings(settings)
    held_out = tuple(str(_existing(v)) for k in (VALIDATION_FILE_KEY, TEST_FILE_KEY)
                     if (v := (settings or {}).get(k)) is not None)
    return _cached(_read_student, path, frozen + (("held_out", held_out),))


def _existing(path: str | Path) -> Path:
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"PATE site file {path} does not exist")
    return path.resolve()


def _csv_settings(settings: Mapping[str, Any] | None) -> tuple[tuple[str, str], ...]:
    settings = settings or {}
    return tuple((k, str(settings[k])) for k in CSV_KEYS if k in settings)


def _cached(reader: Any, path: Path, settings: tuple) -> Any:
    """``reader(path, settings)``, cached on the file's size and modification time."""
    stat = path.stat()
    extra = tuple(Path(p).stat().st_mtime_ns for p in dict(settings).get("held_out", ()))
    return _cached_read(reader, str(path), stat.st_mtime_ns, stat.st_size, extra, settings)


@functools.lru_cache(maxsize=8)
def _cached_read(reader: Any, path: str, _mtime: int, _size: int, _extra: tuple, settings: tuple) -> Any:
    return reader(Path(path), dict(settings))


def _read_teacher(path: Path, settings: dict[str, Any]) -> TeacherSite:
    if path.suffix == ".npz":
        arrays = _npz(path, ("x", "y", "classes"))
        classes = _classes(arrays["classes"], path)
        x = _features(arrays["x"], path, "x")
        y = _labels(arrays["y"], len(x), len(classes), path, "y")
        teacher = None
        if "teacher" in arrays:
            teacher = arrays["teacher"]
            if teacher.shape != (len(x),) or teacher.dtype.kind not in "iu":
                raise ValueError(f"site file {path}: teacher must be {len(x)} integer teacher ids, got "
                                 f"{teacher.dtype} {teacher.shape}")
        return TeacherSite(x, y, classes, array_schema(x.shape[1:]), teacher)
    _require_csv(path)
    label = _label_column(settings, path)
    table = _read_csv(path)
    classes = _declared_classes(settings) or _sorted_labels([table], label)
    schema = _infer_schema([table], settings, exclude={label, settings.get(ID_COLUMN_KEY)})
    x = _encode(table, schema, path)
    y = _encode_labels(table, label, classes, path)
    return TeacherSite(x, y, classes, schema)


def _read_student(path: Path, settings: dict[str, Any]) -> StudentSite:
    held_out = settings.pop("held_out", ())
    if path.suffix == ".npz":
        if held_out:
            raise ValueError(f"site file {path}: an .npz pool holds its own val_x/test_x; drop node_config "
                             f"{VALIDATION_FILE_KEY!r} / {TEST_FILE_KEY!r}")
        arrays = _npz(path, ("x", "val_x", "val_y", "test_x", "test_y", "classes"))
        if "y" in arrays:
            raise ValueError(f"site file {path}: the student's pool must be unlabeled, but the file holds y")
        classes = _classes(arrays["classes"], path)
        parts = {k: _features(arrays[k], path, k) for k in ("x", "val_x", "test_x")}
        shapes = {v.shape[1:] for v in parts.values()}
        if len(shapes) != 1:
            raise ValueError(f"site file {path}: x, val_x and test_x have different sample shapes "
                             f"{sorted(shapes)}")
        return StudentSite(parts["x"], parts["val_x"], _labels(arrays["val_y"], len(parts["val_x"]),
                                                               len(classes), path, "val_y"),
                           parts["test_x"], _labels(arrays["test_y"], len(parts["test_x"]), len(classes),
                                                    path, "test_y"),
                           classes, array_schema(parts["x"].shape[1:]))
    _require_csv(path)
    if len(held_out) != 2:
        raise ValueError(f"site file {path}: a CSV pool needs node_config {VALIDATION_FILE_KEY!r} and "
                         f"{TEST_FILE_KEY!r} (labelled CSV files of the same columns)")
    label = _label_column(settings, path)
    pool = _read_csv(path)
    if label in pool.header:
        raise ValueError(f"site file {path}: the student's pool must be unlabeled, but it has the label "
                         f"column {label!r}")
    val, test = (_read_csv(_require_csv(Path(p))) for p in held_out)
    for table in (val, test):
        if label not in table.header:
            raise ValueError(f"site file {table.path}: no label column {label!r} (columns: {table.header})")
    classes = _declared_classes(settings) or _sorted_labels([val, test], label)
    exclude = {label, settings.get(ID_COLUMN_KEY)}
    schema = _infer_schema([pool, val, test], settings, exclude=exclude)
    pool_x, val_x, test_x = (_encode(t, schema, t.path) for t in (pool, val, test))
    return StudentSite(pool_x, val_x, _encode_labels(val, label, classes, val.path), test_x,
                       _encode_labels(test, label, classes, test.path), classes, schema)


def _npz(path: Path, required: Sequence[str]) -> dict[str, np.ndarray]:
    try:
        with np.load(path, allow_pickle=False) as npz:
            arrays = {key: npz[key] for key in npz.files}
    except ValueError as err:  # object arrays, or not an npz at all
        raise ValueError(f"site file {path}: not a readable .npz of plain arrays ({err}); store class names "
                         "as str and features as numbers") from None
    missing = [k for k in required if k not in arrays]
    if missing:
        raise ValueError(f"site file {path} lacks {missing} (has {sorted(arrays)})")
    return arrays


def _classes(values: np.ndarray, path: Path) -> tuple[str, ...]:
    names = tuple(str(v) for v in np.asarray(values).reshape(-1))
    if len(names) < 2 or len(set(names)) != len(names):
        raise ValueError(f"site file {path}: classes must be >= 2 distinct names, got {list(names)[:10]}")
    return names


def _features(x: np.ndarray, path: Path, what: str) -> np.ndarray:
    if x.ndim < 2 or len(x) == 0:
        raise ValueError(f"site file {path}: {what} must hold >= 1 sample of shape (N, ...), got {x.shape}")
    if x.dtype.kind not in "iuf":
        raise ValueError(f"site file {path}: {what} must be real numbers, got dtype {x.dtype}")
    x = np.ascontiguousarray(x, dtype=np.float32)
    bad = ~np.isfinite(x.reshape(len(x), -1)).all(axis=1)
    if bad.any():
        raise ValueError(f"site file {path}: {what} has NaN/inf in {int(bad.sum())} rows, first row "
                         f"{int(np.flatnonzero(bad)[0])}")
    return x


def _labels(y: np.ndarray, n: int, n_classes: int, path: Path, what: str) -> np.ndarray:
    if y.shape != (n,) or y.dtype.kind not in "iu":
        raise ValueError(f"site file {path}: {what} must be {n} integer labels, got {y.dtype} {y.shape}")
    outside = (y < 0) | (y >= n_classes)
    if outside.any():
        stray = np.unique(y[outside])[:5].tolist()
        raise ValueError(f"site file {path}: {what} holds unknown classes {stray} (classes are "
                         f"0..{n_classes - 1})")
    return y.astype(np.int64)


# -- CSV ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Table:
    path: Path
    header: tuple[str, ...]
    rows: tuple[tuple[str, ...], ...]

    def column(self, name: str) -> list[str]:
        j = self.header.index(name)
        return [row[j] for row in self.rows]


def _require_csv(path: Path) -> Path:
    if path.suffix != ".csv":
        raise ValueError(f"site file {path}: unknown format {path.suffix!r}; use .npz or .csv")
    return path


def _read_csv(path: Path) -> _Table:
    with path.open(newline="", encoding="utf-8") as handle:
        lines = [[cell.strip() for cell in row] for row in csv.reader(handle) if any(c.strip() for c in row)]
    if not lines:
        raise ValueError(f"site file {path} is empty (no header row)")
    header = tuple(lines[0])
    if "" in header or len(set(header)) != len(header):
        raise ValueError(f"site file {path}: header has empty or repeated column names: {list(header)}")
    if len(lines) == 1:
        raise ValueError(f"site file {path} has a header but no samples")
    for line, row in enumerate(lines[1:], start=2):
        if len(row) != len(header):
            raise ValueError(f"site file {path}, row {line}: {len(row)} cells, the header has {len(header)}")
        if "" in row:
            raise ValueError(f"site file {path}, row {line}: empty cell in column {header[row.index('')]!r} "
                             "(missing values are not allowed)")
    return _Table(path, header, tuple(tuple(r) for r in lines[1:]))


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
                raise ValueError(f"site file {path}, row {bad[0] + 2}: column {name!r} is "
                                 f"{values[bad[0]]!r} (NaN/inf are not allowed)")
            blocks.append(column[:, None])
        else:
            index = {c: i for i, c in enumerate(categories)}
            stray = next((i for i, v in enumerate(values) if v not in index), None)
            if stray is not None:
                raise ValueError(f"site file {path}, row {stray + 2}: unknown category {values[stray]!r} in "
                                 f"column {name!r} (categories: {list(categories)})")
            blocks.append(np.eye(len(categories))[[index[v] for v in values]])
    return np.ascontiguousarray(np.concatenate(blocks, axis=1), dtype=np.float32)


def _encode_labels(table: _Table, label: str, classes: tuple[str, ...], path: Path) -> np.ndarray:
    if label not in table.header:
        raise ValueError(f"site file {path}: no label column {label!r} (columns: {list(table.header)})")
    index = {c: i for i, c in enumerate(classes)}
    values = table.column(label)
    stray = next((i for i, v in enumerate(values) if v not in index), None)
    if stray is not None:
        raise ValueError(f"site file {path}, row {stray + 2}: unknown class {values[stray]!r} in column "
                         f"{label!r} (classes: {list(classes)})")
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


# -- writing a bundled split as site files --------------------------------------------------------------


def teacher_ranges(num_teachers: int, teacher_nodes: int) -> list[list[int]]:
    """Teacher ids of each of ``teacher_nodes`` nodes: contiguous, as even as possible."""
    if not 1 <= teacher_nodes <= num_teachers:
        raise ValueError(f"need 1 <= teacher nodes <= {num_teachers} teachers, got {teacher_nodes}")
    bounds = [round(i * num_teachers / teacher_nodes) for i in range(teacher_nodes + 1)]
    return [list(range(a, b)) for a, b in zip(bounds, bounds[1:], strict=False)]


def export_bundled(spec: DataSpec, teacher_nodes: int, out: str | Path, *, fmt: str = "npz",
                   node_shards: bool = False) -> list[str]:
    """Write the bundled split of ``spec`` as one file per teacher node plus the student's; return the
    ``--node-config`` of every node (teachers first, then the student).

    An ``.npz`` teacher file keeps each sample's teacher (``teacher``), so a run on the files trains the
    same teachers as the bundled run; ``node_shards=True`` (and CSV, which has no such column) leaves the
    dealing to the nodes. CSV samples are flattened into columns ``f0, f1, ...`` beside ``id`` and
    ``label`` (written to round-trip float32 exactly).

    Raises
    ------
    ValueError
        If ``fmt`` is not ``npz`` or ``csv``, or ``teacher_nodes`` is not in ``[1, spec.num_teachers]``.
    """
    if fmt not in ("npz", "csv"):
        raise ValueError(f"format must be 'npz' or 'csv', got {fmt!r}")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    data, split = load_pate_data(**dataclasses.asdict(spec))
    classes = [str(c) for c in range(data.n_classes)]
    csv_config = f" {LABEL_COLUMN_KEY}='label' {ID_COLUMN_KEY}='id' {CLASSES_KEY}='{','.join(classes)}'"
    configs = []
    for k, ids in enumerate(teacher_ranges(spec.num_teachers, teacher_nodes)):
        index = np.concatenate([split.teacher_shards[t] for t in ids])
        path = out / f"teacher{k}.{fmt}"
        if fmt == "npz":
            arrays = {"x": data.x[index], "y": data.y[index], "classes": np.array(classes)}
            if not node_shards:
                arrays["teacher"] = np.concatenate([np.full(len(split.teacher_shards[t]), t) for t in ids])
            np.savez(path, **arrays)
        else:
            _write_csv(path, data.x[index], index, data.y[index])
        extra = csv_config if fmt == "csv" else ""
        configs.append(f"role='teacher' teachers='{ids[0]}-{ids[-1]}' {DATA_FILE_KEY}='{path}'{extra}")
    pool, val, test = split.query_pool, split.validation, split.test
    if fmt == "npz":
        path = out / "student.npz"
        np.savez(path, x=data.x[pool], val_x=data.x[val], val_y=data.y[val], test_x=data.x[test],
                 test_y=data.y[test], classes=np.array(classes))
        configs.append(f"role='student' {DATA_FILE_KEY}='{path}'")
    else:
        paths = [out / f"student_{name}.csv" for name in ("pool", "validation", "test")]
        _write_csv(paths[0], data.x[pool], pool, None)
        _write_csv(paths[1], data.x[val], val, data.y[val])
        _write_csv(paths[2], data.x[test], test, data.y[test])
        configs.append(f"role='student' {DATA_FILE_KEY}='{paths[0]}' {VALIDATION_FILE_KEY}='{paths[1]}' "
                       f"{TEST_FILE_KEY}='{paths[2]}'{csv_config}")
    return configs


def _write_csv(path: Path, x: np.ndarray, ids: np.ndarray, y: np.ndarray | None) -> None:
    flat = x.reshape(len(x), -1)
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        label_column = ["label"] if y is not None else []
        writer.writerow(["id", *(f"f{j}" for j in range(flat.shape[1])), *label_column])
        for i, row in enumerate(flat):
            label = [str(int(y[i]))] if y is not None else []
            writer.writerow([f"s{int(ids[i])}", *(format(v, ".9g") for v in row.tolist()), *label])


def main(argv: list[str] | None = None) -> None:
    """Write a bundled PATE split as site files and print each node's ``--node-config``."""
    parser = argparse.ArgumentParser(description="write a bundled PATE split as per-site data files")
    parser.add_argument("--dataset", default="mnist1d", choices=DATASETS)
    parser.add_argument("--teacher-nodes", type=int, required=True)
    parser.add_argument("--num-teachers", type=int, default=250)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--mnist1d-samples", type=int, default=DataSpec.mnist1d_samples)
    parser.add_argument("--teacher-samples", type=int, default=0)
    parser.add_argument("--format", choices=("npz", "csv"), default="npz")
    parser.add_argument("--node-shards", action="store_true",
                        help="leave the dealing of samples to teachers to the nodes (no 'teacher' array)")
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args(argv)
    spec = DataSpec(dataset=args.dataset, num_teachers=args.num_teachers, seed=args.seed,
                    mnist1d_samples=args.mnist1d_samples, teacher_samples=args.teacher_samples)
    for config in export_bundled(spec, args.teacher_nodes, args.out, fmt=args.format,
                                 node_shards=args.node_shards):
        print(f'--node-config "{config}"')


if __name__ == "__main__":
    main()
