"""What every PATE node answers, whatever its role: ``query.describe``."""

from __future__ import annotations

from flwr.app import ConfigRecord, Context, Message, RecordDict

from clients.pate_sites import describe_data
from protocol.codec import from_record
from protocol.pate import DataSpec, node_role


def handle_describe(msg: Message, context: Context) -> Message:
    """``query.describe``: this node's role, the teachers it hosts, and what its samples are (input shape,
    feature schema, class names: ``clients.pate_sites.describe_data``), so the server can refuse sites
    that disagree. A missing or malformed site file fails here, before anything trains."""
    data_spec = from_record(DataSpec, msg.content["data"])
    role, teachers = node_role(dict(context.node_config), data_spec.num_teachers)
    reply = ConfigRecord({"role": role, "teachers": teachers, "num_hosted": len(teachers),
                          **describe_data(context, data_spec, role)})
    return Message(RecordDict({"role": reply}), reply_to=msg)
