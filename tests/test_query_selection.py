"""The student chooses its questions (``student.query_selection = uncertainty``): what is asked, what is
charged, resuming, and the refusals of malformed choices."""

from __future__ import annotations

import json
import warnings

import numpy as np
import pytest
from flwr.app import Context, RecordDict

from clients.pate.query_selection import check_choice_inputs
from clients.pate.semi_supervised import select_queries
from clients.pate.sites import student_data
from clients.pate.student import STUDENT_SEED_OFFSET, train_student
from protocol.pate import DataSpec, ModelSpec, StudentSettings, asks_in_pool_order
from simulations.app import client_app
from strategies.accounting import PrivacyLedger, PrivacyWarning
from strategies.ensemble_distillation import EnsembleDistillation
from strategies.fusion import ConfidentGNMax, GNMax
from strategies.pate_replies import check_queries
from tests.fake_grid import InProcessGrid, simulation_nodes

DATA = DataSpec(dataset="digits", num_teachers=6, seed=3)
FAST = ModelSpec(epochs=15, batch_size=32)
CHOOSING = StudentSettings(method="supervised", query_selection="uncertainty", selection_warmup=40)


@pytest.fixture(autouse=True)
def _node_output_under_tmp(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", PrivacyWarning)
        yield


def run(tmp_path, grid, *, max_queries=120, resume=False):
    ledger = PrivacyLedger(tmp_path / "ledger.json", mechanism="gnmax", delta=1e-5, epsilon_budget=500.0,
                           sigma2=2.0) if not resume else PrivacyLedger.load(tmp_path / "ledger.json")
    return EnsembleDistillation(mechanism=GNMax(sigma2=2.0), ledger=ledger, data=DATA, teacher_model=FAST,
                                student_model=FAST, student=CHOOSING, query_batch_size=40,
                                max_queries=max_queries, seed=0, resume=resume).start(grid)


def query_requests(grid):
    return [m for m in grid.sent if m.metadata.message_type == "query.queries"]


def test_after_the_warmup_the_student_asks_about_what_it_is_least_sure_of(tmp_path):
    grid = InProcessGrid(client_app, simulation_nodes(3))
    report = run(tmp_path, grid).report
    requests = query_requests(grid)
    # the warmup batch by offset, then two batches the student chose (each told what was asked before)
    assert requests[0].content["request"]["offset"] == 0 and "select" not in requests[0].content["request"]
    assert [r.content["request"]["select"] for r in requests[1:]] == ["margin", "margin"]
    assert [len(r.content["chosen"]["asked"].numpy()) for r in requests[1:]] == [40, 80]
    ledger = PrivacyLedger.load(tmp_path / "ledger.json")
    ids = np.asarray(ledger.charged_query_ids)
    assert report["queries_checked"] == 120 and len(np.unique(ids)) == 120
    np.testing.assert_array_equal(ids[:40], np.arange(40))
    # the second batch is exactly the 40 least sure samples of a student trained on the first answers
    chosen = requests[1].content["chosen"]
    pool = student_data(Context(run_id=1, node_id=1, node_config={}, state=RecordDict(), run_config={}),
                        DATA).pool_x
    positions, labels = chosen["positions"].numpy(), chosen["labels"].numpy()
    model, _ = train_student(pool[positions], labels, pool[:0], 10, FAST,
                             seed=DATA.seed + STUDENT_SEED_OFFSET, method="supervised", settings=CHOOSING)
    np.testing.assert_array_equal(ids[40:80], select_queries(model, pool, 40, exclude=np.arange(40)))
    assert not np.array_equal(ids[40:80], np.arange(40, 80))


def test_a_resumed_choosing_run_asks_nothing_twice(tmp_path):
    run(tmp_path, InProcessGrid(client_app, simulation_nodes(3)), max_queries=80)
    first = np.asarray(PrivacyLedger.load(tmp_path / "ledger.json").charged_query_ids)
    again = InProcessGrid(client_app, simulation_nodes(3))
    report = run(tmp_path, again, max_queries=120, resume=True).report
    requests = query_requests(again)
    assert len(requests) == 1
    np.testing.assert_array_equal(requests[0].content["chosen"]["asked"].numpy(), first)
    ids = np.asarray(PrivacyLedger.load(tmp_path / "ledger.json").charged_query_ids)
    assert report["queries_checked"] == 120 and len(np.unique(ids)) == 120
    stored = json.loads((tmp_path / "ledger.json").read_text())
    assert [h["n_offered"] for h in stored["history"]] == [40, 40, 40]


def test_a_choice_that_repeats_an_asked_sample_or_leaves_the_pool_is_refused():
    x = np.zeros((2, 3), dtype=np.float32)
    assert "asked before" in check_queries(x, np.array([5, 7]), None, 2, 10, 3, None, asked=np.array([7]))
    assert "[0, 10)" in check_queries(x, np.array([5, 10]), None, 2, 10, 3, None, asked=np.array([1]))
    assert check_queries(x, np.array([5, 8]), None, 2, 10, 3, None, asked=np.array([7])) == ""


@pytest.mark.parametrize(("asked", "positions", "labels", "match"), [
    ([0, 1], [2], [0], "never asked"),
    ([0, 1], [1], [3], r"labels must lie in \[0, 3\), got \[3, 3\]"),
    ([0, 0], [0], [1], "asked positions must be distinct"),
    ([0, 12], [0], [1], r"asked positions must lie in \[0, 10\)"),
    ([0, 1], [0, 1], [1], "differ in shape"),
])
def test_the_student_refuses_malformed_answers_so_far(asked, positions, labels, match):
    with pytest.raises(ValueError, match=match):
        check_choice_inputs(np.array(asked), np.array(positions), np.array(labels), 10, 3)


def test_an_unknown_query_selection_is_refused():
    with pytest.raises(ValueError, match="query_selection must be one of"):
        StudentSettings(query_selection="random")
    with pytest.raises(ValueError, match="selection_warmup=0"):
        StudentSettings(selection_warmup=0)


def test_pool_order_requests_never_carry_answers(tmp_path):
    grid = InProcessGrid(client_app, simulation_nodes(3))
    EnsembleDistillation(mechanism=GNMax(sigma2=2.0), ledger=PrivacyLedger(
        tmp_path / "ledger.json", mechanism="gnmax", delta=1e-5, epsilon_budget=500.0, sigma2=2.0),
        data=DATA, teacher_model=FAST, student_model=FAST, student=StudentSettings(method="supervised"),
        query_batch_size=40, max_queries=80, seed=0).start(grid)
    assert [sorted(m.content.keys()) for m in query_requests(grid)] == [["data", "request"]] * 2


@pytest.mark.parametrize(("asked", "answered", "n_classes", "expected"), [
    (np.arange(0), 0, None, True),       # nothing asked yet: the first batch is by offset
    (np.arange(39), 39, 10, True),       # inside the warmup
    (np.arange(40), 19, 10, True),       # past it, but fewer than 2 answers per class
    (np.arange(40), 20, 10, False),      # past it with 2 answers per class: the student chooses
    (np.array([0, 5]), 2, 2, False),     # once it chose, never back to pool order
])
def test_a_choosing_student_waits_for_the_warmup_and_two_answers_per_class(asked, answered, n_classes,
                                                                            expected):
    assert asks_in_pool_order(asked, answered, 40, n_classes) is expected


def test_too_few_answers_after_the_warmup_keep_pool_order_instead_of_failing(tmp_path):
    # Prepare: a threshold even a unanimous vote of the 6 teachers passes only 18 % of the time
    grid = InProcessGrid(client_app, simulation_nodes(3))
    strategy = EnsembleDistillation(
        mechanism=ConfidentGNMax(threshold=6.9, sigma1=1.0, sigma2=2.0), data=DATA, teacher_model=FAST,
        student_model=FAST, student=CHOOSING, query_batch_size=40, max_queries=120, seed=0,
        ledger=PrivacyLedger(tmp_path / "ledger.json", mechanism="confident_gnmax", delta=1e-5,
                             epsilon_budget=500.0, sigma2=2.0, sigma1=1.0, threshold=6.9))
    # Execute
    report = strategy.start(grid).report
    # Assert: fewer than 2 answers per class by the last request, so every request stayed in pool order
    requests = query_requests(grid)
    assert report["queries_checked"] == 120 and 0 < report["answered"] < 20
    assert all("select" not in r.content["request"] for r in requests)
    assert [r.content["request"]["offset"] for r in requests] == [0, 40, 80]
