"""Vote-fusion mechanisms: exact behaviour at the limits, noise scale, seeding and errors."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.stats import norm

from simulations.pate_config import PateConfig, PateStrategyConfig
from strategies.fusion import (
    UNANSWERED,
    ConfidentGNMax,
    GNMax,
    LNMax,
    Majority,
    make_mechanism,
    noise_generator,
)
from strategies.rdp_analysis import PrivacyWarning

VOTES = np.array([[8, 1, 1], [0, 10, 0], [3, 3, 4], [5, 5, 0]])


def test_majority_is_plain_argmax_with_low_index_ties():
    result = Majority().fuse(VOTES, np.random.default_rng(0))
    assert result.labels.tolist() == [0, 1, 2, 0]
    assert result.answered.all()


@pytest.mark.parametrize("mechanism", [GNMax(sigma2=1e-6), LNMax(gamma=1e6)], ids=["gnmax", "lnmax"])
def test_vanishing_noise_equals_majority_where_no_tie(mechanism):
    labels = mechanism.fuse(VOTES[:3], np.random.default_rng(1)).labels
    assert labels.tolist() == [0, 1, 2]


def test_gnmax_flip_rate_matches_gaussian_theory():
    # Two classes with a margin of 2: P(flip) = P(N(0, 2 sigma2^2) > 2) = Phi(-2 / (sigma2 sqrt 2)).
    sigma2, n = 2.0, 200_000
    votes = np.tile([[6, 4]], (n, 1))
    flips = np.mean(GNMax(sigma2=sigma2).fuse(votes, np.random.default_rng(2)).labels == 1)
    assert flips == pytest.approx(norm.cdf(-2 / (sigma2 * np.sqrt(2))), abs=0.005)


def test_lnmax_flip_rate_matches_laplace_theory():
    # Difference of two Laplace(b) exceeds d with probability exp(-d/b) (2 + d/b) / 4.
    gamma, d, n = 0.5, 2.0, 200_000
    votes = np.tile([[6, 4]], (n, 1))
    flips = np.mean(LNMax(gamma=gamma).fuse(votes, np.random.default_rng(3)).labels == 1)
    b = 1 / gamma
    assert flips == pytest.approx(np.exp(-d / b) * (2 + d / b) / 4, abs=0.005)


def test_confident_gnmax_threshold_decides_answered_and_marks_the_rest():
    votes = np.array([[10, 0], [5, 5]])
    result = ConfidentGNMax(threshold=8, sigma1=1e-6, sigma2=1e-6).fuse(votes, np.random.default_rng(4))
    assert result.answered.tolist() == [True, False]
    assert result.labels.tolist() == [0, UNANSWERED]


def test_confident_gnmax_answer_rate_matches_theory():
    n = 100_000
    votes = np.tile([[7, 3]], (n, 1))
    result = ConfidentGNMax(threshold=8, sigma1=2.0, sigma2=1.0).fuse(votes, np.random.default_rng(5))
    assert result.answered.mean() == pytest.approx(norm.sf(1 / 2.0), abs=0.006)


def test_same_seed_same_labels():
    mech = GNMax(sigma2=3.0)
    a = mech.fuse(VOTES, np.random.default_rng(7)).labels
    b = mech.fuse(VOTES, np.random.default_rng(7)).labels
    np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize(
    ("name", "params", "match"),
    [
        ("gnmax", {}, "sigma2 must be a finite number > 0, got None"),
        ("gnmax", {"sigma2": -1.0}, "sigma2 must be a finite number > 0, got -1.0"),
        ("lnmax", {"gamma": 0.0}, "gamma must be a finite number > 0"),
        ("confident_gnmax", {"sigma2": 1.0, "sigma1": 1.0}, "needs a threshold"),
        ("confident_gnmax", {"sigma2": 1.0, "sigma1": float("nan"), "threshold": 3}, "sigma1 must be"),
        ("softmax", {}, "unknown fusion mechanism 'softmax'"),
    ],
)
def test_make_mechanism_rejects_bad_parameters(name, params, match):
    with pytest.raises(ValueError, match=match):
        make_mechanism(name, **params)


@pytest.mark.parametrize(
    ("votes", "match"),
    [
        (np.array([1, 2, 3]), "2-D"),
        (np.array([[1.0, np.nan]]), "NaN|finite"),
        (np.array([[3, -1]]), "negative|>= 0"),
        (np.array([[3, 1], [2, 1]]), "same number of teachers"),
    ],
)
def test_fusion_rejects_malformed_votes(votes, match):
    with pytest.raises(ValueError, match=match):
        GNMax(sigma2=1.0).fuse(votes, np.random.default_rng(0))


# -- one registry, and the ledger built from the mechanism it charges ---------------------------------


def test_registry_maps_every_name_to_its_class_and_make_mechanism_uses_it():
    from strategies.fusion import MECHANISM_REGISTRY, MECHANISMS

    assert tuple(MECHANISM_REGISTRY) == MECHANISMS
    built = {"majority": {}, "lnmax": {"gamma": 0.1}, "gnmax": {"sigma2": 3.0},
             "confident_gnmax": {"sigma2": 3.0, "sigma1": 12.0, "threshold": 16.0}}
    for name, params in built.items():
        mechanism = make_mechanism(name, **params)
        assert type(mechanism) is MECHANISM_REGISTRY[name]
        assert mechanism.privacy_params() == params


def test_ledger_for_mechanism_takes_the_noise_from_the_mechanism():
    from strategies.accounting import PrivacyLedger

    ledger = PrivacyLedger.for_mechanism(ConfidentGNMax(threshold=200.0, sigma1=150.0, sigma2=40.0), None,
                                         delta=1e-5, epsilon_budget=5.0)
    assert ledger.mechanism == "confident_gnmax"
    assert ledger.params == {"sigma2": 40.0, "sigma1": 150.0, "threshold": 200.0}
    with pytest.raises(ValueError, match="not private"):
        PrivacyLedger.for_mechanism(Majority(), None, delta=1e-5, epsilon_budget=5.0)
    with pytest.raises(ValueError, match="registered mechanism"):
        PrivacyLedger.for_mechanism("gnmax", None, delta=1e-5, epsilon_budget=5.0)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("ledger_mechanism", "match"),
    [(GNMax(sigma2=30.0), "sigma2=30.0 but the gnmax mechanism has sigma2=40.0"),
     (LNMax(gamma=0.1), "ledger charges 'lnmax' but the mechanism is 'gnmax'")],
    ids=["other-sigma2", "other-mechanism"])
def test_strategy_refuses_a_ledger_for_other_noise_than_the_fusion(ledger_mechanism, match):
    from strategies.accounting import PrivacyLedger
    from strategies.ensemble_distillation import DataSpec, EnsembleDistillation, ModelSpec

    ledger = PrivacyLedger.for_mechanism(ledger_mechanism, None, delta=1e-5, epsilon_budget=5.0)
    with pytest.raises(ValueError, match=match):
        EnsembleDistillation(mechanism=GNMax(sigma2=40.0), ledger=ledger, data=DataSpec(dataset="digits"),
                             teacher_model=ModelSpec(), student_model=ModelSpec())
    ledger.check_mechanism(ledger_mechanism)  # its own mechanism passes


def test_noise_is_secret_by_default_and_a_seed_pins_it_with_a_warning():
    # two unseeded generators (every default) draw different noise: nobody can replay it
    assert not np.array_equal(noise_generator(None).normal(size=8), noise_generator(None).normal(size=8))
    with pytest.warns(PrivacyWarning, match="seed=7: reproducible, and removable"):
        a = noise_generator(7).normal(size=8)
    with pytest.warns(PrivacyWarning):
        np.testing.assert_array_equal(a, noise_generator(7).normal(size=8))
    for bad in (-1, True, "3", 1.5):
        with pytest.raises(ValueError, match=f"the noise seed must be None .* got {bad!r}"):
            noise_generator(bad)


def test_the_run_config_leaves_the_noise_secret_unless_seeded():
    assert PateConfig().strategy.seed is None
    with pytest.raises(ValueError, match="strategy.seed must be null .* got -1"):
        PateConfig(strategy=PateStrategyConfig(seed=-1))
