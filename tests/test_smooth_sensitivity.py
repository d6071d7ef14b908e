"""Tests for the smooth-sensitivity release of the data-dependent ε ([P18] Section 4.3, Appendix B)."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest

from strategies.accounting import SmoothSensitivityRelease, draw_released_epsilon, smooth_sensitivity_release
from strategies.smooth_sensitivity import check_conditions, local_sensitivity_threshold, rdp_gnss

VOTES_DIR = Path(__file__).parent / "data" / "pate2018_votes"
pytestmark = pytest.mark.filterwarnings("ignore::strategies.accounting.PrivacyWarning")


@pytest.fixture(scope="module")
def mnist_release() -> SmoothSensitivityRelease:
    votes = np.load(VOTES_DIR / "mnist_250_teachers.npy")[:640]
    return smooth_sensitivity_release(votes, threshold=200, sigma1=150, sigma2=40, delta=1e-5)


def test_reproduces_the_authors_mnist_release(mnist_release: SmoothSensitivityRelease) -> None:
    # [P18] smooth_sensitivity_table.py on MNIST, 640 queries, T=200, σ1=150, σ2=40, δ=1e-5:
    # "RDP at 14 goes from 1.999 to 2.516 +/- 0.385 (ss = 0.06175, beta = 0.0329, sigma_ss = 6.233)".
    r = mnist_release
    assert r.order == 14.0
    assert round(r.epsilon_data_dependent, 3) == 1.999
    assert round(r.epsilon_released, 3) == 2.516
    assert round(r.epsilon_released_std, 3) == 0.385
    assert round(r.beta, 4) == 0.0329
    assert round(r.expected_ss, 5) == 0.06175
    assert round(r.sigma_ss, 3) == 6.233
    assert not r.data_independent
    assert r.epsilon_released == pytest.approx(r.epsilon_data_dependent + rdp_gnss(r.beta, r.sigma_ss, 14.0))
    assert r.epsilon_released_std == pytest.approx(r.expected_ss * r.sigma_ss)
    d = r.to_dict()
    assert d["epsilon_released"] == r.epsilon_released and d["order"] == 14.0 and d["delta"] == 1e-5


def test_conditions_hold_for_the_mnist_setting_and_fail_elsewhere() -> None:
    assert check_conditions(40.0, 10, 14.0) == (True, True)
    assert check_conditions(5.0, 10, 30.0) == (True, False)


def test_refuses_a_setting_where_condition_c6_fails() -> None:
    votes = np.load(VOTES_DIR / "mnist_250_teachers.npy")[:20]
    with pytest.raises(ValueError, match="condition C6 .* sigma2=5.0, 10 classes at order 30"):
        smooth_sensitivity_release(votes, threshold=None, sigma1=None, sigma2=5.0, delta=1e-5, orders=[30.0])


def test_draw_is_seeded_and_centred_on_the_expectation(mnist_release: SmoothSensitivityRelease) -> None:
    one = draw_released_epsilon(mnist_release, np.random.default_rng(7))
    assert one == draw_released_epsilon(mnist_release, np.random.default_rng(7))
    rng = np.random.default_rng(0)
    draws = np.array([draw_released_epsilon(mnist_release, rng) for _ in range(4000)])
    assert draws.mean() == pytest.approx(mnist_release.epsilon_released, abs=4 * 0.385 / math.sqrt(4000))
    assert draws.std() == pytest.approx(mnist_release.epsilon_released_std, rel=0.05)
    with pytest.raises(TypeError, match="rng must be a numpy.random.Generator"):
        draw_released_epsilon(mnist_release, 0)  # type: ignore[arg-type]


def test_gnmax_without_threshold_releases_above_its_data_dependent_epsilon() -> None:
    votes = np.load(VOTES_DIR / "mnist_250_teachers.npy")[:100]
    r = smooth_sensitivity_release(votes, threshold=None, sigma1=None, sigma2=40.0, delta=1e-5)
    assert r.epsilon_released > r.epsilon_data_dependent > 0
    assert r.epsilon_released_std > 0 and 0.3 / r.order <= r.beta < 0.495 / r.order


def test_data_independent_setting_needs_no_noise() -> None:
    # 5 teachers under σ2 = 100: every histogram gets the data-independent bound, nothing to hide.
    votes = np.array([[5, 0, 0], [3, 2, 0]])
    r = smooth_sensitivity_release(votes, threshold=None, sigma1=None, sigma2=100.0, delta=1e-5)
    assert r.data_independent and r.epsilon_released == r.epsilon_data_dependent
    assert r.epsilon_released_std == 0.0 and r.to_dict()["sigma_ss"] is None


def test_threshold_local_sensitivity_is_the_largest_step_within_distance_d() -> None:
    # Brute force with the vectorised rdp_threshold: histograms [v, n - v] have top count max(v, n - v),
    # so use one class holding v and n - v spread over enough classes to stay below v.
    from strategies.accounting import rdp_threshold

    n, top, t, s1, order = 40, 25, 30.0, 6.0, 5.0
    rdp = np.array([rdp_threshold([[v] + [0] * 9], t, s1, [order])[0, 0] for v in range(n + 1)])
    step = [max(abs(rdp[v] - rdp[w]) for w in (v - 1, v + 1) if 0 <= w <= n) for v in range(n + 1)]
    expected = [max(step[v] for v in (top - d, top + d) if 0 <= v <= n) for d in range(max(top, n - top))]
    ls = local_sensitivity_threshold(top, n, t, s1, order)
    assert ls.shape == (n,)
    np.testing.assert_allclose(ls[:len(expected)], expected, rtol=1e-12)
    assert np.all(ls[len(expected):] == 0)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [({"sigma2": 0.0}, "sigma2 must be > 0, got 0.0"),
     ({"sigma2": -1.0}, "sigma2 must be > 0, got -1.0"),
     ({"sigma1": -1.0}, "sigma1 must be > 0, got -1.0"),
     ({"sigma1": None}, "threshold and sigma1 must be given together"),
     ({"delta": 0.0}, "delta must be in"),
     ({"votes": [[1.0, float("nan")], [1.0, 1.0]]}, "votes must be finite, got nan at row 0, class 1"),
     ({"votes": [[2, 0], [0, 0]]}, "votes row 1 has no votes: every query needs at least one teacher"),
     ({"votes": [[1.5, 0.5], [1.0, 1.0]]}, "votes must be integer counts .* got 1.5 at row 0, class 0")],
    ids=["sigma2-zero", "sigma2-negative", "sigma1-negative", "sigma1-missing", "delta", "nan", "empty-row",
         "fractional"])
def test_bad_inputs_are_refused(kwargs: dict, match: str) -> None:
    args = {"votes": [[2, 0], [1, 1]], "threshold": 1.0, "sigma1": 1.0, "sigma2": 1.0, "delta": 1e-5}
    args.update(kwargs)
    votes = args.pop("votes")
    with pytest.raises(ValueError, match=match):
        smooth_sensitivity_release(votes, **args)


def test_strategy_report_carries_the_release_drawn_once(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)  # the student node writes under ./privkit-output
    from simulations.app import client_app
    from strategies.accounting import PrivacyLedger
    from strategies.ensemble_distillation import DataSpec, EnsembleDistillation, ModelSpec, StudentSettings
    from strategies.fusion import ConfidentGNMax
    from tests.fake_grid import InProcessGrid, simulation_nodes

    mechanism = ConfidentGNMax(threshold=4.0, sigma1=2.0, sigma2=1.5)
    ledger = PrivacyLedger.for_mechanism(mechanism, tmp_path / "ledger.json", delta=1e-5, epsilon_budget=500.0)
    fast = ModelSpec(epochs=15, batch_size=32)
    strategy = EnsembleDistillation(
        mechanism=mechanism, ledger=ledger, data=DataSpec(dataset="digits", num_teachers=6, seed=3),
        teacher_model=fast, student_model=fast, query_batch_size=40, max_queries=120, seed=5,
        student=StudentSettings(model_name="student"))
    report = strategy.start(InProcessGrid(client_app, simulation_nodes(3))).report
    stored = PrivacyLedger.load(tmp_path / "ledger.json").last_release
    assert stored is not None and stored["queries_checked"] == 120
    assert report["epsilon_released"] == stored["epsilon_released"] > report["epsilon_data_dependent"]
    assert report["epsilon_released_draw"] == stored["epsilon_released_draw"]
    assert report["epsilon_released_std"] > 0 and report["smooth_sensitivity"] == stored["smooth_sensitivity"]
    assert strategy.report(queries_checked=120, answered=1, pool_size=1, wall_s=0.0)["epsilon_released_draw"] \
        == stored["epsilon_released_draw"]  # no second draw
