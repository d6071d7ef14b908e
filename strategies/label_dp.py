"""Label-DP accounting of the prototype releases (server side of ``clients.vertical.prototype_privacy``).

What is protected: neighbouring inputs differ in one aligned user's *label* (label differential
privacy, Ghazi et al., NeurIPS 2021). One release to one passive party is two Gaussian mechanisms
(see ``clients.vertical.prototype_privacy``): the clipped per-class feature sums, L2 sensitivity ``√2·C`` with
noise ``N(0, (z·C)² I)``, and the class counts, sensitivity ``√2`` with noise ``N(0, z_n²)``. A
Gaussian mechanism of sensitivity Δ and std σ is ρ = Δ² / (2σ²)-zCDP (Bun & Steinke, TCC 2016,
Proposition 1.6), here ``1/z²`` and ``1/z_n²``; zCDP composes additively (Proposition 1.7), so ``T``
releases to ``k`` passive parties cost ``ρ = k·T·(1/z² + 1/z_n²)``, converted to (ε, δ)-DP with
``ε = ρ + 2·√(ρ·ln(1/δ))`` (Proposition 1.3).

Scope: the guarantee covers the prototype channel only, conditional on the features. The
split-learning gradients returned to passive parties also carry label information (Li et al., "Label
leakage and protection in two-party split learning", ICLR 2022); that channel is *not* covered.

The gradients returned to passive parties, when perturbed (``clients.vertical.gradient_protection``),
are accounted per released batch: :func:`gradient_batch_epsilon`.

Pure ``math``: the server imports this without torch.
"""

from __future__ import annotations

import math

from protocol.vertical import PrototypeNoise


def zcdp_per_release(noise: PrototypeNoise) -> float:
    """ρ (zCDP) of one release to one party: ``1/z² + 1/z_n²`` (∞ without noise on either part)."""
    if not noise.is_private:
        return math.inf
    return 1.0 / noise.noise_multiplier**2 + 1.0 / noise.count_noise**2


def zcdp_to_epsilon(rho: float, delta: float) -> float:
    """(ε, δ)-DP implied by ρ-zCDP: ``ε = ρ + 2·√(ρ·ln(1/δ))`` (Bun & Steinke 2016, Prop. 1.3).

    Raises
    ------
    ValueError
        If ``rho`` < 0 or ``delta`` is outside (0, 1).
    """
    if rho < 0:
        raise ValueError(f"rho must be >= 0, got {rho}")
    if not 0.0 < delta < 1.0:
        raise ValueError(f"delta must be in (0, 1), got {delta}")
    if math.isinf(rho):
        return math.inf
    return rho + 2.0 * math.sqrt(rho * math.log(1.0 / delta))


def gradient_batch_epsilon(noise_multiplier: float, delta: float) -> float:
    """ε of one released gradient batch to one passive party, rows clipped to ``C`` with noise
    ``N(0, (z·C)² I)``: one label changes one row by at most ``Δ = 2C``, so ρ = Δ² / (2σ²) = 2 / z²
    (Bun & Steinke 2016, Prop. 1.6) and ε = ρ + 2·√(ρ·ln(1/δ)) (Prop. 1.3); ∞ without noise.

    Raises
    ------
    ValueError
        If ``noise_multiplier`` < 0 or ``delta`` is outside (0, 1).
    """
    if noise_multiplier < 0:
        raise ValueError(f"noise_multiplier must be >= 0, got {noise_multiplier}")
    return zcdp_to_epsilon(math.inf if noise_multiplier == 0 else 2.0 / noise_multiplier**2, delta)


def label_dp_epsilon(noise: PrototypeNoise, releases: int, parties: int, delta: float) -> float:
    """ε of ``releases`` rounds of prototypes sent to ``parties`` passive parties (zCDP composition).

    Raises
    ------
    ValueError
        If ``releases`` or ``parties`` is negative, or (with some release) ``delta`` is outside (0, 1).
    """
    if releases < 0 or parties < 0:
        raise ValueError(f"releases and parties must be >= 0, got {releases} and {parties}")
    if releases * parties == 0:
        return 0.0
    return zcdp_to_epsilon(releases * parties * zcdp_per_release(noise), delta)
