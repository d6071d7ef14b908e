"""What a PATE node answers without torch: ``query.describe`` (every node), and the student's
``query.prepare`` and ``query.queries`` (in a deployment each message is a new process: these import no
model code)."""

from __future__ import annotations

import hashlib
import time

import numpy as np
from flwr.app import ConfigRecord, Context, Message, RecordDict

from clients.pate.sites import describe_data, student_data
from protocol.codec import from_record
from protocol.pate import ROLE_STUDENT, DataSpec, array_record, node_role


def handle_describe(msg: Message, context: Context) -> Message:
    """``query.describe``: this node's role, the teachers it hosts, and what its samples are (input shape,
    feature schema, class names: ``clients.pate.sites.describe_data``), so the server can refuse sites
    that disagree. A missing or malformed site file fails here, before anything trains; bundled data is
    described without being built (that is :func:`handle_prepare`'s step)."""
    data_spec = from_record(DataSpec, msg.content["data"])
    role, teachers = node_role(dict(context.node_config), data_spec.num_teachers)
    reply = ConfigRecord({"role": role, "teachers": teachers, "num_hosted": len(teachers),
                          **describe_data(context, data_spec, role)})
    return Message(RecordDict({"role": reply}), reply_to=msg)


def pool_digest(pool_x: np.ndarray) -> str:
    """SHA-256 of the student's pool (shape and float32 bytes): what the ledger binds its paid labels to."""
    pool = np.ascontiguousarray(pool_x, dtype=np.float32)
    return hashlib.sha256(repr(pool.shape).encode() + pool.tobytes()).hexdigest()


def handle_prepare(msg: Message, context: Context) -> Message:
    """``query.prepare``: the student builds (or loads from the machine's data cache) its pool and held-out
    sets, so that every later ``query.queries`` reads them in well under its step timeout, and reports the
    pool's size and SHA-256 (:func:`pool_digest`). The server sends it beside ``train.teachers``, with the
    training timeout.

    Raises
    ------
    ValueError
        If this node is not the run's student.
    """
    data_spec = from_record(DataSpec, msg.content["data"])
    role, _ = node_role(dict(context.node_config), data_spec.num_teachers)
    if role != ROLE_STUDENT:
        raise ValueError(f"query.prepare goes to the student node; this node's role is {role!r}")
    start = time.perf_counter()
    data = student_data(context, data_spec)
    reply = ConfigRecord({"pool_size": len(data.pool_x), "pool_sha256": pool_digest(data.pool_x),
                          "prepare_s": time.perf_counter() - start})
    return Message(RecordDict({"prepared": reply}), reply_to=msg)


def check_student(context: Context, data_spec: DataSpec) -> None:
    """Refuse a student message at a node that is not the run's student."""
    role, _ = node_role(dict(context.node_config), data_spec.num_teachers)
    if role != ROLE_STUDENT:
        raise ValueError(f"this node's role is {role!r}; student messages go to the student node only")


def handle_queries(msg: Message, context: Context) -> Message:
    """``query.queries``: return pool samples ``[offset, offset + count)`` (fewer at the pool's end), or,
    with ``request.select``, the samples the student chooses (:mod:`clients.pate.query_selection`, which
    imports torch: only that request pays for it)."""
    data_spec = from_record(DataSpec, msg.content["data"])
    check_student(context, data_spec)
    if "select" in msg.content["request"]:
        from clients.pate.query_selection import handle_chosen_queries

        return handle_chosen_queries(msg, context)
    offset, count = int(msg.content["request"]["offset"]), int(msg.content["request"]["count"])
    if offset < 0 or count < 1:
        raise ValueError(f"query request needs offset >= 0 and count >= 1, got {offset} and {count}")
    data = student_data(context, data_spec)
    chosen = data.pool_x[offset:offset + count]
    content = RecordDict({
        "queries": array_record(x=chosen, positions=np.arange(offset, offset + len(chosen))),
        "meta": ConfigRecord({"pool_size": len(data.pool_x), "n_classes": data.n_classes}),
    })
    return Message(content, reply_to=msg)
