"""What a PATE node trains and answers on: its own site file, or its part of the bundled split.

A node whose ``node_config`` names a ``data-file`` reads it (``clients.pate.site_files``); otherwise it
rebuilds the run's bundled dataset and split from the ``DataSpec`` the server sends (``clients.data``),
exactly as before site files existed. Either way the handlers see the same views: a teacher node its
samples and one shard per hosted teacher, the student its pool and its held-out sets.

Measurements that need ground truth a site does not have — a teacher's accuracy on the student's held-out
sets, the fused labels' accuracy on the pool — exist only in the bundled rehearsal; at a site they are
reported as NaN.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
from flwr.app import Context

from clients.data import Dataset, PateSplit, bundled_inputs, load_pate_data
from clients.data_cache import NODE_CONFIG_KEY as CACHE_DIR_KEY
from clients.pate.site_csv import FeatureSchema, array_schema
from clients.pate.site_files import DATA_FILE_KEY, read_student_site, read_teacher_site, site_shards
from protocol.pate import ROLE_TEACHER, SITE_DATA, DataSpec

if TYPE_CHECKING:  # the describe and prepare handlers import this module without torch
    from clients.pate.teacher_ensemble import TeacherEnsemble


@dataclass(frozen=True)
class TeacherData:
    """A teacher node's samples, one index set per hosted teacher, and held-out sets to measure on."""

    x: np.ndarray
    y: np.ndarray
    shards: list[np.ndarray]
    classes: tuple[str, ...]
    schema: FeatureSchema
    held_out: dict[str, tuple[np.ndarray, np.ndarray]]  # "test", "validation"; empty at a site

    @property
    def n_classes(self) -> int:
        return len(self.classes)

    def accuracies(self, ensemble: TeacherEnsemble, name: str) -> list[float]:
        """Each teacher's accuracy on held-out set ``name`` (ensemble order); NaN where there is none."""
        if name not in self.held_out:
            return [float("nan")] * len(ensemble.teacher_ids)
        return ensemble.accuracies(*self.held_out[name])


@dataclass(frozen=True)
class StudentData:
    """The student's pool (``pool_y``: ground truth for measurement, bundled only) and held-out sets."""

    pool_x: np.ndarray
    pool_y: np.ndarray | None
    val_x: np.ndarray
    val_y: np.ndarray
    test_x: np.ndarray
    test_y: np.ndarray
    classes: tuple[str, ...]
    schema: FeatureSchema
    class_labels: list[Any]  # what the saved model predicts: class indices (bundled) or the site's names

    @property
    def n_classes(self) -> int:
        return len(self.classes)


def path_setting(context: Context, key: str) -> str | None:
    """The node's ``node_config[key]`` path, or None when it is not set.

    Raises
    ------
    ValueError
        If it is set but empty or not a string.
    """
    value = context.node_config.get(key)
    if value is None:
        return None
    if not isinstance(value, str) or not value:
        raise ValueError(f"node_config {key!r} must be a non-empty path, got {value!r}")
    return value


def site_file(context: Context) -> str | None:
    """The node's ``data-file``, or None (bundled data)."""
    return path_setting(context, DATA_FILE_KEY)


def cache_dir(context: Context) -> str | None:
    """The node's ``cache-dir`` (where it keeps prepared bundled data), or None (the machine's default)."""
    return path_setting(context, CACHE_DIR_KEY)


def bundled_data(context: Context, spec: DataSpec) -> tuple[Dataset, PateSplit]:
    """The run's bundled dataset and split, from the node's data cache (built there on first use)."""
    _require_bundled(spec)
    return load_pate_data(**dataclasses.asdict(spec), cache_dir=cache_dir(context))


def _require_bundled(spec: DataSpec) -> None:
    if spec.dataset == SITE_DATA:
        raise ValueError(f"data.dataset={SITE_DATA!r}: every node brings its own data file, but this node's "
                         f"node_config has no {DATA_FILE_KEY!r}")


def teacher_data(context: Context, spec: DataSpec, teachers: list[int]) -> TeacherData:
    """The hosted ``teachers``' data: shards of the site file (dealt with ``spec.seed + 1``) or bundled."""
    path = site_file(context)
    if path is not None:
        site = read_teacher_site(path, dict(context.node_config))
        return TeacherData(site.x, site.y, site_shards(site, teachers, spec.seed + 1), site.classes,
                           site.schema, {})
    data, split = bundled_data(context, spec)
    held_out = {"test": (data.x[split.test], data.y[split.test]),
                "validation": (data.x[split.validation], data.y[split.validation])}
    shards = [split.teacher_shards[t] for t in teachers]
    return TeacherData(data.x, data.y, shards, _index_names(data.n_classes), array_schema(data.input_shape),
                       held_out)


def teacher_pool(context: Context, spec: DataSpec) -> np.ndarray:
    """The student's unlabelled pool as a teacher node rebuilds it from the bundled split (no labels).

    Semi-supervised teachers (``protocol.pate.TeacherSettings``) train on it; in the bundled setting every
    node derives it from the ``DataSpec``, so nothing crosses the wire.

    Raises
    ------
    ValueError
        If the node reads a site file: a site's pool lives at the student and would have to be sent to the
        teacher nodes first, which this project does not do yet.
    """
    if site_file(context) is not None:
        raise ValueError("semi-supervised teachers need the student's unlabelled pool, which a site-file "
                         "deployment does not send to teacher nodes; use "
                         "teacher_training.method='supervised'")
    data, split = bundled_data(context, spec)
    return data.x[split.query_pool]


def teacher_inputs(context: Context, spec: DataSpec) -> tuple[tuple[int, ...], int]:
    """Input shape and class count of a teacher node's samples (bundled data: known without loading)."""
    path = site_file(context)
    if path is not None:
        site = read_teacher_site(path, dict(context.node_config))
        return site.schema.input_shape, len(site.classes)
    _require_bundled(spec)
    return bundled_inputs(spec.dataset)


def student_data(context: Context, spec: DataSpec) -> StudentData:
    """The student's site file, or its sets of the bundled split."""
    path = site_file(context)
    if path is not None:
        site = read_student_site(path, dict(context.node_config))
        return StudentData(site.pool_x, None, site.val_x, site.val_y, site.test_x, site.test_y, site.classes,
                           site.schema, list(site.classes))
    data, split = bundled_data(context, spec)
    pool = split.query_pool
    return StudentData(data.x[pool], data.y[pool], data.x[split.validation], data.y[split.validation],
                       data.x[split.test], data.y[split.test], _index_names(data.n_classes),
                       array_schema(data.input_shape), list(range(data.n_classes)))


def describe_data(context: Context, spec: DataSpec, role: str) -> dict[str, Any]:
    """What the node tells the server at ``describe``: input shape, feature schema and class names.

    Quick by design: a site file is read (its header and rows are what is described), bundled data is
    described from :func:`clients.data.bundled_inputs` without being built — preparing it is its own
    step (``query.prepare`` for the student, ``train.teachers`` for teachers), with a timeout sized to it.

    Raises
    ------
    FileNotFoundError, ValueError
        If the node's site file is missing or malformed (named in the message).
    """
    path = site_file(context)
    if path is None:
        _require_bundled(spec)
        shape, n_classes = bundled_inputs(spec.dataset)
        schema, classes = array_schema(shape), _index_names(n_classes)
    elif role == ROLE_TEACHER:
        site = read_teacher_site(path, dict(context.node_config))
        schema, classes = site.schema, site.classes
    else:
        data = student_data(context, spec)
        schema, classes = data.schema, data.classes
    return {"input_shape": list(schema.input_shape), "feature_schema": schema.text(),
            "classes": list(classes)}


def _index_names(n_classes: int) -> tuple[str, ...]:
    return tuple(str(c) for c in range(n_classes))
