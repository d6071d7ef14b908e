"""Gaussian perturbation of the split-learning gradients the label holder returns to passive parties.

**What it protects against.** A passive party receives, per aligned user ``i`` of a minibatch,
``g_i = ∂L/∂f_i``; their norms and above all their *directions* tell the users' classes apart (Li et al.,
"Label Leakage and Protection in Two-party Split Learning", ICLR 2022, §3; measured by
:mod:`clients.vertical.gradient_attacks`). Here every released row is clipped to L2 norm ``C`` and
Gaussian noise ``N(0, (z·C)² I)`` is added to it (noise multiplier ``z``), as DP-SGD does to
per-example gradients (Abadi et al., CCS 2016), before it leaves the label holder; the label holder's
own update uses the exact gradients.

**Guarantee, per released gradient batch** (label DP: neighbouring inputs differ in one aligned user's
label). Given the label holder's state at that step (top model, encoder, prototypes) and the batch's
features, row ``i`` depends on user ``i``'s label only (a mean of per-user losses, no cross-row layer),
so one label change moves one clipped row by at most ``Δ = 2C`` in L2. The Gaussian mechanism of
sensitivity Δ and std σ = z·C is ρ = Δ² / (2σ²) = 2 / z² zero-concentrated DP (Bun & Steinke, TCC 2016,
Proposition 1.6), hence (ε, δ)-DP with ε = ρ + 2·√(ρ·ln(1/δ)) (Proposition 1.3;
:func:`strategies.label_dp.gradient_batch_epsilon`).

**What it does not give.** The label holder's state is trained on the exact labels and shapes every
later gradient, so the per-batch guarantees do *not* compose into one for the whole run, nor for the
passive party's whole view (randomised response, :mod:`clients.vertical.label_protection`, does that).
Marvell (Li et al. 2022, §4) instead optimises the noise's covariance against the two-class norm and
direction attacks, with no DP statement; this module keeps the isotropic, stated mechanism.
"""

from __future__ import annotations

import torch


def perturb_gradients(
    grads: torch.Tensor, clip: float, noise_multiplier: float, generator: torch.Generator | None
) -> torch.Tensor:
    """Rows of ``grads`` ``(B, D)`` clipped to L2 norm ``clip``, plus ``N(0, (noise_multiplier·clip)²)``
    on every coordinate (``clip = 0``: returned unchanged).

    Raises
    ------
    ValueError
        If ``grads`` is not 2-D or not finite, ``clip`` or ``noise_multiplier`` is negative, noise is asked
        for without a clip norm, or without a ``generator``.
    """
    if grads.ndim != 2:
        raise ValueError(f"gradients must be (users, feature_dim), got shape {tuple(grads.shape)}")
    if not bool(torch.isfinite(grads).all()):
        raise ValueError("gradients to perturb must be finite")
    if clip < 0 or noise_multiplier < 0:
        raise ValueError(f"clip and noise_multiplier must be >= 0, got {clip!r} and {noise_multiplier!r}")
    if noise_multiplier > 0 and clip == 0:
        raise ValueError(f"noise_multiplier {noise_multiplier!r} needs a clip norm > 0 (std = z × clip)")
    if clip == 0:
        return grads
    norms = grads.norm(dim=1, keepdim=True).clamp(min=1e-12)
    clipped = grads * torch.clamp(clip / norms, max=1.0)
    if noise_multiplier == 0:
        return clipped
    if generator is None:
        raise ValueError("noised gradients need a seeded generator")
    noise = torch.randn(clipped.shape, generator=generator, dtype=clipped.dtype)
    return clipped + noise_multiplier * clip * noise
