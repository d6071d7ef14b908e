"""Noise at the teachers, votes under secure aggregation, inside a PATE run: labels, the ledger's charge,
a dropout topped up, what the server's view costs, and the fixed-point slack."""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest

from protocol.pate import DataSpec, ModelSpec, StudentSettings
from simulations.app import client_app
from strategies.distributed_noise import SecureVoting, rounding_slack_log10
from strategies.ensemble_distillation import EnsembleDistillation
from strategies.fusion import ConfidentGNMax, GNMax, Majority
from strategies.local_rr import LocalRR
from strategies.privacy_ledger import PrivacyLedger
from strategies.rdp_analysis import DEFAULT_ORDERS, PrivacyWarning
from strategies.rdp_conversion import epsilon_curve
from tests.fake_grid import InProcessGrid, simulation_nodes

DATA = DataSpec(dataset="digits", num_teachers=10, seed=3)
FAST = ModelSpec(epochs=15, batch_size=32)


@pytest.fixture(autouse=True)
def _quiet(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", PrivacyWarning)
        yield


def epsilon_of(rdp: np.ndarray, delta: float = 1e-5) -> float:
    return float(np.min(epsilon_curve(DEFAULT_ORDERS, rdp, delta)))


def run(tmp_path, voting, on_progress=None):
    grid = InProcessGrid(client_app, simulation_nodes(6))  # 5 teacher nodes (2 teachers each) + student
    ledger = None if isinstance(voting, Majority) else PrivacyLedger.for_mechanism(
        voting, tmp_path / "ledger.json", delta=1e-5, epsilon_budget=1e12)
    strategy = EnsembleDistillation(mechanism=voting, ledger=ledger, data=DATA, teacher_model=FAST,
                                    student_model=FAST, query_batch_size=40, max_queries=80,
                                    student=StudentSettings(method="supervised", model_name=""),
                                    on_progress=on_progress and (lambda e: on_progress(grid, e)))
    return grid, strategy.start(grid).report, ledger


def student_labels(grid) -> np.ndarray:
    sent = next(m for m in grid.sent if m.metadata.message_type == "train.student").content["labels"]
    return sent["labels"].numpy()


def drop_after_first_batch(grid, event):
    if event.phase == "queries" and event.queries_checked == 40:
        grid.broken[1002] = "node lost"


def test_gnmax_under_secagg_labels_as_the_plurality_and_tops_up_a_dropout(tmp_path):
    sigma2 = 1e-3  # tiny noise: the securely summed labels must be the remaining teachers' plurality
    voting = SecureVoting(GNMax(sigma2=sigma2))
    grid, report, ledger = run(tmp_path, voting, drop_after_first_batch)
    plain_grid, plain, _ = run(tmp_path / "plain", Majority(), drop_after_first_batch)
    agree = np.mean(student_labels(grid) == student_labels(plain_grid))
    assert agree >= 0.9  # the rest are ties, which the noise breaks at random and Majority to the lowest class
    sent = [m.metadata.message_type for m in grid.sent]
    assert "query.votes" not in sent  # no node ever sent the server a clean histogram
    assert sent.count("query.secagg_masked") == 5 + 5  # one per node per batch; the second reached 1002 too
    # the student's next batch is asked for alone, after the batch's charge (secure aggregation stays sequential)
    assert [[m.metadata.message_type for m in r] for r in grid.rounds
            if any(m.metadata.message_type == "query.queries" for m in r)] == [["query.queries"]] * 2
    assert report["queries_checked"] == 80 and report["answered"] == 80
    assert "secure aggregation" in report["dropped_nodes"]["1002"] and report["teachers_remaining"] == 8
    # the released labels carry σ² in every batch (the server topped up), so the ledger charges central GNMax
    central = epsilon_of(80 * DEFAULT_ORDERS / sigma2**2)
    assert report["epsilon_data_independent"] == pytest.approx(central, rel=1e-12)
    assert report["epsilon_data_dependent"] == pytest.approx(central, rel=1e-12)  # no data-dependent claim
    assert "never sees the clean votes" in report["smooth_sensitivity"]["error"]
    # the server knows its own top-up: batch 2's histogram had 4/5 of the variance from its point of view
    server_view = epsilon_of(40 * DEFAULT_ORDERS / sigma2**2 + 40 * DEFAULT_ORDERS / (sigma2**2 * 0.8))
    assert report["epsilon_server_view"] == pytest.approx(server_view, rel=1e-12)
    assert report["noise_at"] == "teachers" and report["secagg_threshold"] == 3
    # a colluding node also subtracts its own share σ²/5 (of the 5 asked in either batch)
    colluding = epsilon_of(40 * DEFAULT_ORDERS / (sigma2**2 * 0.8) + 40 * DEFAULT_ORDERS / (sigma2**2 * 0.6))
    assert voting.server_view_epsilon(1e-5, colluding=1) == pytest.approx(colluding, rel=1e-12)
    assert voting.server_view_epsilon(1e-5, colluding=4) == math.inf  # batch 2: the coalition holds all noise
    assert ledger.budget_on == "data_independent"


def test_confident_gnmax_under_secagg_charges_the_vector_releases(tmp_path):
    mechanism = ConfidentGNMax(threshold=7.0, sigma1=3.0, sigma2=1.5)
    grid, report, ledger = run(tmp_path, SecureVoting(mechanism))
    checked, answered = report["queries_checked"], report["answered"]
    assert checked == 80 and 0 < answered < 80
    sent = [m.metadata.message_type for m in grid.sent]
    assert sent.count("query.secagg_masked") == 2 * 5 * 2  # threshold and answer step, per batch
    # threshold step: the σ1-noised histogram (α/σ1², twice the central check's α/(2σ1²)); answers: α/σ2²
    expected = epsilon_of(checked * DEFAULT_ORDERS / 3.0**2 + answered * DEFAULT_ORDERS / 1.5**2)
    assert report["epsilon_data_independent"] == pytest.approx(expected, rel=1e-12)
    assert report["epsilon_server_view"] == pytest.approx(expected, rel=1e-12)  # nobody dropped
    assert ledger.params["sigma1"] == pytest.approx(3.0 / math.sqrt(2))


@pytest.mark.parametrize("name, mechanism, n_classes", [
    ("gnmax 10 classes", GNMax(sigma2=40.0), 10),
    ("gnmax 2 classes", GNMax(sigma2=1.0), 2),
    ("confident T=200", ConfidentGNMax(threshold=200.0, sigma1=150.0, sigma2=40.0), 10),
    ("confident T=0", ConfidentGNMax(threshold=0.0, sigma1=5.0, sigma2=2.0), 3),
])
def test_the_stand_in_histogram_makes_both_accountings_data_independent(name, mechanism, n_classes):
    voting = SecureVoting(mechanism)
    params = voting.privacy_params()
    stand_in = np.full((4, n_classes), params.get("threshold", 25.0))
    answered = np.array([True, False, True, True]) if "threshold" in params else np.ones(4, dtype=bool)
    dd, di = voting.rdp_costs(stand_in, answered, DEFAULT_ORDERS)
    np.testing.assert_array_equal(dd, di)


def test_secure_voting_needs_a_data_independent_ledger(tmp_path):
    voting = SecureVoting(GNMax(sigma2=2.0))
    ledger = PrivacyLedger(None, mechanism="gnmax", sigma2=2.0, delta=1e-5, epsilon_budget=5.0)
    with pytest.raises(ValueError, match="budget_on='data_independent', got 'data_dependent'"):
        EnsembleDistillation(mechanism=voting, ledger=ledger, data=DATA, teacher_model=FAST,
                             student_model=FAST)


def test_fixed_point_slack_is_negligible_and_refused_when_not():
    assert rounding_slack_log10(2.0, [0.2] * 5) < -1e5
    assert -60 < rounding_slack_log10(0.01, [1 / 250] * 250) < -50
    assert rounding_slack_log10(0.1, [1 / 250] * 250) < -5000
    assert rounding_slack_log10(1e-7, [0.5, 0.5]) == 0.0  # below the resolution: no bound
    with pytest.raises(ValueError, match="must be > 0"):
        rounding_slack_log10(0.0, [1.0])


def test_the_server_never_aggregates_what_the_budget_cannot_pay_for(tmp_path):
    grid = InProcessGrid(client_app, simulation_nodes(6))
    voting = SecureVoting(GNMax(sigma2=4.0))
    ledger = PrivacyLedger.for_mechanism(voting, None, delta=1e-5, epsilon_budget=8.0)
    strategy = EnsembleDistillation(mechanism=voting, ledger=ledger, data=DATA, teacher_model=FAST,
                                    student_model=FAST, query_batch_size=40, max_queries=120,
                                    student=StudentSettings(method="supervised", model_name=""))
    report = strategy.start(grid).report
    fits = max(k for k in range(1, 121) if epsilon_of(k * DEFAULT_ORDERS / 16.0) <= 8.0)  # 24 queries
    assert report["queries_checked"] == fits
    masked = [m for m in grid.sent if m.metadata.message_type == "query.secagg_masked"]
    assert {len(m.content["queries"]["x"].numpy()) for m in masked} == {fits}  # one batch, cut before masking
    assert report["epsilon_server_view"] == pytest.approx(report["epsilon_data_independent"], rel=1e-12)


@pytest.mark.parametrize("name, overrides, error", [
    ("unknown mode", ["strategy.noise_at=nodes"], "strategy.noise_at must be one of"),
    ("teachers need a data-independent budget", ["strategy.noise_at=teachers"],
     "strategy.budget_on must be data_independent with strategy.noise_at='teachers'"),
    ("teachers need GNMax", ["strategy.noise_at=teachers", "strategy.mechanism=lnmax",
                             "strategy.budget_on=data_independent"], "gnmax or confident_gnmax"),
    ("votes need majority", ["strategy.noise_at=votes", "strategy.budget_on=data_independent"],
     "majority \\(the plurality of the randomised votes\\)"),
    ("rr epsilon", ["strategy.noise_at=votes", "strategy.mechanism=majority", "strategy.budget_on=data_independent",
                    "strategy.rr_epsilon=0"], "strategy.rr_epsilon must be > 0, got 0.0"),
])
def test_noise_at_settings_are_checked(name, overrides, error):
    from simulations.pate_config import compose_config

    with pytest.raises(Exception, match=error):
        compose_config("dataset=digits", *overrides)


@pytest.mark.parametrize("mode, extra, mechanism, ledger", [
    ("teachers", ["strategy.mechanism=gnmax"], SecureVoting, PrivacyLedger),
    ("votes", ["strategy.mechanism=majority"], LocalRR, PrivacyLedger),
])
def test_the_config_builds_the_mode(tmp_path, mode, extra, mechanism, ledger):
    from simulations.pate_config import compose_config
    from simulations.pate_server import build_strategy

    cfg = compose_config("dataset=digits", f"run.output_dir={tmp_path}", f"strategy.noise_at={mode}",
                         "strategy.budget_on=data_independent", *extra)
    strategy = build_strategy(cfg)
    assert isinstance(strategy.mechanism, mechanism) and isinstance(strategy.ledger, ledger)
    assert strategy.ledger.budget_on == "data_independent"
