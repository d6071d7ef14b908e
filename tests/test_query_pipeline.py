"""The pipelined query phase (``pipeline_queries``): the student's next request goes out with the teachers'
votes, and the run asks, charges and labels exactly what the sequential order does."""

from __future__ import annotations

import json
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from flwr.app import Error, Message, RecordDict

from protocol.pate import DataSpec, ModelSpec, StudentSettings, array_record
from simulations.app import client_app
from strategies.accounting import PrivacyLedger, PrivacyWarning
from strategies.ensemble_distillation import EnsembleDistillation
from strategies.fusion import GNMax
from strategies.pate_queries import QueryRider
from tests.fake_grid import InProcessGrid, simulation_nodes, task_identity

DATA = DataSpec(dataset="digits", num_teachers=6, seed=3)
FAST = ModelSpec(epochs=15, batch_size=32)
POOL_ORDER = StudentSettings(method="supervised", model_name="")


@pytest.fixture(autouse=True)
def _quiet(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # nodes without node_config output-dir write under ./privkit-output
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", PrivacyWarning)
        yield


def run(workdir: Path, grid: InProcessGrid, *, pipeline: bool, budget: float = 500.0,
        student: StudentSettings = POOL_ORDER, max_queries: int = 120) -> dict[str, Any]:
    """One GNMax run with pinned noise and its ledger in ``workdir``; the report."""
    workdir.mkdir(exist_ok=True)
    ledger = PrivacyLedger(workdir / "ledger.json", mechanism="gnmax", delta=1e-5, epsilon_budget=budget,
                           sigma2=2.0)
    return EnsembleDistillation(mechanism=GNMax(sigma2=2.0), ledger=ledger, data=DATA, teacher_model=FAST,
                                student_model=FAST, student=student, query_batch_size=40,
                                max_queries=max_queries, seed=0, pipeline_queries=pipeline).start(grid).report


def query_rounds(grid: InProcessGrid) -> list[list[str]]:
    """The message types of each round of the query phase (``query.queries`` with its pool offset)."""
    def name(msg: Message) -> str:
        request = msg.content["request"] if msg.metadata.message_type == "query.queries" else {}
        return f"query.queries@{request['offset']}" if "offset" in request else msg.metadata.message_type
    return [[name(m) for m in r] for r in grid.rounds
            if any(m.metadata.message_type in ("query.queries", "query.votes") for m in r)]


def voted_queries(grid: InProcessGrid) -> list[np.ndarray]:
    """The query samples of each ``query.votes`` message, in the order sent."""
    return [m.content["queries"]["x"].numpy() for m in grid.sent if m.metadata.message_type == "query.votes"]


def ledger_contents(workdir: Path) -> dict[str, Any]:
    """The ledger file without the time of each charge (and the hashes chained over it), and its vote rows."""
    stored = json.loads((workdir / "ledger.json").read_text())
    stored["history"] = [{k: v for k, v in entry.items() if k not in ("time", "hash", "prev_hash")}
                         for entry in stored["history"]]
    with np.load(workdir / "ledger.json.votes.npz") as rows:
        stored["votes_sidecar"] = {name: rows[name].tolist() for name in rows.files}
    return stored


def student_labels(grid: InProcessGrid) -> RecordDict:
    return next(m for m in grid.sent if m.metadata.message_type == "train.student").content["labels"]


def assert_same_outcome(pipelined: tuple[Path, InProcessGrid], sequential: tuple[Path, InProcessGrid]) -> None:
    """Same queries voted on, same charges and ledger file, same labels to the student."""
    (dir_p, grid_p), (dir_s, grid_s) = pipelined, sequential
    for x_p, x_s in zip(voted_queries(grid_p), voted_queries(grid_s), strict=True):
        np.testing.assert_array_equal(x_p, x_s)
    assert ledger_contents(dir_p) == ledger_contents(dir_s)
    for key in ("positions", "labels"):
        np.testing.assert_array_equal(student_labels(grid_p)[key].numpy(), student_labels(grid_s)[key].numpy())


def test_the_next_request_goes_with_the_votes_and_the_outcome_is_the_sequential_one(tmp_path):
    # Execute: the same run, pipelined and sequential
    grid_p, grid_s = (InProcessGrid(client_app, simulation_nodes(3)) for _ in range(2))
    report_p = run(tmp_path / "pipelined", grid_p, pipeline=True)
    report_s = run(tmp_path / "sequential", grid_s, pipeline=False)
    # Assert: the first batch is fetched alone; each later request rides with the votes before it, none after
    # the last batch (max_queries); sequentially every request waits for the votes before it
    votes = ["query.votes", "query.votes"]
    assert query_rounds(grid_p) == [["query.queries@0"], [*votes, "query.queries@40"],
                                    [*votes, "query.queries@80"], votes]
    assert query_rounds(grid_s) == [["query.queries@0"], votes, ["query.queries@40"], votes,
                                    ["query.queries@80"], votes]
    assert report_p["queries_checked"] == report_s["queries_checked"] == 120
    assert_same_outcome((tmp_path / "pipelined", grid_p), (tmp_path / "sequential", grid_s))


def test_a_budget_stop_discards_the_prefetched_batch(tmp_path):
    # Execute: a budget that cuts the first batch short, pipelined and sequential
    grid_p, grid_s = (InProcessGrid(client_app, simulation_nodes(3)) for _ in range(2))
    report_p = run(tmp_path / "pipelined", grid_p, pipeline=True, budget=8.0)
    run(tmp_path / "sequential", grid_s, pipeline=False, budget=8.0)
    # Assert: the request for queries 40.. went out with the votes, but its batch was never voted on nor charged
    assert query_rounds(grid_p) == [["query.queries@0"], ["query.votes", "query.votes", "query.queries@40"]]
    assert len(voted_queries(grid_p)) == 2 and report_p["queries_checked"] < 40
    assert max(PrivacyLedger.load(tmp_path / "pipelined" / "ledger.json").charged_query_ids) < 40
    assert_same_outcome((tmp_path / "pipelined", grid_p), (tmp_path / "sequential", grid_s))


def test_the_student_asks_alone_once_it_may_choose(tmp_path):
    # 80 queries in pool order (selection_warmup), then the student's choice, which needs the answers first
    choosing = StudentSettings(method="supervised", model_name="", query_selection="uncertainty",
                               selection_warmup=80)
    grid_p, grid_s = (InProcessGrid(client_app, simulation_nodes(3)) for _ in range(2))
    run(tmp_path / "pipelined", grid_p, pipeline=True, student=choosing, max_queries=160)
    run(tmp_path / "sequential", grid_s, pipeline=False, student=choosing, max_queries=160)
    votes = ["query.votes", "query.votes"]
    assert query_rounds(grid_p) == [["query.queries@0"], [*votes, "query.queries@40"], votes, ["query.queries"],
                                    votes, ["query.queries"], votes]
    assert_same_outcome((tmp_path / "pipelined", grid_p), (tmp_path / "sequential", grid_s))


@pytest.mark.parametrize("pipeline", [True, False], ids=["pipelined", "sequential"])
def test_a_malformed_prefetched_batch_stops_the_run_after_the_batch_before_it(tmp_path, pipeline):
    # Prepare: the student repeats a query id in its second batch of queries (pool positions 40..79)
    grid = InProcessGrid(client_app, simulation_nodes(3))

    def repeat_an_id(reply: Message) -> Message:
        if reply.metadata.message_type != "query.queries" or reply.content["queries"]["positions"].numpy()[0] != 40:
            return reply
        positions = reply.content["queries"]["positions"].numpy().copy()
        positions[1] = positions[0]
        content = RecordDict({"queries": array_record(x=reply.content["queries"]["x"].numpy(), positions=positions),
                              "meta": reply.content["meta"]})
        return Message(content, reply_to=grid.sent[-1])

    grid.faulty[1002] = repeat_an_id
    # Execute / Assert: the batch is refused when it is due, before any teacher sees it; batch 1 stays charged
    with pytest.raises(RuntimeError, match="node 1002 \\(student\\): malformed query reply: query ids must be "
                                           "distinct, got id 40 at rows 0 and 1"):
        run(tmp_path / "run", grid, pipeline=pipeline)
    np.testing.assert_array_equal(PrivacyLedger.load(tmp_path / "run" / "ledger.json").charged_query_ids,
                                  np.arange(40))
    assert len(voted_queries(grid)) == 2


def test_the_superlink_error_for_the_student_request_is_set_aside_with_it():
    # Prepare: a round's messages, pushed (the grid gave them ids); the student's node went away
    with task_identity():
        request = Message(RecordDict(), dst_node_id=1002, message_type="query.queries")
        votes = Message(RecordDict(), dst_node_id=1000, message_type="query.votes")
        request.metadata.__dict__["_message_id"], votes.metadata.__dict__["_message_id"] = "q", "v"
        teacher_reply = Message(RecordDict(), reply_to=votes)
        teacher_reply.metadata.__dict__["_src_node_id"] = 1000
        unavailable = Message(Error(code=3, reason="node 1002 unavailable"), reply_to=request)
        unavailable.metadata.__dict__["_src_node_id"] = 1  # the SuperLink answers for it
    rider = QueryRider(request, offset=40, count=40, sent=True)
    # Execute / Assert: the error is the request's reply, not an unattributed error among the votes
    assert rider.take_reply([teacher_reply, unavailable], student=1002) == [teacher_reply]
    assert rider.reply is unavailable
