"""Teacher node of ensemble-label distillation: trains its hosted teachers, answers vote queries.

A node hosts one or more teachers (``protocol.pate.node_role``). Each teacher trains on its
own disjoint shard only and never leaves the node: its weights live in ``context.state`` under
``teacher.<index>``. A vote query carries a whole batch of student samples; the reply carries the
node's per-query vote histogram over its hosted teachers (``(Q, C)`` counts), so per-teacher
predictions never leave the node.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import torch
from flwr.app import ArrayRecord, ConfigRecord, Context, Message, RecordDict

from clients.data import load_pate_data
from clients.encoders import Classifier, build_classifier
from clients.training import TrainConfig, accuracy, check_inputs, predict_logits, train_classifier
from protocol.codec import from_record
from protocol.pate import ROLE_TEACHER, DataSpec, ModelSpec, array_record, node_role, read_array

STATE_PREFIX = "teacher."


def _hosted_teachers(context: Context, data_spec: DataSpec) -> list[int]:
    role, teachers = node_role(dict(context.node_config), data_spec.num_teachers)
    if role != ROLE_TEACHER:
        raise ValueError(f"this node's role is {role!r}; teacher messages go to teacher nodes only")
    return teachers


def _new_model(input_shape: tuple[int, ...], n_classes: int, spec: ModelSpec) -> Classifier:
    return build_classifier(input_shape, n_classes, kind=spec.encoder, feature_dim=spec.feature_dim,
                            hidden=spec.hidden)


def train_teacher(
    x: np.ndarray, y: np.ndarray, n_classes: int, spec: ModelSpec, *, seed: int
) -> Classifier:
    """Train one teacher on its own shard ``(x, y)`` only."""
    model = _new_model(tuple(x.shape[1:]), n_classes, spec)
    config = TrainConfig(epochs=spec.epochs, batch_size=spec.batch_size, lr=spec.lr,
                         weight_decay=spec.weight_decay)
    train_classifier(model, x, y, config, seed=seed)
    return model


def vote_histogram(models: list[Classifier], x: np.ndarray, n_classes: int) -> np.ndarray:
    """Per-query vote counts ``(Q, C)`` of ``models`` on ``x`` (each model casts one vote)."""
    votes = np.zeros((len(x), n_classes), dtype=np.int64)
    rows = np.arange(len(x))
    for model in models:
        np.add.at(votes, (rows, predict_logits(model, x).argmax(axis=1)), 1)
    return votes


def handle_train(msg: Message, context: Context) -> Message:
    """``train.teachers``: train every hosted teacher on its shard; reply with per-teacher metrics.

    The reported test accuracy is a *measurement* on the run's held-out test split (available
    because, in this setting, every party derives its data from one dataset); it plays no part in
    training or answering.
    """
    data_spec = from_record(DataSpec, msg.content["data"])
    model_spec = from_record(ModelSpec, msg.content["model"])
    teachers = _hosted_teachers(context, data_spec)
    data, split = load_pate_data(**dataclasses.asdict(data_spec))
    test_x, test_y = data.x[split.test], data.y[split.test]
    accuracies, sizes = [], []
    for t in teachers:
        shard = split.teacher_shards[t]
        model = train_teacher(data.x[shard], data.y[shard], data.n_classes, model_spec,
                              seed=data_spec.seed * 100_003 + t)
        context.state[f"{STATE_PREFIX}{t}"] = ArrayRecord(model.state_dict())
        accuracies.append(accuracy(model, test_x, test_y))
        sizes.append(len(shard))
    reply = ConfigRecord({"teacher_ids": teachers, "test_accuracy": accuracies, "train_size": sizes})
    return Message(RecordDict({"metrics": reply}), reply_to=msg)


def handle_votes(msg: Message, context: Context) -> Message:
    """``query.votes``: the node's vote histogram over its hosted teachers for a batch of samples.

    Raises
    ------
    ValueError
        If the batch has the wrong shape or non-finite values (named in the message).
    RuntimeError
        If a hosted teacher has not been trained on this node (``train.teachers`` never ran).
    """
    data_spec = from_record(DataSpec, msg.content["data"])
    model_spec = from_record(ModelSpec, msg.content["model"])
    teachers = _hosted_teachers(context, data_spec)
    data, _ = load_pate_data(**dataclasses.asdict(data_spec))
    queries = check_inputs(read_array(msg.content, "queries", "x"), data.input_shape, "query samples")
    models = []
    for t in teachers:
        key = f"{STATE_PREFIX}{t}"
        if key not in context.state:
            raise RuntimeError(f"teacher {t} is not trained on this node (no {key!r} in its state)")
        model = _new_model(data.input_shape, data.n_classes, model_spec)
        model.load_state_dict(context.state[key].to_torch_state_dict())
        models.append(model)
    with torch.inference_mode():
        votes = vote_histogram(models, queries, data.n_classes)
    content = RecordDict({
        "votes": array_record(votes=votes),
        "meta": ConfigRecord({"teacher_ids": teachers}),
    })
    return Message(content, reply_to=msg)
