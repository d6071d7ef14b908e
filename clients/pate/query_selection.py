"""The student's own choice of its next questions (``query.queries`` with ``select``): uncertainty sampling.

Before a batch, the student trains a supervised model on the labels answered so far and asks about the
pool samples that model is least sure of (:func:`clients.pate.semi_supervised.select_queries`, margin;
the interactive student of Papernot et al. 2018, Section 4.3). It never asks about a sample it asked
before: each asked sample was charged to the ledger, answered or not.
"""

from __future__ import annotations

import numpy as np
from flwr.app import ConfigRecord, Context, Message, RecordDict

from clients.pate.semi_supervised import select_queries
from clients.pate.sites import student_data
from clients.pate.student import STUDENT_SEED_OFFSET, train_student
from protocol.codec import from_record
from protocol.pate import DataSpec, ModelSpec, StudentSettings, array_record, read_array


def check_choice_inputs(asked: np.ndarray, positions: np.ndarray, labels: np.ndarray, pool_size: int,
                        n_classes: int) -> None:
    """Refuse what the server sent for a choice: asked and answered positions in the pool, distinct,
    every answered one asked, labels in ``[0, n_classes)``.

    Raises
    ------
    ValueError
        Naming the first problem and its values.
    """
    for name, ids in (("asked", asked), ("answered", positions)):
        if ids.ndim != 1 or not np.issubdtype(ids.dtype, np.integer):
            raise ValueError(f"{name} positions must be 1-D ints, got shape {ids.shape} dtype {ids.dtype}")
        if len(ids) and (ids.min() < 0 or ids.max() >= pool_size):
            raise ValueError(f"{name} positions must lie in [0, {pool_size}), got [{ids.min()}, "
                             f"{ids.max()}]")
        if len(np.unique(ids)) != len(ids):
            raise ValueError(f"{name} positions must be distinct")
    if labels.shape != positions.shape:
        raise ValueError(f"answered positions {positions.shape} and labels {labels.shape} differ in shape")
    if len(labels) and (labels.min() < 0 or labels.max() >= n_classes):
        raise ValueError(f"labels must lie in [0, {n_classes}), got [{labels.min()}, {labels.max()}]")
    if not np.isin(positions, asked).all():
        raise ValueError("an answered position was never asked")


def choose_queries(
    pool_x: np.ndarray, asked: np.ndarray, positions: np.ndarray, labels: np.ndarray, n_classes: int,
    count: int, spec: ModelSpec, settings: StudentSettings, *, seed: int, strategy: str = "margin",
) -> np.ndarray:
    """Up to ``count`` pool positions the student asks about next, none of them ``asked`` before.

    A supervised student (``spec``, ``settings``; seeded from the run's ``seed`` as the student that
    learns from the final labels) trains on the ``labels`` answered at pool ``positions``; the unasked
    pool samples it is least sure of come first (:func:`clients.pate.semi_supervised.select_queries` by
    ``strategy``). Whether the student chooses at all is the caller's rule
    (:func:`protocol.pate.asks_in_pool_order`).
    """
    model, _ = train_student(pool_x[positions], labels, pool_x[:0], n_classes, spec,
                             seed=seed + STUDENT_SEED_OFFSET, method="supervised", settings=settings)
    return select_queries(model, pool_x, count, strategy=strategy, exclude=asked)


def handle_chosen_queries(msg: Message, context: Context) -> Message:
    """``query.queries`` with ``request.select``: up to ``request.count`` pool samples the student chose.

    The message carries the ``asked`` positions and the ``answered`` positions with their labels (array
    record ``chosen``), and the student's ``model`` and ``student`` settings; the reply is shaped as for
    pool order (``queries``: ``x`` and ``positions``; ``meta``).

    Raises
    ------
    ValueError
        If ``count`` < 1, the selection is unknown, or the positions or labels are malformed.
    """
    data_spec = from_record(DataSpec, msg.content["data"])
    request = msg.content["request"]
    count, select = int(request["count"]), str(request["select"])
    if count < 1:
        raise ValueError(f"query request needs count >= 1, got {count}")
    if select != "margin":
        raise ValueError(f"query request select must be 'margin', got {select!r}")
    spec = from_record(ModelSpec, msg.content["model"])
    settings = from_record(StudentSettings, msg.content["student"])
    data = student_data(context, data_spec)
    asked = read_array(msg.content, "chosen", "asked")
    positions = read_array(msg.content, "chosen", "positions")
    labels = read_array(msg.content, "chosen", "labels")
    check_choice_inputs(asked, positions, labels, len(data.pool_x), data.n_classes)
    chosen = choose_queries(data.pool_x, asked, positions, labels, data.n_classes, count, spec, settings,
                            seed=data_spec.seed, strategy=select)
    content = RecordDict({
        "queries": array_record(x=data.pool_x[chosen], positions=chosen),
        "meta": ConfigRecord({"pool_size": len(data.pool_x), "n_classes": data.n_classes}),
    })
    return Message(content, reply_to=msg)
