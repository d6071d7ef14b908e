"""Student node of ensemble-label distillation, and the local ``predict`` entry point.

The student owns unlabeled samples (its query pool) and a held-out labelled validation and test
set. It hands out batches of its samples to be labelled (``query.queries``), receives the fused
labels (``train.student``), trains its own model on them — optionally also on its unanswered
samples, by confident self-training or by FixMatch consistency training (``clients.pate.semi_supervised``),
which costs no privacy because no teacher sees them — evaluates, and saves the model (weights + JSON
metadata, ``clients.pate.student_model``) for local serving::

    python -m clients.pate.student predict --model runs/x/student_model.json --input X.npy [--output y.npy]
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import numpy as np
import torch
from flwr.app import ConfigRecord, Context, Message, RecordDict

from clients.encoders import Classifier
from clients.node_output import node_file
from clients.pate.node import check_student
from clients.pate.semi_supervised import FixMatchConfig, train_fixmatch
from clients.pate.sites import student_data
from clients.pate.student_model import main, save_student
from clients.pate.teacher_ensemble import new_teacher_model, train_teacher_alone
from clients.progress_log import WorkMeter
from clients.training import TrainConfig, accuracy, predict_logits, train_classifier
from protocol.codec import from_record
from protocol.pate import (
    STUDENT_METHODS,
    DataSpec,
    ModelSpec,
    StudentSettings,
    read_array,
)

STUDENT_SEED_OFFSET = 7  # student seed = data seed + 7: its weights and batches apart from the split's draw


def self_train_labels(
    model: Classifier, x_unlabeled: np.ndarray, confidence: float
) -> tuple[np.ndarray, np.ndarray]:
    """Pseudo-labels of ``model`` on ``x_unlabeled``, kept where softmax confidence >= ``confidence``.

    Returns ``(indices into x_unlabeled, labels)``.
    """
    if len(x_unlabeled) == 0:
        return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64)
    probs = torch.softmax(torch.from_numpy(predict_logits(model, x_unlabeled)), dim=1).numpy()
    keep = np.flatnonzero(probs.max(axis=1) >= confidence)
    return keep, probs[keep].argmax(axis=1).astype(np.int64)


def fixmatch_config(settings: StudentSettings, spec: ModelSpec) -> FixMatchConfig:
    """The :class:`~clients.pate.semi_supervised.FixMatchConfig` of ``settings``'s ``fixmatch_*`` fields.

    Batch size and weight decay are the student model's (``spec``).
    """
    return FixMatchConfig(
        epochs=settings.fixmatch_epochs, batch_size=spec.batch_size, mu=settings.fixmatch_mu,
        lr=settings.fixmatch_lr, weight_decay=spec.weight_decay, threshold=settings.fixmatch_threshold,
        weight=settings.fixmatch_weight, label_smoothing=settings.fixmatch_label_smoothing,
        warmup_epochs=settings.fixmatch_warmup_epochs, ema_decay=settings.fixmatch_ema_decay,
        weak_shift=settings.fixmatch_weak_shift, strong_shift=settings.fixmatch_strong_shift,
        strong_noise=settings.fixmatch_strong_noise, strong_scale=settings.fixmatch_strong_scale,
        cutout=settings.fixmatch_cutout)


def train_student(
    x_labeled: np.ndarray,
    y_labeled: np.ndarray,
    x_unlabeled: np.ndarray,
    n_classes: int,
    spec: ModelSpec,
    *,
    seed: int,
    self_training_confidence: float | None = None,
    method: str | None = None,
    settings: StudentSettings | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> tuple[Classifier, int]:
    """Train the student on fused labels, optionally using its unlabeled samples too.

    ``method=None`` (the default) keeps the original behaviour: supervised training, then, with a
    ``self_training_confidence``, retraining with the pseudo-labels that confident. ``method`` names one
    of :data:`~protocol.pate.STUDENT_METHODS` explicitly: ``supervised`` ignores ``x_unlabeled``;
    ``self_training`` uses ``self_training_confidence`` or else ``settings.self_training_confidence``;
    ``fixmatch`` trains once with FixMatch (Sohn et al. 2020, Eq. 2-4) on all of ``x_unlabeled``, with
    the ``fixmatch_*`` fields of ``settings`` (default :class:`~protocol.pate.StudentSettings`).

    Returns the model and the number of pseudo-labelled samples: those added by self-training, or for
    FixMatch the unlabeled samples at or above its threshold in the last epoch.

    ``progress(done, total)``, if given, follows the training without changing it: FixMatch's optimiser
    steps, else epochs (self-training counts both of its trainings; it may end after the first).

    Raises
    ------
    ValueError
        If there is no labelled sample or ``method`` is unknown.
    """
    if len(y_labeled) == 0:
        raise ValueError("the student received no answered query: nothing to train on "
                         "(budget too small, or the threshold rejected every query)")
    if method is not None and method not in STUDENT_METHODS:
        raise ValueError(f"student method must be one of {STUDENT_METHODS}, got {method!r}")
    settings = settings if settings is not None else StudentSettings()

    def new_model() -> Classifier:  # initialised from ``seed``: a rerun trains the same student
        return new_teacher_model(tuple(x_labeled.shape[1:]), n_classes, spec, seed=seed)

    if method == "fixmatch":
        model = new_model()
        stats = train_fixmatch(model, x_labeled, y_labeled, x_unlabeled, fixmatch_config(settings, spec),
                               seed=seed, progress=progress)
        return model, stats.confident
    if method == "supervised":
        self_training_confidence = None
    elif method == "self_training" and self_training_confidence is None:
        self_training_confidence = settings.self_training_confidence
    config = TrainConfig(epochs=spec.epochs, batch_size=spec.batch_size, lr=spec.lr,
                         weight_decay=spec.weight_decay)

    trainings = 1 if self_training_confidence is None else 2

    def fit(x: np.ndarray, y: np.ndarray, before: int) -> Classifier:
        count = None if progress is None else (
            lambda epoch, epochs: progress(before * epochs + epoch, trainings * epochs))
        if spec.augment_shift > 0:  # the teachers' loop: minibatches randomly shifted (clients.pate.augment)
            return train_teacher_alone(x, y, n_classes, spec, seed=seed, progress=count)
        model = new_model()
        train_classifier(model, x, y, config, seed=seed, progress=count)
        return model

    model = fit(x_labeled, y_labeled, 0)
    if self_training_confidence is None:
        return model, 0
    keep, pseudo = self_train_labels(model, x_unlabeled, self_training_confidence)
    if len(keep) == 0:
        return model, 0
    model = fit(np.concatenate([x_labeled, x_unlabeled[keep]]), np.concatenate([y_labeled, pseudo]), 1)
    return model, len(keep)


def handle_train(msg: Message, context: Context) -> Message:
    """``train.student``: train on the fused labels, evaluate, save; reply with metrics.

    ``settings.method`` picks the training (:func:`train_student`); ``fixmatch`` uses every unanswered
    pool sample as unlabeled data, and its ``pseudo_labelled`` metric counts the unlabeled samples at
    or above its threshold in the last epoch. The training's progress goes to ``clients.progress_log``.

    ``fused_label_accuracy`` compares the fused labels with the pool's ground truth: a measurement
    the student can make only when its pool comes from a labelled bundled dataset (NaN for a student
    with its own ``data-file``, whose pool is unlabeled).
    """
    data_spec = from_record(DataSpec, msg.content["data"])
    check_student(context, data_spec)
    model_spec = from_record(ModelSpec, msg.content["model"])
    settings = from_record(StudentSettings, msg.content["student"])
    privacy = dict(msg.content["privacy"]) if "privacy" in msg.content else {}
    meter = WorkMeter("student", "steps" if settings.method == "fixmatch" else "epochs")
    meter.note("preparing data")
    data = student_data(context, data_spec)
    positions = read_array(msg.content, "labels", "positions").astype(np.int64)
    labels = read_array(msg.content, "labels", "labels").astype(np.int64)
    if positions.shape != labels.shape or positions.ndim != 1:
        raise ValueError(f"positions and labels must be 1-D of one length, got {positions.shape} "
                         f"and {labels.shape}")
    if len(positions) and (positions.min() < 0 or positions.max() >= len(data.pool_x)):
        raise ValueError(f"label positions must lie in [0, {len(data.pool_x)}), got "
                         f"[{positions.min()}, {positions.max()}]")
    if len(np.unique(positions)) != len(positions):
        raise ValueError("label positions must be distinct: a query was labelled twice")
    if len(labels) and (labels.min() < 0 or labels.max() >= data.n_classes):
        raise ValueError(f"labels must lie in [0, {data.n_classes}), got [{labels.min()}, {labels.max()}]")
    unlabeled = np.setdiff1d(np.arange(len(data.pool_x)), positions)
    confidence = settings.self_training_confidence if settings.method == "self_training" else 0.0
    meter.begin(message=f"{settings.method} on {len(labels)} answered queries, {len(unlabeled)} unlabeled "
                "samples")
    model, n_pseudo = train_student(
        data.pool_x[positions], labels, data.pool_x[unlabeled], data.n_classes, model_spec,
        seed=data_spec.seed + STUDENT_SEED_OFFSET,
        self_training_confidence=confidence if confidence > 0 else None,
        method="fixmatch" if settings.method == "fixmatch" else None, settings=settings, progress=meter)
    meter.finish()
    if data.pool_y is None:
        fused_accuracy = float("nan")
    else:
        fused_accuracy = float(np.mean(data.pool_y[positions] == labels)) if len(labels) else 0.0
    metrics = {
        "answered": len(labels),
        "pseudo_labelled": n_pseudo,
        "fused_label_accuracy": fused_accuracy,
        "validation_accuracy": accuracy(model, data.val_x, data.val_y),
        "test_accuracy": accuracy(model, data.test_x, data.test_y),
    }
    if settings.model_name:
        save_student(model, node_file(context, settings.model_name, "student.model_name"), {
            "classes": data.class_labels,
            "input_shape": list(data.schema.input_shape),
            "model": dataclasses.asdict(model_spec),
            "dataset": data_spec.dataset,
            "privacy": privacy,
            "metrics": metrics,
        })
    return Message(RecordDict({"metrics": ConfigRecord(metrics)}), reply_to=msg)


if __name__ == "__main__":
    raise SystemExit(main())
