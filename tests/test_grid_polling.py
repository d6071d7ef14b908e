"""strategies.grid_utils.send_and_receive: Flower's push/pull contract with a short poll."""

from __future__ import annotations

import time

import pytest
from flwr.app import ConfigRecord, Message, RecordDict

from strategies.grid_utils import send_and_receive
from tests.fake_grid import task_identity


@pytest.fixture(autouse=True)
def _server_identity():
    with task_identity():
        yield


class SlowNodesGrid:
    """A grid double with Flower's push/pull API: node ``n``'s reply is ready ``delay[n]`` s after the push."""

    def __init__(self, delay: dict[int, float | None]) -> None:
        self.delay = delay
        self.pushed: dict[str, Message] = {}
        self.pulls = 0
        self.t0 = 0.0

    def push_messages(self, messages):
        self.t0 = time.monotonic()
        ids = []
        for i, msg in enumerate(messages):
            msg.metadata.__dict__["_message_id"] = f"m{i}"  # what Flower's grids set on push
            self.pushed[f"m{i}"] = msg
            ids.append(f"m{i}")
        return ids

    def pull_messages(self, message_ids):
        self.pulls += 1
        elapsed = time.monotonic() - self.t0
        ready = []
        for mid in list(message_ids):
            msg = self.pushed[mid]
            wait = self.delay[msg.metadata.dst_node_id]
            if wait is not None and elapsed >= wait:
                ready.append(Message(RecordDict({"c": ConfigRecord({"node": msg.metadata.dst_node_id})}),
                                     reply_to=msg))
        return ready


def messages(nodes):
    return [Message(RecordDict(), dst_node_id=n, message_type="query.describe") for n in nodes]


def test_replies_are_seen_within_a_poll_of_being_ready_not_three_seconds_later():
    grid = SlowNodesGrid({1: 0.0, 2: 0.3})
    t0 = time.monotonic()
    replies = send_and_receive(grid, messages([1, 2]), timeout=10.0)
    took = time.monotonic() - t0
    assert sorted(r.metadata.src_node_id for r in replies) == [1, 2]
    assert 0.3 <= took < 1.5 and grid.pulls >= 3  # Flower's deployment grid would have taken >= 3 s


def test_a_silent_node_is_missing_after_the_timeout_and_the_others_are_kept():
    grid = SlowNodesGrid({1: 0.0, 2: None})
    t0 = time.monotonic()
    replies = send_and_receive(grid, messages([1, 2]), timeout=0.5)
    assert 0.5 <= time.monotonic() - t0 < 2.0
    assert [r.metadata.src_node_id for r in replies] == [1]


def test_a_grid_without_push_keeps_its_own_send_and_receive_and_a_bad_poll_is_refused():
    class Plain:
        def send_and_receive(self, msgs, *, timeout):
            return [Message(RecordDict(), reply_to=m) for m in msgs]

    assert len(send_and_receive(Plain(), messages([1, 2, 3]), timeout=1.0)) == 3
    with pytest.raises(ValueError, match="poll_s must be > 0, got 0"):
        send_and_receive(Plain(), messages([1]), timeout=1.0, poll_s=0)
