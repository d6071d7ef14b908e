"""How the active party fuses its predictors for aligned users, and how it picks the fusion.

An aligned user is scored by three log-probability vectors at the active party: the top model over
every party's features, the local head over its own features, and the passive parties' nearest-prototype
scores (:func:`prototype_scores`). The prediction is the argmax of their weighted sum, a product of
experts (Hinton, Neural Computation 2002) with weights ``(top, head, prototypes)``.

With ``fusion_selection = "validation"`` the active party compares a few candidate weightings on its
validation users after training and keeps the best (:func:`choose_fusion`) among
:func:`protocol.vertical.fusion_candidates` (the spec both sides read). The candidate set is kept
small on purpose: a fine grid chosen on a few hundred validation users overfits them (on digits at
aligned fraction 0.05, seeds 0–5, a 63-point grid lost 0.5 points of test accuracy against the fixed
fusion while these four candidates lost 0.1); the coarse set is there to drop a predictor that
training spoilt, e.g. a passive side trained against strongly noised prototypes.
"""

from __future__ import annotations

import torch

from clients.vertical.prototypes import prototype_logits, prototype_temperature
from protocol.vertical import Fusion


def fuse(components: dict[str, torch.Tensor], weights: Fusion) -> torch.Tensor:
    """``(N, C)`` weighted sum of the ``top``, ``head`` and ``proto`` log-probabilities."""
    total = torch.zeros_like(components["head"])
    for name, weight in zip(("top", "head", "proto"), weights, strict=True):
        if weight:
            total = total + weight * components[name]
    return total


def choose_fusion(
    components: dict[str, torch.Tensor], labels: torch.Tensor, candidates: list[Fusion]
) -> tuple[Fusion, list[float]]:
    """The candidate with the best accuracy on ``labels`` (the earliest on ties), and every accuracy.

    Raises
    ------
    ValueError
        If there is no candidate or no labelled user.
    """
    if not candidates:
        raise ValueError("no candidate fusion to choose from")
    if len(labels) == 0:
        raise ValueError("choosing a fusion needs at least one labelled validation user")
    accuracies = [float((fuse(components, w).argmax(dim=1) == labels).double().mean()) for w in candidates]
    best = max(range(len(candidates)), key=lambda i: (accuracies[i], -i))
    return candidates[best], accuracies


def prototype_scores(
    passive_features: list[torch.Tensor],
    passive_prototypes: list[tuple[torch.Tensor, torch.Tensor]],
    n_classes: int,
    temperature_scale: float,
) -> torch.Tensor:
    """``(N, C)`` sum over passive parties of nearest-prototype log-probabilities of their features.

    Party k's classifier is the softmax over ``-d² / τ_k`` to its prototypes (Snell et al., NeurIPS
    2017, eq. 2; τ tied to their spread); classes without a prototype, and parties with fewer than
    two, contribute ``0``.
    """
    total = torch.zeros(len(passive_features[0]), n_classes)
    for features, (protos, valid) in zip(passive_features, passive_prototypes, strict=False):
        if int(valid.sum()) < 2:
            continue
        temperature = prototype_temperature(protos, valid, temperature_scale)
        logp = torch.log_softmax(prototype_logits(features, protos, valid, temperature), dim=1)
        total = total + logp.masked_fill(~valid[None, :], 0.0)
    return total
