"""The smooth-sensitivity release when a teacher node drops out mid-run (rows with different teacher counts)."""

from __future__ import annotations

import json
import math
import warnings
from pathlib import Path

import numpy as np
import pytest
from flwr.app import Error, Message

from protocol.pate import DataSpec, ModelSpec, StudentSettings
from simulations.app import client_app
from strategies.accounting import (
    DEFAULT_ORDERS,
    PrivacyLedger,
    PrivacyWarning,
    rdp_gnmax_data_dependent,
    rdp_threshold,
    smooth_sensitivity_release,
)
from strategies.ensemble_distillation import EnsembleDistillation
from strategies.fusion import GNMax
from strategies.rdp_conversion import rdp_to_epsilon
from strategies.smooth_sensitivity import local_sensitivity_gnmax, local_sensitivity_threshold, rdp_gnss
from tests.fake_grid import InProcessGrid, simulation_nodes

pytestmark = pytest.mark.filterwarnings("ignore::strategies.accounting.PrivacyWarning")

FAST = ModelSpec(epochs=15, batch_size=32)
GNMAX = {"sigma2": 3.0}
CONFIDENT = {"sigma2": 3.0, "sigma1": 4.0, "threshold": 14.0}


def histograms(rng: np.random.Generator, queries: int, teachers: int, classes: int = 10) -> np.ndarray:
    """Vote histograms of ``teachers`` voters, each query's true class drawing 85 % of the votes."""
    out = np.zeros((queries, classes))
    for i in range(queries):
        probs = np.full(classes, 0.15 / (classes - 1))
        probs[rng.integers(classes)] = 0.85
        out[i] = np.bincount(rng.choice(classes, teachers, p=probs), minlength=classes)
    return out


@pytest.fixture(scope="module")
def batches() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Two 40-query batches of 20 teachers, and a 40-query batch of the 13 left after a node dropped."""
    rng = np.random.default_rng(2026)
    return histograms(rng, 40, 20), histograms(rng, 40, 20), histograms(rng, 40, 13)


def pr_answered(row: np.ndarray, params: dict[str, float]) -> float:
    """Pr[max vote + N(0, σ1²) >= T] ([P18] Algorithm 1); 1 for plain GNMax."""
    if "threshold" not in params:
        return 1.0
    return 0.5 * math.erfc((params["threshold"] - row.max()) / (params["sigma1"] * math.sqrt(2.0)))


def by_hand(votes: np.ndarray, teachers: list[int], params: dict[str, float]) -> tuple[float, float]:
    """The released ε and its std, recomputed from the per-query terms ([P18] §4.3, App. B)."""
    confident = "threshold" in params
    sigma2, big_n = params["sigma2"], max(teachers)
    rdp = np.zeros(DEFAULT_ORDERS.shape)
    ls_total = np.zeros(big_n)
    for row in votes:
        if confident:
            rdp += rdp_threshold(row[None], params["threshold"], params["sigma1"])[0]
        rdp += pr_answered(row, params) * rdp_gnmax_data_dependent(row[None], sigma2)[0]
    eps_dd, order = rdp_to_epsilon(DEFAULT_ORDERS, rdp, 1e-5)
    for row, n in zip(votes, teachers, strict=True):
        # GNMax: [P18] Algorithms 4-5 with a distance range of N = max n fill the distances beyond the
        # n-vote walk with the plateau LS(q1), the supremum the release pads with.
        ls = local_sensitivity_gnmax(row, big_n, sigma2, order)
        if confident:
            t, s1 = params["threshold"], params["sigma1"]
            step_rdp = np.array([rdp_threshold([[v] + [0] * 9], t, s1, [order])[0, 0] for v in range(n + 1)])
            sup = float(np.abs(np.diff(step_rdp)).max())
            thr = np.full(big_n, sup)
            thr[:n] = local_sensitivity_threshold(int(row.max()), n, t, s1, order)
            ls_total += thr
        ls_total += pr_answered(row, params) * ls
    best = None
    for beta in np.arange(0.3 / order, 0.495 / order, 0.01 / order):
        ss = float(np.max(ls_total * np.exp(-beta * np.arange(big_n))))
        sigma_ss = (order * math.exp(2 * beta) / ss) ** (1 / 3)
        cost = rdp[list(DEFAULT_ORDERS).index(order)] + rdp_gnss(beta, sigma_ss, order) + 2 * ss * sigma_ss
        if best is None or cost < best[0]:
            best = (cost, beta, ss, sigma_ss)
    assert best is not None
    _, beta, ss, sigma_ss = best
    return eps_dd + rdp_gnss(beta, sigma_ss, order), ss * sigma_ss


def gnmax_ledger(**overrides: object) -> PrivacyLedger:
    kwargs: dict = {"mechanism": "gnmax", "delta": 1e-5, "epsilon_budget": 50.0, **GNMAX, **overrides}
    return PrivacyLedger(None, **kwargs)


def test_ledger_whose_second_batch_lost_teachers_releases_the_per_query_epsilon(batches) -> None:
    full, _, dropped = batches
    ledger = gnmax_ledger()
    ledger.charge(full)
    ledger.charge(dropped)  # 13 of the 20 teachers left
    release = ledger.release(np.random.default_rng(5))
    assert release is not None and release["queries_checked"] == 80
    ss = release["smooth_sensitivity"]
    # the data-dependent ε is the ledger's own (its per-batch charges are right)
    assert ss["epsilon_data_dependent"] == pytest.approx(ledger.epsilon()["data_dependent"], rel=1e-12)
    expected, std = by_hand(np.concatenate((full, dropped)), [20] * 40 + [13] * 40, GNMAX)
    assert release["epsilon_released"] == pytest.approx(expected, rel=1e-12)
    assert release["epsilon_released_std"] == pytest.approx(std, rel=1e-12)
    assert round(release["epsilon_released"], 4) == 23.0064 and round(release["epsilon_released_std"], 4) == 5.7379
    assert round(ss["epsilon_data_dependent"], 4) == 16.4235 and ss["order"] == 2.5 and not ss["data_independent"]
    # 40 more queries cost more than the first batch alone
    assert release["epsilon_released"] > GNMax(**GNMAX).smooth_sensitivity(full, 1e-5, DEFAULT_ORDERS).epsilon_released


def test_reloaded_ledger_file_releases_the_same_after_a_dropout(batches, tmp_path: Path) -> None:
    full, _, dropped = batches
    path = tmp_path / "ledger.json"
    ledger = PrivacyLedger(path, mechanism="gnmax", delta=1e-5, epsilon_budget=50.0, **GNMAX)
    ledger.charge(full)
    ledger.charge(dropped)
    in_memory = gnmax_ledger()
    in_memory.charge(full)
    in_memory.charge(dropped)
    release = PrivacyLedger.load(path).release(np.random.default_rng(5))
    assert release == in_memory.release(np.random.default_rng(5))
    assert json.loads(path.read_text())["release"]["epsilon_released"] == release["epsilon_released"]


def test_confident_gnmax_with_fewer_teachers_matches_the_per_query_terms(batches) -> None:
    full, _, dropped = batches
    votes = np.concatenate((full, dropped))
    r = smooth_sensitivity_release(votes, threshold=14.0, sigma1=4.0, sigma2=3.0, delta=1e-5)
    expected, std = by_hand(votes, [20] * 40 + [13] * 40, CONFIDENT)
    assert r.epsilon_released == pytest.approx(expected, rel=1e-12)
    assert r.epsilon_released_std == pytest.approx(std, rel=1e-12)
    assert round(r.epsilon_data_dependent, 4) == 16.009 and r.order == 3.0
    assert round(r.epsilon_released, 4) == 21.0073 and round(r.epsilon_released_std, 4) == 4.0599


def test_equal_teacher_counts_give_exactly_the_previous_release(batches) -> None:
    # Pinned from the release before per-query teacher counts (commit c5d3243), bit for bit.
    votes = np.concatenate(batches[:2])
    r = smooth_sensitivity_release(votes, threshold=None, sigma1=None, sigma2=3.0, delta=1e-5)
    assert (r.epsilon_data_dependent, r.epsilon_released, r.epsilon_released_std) == (
        7.862781811097671, 14.843574977252917, 6.0424404869652415)
    assert (r.beta, r.sigma_ss, r.expected_ss, r.order) == (
        0.15666666666666657, 0.8241265496146707, 7.331932807880598, 3.0)
    c = smooth_sensitivity_release(votes, threshold=14.0, sigma1=4.0, sigma2=3.0, delta=1e-5)
    assert (c.epsilon_data_dependent, c.epsilon_released, c.epsilon_released_std) == (
        14.399103362650777, 20.29498478798677, 4.9575287461459885)
    assert (c.beta, c.sigma_ss, c.expected_ss, c.order) == (
        0.15666666666666657, 0.9098451316493427, 5.448761084382695, 3.0)


def test_budget_on_released_prefix_search_spans_the_dropout(batches) -> None:
    full, _, dropped = batches
    first = GNMax(**GNMAX).smooth_sensitivity(full, 1e-5, DEFAULT_ORDERS).epsilon_released
    both = GNMax(**GNMAX).smooth_sensitivity(np.concatenate((full, dropped)), 1e-5, DEFAULT_ORDERS).epsilon_released
    budget = (first + both) / 2
    ledger = gnmax_ledger(epsilon_budget=budget, budget_on="released")
    assert ledger.charge(full).n_accepted == 40
    result = ledger.charge(dropped)
    k = result.n_accepted
    assert 0 < k < 40 and result.exhausted
    inside = GNMax(**GNMAX).smooth_sensitivity(np.concatenate((full, dropped[:k])), 1e-5, DEFAULT_ORDERS)
    outside = GNMax(**GNMAX).smooth_sensitivity(np.concatenate((full, dropped[:k + 1])), 1e-5, DEFAULT_ORDERS)
    assert result.epsilon_released == inside.epsilon_released == ledger.epsilon()["released"]
    assert inside.epsilon_released <= budget < outside.epsilon_released


def test_a_row_without_votes_is_refused() -> None:
    with pytest.raises(ValueError, match="votes row 1 has no votes"):
        smooth_sensitivity_release([[3, 1], [0, 0]], threshold=None, sigma1=None, sigma2=1.0, delta=1e-5)


def test_strategy_run_losing_a_node_after_the_first_batch_reports_the_released_epsilon(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)  # nodes without node_config output-dir write under ./privkit-output
    grid = InProcessGrid(client_app, simulation_nodes(3))
    failing, votes_seen = 1001, []  # node 1001 hosts teachers 1, 3, 5

    def fail_after_first_batch(reply: Message) -> Message:
        if reply.metadata.message_type == "query.votes":
            votes_seen.append(reply)
            if len(votes_seen) > 1:
                return Message(Error(code=2, reason="ValueError: disk gone"), reply_to=grid.sent[-1])
        return reply

    grid.faulty[failing] = fail_after_first_batch
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", PrivacyWarning)
        ledger = PrivacyLedger(tmp_path / "ledger.json", mechanism="gnmax", delta=1e-5, epsilon_budget=500.0,
                               sigma2=1.0)
        strategy = EnsembleDistillation(
            mechanism=GNMax(sigma2=1.0), ledger=ledger, data=DataSpec(dataset="digits", num_teachers=6, seed=3),
            teacher_model=FAST, student_model=FAST, query_batch_size=40, max_queries=120,
            student=StudentSettings(method="supervised", model_name="student"))
        report = strategy.start(grid).report
    assert report["teachers_remaining"] == 3 and "disk gone" in report["dropped_nodes"][str(failing)]
    stored = json.loads((tmp_path / "ledger.json").read_text())
    assert [h["n_teachers"] for h in stored["history"]] == [6.0, 3.0, 3.0]
    assert math.isfinite(report["epsilon_released"])
    assert report["epsilon_released"] > report["epsilon_data_dependent"]
    assert report["epsilon_released_std"] > 0
    assert stored["release"]["epsilon_released"] == report["epsilon_released"]
