"""Local randomised response of teacher votes: the k-RR draw, its exact RDP, the ledger and a PATE run."""

from __future__ import annotations

import json
import math
import warnings

import numpy as np
import pytest

from clients.pate.local_rr import randomised_histogram
from protocol.local_rr import rr_probabilities
from protocol.pate import DataSpec, ModelSpec, StudentSettings
from simulations.app import client_app
from strategies.ensemble_distillation import EnsembleDistillation
from strategies.ledger_journal import LedgerIntegrityError
from strategies.local_rr import LocalRR, rdp_randomised_response
from strategies.privacy_ledger import BudgetExhaustedError
from strategies.rdp_analysis import DEFAULT_ORDERS, PrivacyWarning
from strategies.rdp_conversion import epsilon_curve
from tests.fake_grid import InProcessGrid, simulation_nodes
from tests.ledger_helpers import local_rr_ledger


def test_rr_keeps_the_vote_with_probability_p_and_spreads_the_rest_evenly():
    p, q = rr_probabilities(1.0, 4)
    assert p == pytest.approx(math.e / (math.e + 3)) and p / q == pytest.approx(math.e)
    predictions = np.zeros((200, 500), dtype=np.int64)  # 200 teachers all vote class 0 on 500 queries
    votes = randomised_histogram(predictions, 4, 1.0, np.random.default_rng(0))
    assert votes.shape == (500, 4) and (votes.sum(axis=1) == 200).all()
    share = votes.sum(axis=0) / votes.sum()
    np.testing.assert_allclose(share, [p, q, q, q], atol=0.005)  # 10^5 votes: std ≈ 0.0015


@pytest.mark.parametrize("name, epsilon, classes", [("binary", 1.0, 2), ("ten classes", 2.0, 10), ("small", 0.1, 3)])
def test_rdp_is_the_exact_renyi_divergence_of_two_inputs(name, epsilon, classes):
    p, q = rr_probabilities(epsilon, classes)
    first, second = np.full(classes, q), np.full(classes, q)
    first[0], second[1] = p, p
    for alpha in (1.5, 2.0, 8.0, 64.0):
        direct = math.log(np.sum(first**alpha * second ** (1 - alpha))) / (alpha - 1)
        assert rdp_randomised_response(epsilon, classes, [alpha])[0] == pytest.approx(min(direct, epsilon),
                                                                                     rel=1e-12)


def test_ledger_stops_at_the_budget_with_the_smaller_of_pure_and_rdp_epsilon():
    ledger = local_rr_ledger(epsilon=0.5, delta=1e-5, epsilon_budget=3.0)
    result = ledger.charge(np.full((10, 10), 5.0))
    assert (result.n_accepted, result.exhausted) == (6, True)  # 6 × 0.5 = 3.0 (pure beats RDP this early)
    assert ledger.epsilon()["data_independent"] == pytest.approx(3.0)
    with pytest.raises(BudgetExhaustedError):
        ledger.charge(np.full((1, 10), 5.0))
    many = local_rr_ledger(epsilon=0.1, delta=1e-5, epsilon_budget=1e6)
    many.charge(np.full((5000, 10), 5.0))
    rdp = 5000 * rdp_randomised_response(0.1, 10)
    expected = float(np.min(epsilon_curve(DEFAULT_ORDERS, rdp, 1e-5)))
    assert many.epsilon()["data_independent"] == pytest.approx(expected) and expected < 5000 * 0.1


@pytest.mark.parametrize("name, kwargs, error", [
    ("epsilon 0", {"epsilon": 0.0, "delta": 1e-5, "epsilon_budget": 1.0}, "finite number > 0, got 0.0"),
    ("delta 1", {"epsilon": 1.0, "delta": 1.0, "epsilon_budget": 1.0}, r"delta must be in \(0, 1\)"),
    ("budget inf", {"epsilon": 1.0, "delta": 1e-5, "epsilon_budget": math.inf}, "epsilon_budget"),
])
def test_ledger_settings_are_checked(name, kwargs, error):
    with pytest.raises(ValueError, match=error):
        local_rr_ledger(**kwargs)


def test_a_pate_run_with_randomised_votes(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    grid = InProcessGrid(client_app, simulation_nodes(3))
    mechanism = LocalRR(epsilon=3.0)
    strategy = EnsembleDistillation(
        mechanism=mechanism, ledger=local_rr_ledger(epsilon=3.0, delta=1e-5, epsilon_budget=1e4),
        data=DataSpec(dataset="digits", num_teachers=6, seed=3), teacher_model=ModelSpec(epochs=15),
        student_model=ModelSpec(epochs=15), query_batch_size=40, max_queries=80,
        student=StudentSettings(method="supervised", model_name=""))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", PrivacyWarning)
        report = strategy.start(grid).report
    votes_sent = [m for m in grid.sent if m.metadata.message_type == "query.votes"]
    assert len(votes_sent) == 2 * 2 and all(m.content["ldp"]["epsilon"] == 3.0 for m in votes_sent)
    assert report["answered"] == 80
    rdp_epsilon = float(np.min(epsilon_curve(DEFAULT_ORDERS, 80 * rdp_randomised_response(3.0, 10), 1e-5)))
    assert report["epsilon_data_independent"] == pytest.approx(min(80 * 3.0, rdp_epsilon), rel=1e-12)
    assert report["student"]["fused_label_accuracy"] > 0.5  # ε0 = 3 keeps 69 % of the votes


def test_a_persisted_local_rr_ledger_survives_a_restart_and_refuses_tampering(tmp_path) -> None:
    path = tmp_path / "ledger.json"
    votes = np.tile([[3.0, 1.0, 0.0]], (5, 1))
    first = local_rr_ledger(epsilon=0.5, delta=1e-5, epsilon_budget=3.0, path=path)
    first.charge(votes, labels=np.array([0, 0, 1, 0, 2]), query_ids=np.arange(5))
    again = local_rr_ledger(epsilon=0.5, delta=1e-5, epsilon_budget=3.0, path=path)
    assert again.queries_checked == 5 and again.epsilon() == first.epsilon()
    np.testing.assert_array_equal(again.paid_labels()[1], [0, 0, 1, 0, 2])
    assert oct(path.stat().st_mode & 0o777) == "0o600"

    stored = json.loads(path.read_text())
    stored["queries_checked"] = 0  # a budget that silently went down
    path.write_text(json.dumps(stored))
    with pytest.raises(LedgerIntegrityError, match="recorded queries_checked 0 != recomputed 5"):
        local_rr_ledger(epsilon=0.5, delta=1e-5, epsilon_budget=3.0, path=path)
    stored["queries_checked"], stored["history"][0]["n_accepted"] = 2, 2
    path.write_text(json.dumps(stored))
    with pytest.raises(LedgerIntegrityError, match="entry 1: counts out of order"):
        local_rr_ledger(epsilon=0.5, delta=1e-5, epsilon_budget=3.0, path=path)
    with pytest.raises(ValueError, match="stored ledger has epsilon=0.5, but this ledger was created with epsilon=1"):
        local_rr_ledger(epsilon=1.0, delta=1e-5, epsilon_budget=3.0, path=path)


def test_a_live_local_rr_ledger_refuses_a_rolled_back_file(tmp_path) -> None:
    path = tmp_path / "ledger.json"
    votes = np.tile([[3.0, 1.0, 0.0]], (2, 1))
    ledger = local_rr_ledger(epsilon=0.5, delta=1e-5, epsilon_budget=3.0, path=path)
    ledger.charge(votes)
    old = path.read_bytes()
    ledger.charge(votes)
    path.write_bytes(old)
    with pytest.raises(LedgerIntegrityError, match="rollback refused"):
        ledger.charge(votes)
