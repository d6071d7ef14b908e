"""What every PATE node answers, whatever its role: ``query.describe``, and ``query.prepare`` for the
student."""

from __future__ import annotations

import hashlib
import time

import numpy as np
from flwr.app import ConfigRecord, Context, Message, RecordDict

from clients.pate.sites import describe_data, student_data
from protocol.codec import from_record
from protocol.pate import ROLE_STUDENT, DataSpec, node_role


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
