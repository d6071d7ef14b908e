"""EnsembleDistillation driven over an in-process grid: phases, accounting, faults and error paths."""

from __future__ import annotations

import json
import warnings

import numpy as np
import pytest
from flwr.app import Error, Message, RecordDict

from clients.pate.student_model import predict
from protocol.pate import DataSpec, ModelSpec, StudentSettings, array_record
from simulations.app import client_app
from strategies.accounting import BudgetExhaustedError, PrivacyLedger, PrivacyWarning
from strategies.ensemble_distillation import EnsembleDistillation, EnsembleTooSmallError
from strategies.fusion import ConfidentGNMax, GNMax, Majority
from tests.fake_grid import InProcessGrid, simulation_nodes

DATA = DataSpec(dataset="digits", num_teachers=6, seed=3)
FAST = ModelSpec(epochs=15, batch_size=32)


@pytest.fixture(autouse=True)
def _node_output_under_tmp(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # nodes without node_config output-dir write under ./privkit-output


@pytest.fixture(autouse=True)
def _quiet_edge_warnings():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", PrivacyWarning)
        yield


def make_strategy(tmp_path, *, mechanism=None, budget=500.0, ledger_path=None, **kwargs):
    mechanism = mechanism or GNMax(sigma2=2.0)
    ledger = None
    if not isinstance(mechanism, Majority):
        params = {"sigma2": mechanism.sigma2} if isinstance(mechanism, GNMax) else {
            "sigma2": mechanism.sigma2, "sigma1": mechanism.sigma1, "threshold": mechanism.threshold}
        ledger = PrivacyLedger(ledger_path or tmp_path / "ledger.json", mechanism=mechanism.name, delta=1e-5,
                               epsilon_budget=budget, **params)
    kwargs.setdefault("student", StudentSettings(method="supervised", model_name="student"))
    kwargs.setdefault("seed", 0)  # pinned noise, so the run's numbers are the same every time
    return EnsembleDistillation(mechanism=mechanism, ledger=ledger, data=DATA, teacher_model=FAST,
                                student_model=FAST, query_batch_size=40, max_queries=120, **kwargs)


def test_full_run_labels_student_and_bills_privacy(tmp_path):
    # Prepare
    grid = InProcessGrid(client_app, simulation_nodes(3))
    strategy = make_strategy(tmp_path)
    # Execute
    result = strategy.start(grid)
    report = result.report
    # Assert
    assert report["queries_checked"] == 120 and report["answered"] == 120
    assert report["teachers_remaining"] == 6 and set(report["teachers"]) == {str(t) for t in range(6)}
    assert 0 < report["epsilon_data_dependent"] <= report["epsilon_data_independent"] < np.inf
    stored = json.loads((tmp_path / "ledger.json").read_text())
    assert stored["queries_checked"] == 120 and [h["n_offered"] for h in stored["history"]] == [40, 40, 40]
    # the labels the student was sent are stored with their charge, and survive a reload
    sent = next(m for m in grid.sent if m.metadata.message_type == "train.student").content["labels"]
    paid_ids, paid_labels = PrivacyLedger.load(tmp_path / "ledger.json").paid_labels()
    np.testing.assert_array_equal(paid_ids, sent["positions"].numpy())
    np.testing.assert_array_equal(paid_labels, sent["labels"].numpy())
    assert report["student"]["fused_label_accuracy"] > 0.6
    assert report["student"]["test_accuracy"] > 0.5
    meta = json.loads((tmp_path / "privkit-output" / "student.json").read_text())
    assert meta["privacy"]["epsilon_data_dependent"] == pytest.approx(report["epsilon_data_dependent"])
    # one vote message per teacher node per batch, never per sample
    votes_sent = [m for m in grid.sent if m.metadata.message_type == "query.votes"]
    assert len(votes_sent) == 2 * 3
    labels = predict(tmp_path / "privkit-output" / "student.json", np.zeros((4, 8, 8), dtype=np.float32))
    assert labels.shape == (4,)


def test_failed_teacher_node_leaves_ensemble_and_accounting_counts_the_rest(tmp_path):
    grid = InProcessGrid(client_app, simulation_nodes(3))
    failing = 1001  # hosts teachers 1, 3, 5

    def fail_votes(reply: Message) -> Message:
        if reply.metadata.message_type == "query.votes":
            return Message(Error(code=2, reason="ValueError: disk gone"), reply_to=grid.sent[-1])
        return reply

    grid.faulty[failing] = fail_votes
    result = make_strategy(tmp_path).start(grid)
    assert result.report["teachers_remaining"] == 3
    assert "disk gone" in result.report["dropped_nodes"][str(failing)]
    history = json.loads((tmp_path / "ledger.json").read_text())["history"]
    assert [h["n_teachers"] for h in history] == [3.0, 3.0, 3.0]


@pytest.mark.parametrize(
    ("fault", "expected"),
    [
        ("silent", "no reply to voting within 120 s"),
        ("bad_shape", "malformed vote histogram: expected shape"),
        ("bad_sum", "malformed vote histogram: each row must sum"),
        ("missing_record", "malformed vote histogram: malformed message"),
        ("extra_class", "malformed vote histogram: expected 10 class columns, got 11"),
        ("missing_class", "malformed vote histogram: expected 10 class columns, got 9"),
        ("float_nan", "malformed vote histogram: counts must be non-negative integers, got dtype float64 with NaN"),
        ("negative", "malformed vote histogram: counts must be non-negative integers, got -1"),
        ("rank3", "malformed vote histogram: expected shape"),
        ("above_hosted", "malformed vote histogram: each row must sum to the node's 3 teachers"),
    ],
)
def test_faulty_node_is_dropped_with_reason(tmp_path, fault, expected):
    grid = InProcessGrid(client_app, simulation_nodes(3))
    node = 1000

    def corrupt(reply: Message) -> Message:
        if reply.metadata.message_type != "query.votes":
            return reply
        votes = reply.content["votes"]["votes"].numpy()
        nan = votes.astype(np.float64)
        nan[0, 0] = np.nan
        negative = votes.copy()
        negative[0, :2] = [-1, negative[0, 1] + negative[0, 0] + 1]
        above = votes.copy()
        above[:, 0] += 1
        bad = {"bad_shape": votes[:-1], "bad_sum": votes * 2,
               "extra_class": np.hstack([votes, np.zeros((len(votes), 1), votes.dtype)]),
               "missing_class": votes[:, :-1], "float_nan": nan, "negative": negative,
               "rank3": votes[:, :, None], "above_hosted": above}.get(fault)
        content = RecordDict() if bad is None else RecordDict({"votes": array_record(votes=bad)})
        return Message(content, reply_to=grid.sent[-1])

    if fault == "silent":
        grid.faulty[node] = lambda r: r
        original = grid.send_and_receive

        def drop_votes(messages, *, timeout=None):
            messages = list(messages)
            if messages and messages[0].metadata.message_type == "query.votes":
                grid.silent.add(node)
            return original(messages, timeout=timeout)

        grid.send_and_receive = drop_votes
    else:
        grid.faulty[node] = corrupt
    report = make_strategy(tmp_path).start(grid).report
    assert expected in report["dropped_nodes"][str(node)]
    assert report["teachers_remaining"] == 3


def test_below_min_teachers_stops_with_clear_error(tmp_path):
    grid = InProcessGrid(client_app, simulation_nodes(3))
    grid.silent.add(1000)
    with pytest.raises(EnsembleTooSmallError, match=r"only 3 teachers remain \(min_teachers=4\)"):
        make_strategy(tmp_path, min_teachers=4).start(grid)


def test_budget_cuts_the_stream_and_a_reloaded_exhausted_ledger_refuses(tmp_path):
    grid = InProcessGrid(client_app, simulation_nodes(3))
    report = make_strategy(tmp_path, budget=8.0).start(grid).report
    stored = json.loads((tmp_path / "ledger.json").read_text())
    assert stored["exhausted"] is True
    assert report["queries_checked"] == stored["queries_checked"] < 120
    assert report["answered"] > 0 and report["epsilon_data_dependent"] <= 8.0
    # The same teachers' ledger, reloaded for another run, is never reset.
    with pytest.raises(BudgetExhaustedError, match="privacy budget exhausted"):
        make_strategy(tmp_path, budget=8.0).start(InProcessGrid(client_app, simulation_nodes(3)))


def test_a_budget_that_answers_nothing_is_a_clear_error(tmp_path):
    with pytest.raises(RuntimeError, match=r"no query was answered \(0 checked\)"):
        make_strategy(tmp_path, budget=1.0).start(InProcessGrid(client_app, simulation_nodes(3)))


def test_confident_gnmax_answers_only_confident_queries(tmp_path):
    grid = InProcessGrid(client_app, simulation_nodes(3))
    mech = ConfidentGNMax(threshold=5.5, sigma1=0.5, sigma2=0.5)
    report = make_strategy(tmp_path, mechanism=mech).start(grid).report
    stored = json.loads((tmp_path / "ledger.json").read_text())
    assert report["queries_checked"] == 120
    assert 0 < report["answered"] == stored["queries_answered"] < 120
    assert report["student"]["fused_label_accuracy"] > 0.9  # only (near-)unanimous queries pass


def test_majority_baseline_runs_without_ledger(tmp_path):
    report = make_strategy(tmp_path, mechanism=Majority()).start(
        InProcessGrid(client_app, simulation_nodes(3))).report
    assert report["epsilon_data_dependent"] == np.inf and report["answered"] == 120


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"mechanism": Majority(), "ledger": object()}, "a ledger is required"),
        ({"mechanism": GNMax(sigma2=1.0), "ledger": None}, "a ledger is required"),
        ({"query_batch_size": 0}, "query_batch_size must be >= 1"),
        ({"min_teachers": 7}, r"min_teachers must be in \[1, 6\]"),
    ],
)
def test_constructor_rejects_bad_settings(tmp_path, kwargs, match):
    base = {"mechanism": GNMax(sigma2=1.0),
            "ledger": PrivacyLedger(None, mechanism="gnmax", delta=1e-5, epsilon_budget=5, sigma2=1.0)}
    with pytest.raises(ValueError, match=match):
        EnsembleDistillation(data=DATA, teacher_model=FAST, student_model=FAST, **{**base, **kwargs})


@pytest.mark.parametrize(
    ("configs", "match"),
    [
        ({1: {"role": "teacher", "teachers": "0-2"}, 2: {"role": "teacher", "teachers": "2-5"},
          3: {"role": "student"}}, r"teachers \[2\] are hosted by more than one node"),
        ({1: {"role": "teacher", "teachers": "0-5"}}, "exactly one student node, found 0"),
        ({1: {"role": "teacher", "teachers": "0-5"}, 2: {"role": "student"}, 3: {"role": "student"}},
         "exactly one student node, found 2"),
        # a teachers= range outside the run stops it at describe, naming the node (it was dropped, and the
        # run went on without those teachers)
        ({1: {"role": "teacher", "teachers": "0-9"}, 2: {"role": "student"}},
         r"node 1 could not describe itself: .*node hosts teacher 9 but the run has only 6 teachers.*nothing "
         r"was trained or charged"),
    ],
)
def test_deployment_roles_are_checked(tmp_path, configs, match):
    with pytest.raises(RuntimeError, match=match):
        make_strategy(tmp_path).start(InProcessGrid(client_app, configs))


def test_a_run_whose_student_failed_resumes_without_asking_or_charging_again(tmp_path):
    # Prepare: the first run charges 80 queries, then its student fails: the labels it paid for are kept
    student = 1002
    grid = InProcessGrid(client_app, simulation_nodes(3))

    def fail_training(reply: Message) -> Message:
        if reply.metadata.message_type == "train.student":
            return Message(Error(code=2, reason="RuntimeError: out of memory"), reply_to=grid.sent[-1])
        return reply

    grid.faulty[student] = fail_training
    with pytest.raises(RuntimeError, match="out of memory"):
        EnsembleDistillation(
            mechanism=GNMax(sigma2=2.0), ledger=PrivacyLedger(tmp_path / "ledger.json", mechanism="gnmax",
                                                             delta=1e-5, epsilon_budget=500.0, sigma2=2.0),
            data=DATA, teacher_model=FAST, student_model=FAST, query_batch_size=40, max_queries=80,
            student=StudentSettings(method="supervised")).start(grid)
    first_ids, first_labels = PrivacyLedger.load(tmp_path / "ledger.json").paid_labels()
    assert len(first_ids) == 80

    # Execute: the restarted server resumes on the same ledger, up to 120 queries
    again = InProcessGrid(client_app, simulation_nodes(3))
    report = make_strategy(tmp_path, resume=True).start(again).report

    # Assert: only positions 80..119 were asked and charged; the student got all 120 labels
    asked = [m.content["request"]["offset"] for m in again.sent if m.metadata.message_type == "query.queries"]
    assert asked == [80] and report["queries_checked"] == 120
    stored = json.loads((tmp_path / "ledger.json").read_text())
    assert [h["n_offered"] for h in stored["history"]] == [40, 40, 40]
    sent = next(m for m in again.sent if m.metadata.message_type == "train.student").content["labels"]
    np.testing.assert_array_equal(sent["positions"].numpy(), np.arange(120))
    np.testing.assert_array_equal(sent["labels"].numpy()[:80], first_labels)


def test_resuming_an_exhausted_ledger_trains_the_student_on_what_was_paid(tmp_path):
    make_strategy(tmp_path, budget=8.0).start(InProcessGrid(client_app, simulation_nodes(3)))
    paid_ids, _ = PrivacyLedger.load(tmp_path / "ledger.json").paid_labels()
    again = InProcessGrid(client_app, simulation_nodes(3))
    report = make_strategy(tmp_path, budget=8.0, resume=True).start(again).report
    assert not [m for m in again.sent if m.metadata.message_type == "query.votes"]  # nothing asked
    assert report["answered"] == len(paid_ids) and report["student"]["test_accuracy"] > 0


def test_an_error_the_superlink_sends_for_a_vanished_node_is_its_drop_reason(tmp_path):
    grid = InProcessGrid(client_app, simulation_nodes(3))
    vanished = 1001

    def superlink_error(reply: Message) -> Message:
        if reply.metadata.message_type != "query.votes":
            return reply
        error = Message(Error(code=3, reason="node 1001 unavailable"), reply_to=grid.sent[-1])
        error.metadata.__dict__["_src_node_id"] = 1  # the SuperLink answers for a node that went away
        return error

    grid.faulty[vanished] = superlink_error
    report = make_strategy(tmp_path).start(grid).report
    assert report["dropped_nodes"][str(vanished)] == (
        "error in voting (reported by the SuperLink): node 1001 unavailable")


def test_a_resume_on_another_student_pool_is_refused_before_any_charge(tmp_path):
    # Prepare: a run charges its queries for the pool of data seed 3; every entry records that pool's SHA-256
    make_strategy(tmp_path).start(InProcessGrid(client_app, simulation_nodes(3)))
    ledger_file = tmp_path / "ledger.json"
    before = ledger_file.read_bytes()
    pools = {e["pool_sha256"] for e in json.loads(before)["history"]}
    assert len(pools) == 1
    # Execute: a resume whose student holds another pool (data seed 4), on a ledger that knows no run settings
    strategy = make_strategy(tmp_path, resume=True)
    strategy.data = DataSpec(dataset="digits", num_teachers=6, seed=4)
    again = InProcessGrid(client_app, simulation_nodes(3))
    with pytest.raises(ValueError, match=r"the student's pool \(sha256 [0-9a-f]{16}…\) is not the pool this "
                                         r"ledger's 120 charged queries were asked on \(sha256 "
                                         + next(iter(pools))[:16]):
        strategy.start(again)
    # Assert: nothing asked, nothing charged, the paid labels untouched
    assert not [m for m in again.sent if m.metadata.message_type in ("query.queries", "query.votes")]
    assert ledger_file.read_bytes() == before


@pytest.mark.parametrize(("teachers_replied", "expected"), [
    (False, r"the teachers' training did not finish within 600 s \(federation.timeout_s\): no reply to "
            r"train.teachers from teacher nodes \[\d+, \d+\], nor to query.prepare from student node \d+"),
    (True, r"student node \d+ did not finish preparing its data within 600 s \(federation.timeout_s\)"),
])
def test_training_step_timeout_names_what_ran_out_of_time(tmp_path, teachers_replied, expected):
    # Prepare: the step that trains the teachers and prepares the student's data runs out of time
    grid = InProcessGrid(client_app, simulation_nodes(3))
    original = grid.send_and_receive

    def out_of_time(messages, *, timeout=None):
        messages = list(messages)
        replies = original(messages, timeout=timeout)
        if any(m.metadata.message_type == "query.prepare" for m in messages):
            return [r for r in replies if teachers_replied and r.metadata.message_type == "train.teachers"]
        return replies

    grid.send_and_receive = out_of_time
    # Execute / Assert: no ledger charge, an error naming the step that ran out of time
    with pytest.raises(RuntimeError, match=expected):
        make_strategy(tmp_path).start(grid)
