"""Label-private release of per-class prototypes: clipping, Gaussian noise, minimum class counts.

What is protected. A passive party knows which users are aligned (PSI tells it) and its own features of
them; the secret is their *labels*. Neighbouring inputs therefore differ in one aligned user's label
(label differential privacy, Ghazi et al., NeurIPS 2021). Every release is a Gaussian mechanism on

- the per-class sums of clipped features, ``S_c = Σ_{i: y_i = c} clip_C(f_i)`` with
  ``clip_C(f) = f · min(1, C / ||f||_2)``. The clip norm is ``C = clip × median_i ||f_i||``: a function of
  the features alone, which the passive party knows anyway, so it depends on no label and the label-DP
  analysis below holds as if ``C`` were fixed in advance (it also keeps the prototypes on the features'
  own scale, which the prototype pulls need). moving one user from class ``c`` to ``c'`` changes ``S_c``
  and ``S_{c'}`` by at most ``C`` each, so the L2 sensitivity of ``(S_1, …, S_K)`` is ``√2·C``. Noise
  ``N(0, (z·C)^2 I)`` (noise multiplier ``z``) gives ρ = Δ² / (2σ²) = 1 / z² zero-concentrated DP
  (Bun & Steinke, TCC 2016, Proposition 1.6);
- the class counts ``n_c`` (sensitivity ``√2``), with noise ``N(0, z_n^2)``: ρ = 1 / z_n².

The prototype is ``S̃_c / max(ñ_c, 1)`` and a class is released only if ``ñ_c >= min_count`` — both
post-processing. (For the class *mean* alone one usually quotes sensitivity ≈ 2C/n_c; releasing the
noisy sum and count separately avoids treating ``n_c`` as public.) zCDP composes additively
(Proposition 1.7); the server charges the releases with ``ε = ρ + 2·√(ρ·ln(1/δ))`` (Proposition 1.3),
see ``strategies.label_dp``. The settings (:class:`protocol.vertical.PrototypeNoise`) live on the
ground floor, since both sides read them.

Scope: the guarantee covers the prototype channel only, conditional on the features (the passive
party's own view of itself). The split-learning gradients returned to passive parties also carry label
information (Li et al., "Label leakage and protection in two-party split learning", ICLR 2022), and they
shape the features; that channel is *not* covered by this guarantee.
"""

from __future__ import annotations

import torch

from clients.vertical.prototypes import check_features
from protocol.vertical import PrototypeNoise


def clip_rows(features: torch.Tensor, clip: float) -> torch.Tensor:
    """Scale every row to L2 norm at most ``clip`` (``clip = 0``: unchanged)."""
    if clip <= 0:
        return features
    norms = features.norm(dim=1, keepdim=True).clamp(min=1e-12)
    return features * torch.clamp(clip / norms, max=1.0)


def clip_norm(features: torch.Tensor, clip: float) -> float:
    """``C = clip × median row norm`` (label-independent; 0 when ``clip`` is 0 or every row is zero)."""
    if clip <= 0 or len(features) == 0:
        return 0.0
    return clip * float(features.norm(dim=1).median())


def release_prototypes(
    features: torch.Tensor,
    labels: torch.Tensor,
    n_classes: int,
    noise: PrototypeNoise,
    generator: torch.Generator | None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Prototypes ``(C, D)`` and ``valid (C,)`` for release, protected as ``noise`` says.

    ``generator`` seeds the noise; ``None`` is allowed only when ``noise`` adds none.

    Raises
    ------
    ValueError
        On non-finite features or labels outside ``[0, n_classes)``.
    """
    check_features(features, what="features to release")
    if len(labels) and (int(labels.min()) < 0 or int(labels.max()) >= n_classes):
        raise ValueError(f"labels must lie in [0, {n_classes})")
    if generator is None and (noise.noise_multiplier > 0 or noise.count_noise > 0):
        raise ValueError("a noised release needs a seeded generator")
    feats = features.detach().double()
    clip = clip_norm(feats, noise.clip)
    sums = torch.zeros(n_classes, features.shape[1], dtype=torch.float64)
    sums.index_add_(0, labels, clip_rows(feats, clip))
    counts = torch.bincount(labels, minlength=n_classes).double()
    if noise.noise_multiplier > 0:
        std = noise.noise_multiplier * clip
        sums = sums + std * torch.randn(sums.shape, generator=generator, dtype=torch.float64)
    if noise.count_noise > 0:
        counts = counts + noise.count_noise * torch.randn(counts.shape, generator=generator,
                                                          dtype=torch.float64)
    valid = counts >= noise.min_count
    prototypes = torch.where(valid[:, None], sums / counts.clamp(min=1.0)[:, None], torch.zeros_like(sums))
    return prototypes.float(), valid
