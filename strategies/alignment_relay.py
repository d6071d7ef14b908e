"""The server's message relay of the ID-alignment phase (:mod:`strategies.alignment`).

:class:`Relay` sends one ``query.psi_*`` message per party through the Flower ``Grid`` and waits for
all replies; :func:`reply_field` reads one field of a reply. A party that does not reply within the
timeout, replies with an error or sends a malformed reply becomes an :class:`AlignmentError` naming the
party and the protocol step. It speaks only the wire vocabulary of :mod:`protocol.psi`.
"""

from __future__ import annotations

from typing import Any

from flwr.app import ConfigRecord, Message, RecordDict
from flwr.serverapp import Grid

from protocol.psi import ALIGNMENT_ID_KEY, CONTENT_KEY, has_field_type, message_type
from strategies.grid_utils import node_error, send_and_receive

Config = dict[str, Any]
"""The fields of one message's ``ConfigRecord``."""


class AlignmentError(RuntimeError):
    """The alignment phase failed; nothing was committed (or the commit was rolled back).

    Attributes
    ----------
    node_id : int or None
        The party that failed, if one did.
    step : str
        The protocol step (message action, e.g. ``"psi_setup"``).
    """

    def __init__(self, message: str, *, step: str, node_id: int | None = None) -> None:
        super().__init__(message)
        self.node_id = node_id
        self.step = step


class Relay:
    """Send one message per node, wait for all replies, turn faults into :class:`AlignmentError`."""

    def __init__(self, grid: Grid, alignment_id: str, timeout: float) -> None:
        self.grid = grid
        self.alignment_id = alignment_id
        self.timeout = timeout
        self.bytes_relayed = 0

    def exchange(
        self, requests: dict[int, tuple[str, Config]], timeout: float | None = None
    ) -> dict[int, Config]:
        """Send ``{node: (action, fields)}``; return ``{node: reply fields}``."""
        wait = self.timeout if timeout is None else timeout
        messages = []
        for node_id, (action, fields) in requests.items():
            content = RecordDict({CONTENT_KEY: ConfigRecord({ALIGNMENT_ID_KEY: self.alignment_id, **fields})})
            messages.append(
                Message(
                    content,
                    dst_node_id=node_id,
                    message_type=message_type(action),
                    group_id=self.alignment_id,
                )
            )
        replies = {
            reply.metadata.src_node_id: reply for reply in send_and_receive(self.grid, messages, timeout=wait)
        }
        out: dict[int, Config] = {}
        for node_id, (action, _) in requests.items():
            reply = replies.get(node_id)
            if reply is None:
                raise AlignmentError(
                    f"party {node_id} did not reply to {action} within {wait:g} s",
                    step=action,
                    node_id=node_id,
                )
            if reply.has_error():
                reason = node_error(reply.error.reason)
                error = AlignmentError(f"party {node_id} failed at {action}: {reason}", step=action,
                                       node_id=node_id)
                error.add_note(f"the node's error reply: {reply.error.reason}")
                raise error
            if CONTENT_KEY not in reply.content.config_records:
                raise AlignmentError(
                    f"party {node_id} sent a malformed {action} reply", step=action, node_id=node_id
                )
            out[node_id] = dict(reply.content.config_records[CONTENT_KEY])
        return out

    def one(self, node_id: int, action: str, fields: Config) -> Config:
        """Send one ``action`` to ``node_id``; return its reply fields."""
        return self.exchange({node_id: (action, fields)})[node_id]


def reply_field(reply: Config, key: str, kind: type, step: str, node_id: int) -> Any:
    """``reply[key]``, checked to be of ``kind``; else an :class:`AlignmentError` naming ``step`` and the
    party."""
    value = reply.get(key)
    if not has_field_type(value, kind):
        raise AlignmentError(
            f"party {node_id} sent a malformed {step} reply ({key!r})", step=step, node_id=node_id
        )
    return value
