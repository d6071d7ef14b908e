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

CSV files (``clients.pate.site_csv``: ``label-column``, optional ``id-column``, ``classes``, ``categories``,
``drop-columns``, ``column-types``;
numeric or categorical features): a teacher's one file; the student's unlabeled pool (no label column) as
``data-file`` and its labelled held-out samples as ``validation-file`` and ``test-file``.

Empty cells, NaN/inf, empty files, an unknown class or category, a label column in the student's pool and
a file that is not there are refused with an error naming the file and the problem. Every node reports
its input shape, feature schema (``FeatureSchema.text``) and class names at ``describe``, so the
server refuses a run whose sites disagree.

``python -m clients.pate.site_files --dataset mnist1d --teacher-nodes 5 --out DIR`` writes a bundled split as
site files and prints each node's ``--node-config``, to rehearse a multi-site run.
"""

from __future__ import annotations

import argparse
import csv
import dataclasses
import functools
import sys
import traceback
import zipfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from clients.data import DATASETS, load_pate_data
from clients.pate.site_csv import (
    CLASSES_KEY,
    CSV_KEYS,
    ID_COLUMN_KEY,
    LABEL_COLUMN_KEY,
    FeatureSchema,
    array_schema,
    read_student_csv,
    read_teacher_csv,
)
from protocol.pate import DataSpec

DATA_FILE_KEY = "data-file"
VALIDATION_FILE_KEY = "validation-file"
TEST_FILE_KEY = "test-file"


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


def site_shards(site: TeacherSite, teachers: Sequence[int], seed: int) -> list[np.ndarray]:
    """Disjoint, non-empty index sets of ``site``, one per hosted teacher (in ``teachers`` order).

    With the file's ``teacher`` array each teacher gets its samples in file order; otherwise a
    permutation drawn from ``seed`` is dealt out evenly (the iid scheme of ``clients.data``; the run's
    ``partition`` setting only simulates label skew on bundled data, a site's skew is its own).

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
    x, y, classes, schema = read_teacher_csv(_require_csv(path), settings)
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
    if len(held_out) != 2:
        raise ValueError(f"site file {path}: a CSV pool needs node_config {VALIDATION_FILE_KEY!r} and "
                         f"{TEST_FILE_KEY!r} (labelled CSV files of the same columns)")
    return StudentSite(*read_student_csv(_require_csv(path), [Path(p) for p in held_out], settings))


def _require_csv(path: Path) -> Path:
    if path.suffix != ".csv":
        raise ValueError(f"site file {path}: unknown format {path.suffix!r}; use .npz or .csv")
    return path


def _npz(path: Path, required: Sequence[str]) -> dict[str, np.ndarray]:
    try:
        with np.load(path, allow_pickle=False) as npz:
            arrays = {key: npz[key] for key in npz.files}
    except ValueError as err:  # object arrays, or not an npz at all
        raise ValueError(f"site file {path}: not a readable .npz of plain arrays ({err}); store class names "
                         "as str and features as numbers") from None
    except (EOFError, OSError, zipfile.BadZipFile) as err:  # an empty or truncated file
        raise ValueError(f"site file {path}: not a readable .npz archive ({type(err).__name__}: {err}); "
                         "write it with numpy.savez") from None
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
    """Write a bundled PATE split as site files; print each node's ``--node-config`` and the server's
    matching run-config keys. A bad setting or an ``--out`` that cannot be written ends with one ``error:``
    line naming it and exit status 2 (``--verbose``: with the traceback)."""
    parser = argparse.ArgumentParser(description="write a bundled PATE split as per-site data files")
    for field in dataclasses.fields(DataSpec):  # the split's settings, as the server's run config names them
        default = getattr(DataSpec, field.name)
        parser.add_argument(f"--{field.name.replace('_', '-')}", type=type(default), default=default,
                            **({"choices": DATASETS} if field.name == "dataset" else {}))
    parser.add_argument("--teacher-nodes", type=int, required=True)
    parser.add_argument("--format", choices=("npz", "csv"), default="npz")
    parser.add_argument("--node-shards", action="store_true",
                        help="leave the dealing of samples to teachers to the nodes (no 'teacher' array)")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--verbose", action="store_true", help="print the traceback of an error")
    args = parser.parse_args(argv)
    try:
        spec = DataSpec(**{f.name: getattr(args, f.name) for f in dataclasses.fields(DataSpec)})
        teacher_ranges(spec.num_teachers, args.teacher_nodes)  # refused before the dataset is loaded
        try:
            args.out.mkdir(parents=True, exist_ok=True)
        except OSError as err:
            raise OSError(f"cannot write --out {args.out}: {err.strerror or err}") from None
        configs = export_bundled(spec, args.teacher_nodes, args.out, fmt=args.format,
                                 node_shards=args.node_shards)
    except (ValueError, OSError) as err:
        if args.verbose:
            traceback.print_exc()
        print(f"error: {err}", file=sys.stderr)
        raise SystemExit(2) from None
    for config in configs:
        print(f'--node-config "{config}"')
    keys = f"pate.data.num_teachers={spec.num_teachers} pate.data.seed={spec.seed}"
    print(f'# the server: --run-config "{keys}" (the seed seeds every teacher\'s training)')


if __name__ == "__main__":
    main()
