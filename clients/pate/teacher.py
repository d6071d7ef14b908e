"""Teacher node of ensemble-label distillation: trains its hosted teachers, answers vote queries.

A node hosts one or more teachers (``protocol.pate.node_role``). Each teacher trains on its
own disjoint shard only and never leaves the node. The node trains its teachers as one batched
ensemble (``clients.pate.teacher_ensemble``); the stacked weights live in ``context.state``, one
``ArrayRecord`` per chunk (``teacher.chunk.<j>``, each array ``(K_j, *shape)``) and a ``ConfigRecord``
``teacher.ensemble`` naming each chunk's teacher ids. A vote query carries a whole batch of student
samples; the reply carries the node's per-query vote histogram over its hosted teachers (``(Q, C)``
counts), computed by one vectorised forward per chunk, so per-teacher predictions never leave the node.
"""

from __future__ import annotations

import secrets

import numpy as np
import torch
from flwr.app import ConfigRecord, Context, Message, RecordDict

from clients.encoders import Classifier
from clients.pate.local_rr import randomised_histogram
from clients.pate.sites import teacher_data, teacher_inputs, teacher_pool
from clients.pate.teacher_ensemble import (
    DEFAULT_CHUNK,
    TeacherChunk,
    TeacherEnsemble,
    new_teacher_model,
    train_ensemble,
    train_teacher_alone,
)
from clients.pate.teacher_fixmatch import train_fixmatch_ensemble
from clients.pate.teacher_pseudo_label import train_pseudo_label_ensemble
from clients.progress_log import WorkMeter, format_duration
from clients.training import check_inputs, predict_logits
from protocol.codec import from_record
from protocol.local_rr import LDP
from protocol.pate import (
    ROLE_TEACHER,
    DataSpec,
    ModelSpec,
    TeacherSettings,
    array_record,
    node_role,
    read_array,
)

STATE_PREFIX = "teacher."
STATE_INDEX = "teacher.ensemble"  # ConfigRecord: num_chunks, chunk.<j> = that chunk's teacher ids
CHUNK_NODE_SETTING = "teacher-chunk"  # optional node_config key: teachers trained as one batch


def _hosted_teachers(context: Context, data_spec: DataSpec) -> list[int]:
    role, teachers = node_role(dict(context.node_config), data_spec.num_teachers)
    if role != ROLE_TEACHER:
        raise ValueError(f"this node's role is {role!r}; teacher messages go to teacher nodes only")
    return teachers


def _chunk_size(context: Context) -> int:
    value = context.node_config.get(CHUNK_NODE_SETTING, DEFAULT_CHUNK)
    try:
        chunk = int(value)
    except (TypeError, ValueError):
        chunk = 0
    if chunk < 1:
        raise ValueError(f"node_config {CHUNK_NODE_SETTING!r} must be an integer >= 1, got {value!r}")
    return chunk


def train_teacher(
    x: np.ndarray, y: np.ndarray, n_classes: int, spec: ModelSpec, *, seed: int
) -> Classifier:
    """Train one teacher on its own shard ``(x, y)`` only (``clients.pate.teacher_ensemble``'s reference)."""
    return train_teacher_alone(x, y, n_classes, spec, seed=seed)


def vote_histogram(models: list[Classifier], x: np.ndarray, n_classes: int) -> np.ndarray:
    """Per-query vote counts ``(Q, C)`` of ``models`` on ``x`` (each model casts one vote)."""
    votes = np.zeros((len(x), n_classes), dtype=np.int64)
    rows = np.arange(len(x))
    for model in models:
        np.add.at(votes, (rows, predict_logits(model, x).argmax(axis=1)), 1)
    return votes


def _store(context: Context, ensemble: TeacherEnsemble) -> None:
    """Keep the stacked weights in ``context.state``: one ArrayRecord per chunk plus an index."""
    index = {"num_chunks": len(ensemble.chunks)}
    for j, c in enumerate(ensemble.chunks):
        context.state[f"{STATE_PREFIX}chunk.{j}"] = array_record(
            **{name: p.numpy() for name, p in c.params.items()})
        index[f"chunk.{j}"] = list(c.teacher_ids)
    context.state[STATE_INDEX] = ConfigRecord(index)


def _load(context: Context, teachers: list[int], input_shape: tuple[int, ...], n_classes: int,
          spec: ModelSpec) -> TeacherEnsemble:
    trained: list[int] = []
    chunks = []
    if STATE_INDEX in context.state:
        index = context.state[STATE_INDEX]
        for j in range(int(index["num_chunks"])):
            ids = [int(t) for t in index[f"chunk.{j}"]]
            arrays = context.state[f"{STATE_PREFIX}chunk.{j}"]
            chunks.append(TeacherChunk(ids, {k: torch.from_numpy(arrays[k].numpy()) for k in arrays}))
            trained.extend(ids)
    for t in teachers:
        if t not in trained:
            raise RuntimeError(f"teacher {t} is not trained on this node (no {STATE_INDEX!r} entry for it "
                               "in its state)")
    if sorted(trained) != sorted(teachers):
        raise RuntimeError(f"this node's state holds teachers {sorted(trained)}, it hosts {teachers}")
    return TeacherEnsemble(new_teacher_model(input_shape, n_classes, spec, seed=0), chunks)


def handle_train(msg: Message, context: Context) -> Message:
    """``train.teachers``: train every hosted teacher on its shard; reply with per-teacher metrics.

    The ``teacher_training`` record (``protocol.pate.TeacherSettings``) says how: ``supervised`` on the
    shard alone, or ``pseudo_label``, which then trains each teacher on with its own confident labels of
    its seeded subset of the student's unlabelled pool (``clients.pate.teacher_pseudo_label``; the pool is
    rebuilt from the bundled split, ``clients.pate.sites.teacher_pool``), or ``fixmatch``
    (``clients.pate.teacher_fixmatch``). The reply's ``pseudo_labels`` counts each teacher's confident
    pseudo-labels (``pseudo_label`` only; 0 otherwise).

    The hosted teachers train as one batched ensemble (``clients.pate.teacher_ensemble``, at most
    ``node_config['teacher-chunk']`` at a time), each on its own shard with its own seed and the
    ModelSpec's ``augment_shift``; a node with a ``data-file`` deals its own samples out
    (``clients.pate.sites``). The reported test and validation accuracies are *measurements* on the run's
    held-out splits (available only when every party derives its data from one bundled dataset; no
    teacher trains on them; NaN at a site); they play no part in training or answering. The training's
    progress goes to ``clients.progress_log``.
    """
    data_spec = from_record(DataSpec, msg.content["data"])
    model_spec = from_record(ModelSpec, msg.content["model"])
    settings = from_record(TeacherSettings, msg.content["teacher_training"])
    teachers = _hosted_teachers(context, data_spec)
    meter = WorkMeter("teachers", "teacher-epochs")
    meter.note(f"preparing data for {len(teachers)} teachers")
    data = teacher_data(context, data_spec, teachers)
    shards = data.shards
    if settings.method == "supervised":
        meter.begin(len(teachers) * model_spec.epochs,
                    f"training {len(teachers)} teachers x {model_spec.epochs} epochs")
        ensemble = train_ensemble(data.x, data.y, shards, teachers, data.n_classes, model_spec,
                                  data_seed=data_spec.seed, chunk=_chunk_size(context), progress=meter)
        pseudo_labels = [0] * len(teachers)
    else:
        pool = teacher_pool(context, data_spec)
        epochs = model_spec.epochs + settings.pseudo_label_epochs
        meter.begin(len(teachers) * epochs,
                    f"training {len(teachers)} teachers x {model_spec.epochs} epochs, then x "
                    f"{settings.pseudo_label_epochs} with pseudo-labels of the {len(pool)}-sample pool")
        if settings.method == "pseudo_label":
            ensemble, labels = train_pseudo_label_ensemble(
                data.x, data.y, shards, teachers, data.n_classes, model_spec, settings, pool,
                data_seed=data_spec.seed, chunk=_chunk_size(context), progress=meter)
            counts = dict(zip(labels.teacher_ids, labels.counts(), strict=True))
            pseudo_labels = [counts[t] for t in teachers]
        else:
            ensemble = train_fixmatch_ensemble(data.x, data.y, shards, teachers, data.n_classes, model_spec,
                                               settings, pool, data_seed=data_spec.seed,
                                               chunk=_chunk_size(context), progress=meter)
            pseudo_labels = [0] * len(teachers)  # FixMatch's targets change every step: none to count
    meter.finish(f"trained in {format_duration(meter.elapsed)}; measuring accuracies")
    _store(context, ensemble)
    order = [ensemble.teacher_ids.index(t) for t in teachers]
    test = data.accuracies(ensemble, "test")
    validation = data.accuracies(ensemble, "validation")
    reply = ConfigRecord({
        "teacher_ids": teachers,
        "test_accuracy": [test[i] for i in order],
        "validation_accuracy": [validation[i] for i in order],
        "train_size": [len(s) for s in shards],
        "pseudo_labels": pseudo_labels,
    })
    return Message(RecordDict({"metrics": reply}), reply_to=msg)


def _ensemble_and_queries(msg: Message, context: Context) -> tuple[TeacherEnsemble, np.ndarray, int]:
    """The hosted ensemble, the message's checked query batch and the class count."""
    data_spec = from_record(DataSpec, msg.content["data"])
    model_spec = from_record(ModelSpec, msg.content["model"])
    teachers = _hosted_teachers(context, data_spec)
    input_shape, n_classes = teacher_inputs(context, data_spec)
    queries = check_inputs(read_array(msg.content, "queries", "x"), input_shape, "query samples")
    return _load(context, teachers, input_shape, n_classes, model_spec), queries, n_classes


def hosted_predictions(msg: Message, context: Context) -> tuple[np.ndarray, int]:
    """Every hosted teacher's predicted class ``(K, Q)`` on the message's query batch, and the class count.

    Never leaves the node: the local randomised response (``clients.pate.secagg``) builds on it.

    Raises
    ------
    ValueError
        If the batch has the wrong shape or non-finite values (named in the message).
    RuntimeError
        If a hosted teacher has not been trained on this node (``train.teachers`` never ran).
    """
    ensemble, queries, n_classes = _ensemble_and_queries(msg, context)
    return ensemble.predictions(queries), n_classes


def hosted_votes(msg: Message, context: Context) -> np.ndarray:
    """The node's vote histogram ``(Q, C)`` over its hosted teachers for the message's query batch.

    Raises
    ------
    ValueError, RuntimeError
        As :func:`hosted_predictions`.
    """
    ensemble, queries, n_classes = _ensemble_and_queries(msg, context)
    return ensemble.vote_histogram(queries, n_classes)


def handle_votes(msg: Message, context: Context) -> Message:
    """``query.votes``: the node's vote histogram over its hosted teachers for a batch of samples.

    With a ``ldp`` ConfigRecord (``{"epsilon": ε}``) each teacher's vote first goes through k-ary
    randomised response (``clients.pate.local_rr``): the histogram counts ε-LDP votes.

    Raises
    ------
    ValueError
        If the batch has the wrong shape or non-finite values (named in the message).
    RuntimeError
        If a hosted teacher has not been trained on this node (``train.teachers`` never ran).
    """
    data_spec = from_record(DataSpec, msg.content["data"])
    teachers = _hosted_teachers(context, data_spec)
    if LDP in msg.content.config_records:  # every vote through randomised response before it is counted
        predictions, n_classes = hosted_predictions(msg, context)
        votes = randomised_histogram(predictions, n_classes, float(msg.content[LDP]["epsilon"]),
                                     np.random.default_rng(secrets.randbits(128)))
    else:
        votes = hosted_votes(msg, context)
    content = RecordDict({
        "votes": array_record(votes=votes),
        "meta": ConfigRecord({"teacher_ids": teachers}),
    })
    return Message(content, reply_to=msg)
