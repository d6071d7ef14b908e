"""Label-DP for the aligned users: randomised response on the labels the active party trains with.

**Mechanism.** Once per run, before any training, the active party replaces each aligned user's label
``y`` by ``ỹ`` drawn from ``k``-ary randomised response (Warner 1965; Ghazi et al., "Deep Learning with
Label Differential Privacy", NeurIPS 2021, Algorithm 1 without priors):
``P(ỹ = y) = e^ε / (e^ε + C − 1)`` and every other class with ``1 / (e^ε + C − 1)``. That is ε-label-DP
for each aligned user. From then on every use of an aligned user's label in training (top model,
local head, prototypes, the prototype losses) reads ``ỹ``; nothing a passive party receives during
training — gradients, prototypes — depends on ``y`` except through ``ỹ``, so by post-processing the
passive party's whole view is ε-label-DP for the aligned users' labels, whatever it computes from it
(Li et al.'s gradient attacks and the prototype attacks included). One draw per run: the labels are
never re-randomised, so nothing composes over epochs.

**De-biased targets.** Training on ``ỹ`` directly learns ``P(ỹ | x) = Tᵀ P(y | x)`` with the transition
matrix ``T`` above. The forward correction of Patrini et al. ("Making Deep Neural Networks Robust to
Label Noise: a Loss Correction Approach", CVPR 2017, §3.1) trains on
``−log (Tᵀ softmax(z))_ỹ`` instead, whose minimiser is ``softmax(z) = P(y | x)``: the model predicts the
true labels' distribution.
"""

from __future__ import annotations

import math

import torch


def keep_probability(epsilon: float, n_classes: int) -> float:
    """``P(ỹ = y) = e^ε / (e^ε + C − 1)`` of ε-randomised response over ``C`` classes.

    Raises
    ------
    ValueError
        If ``epsilon <= 0`` or fewer than two classes.
    """
    if not epsilon > 0:
        raise ValueError(f"randomised response needs epsilon > 0, got {epsilon!r}")
    if n_classes < 2:
        raise ValueError(f"randomised response needs at least 2 classes, got {n_classes}")
    return math.exp(epsilon) / (math.exp(epsilon) + n_classes - 1)


def transition_matrix(epsilon: float, n_classes: int) -> torch.Tensor:
    """``T[i, j] = P(ỹ = j | y = i)`` of ε-randomised response."""
    keep = keep_probability(epsilon, n_classes)
    other = (1.0 - keep) / (n_classes - 1)
    return torch.full((n_classes, n_classes), other).fill_diagonal_(keep)


def randomized_response(
    labels: torch.Tensor, n_classes: int, epsilon: float, generator: torch.Generator
) -> torch.Tensor:
    """``labels`` through ε-randomised response: each kept w.p. :func:`keep_probability`, else replaced by
    one of the other ``C − 1`` classes uniformly."""
    keep = keep_probability(epsilon, n_classes)
    flip = torch.rand(len(labels), generator=generator) >= keep
    shift = torch.randint(1, n_classes, (len(labels),), generator=generator)  # another class, uniformly
    return torch.where(flip, (labels + shift) % n_classes, labels)


def forward_corrected_loss(
    logits: torch.Tensor, noisy: torch.Tensor, transition: torch.Tensor
) -> torch.Tensor:
    """Per-row ``−log (Tᵀ softmax(logits))_ỹ`` (Patrini et al. 2017, forward correction)."""
    probs = torch.softmax(logits, dim=1) @ transition
    return -torch.log(probs.gather(1, noisy[:, None]).squeeze(1).clamp(min=1e-12))
