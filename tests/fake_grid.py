"""An in-process stand-in for Flower's Grid: delivers messages to a ClientApp without Ray.

Each node has its own ``Context`` (``node_config`` and a persistent ``state``), exactly as a
SuperNode keeps one per run. A handler that raises becomes an error reply with code 2, as in Flower;
nodes listed in ``silent`` never reply (a vanished node); ``faulty`` maps a node to a function that
may replace its reply (a malformed message); ``broken`` maps a node to the reason of the error reply
it gives instead of running its handler (a failed node). ``sent`` lists every message sent, ``rounds`` the
messages of each ``send_and_receive`` call (what went out at once).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterable, Iterator

from flwr.app import Context, Error, Message, RecordDict
from flwr.clientapp import ClientApp
from flwr.supercore.task_identity import TaskIdentity


class InProcessGrid:
    """Minimal Grid: ``get_node_ids`` and ``send_and_receive``."""

    def __init__(self, client_app: ClientApp, node_configs: dict[int, dict]) -> None:
        TaskIdentity.run_id, TaskIdentity.task_id, TaskIdentity.node_id = 1, 1, 0  # what a ServerApp has set
        self.client_app = client_app
        self.contexts = {
            node: Context(run_id=1, node_id=node, node_config=dict(cfg), state=RecordDict(), run_config={})
            for node, cfg in node_configs.items()
        }
        self.silent: set[int] = set()
        self.faulty: dict[int, Callable[[Message], Message]] = {}
        self.broken: dict[int, str] = {}
        self.sent: list[Message] = []
        self.rounds: list[list[Message]] = []

    def get_node_ids(self) -> list[int]:
        return list(self.contexts)

    def send_and_receive(self, messages: Iterable[Message], *, timeout: float | None = None) -> list[Message]:
        replies = []
        self.rounds.append([])
        for msg in messages:
            self.sent.append(msg)
            self.rounds[-1].append(msg)
            node = msg.metadata.dst_node_id
            if node in self.silent:
                continue
            if node in self.broken:
                replies.append(Message(Error(code=2, reason=self.broken[node]), reply_to=msg))
                continue
            try:
                reply = self.client_app(msg, self.contexts[node])
            except Exception as err:  # noqa: BLE001 - Flower turns any handler error into an error reply
                reply = Message(Error(code=2, reason=f"{type(err).__name__}: {err}"), reply_to=msg)
            if node in self.faulty:
                reply = self.faulty[node](reply)
            replies.append(reply)
        return replies


def simulation_nodes(num_nodes: int, first_id: int = 1000) -> dict[int, dict]:
    """Node configs as Flower's simulation gives them (partition-id / num-partitions), node IDs from
    ``first_id`` on."""
    return {first_id + i: {"partition-id": i, "num-partitions": num_nodes} for i in range(num_nodes)}


@contextlib.contextmanager
def task_identity(run_id: int = 1, task_id: int = 1, node_id: int = 1) -> Iterator[None]:
    """Give Flower's ``Message`` the task identity a ServerApp process has, then restore the previous one.

    Outside a ServerApp (in a test) ``Message`` needs one; wrap a test in this (e.g. in an autouse
    fixture) so tests do not leak it to each other.
    """
    saved = (TaskIdentity._task_id, TaskIdentity._run_id, TaskIdentity._node_id)
    TaskIdentity.task_id, TaskIdentity.run_id, TaskIdentity.node_id = task_id, run_id, node_id
    try:
        yield
    finally:
        TaskIdentity._task_id, TaskIdentity._run_id, TaskIdentity._node_id = saved
