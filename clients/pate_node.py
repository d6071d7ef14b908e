"""What every PATE node answers, whatever its role: ``query.describe``."""

from __future__ import annotations

from flwr.app import ConfigRecord, Context, Message, RecordDict

from protocol.codec import from_record
from protocol.pate import DataSpec, node_role


def handle_describe(msg: Message, context: Context) -> Message:
    """``query.describe``: this node's role and the teachers it hosts."""
    data_spec = from_record(DataSpec, msg.content["data"])
    role, teachers = node_role(dict(context.node_config), data_spec.num_teachers)
    reply = ConfigRecord({"role": role, "teachers": teachers, "num_hosted": len(teachers)})
    return Message(RecordDict({"role": reply}), reply_to=msg)
