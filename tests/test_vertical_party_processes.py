"""The per-party-process harness: its pipe Grid carries Flower messages both ways, the phase boundary, and a
tiny run whose accuracies equal the in-process run's, every party and the server metered apart."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from multiprocessing import Pipe
from pathlib import Path

import pytest
from flwr.app import ConfigRecord, Message, RecordDict

from benchmarks import vertical_party_processes as harness
from benchmarks.vertical_party_memory import training_start
from benchmarks.vertical_scale import scale_run
from clients.vertical.data import SYNTHETIC_USERS
from tests.fake_grid import task_identity


@pytest.fixture(autouse=True)
def _identity() -> Iterator[None]:
    with task_identity():
        yield


def test_pipe_grid_sends_flower_messages_and_reads_the_replies() -> None:
    ours, theirs = Pipe()

    def node() -> None:  # a party answering one message, through the same serialisation
        message = harness._from_bytes(theirs.recv_bytes())
        content = RecordDict({"echo": ConfigRecord({"x": message.content["q"]["x"] + 1})})
        theirs.send_bytes(harness._to_bytes(Message(content, reply_to=message)))

    thread = threading.Thread(target=node)
    thread.start()
    grid = harness.PipeGrid({7: ours})
    out = Message(RecordDict({"q": ConfigRecord({"x": 41})}), dst_node_id=7, message_type="query.vfl_align")
    (reply,) = grid.send_and_receive([out], timeout=30)
    thread.join()
    assert grid.get_node_ids() == [7] and reply.content["echo"]["x"] == 42
    assert reply.metadata.src_node_id == 7 and [kind for _, kind in grid.sent] == ["query.vfl_align"]


def test_training_starts_with_the_first_message_after_the_last_alignment() -> None:
    sent = [(1.0, "query.vfl_describe"), (2.0, "query.vfl_align"), (2.1, "query.vfl_align"), (3.0, "train.x")]
    assert training_start(sent) == 3.0 and training_start(sent[:3]) is None  # the server's messages here


def test_a_tiny_run_in_separate_processes_equals_the_in_process_run(monkeypatch, tmp_path: Path) -> None:
    monkeypatch.setitem(SYNTHETIC_USERS, "synthetic10k", 900)  # the exported party files: 63 aligned users
    row = harness.process_run("synthetic10k", "vfl_head_fusion", 0, 1, tmp_path, interval=0.1)
    direct = scale_run("synthetic10k", "vfl_head_fusion", 0, 1, "ecdh")
    assert row["test"] == direct["test"] and row["val"] == direct["val"]
    assert row["alignment"]["backend"] == "ecdh" and row["n_aligned"] == direct["n_aligned"] == 63
    assert set(row["memory"]) == {"party0", "party1", "server"}
    parties = [row["memory"][p]["peak_process_mb"] for p in ("party0", "party1")]
    assert all(mb > row["memory"]["server"]["peak_process_mb"] for mb in parties)  # torch and data at parties
    assert row["memory"]["party0"]["by_command"]  # the hook or the poller saw the party's process
