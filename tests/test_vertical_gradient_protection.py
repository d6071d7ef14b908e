"""Clipped Gaussian noise on the gradients returned to passive parties: calibration, accounting, wiring."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from clients.vertical.gradient_protection import perturb_gradients
from protocol.privacy_noise import PrivacyWarning
from protocol.vertical import VerticalStrategyConfig
from strategies.label_dp import gradient_batch_epsilon
from strategies.vertical_prototype import InProcessLink, VerticalPrototype
from tests.vertical_helpers import small_config, split_parties

torch.set_num_threads(1)  # tiny models: extra intra-op threads only contend on the shared cores


def test_rows_are_clipped_and_noised_with_std_z_times_clip() -> None:
    grads = torch.tensor([[3.0, 4.0], [0.3, 0.4], [0.0, 0.0]])
    assert torch.allclose(perturb_gradients(grads, 1.0, 0.0, None),
                          torch.tensor([[0.6, 0.8], [0.3, 0.4], [0.0, 0.0]]))
    assert perturb_gradients(grads, 0.0, 0.0, None) is grads  # off: the exact gradients
    noised = perturb_gradients(grads, 1.0, 2.0, torch.Generator().manual_seed(5))
    expected = torch.tensor([[0.6, 0.8], [0.3, 0.4], [0.0, 0.0]]) + 2.0 * torch.randn(
        (3, 2), generator=torch.Generator().manual_seed(5))
    assert torch.allclose(noised, expected)  # std = z × C = 2 on every coordinate, from the generator
    big = perturb_gradients(torch.zeros(400, 250), 0.01, 4.0, torch.Generator().manual_seed(0))
    assert float(big.std()) == pytest.approx(0.04, rel=0.01)


def test_batch_epsilon_is_the_gaussian_mechanisms_zcdp_bound() -> None:
    # Δ = 2C, σ = zC: ρ = 2 / z², ε = ρ + 2·√(ρ·ln(1/δ)) (Bun & Steinke 2016, Prop. 1.6 and 1.3)
    assert gradient_batch_epsilon(1.0, 1e-5) == pytest.approx(2.0 + 2.0 * math.sqrt(2.0 * math.log(1e5)))
    assert gradient_batch_epsilon(1.0, 1e-5) == pytest.approx(11.597051824376162)
    assert gradient_batch_epsilon(4.0, 1e-5) == pytest.approx(2.5242629560940406)
    assert gradient_batch_epsilon(0.0, 1e-5) == math.inf
    with pytest.raises(ValueError, match="noise_multiplier must be >= 0, got -1.0"):
        gradient_batch_epsilon(-1.0, 1e-5)
    with pytest.raises(ValueError, match=r"delta must be in \(0, 1\), got 0.0"):
        gradient_batch_epsilon(1.0, 0.0)


def test_bad_gradients_and_settings_are_refused() -> None:
    with pytest.raises(ValueError, match=r"\(users, feature_dim\), got shape \(3,\)"):
        perturb_gradients(torch.zeros(3), 1.0, 1.0, torch.Generator())
    with pytest.raises(ValueError, match="must be finite"):
        perturb_gradients(torch.tensor([[float("nan"), 0.0]]), 1.0, 1.0, torch.Generator())
    with pytest.raises(ValueError, match="got -1.0 and 1.0"):
        perturb_gradients(torch.zeros(1, 2), -1.0, 1.0, torch.Generator())
    with pytest.raises(ValueError, match="noise_multiplier 1.0 needs a clip norm > 0"):
        perturb_gradients(torch.zeros(1, 2), 0.0, 1.0, torch.Generator())
    with pytest.raises(ValueError, match="need a seeded generator"):
        perturb_gradients(torch.zeros(1, 2), 1.0, 1.0, None)
    with pytest.raises(ValueError, match="strategy.grad_noise > 0 needs strategy.grad_clip > 0.*grad_noise=2.0"):
        VerticalStrategyConfig(grad_noise=2.0).validate()
    with pytest.raises(ValueError, match="strategy.grad_clip must be >= 0.0, got -0.1"):
        VerticalStrategyConfig(grad_clip=-0.1).validate()
    with pytest.raises(ValueError, match=r"refuses privacy noise \(strategy.grad_noise=1.0\)"):
        VerticalStrategyConfig(tune="auto", grad_clip=0.01, grad_noise=1.0).validate()


def test_runs_release_noised_gradients_and_the_direction_attack_falls_to_chance() -> None:
    cfg = small_config(grad_clip=0.01, grad_noise=4.0, noise_seed=3)
    parties, common = split_parties(cfg)
    with pytest.warns(PrivacyWarning, match="seed=3"):
        res = VerticalPrototype(cfg).run(InProcessLink(parties), lambda link: {
            n: {"aligned_ids": common} for n in link.parties})
    assert res["grad_batch_epsilon"] == pytest.approx(gradient_batch_epsilon(4.0, 1e-5))
    assert res["passive_view_epsilon"] == math.inf  # per batch only: nothing composes over the run
    # what the passive party received: rows of norm ≈ z·C·√D (noise of 64 coordinates dominates)
    norms = np.concatenate([g.numpy() for g in parties["passive1"].grad_norm_log])
    assert np.median(norms) == pytest.approx(4.0 * 0.01 * math.sqrt(64), rel=0.05)
    # 3 epochs on digits: unprotected, the direction attack labels 87 % of the users it did not know
    # (``test_vertical_gradient_attacks``); noised, it is within 6 points of the largest class share
    attack = res["attack"]
    assert abs(attack["grad_direction"] - attack["grad_direction_chance"]) < 0.06
