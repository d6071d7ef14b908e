"""What PATE parties and the server say to each other: message types, roles, record keys, typed specs.

The server sends the run's data and model settings inside every message (a ``ConfigRecord`` written by
:func:`protocol.codec.to_record`), so a ClientApp needs no ``run_config`` and the same node code serves
Flower simulations and deployments.

Node roles come from ``node_config``:

- deployment: ``role="teacher"`` with ``teachers="0,1,2"`` (or a range ``"0-49"``), or
  ``role="student"``;
- simulation (only ``partition-id`` / ``num-partitions`` exist): the last partition is the student,
  partition ``k`` of the other ``K`` hosts teachers ``{t : t mod K == k}``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
from flwr.app import Array, ArrayRecord, RecordDict

from protocol.codec import BARE_NAME_RULE, is_bare_name

MSG_DESCRIBE = "query.describe"
MSG_TRAIN_TEACHERS = "train.teachers"
MSG_VOTES = "query.votes"
MSG_NEXT_QUERIES = "query.queries"
MSG_TRAIN_STUDENT = "train.student"
MSG_PREPARE_DATA = "query.prepare"

ROLE_TEACHER = "teacher"
ROLE_STUDENT = "student"
SITE_DATA = "sites"  # DataSpec.dataset of a run where every node reads its own node_config data-file


@dataclass
class DataSpec:
    """Which dataset and which disjoint split every party reconstructs (see ``clients.data``).

    ``dataset`` = :data:`SITE_DATA` (``"sites"``) says every node brings its own data file
    (``node_config`` ``data-file``): nothing is checked against a bundled dataset, and a node without a
    file is refused at ``describe``. ``num_teachers`` still counts the run's teachers.
    """

    dataset: str = "digits"
    seed: int = 0
    num_teachers: int = 10
    partition: str = "iid"
    dirichlet_alpha: float = 0.5
    query_fraction: float = 0.2
    validation_fraction: float = 0.1
    test_fraction: float = 0.2
    mnist1d_samples: int = 4000
    teacher_samples: int = 0  # samples dealt to the teachers in all; 0 = everything the student's sets leave

    def __post_init__(self) -> None:
        fractions = (self.query_fraction, self.validation_fraction, self.test_fraction)
        _check_rules("DataSpec", [
            ("seed", self.seed, _is_int(self.seed, 0), "must be an integer >= 0"),
            ("num_teachers", self.num_teachers, _is_int(self.num_teachers, 1), "must be an integer >= 1"),
            ("query_fraction", self.query_fraction, 0 < self.query_fraction < 1, "must be in (0, 1)"),
            ("validation_fraction", self.validation_fraction, 0 < self.validation_fraction < 1,
             "must be in (0, 1)"),
            ("test_fraction", self.test_fraction, 0 < self.test_fraction < 1, "must be in (0, 1)"),
            ("query_fraction+validation_fraction+test_fraction", round(sum(fractions), 6), sum(fractions) < 1,
             "must be < 1 to leave data for the teachers"),
            ("dirichlet_alpha", self.dirichlet_alpha,
             _is_finite(self.dirichlet_alpha) and self.dirichlet_alpha > 0, "must be a finite number > 0"),
            ("mnist1d_samples", self.mnist1d_samples, _is_int(self.mnist1d_samples, 100),
             "must be an integer >= 100"),
            ("teacher_samples", self.teacher_samples, _is_int(self.teacher_samples, 0),
             "must be an integer >= 0 (0: all the student's sets leave)"),
        ])


@dataclass
class ModelSpec:
    """Architecture and local training settings of a teacher or of the student."""

    encoder: str = "mlp"
    feature_dim: int = 64
    hidden: int = 128
    epochs: int = 40
    batch_size: int = 32
    lr: float = 1e-3
    weight_decay: float = 1e-4
    augment_shift: int = 0  # random shift of up to this many positions (1-D) or pixels (2-D); 0 = none

    def __post_init__(self) -> None:
        _check_rules("ModelSpec", [
            ("epochs", self.epochs, _is_int(self.epochs, 1), "must be an integer >= 1"),
            ("batch_size", self.batch_size, _is_int(self.batch_size, 1), "must be an integer >= 1"),
            ("lr", self.lr, _is_finite(self.lr) and self.lr > 0, "must be a finite number > 0"),
            ("weight_decay", self.weight_decay, _is_finite(self.weight_decay) and self.weight_decay >= 0,
             "must be a finite number >= 0"),
            ("feature_dim", self.feature_dim, _is_int(self.feature_dim, 1), "must be an integer >= 1"),
            ("hidden", self.hidden, _is_int(self.hidden, 1), "must be an integer >= 1"),
            ("augment_shift", self.augment_shift, _is_int(self.augment_shift, 0), "must be an integer >= 0"),
        ])


TEACHER_METHODS = ("supervised", "pseudo_label", "fixmatch")


@dataclass
class TeacherSettings:
    """How every teacher learns: from its labelled shard alone, or also from the student's unlabelled pool.

    ``method``: ``supervised`` trains each teacher on its own shard only (Papernot et al. 2017);
    ``pseudo_label`` then lets each teacher label ``pool_per_teacher`` samples of the student's unlabelled
    pool (its own seeded subset; 0 = the whole pool) with its OWN predictions, keeps those at least
    ``pseudo_label_threshold`` confident, and trains on for ``pseudo_label_epochs`` passes over its shard,
    each minibatch of ``batch_size`` shard samples joined by ``pseudo_label_mu`` times as many of its
    pseudo-labelled samples, whose loss is weighted by ``pseudo_label_weight`` (Lee 2013, "Pseudo-label";
    the semi-supervised teachers of Malek et al. 2021, PATE-FM); ``fixmatch`` instead trains on with
    FixMatch's consistency loss on its pool subset (Sohn et al. 2020; the same threshold, mu, weight and
    epochs; the weak view's prediction is the strong view's target). The pool carries no label: each teacher's
    labelled data stays its own disjoint shard, so the noisy aggregation's analysis is unchanged
    (``docs/semi_supervised_teachers.md``).
    """

    method: str = "supervised"
    pool_per_teacher: int = 2000
    pseudo_label_threshold: float = 0.9
    pseudo_label_epochs: int = 50
    pseudo_label_mu: int = 1
    pseudo_label_weight: float = 1.0

    def __post_init__(self) -> None:
        if self.method not in TEACHER_METHODS:
            raise ValueError(f"TeacherSettings.method must be one of {TEACHER_METHODS}, got {self.method!r}")
        _check_rules("TeacherSettings", [
            ("pool_per_teacher", self.pool_per_teacher, _is_int(self.pool_per_teacher, 0),
             "must be an integer >= 0 (0: the whole pool)"),
            ("pseudo_label_threshold", self.pseudo_label_threshold,
             _is_finite(self.pseudo_label_threshold) and 0 <= self.pseudo_label_threshold <= 1,
             "must be in [0, 1]"),
            ("pseudo_label_epochs", self.pseudo_label_epochs, _is_int(self.pseudo_label_epochs, 0),
             "must be an integer >= 0"),
            ("pseudo_label_mu", self.pseudo_label_mu, _is_int(self.pseudo_label_mu, 1),
             "must be an integer >= 1"),
            ("pseudo_label_weight", self.pseudo_label_weight,
             _is_finite(self.pseudo_label_weight) and self.pseudo_label_weight >= 0,
             "must be a finite number >= 0"),
        ])


STUDENT_METHODS = ("supervised", "self_training", "fixmatch")
QUERY_SELECTIONS = ("pool_order", "uncertainty")


@dataclass
class StudentSettings:
    """What the student does with its labels.

    ``method``: ``supervised`` trains on the answered queries only; ``self_training`` adds the
    student's unanswered samples whose own prediction is at least ``self_training_confidence``
    confident; ``fixmatch`` trains with consistency regularisation on the whole unlabeled pool
    (Sohn et al. 2020). Both semi-supervised methods cost no privacy: no teacher sees those samples.
    ``model_name`` is the bare file name (no folder, no suffix) under which the student node saves
    ``.pt`` + ``.json`` in its own output folder (``clients.node_output``); empty: do not save.

    FixMatch (``clients.pate.semi_supervised.FixMatchConfig``; batch size and weight decay come from the
    student's ``ModelSpec``): confidence threshold tau ``fixmatch_threshold`` and unlabeled-loss weight
    lambda_u ``fixmatch_weight`` (Sohn et al. 2020, Eq. 4); ``fixmatch_mu`` unlabeled samples per
    labeled one; Adam learning rate ``fixmatch_lr``; ``fixmatch_epochs`` passes over the unlabeled
    pool after ``fixmatch_warmup_epochs`` passes over the labeled samples alone; label smoothing of
    the (noisy) answered labels; the decay of the weights' moving average that becomes the model; the
    weak view's shift; the strong view's shift, amplitude scaling, Gaussian noise and cutout length.

    ``query_selection``: which pool samples the teachers are asked about. ``pool_order`` asks them in the
    pool's order; ``uncertainty`` asks the first ``selection_warmup`` in pool order, then, before every
    later batch, trains a supervised model on the answers so far and asks about the pool samples it is
    least sure of (smallest margin between its two likeliest classes; uncertainty sampling, the
    interactive student of Papernot et al. 2018, Section 4.3). The answers it learns from are the
    released labels it receives anyway: choosing costs no privacy.
    """

    method: str = "self_training"
    self_training_confidence: float = 0.9
    fixmatch_threshold: float = 0.8
    fixmatch_weight: float = 1.0
    fixmatch_mu: int = 7
    fixmatch_lr: float = 3e-3
    fixmatch_epochs: int = 60
    fixmatch_warmup_epochs: int = 400
    fixmatch_label_smoothing: float = 0.1
    fixmatch_ema_decay: float = 0.99
    fixmatch_weak_shift: int = 6
    fixmatch_strong_shift: int = 8
    fixmatch_strong_scale: float = 0.2
    fixmatch_strong_noise: float = 0.05
    fixmatch_cutout: int = 6
    model_name: str = ""
    query_selection: str = "pool_order"
    selection_warmup: int = 256

    def __post_init__(self) -> None:
        if self.method not in STUDENT_METHODS:
            raise ValueError(f"StudentSettings.method must be one of {STUDENT_METHODS}, got {self.method!r}")
        if self.query_selection not in QUERY_SELECTIONS:
            raise ValueError(f"StudentSettings.query_selection must be one of {QUERY_SELECTIONS}, got "
                             f"{self.query_selection!r}")
        _check_rules("StudentSettings", [
            ("selection_warmup", self.selection_warmup, _is_int(self.selection_warmup, 1),
             "must be an integer >= 1"),
            ("self_training_confidence", self.self_training_confidence,
             _is_finite(self.self_training_confidence) and 0 <= self.self_training_confidence <= 1,
             "must be in [0, 1]"),
            ("fixmatch_threshold", self.fixmatch_threshold,
             _is_finite(self.fixmatch_threshold) and 0 < self.fixmatch_threshold <= 1, "must be in (0, 1]"),
            ("fixmatch_weight", self.fixmatch_weight,
             _is_finite(self.fixmatch_weight) and self.fixmatch_weight >= 0, "must be a finite number >= 0"),
            ("fixmatch_mu", self.fixmatch_mu, _is_int(self.fixmatch_mu, 1), "must be an integer >= 1"),
            ("fixmatch_lr", self.fixmatch_lr, _is_finite(self.fixmatch_lr) and self.fixmatch_lr > 0,
             "must be a finite number > 0"),
            ("fixmatch_epochs", self.fixmatch_epochs, _is_int(self.fixmatch_epochs, 0),
             "must be an integer >= 0"),
            ("fixmatch_warmup_epochs", self.fixmatch_warmup_epochs, _is_int(self.fixmatch_warmup_epochs, 0),
             "must be an integer >= 0"),
            ("fixmatch_label_smoothing", self.fixmatch_label_smoothing,
             _is_finite(self.fixmatch_label_smoothing) and 0 <= self.fixmatch_label_smoothing < 1,
             "must be in [0, 1)"),
            ("fixmatch_ema_decay", self.fixmatch_ema_decay,
             _is_finite(self.fixmatch_ema_decay) and 0 <= self.fixmatch_ema_decay < 1, "must be in [0, 1)"),
            ("model_name", self.model_name, self.model_name == "" or is_bare_name(self.model_name),
             f"must be empty or {BARE_NAME_RULE}"),
        ])


MIN_ANSWERS_PER_CLASS_TO_CHOOSE = 2
"""A choosing student needs at least this many answers per class before it trains on them to choose."""


def asks_in_pool_order(asked: np.ndarray, n_answered: int, warmup: int, n_classes: int | None) -> bool:
    """Whether a choosing student's (``query_selection = uncertainty``) next batch still follows pool order.

    It does while the ``asked`` positions are the pool's first ones and either fewer than ``warmup`` were
    asked or fewer than :data:`MIN_ANSWERS_PER_CLASS_TO_CHOOSE` × ``n_classes`` were answered (too few
    labels for the student that chooses; ``n_classes`` is ``None`` before the first batch is known).
    """
    is_pool_prefix = np.array_equal(asked, np.arange(len(asked)))
    min_answered = MIN_ANSWERS_PER_CLASS_TO_CHOOSE * (n_classes or 0)
    return is_pool_prefix and (len(asked) < warmup or n_answered < min_answered)


def _is_int(value: object, minimum: int) -> bool:
    """Whether ``value`` is an integer (not a bool) of at least ``minimum``."""
    return isinstance(value, (int, np.integer)) and not isinstance(value, bool) and value >= minimum


def _is_finite(value: object) -> bool:
    """Whether ``value`` is a real, finite number (not a bool)."""
    is_real = isinstance(value, (int, float, np.number)) and not isinstance(value, bool)
    return is_real and bool(np.isfinite(value))


def _check_rules(prefix: str, rules: list[tuple[str, object, bool, str]]) -> None:
    """Raise ``ValueError("<prefix>.<field>=<value>: <rule>")`` for the first rule that fails."""
    for name, value, ok, rule in rules:
        if not ok:
            raise ValueError(f"{prefix}.{name}={value!r}: {rule}")


def parse_teacher_ids(text: str) -> list[int]:
    """Parse ``"0,1,2"``, ``"0-9"`` or mixes like ``"0-4,10"`` into sorted teacher indices.

    Raises
    ------
    ValueError
        If the text is empty, malformed, or names a teacher twice.
    """
    ids: list[int] = []
    for part in (p.strip() for p in str(text).split(",")):
        if not part:
            continue
        try:
            if "-" in part:
                lo, hi = (int(v) for v in part.split("-", 1))
                if hi < lo:
                    raise ValueError
                ids.extend(range(lo, hi + 1))
            else:
                ids.append(int(part))
        except ValueError:
            raise ValueError(f"malformed teacher list {text!r}: expected e.g. '0,1,2' or '0-9'") from None
    if not ids:
        raise ValueError(f"teacher list {text!r} names no teacher")
    if len(set(ids)) != len(ids):
        raise ValueError(f"teacher list {text!r} names a teacher twice")
    return sorted(ids)


def node_role(node_config: dict[str, Any], num_teachers: int) -> tuple[str, list[int]]:
    """Return ``(role, hosted teacher indices)`` of a node from its ``node_config``.

    Raises
    ------
    ValueError
        If the node_config names an unknown role, a teacher index out of range, or is missing keys.
    """
    if "role" in node_config:
        role = str(node_config["role"])
        if role == ROLE_STUDENT:
            return role, []
        if role != ROLE_TEACHER:
            raise ValueError(f"node_config role must be 'teacher' or 'student', got {role!r}")
        if "teachers" not in node_config:
            raise ValueError("a teacher node needs node_config 'teachers' (e.g. teachers=\"0-9\")")
        ids = parse_teacher_ids(str(node_config["teachers"]))
        if ids[-1] >= num_teachers:
            raise ValueError(f"node hosts teacher {ids[-1]} but the run has only {num_teachers} teachers")
        return role, ids
    if "partition-id" not in node_config or "num-partitions" not in node_config:
        raise ValueError("node_config needs either 'role' (deployment) or 'partition-id' and "
                         f"'num-partitions' (simulation); got keys {sorted(node_config)}")
    pid, n_parts = int(node_config["partition-id"]), int(node_config["num-partitions"])
    if n_parts < 2:
        raise ValueError(f"a PATE simulation needs >= 2 nodes (teachers + student), got {n_parts}")
    if pid == n_parts - 1:
        return ROLE_STUDENT, []
    return ROLE_TEACHER, list(range(pid, num_teachers, n_parts - 1))


def array_record(**arrays: np.ndarray) -> ArrayRecord:
    """Pack named numpy arrays into one ``ArrayRecord``."""
    return ArrayRecord({name: Array(np.ascontiguousarray(value)) for name, value in arrays.items()})


def read_array(content: RecordDict, record: str, key: str) -> np.ndarray:
    """Read array ``key`` of ``ArrayRecord`` ``record`` from a message's content.

    Raises
    ------
    ValueError
        If the record or the array is missing (a malformed message).
    """
    if record not in content.array_records:
        raise ValueError(f"malformed message: no ArrayRecord {record!r} (has {sorted(content.keys())})")
    arrays = content.array_records[record]
    if key not in arrays:
        raise ValueError(f"malformed message: ArrayRecord {record!r} has no array {key!r}")
    return arrays[key].numpy()
