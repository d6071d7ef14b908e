"""Label inference from split-learning gradients (Li et al., "Label Leakage and Protection in Two-party
Split Learning", ICLR 2022, §3) — measurements, like :mod:`clients.vertical.label_attacks`.

A passive party receives, for every aligned user ``i`` in its minibatch, ``g_i = ∂L/∂f_i``, the gradient
of the active party's loss w.r.t. the features it sent. With a softmax top model,
``g_i = J_iᵀ (softmax(z_i) − e_{y_i}) / B``, so

- **norm scoring** (their §3.1): ``||g_i||`` grows with ``1 − p_{y_i}``; on an imbalanced binary task the
  rare class has the larger norms. Scored as the ROC AUC of ``||g_i||`` for "``y_i = c``" — for two
  classes the AUC of the positive class as in the paper, for more classes the mean one-vs-rest AUC
  (chance 0.5, and 1 − AUC is as informative as AUC; both are reported as measured);
- **direction scoring** (their §3.2): gradients of users of the same class point the same way
  (positive cosine), of different classes apart. The attacker knows the labels of a few aligned users
  (their assumption: one known positive example); every other user gets the class whose known users'
  gradients are, on average, most cosine-similar to its own (chance ≈ the largest class share).

The passive party computes the scores (:func:`gradient_scores`) from what it received; the label holder
turns them into accuracies (:func:`score_norm_attack`, :func:`direction_guesses`) for the measurement.
"""

from __future__ import annotations

import numpy as np
from scipy.stats import rankdata

KNOWN_PER_CLASS = 2
"""Aligned users whose labels the direction attacker knows: this many per class on average, drawn at
random (so a class may have none, as for an attacker who knows a few users by chance)."""


def attack_epochs(epochs: int) -> set[int]:
    """The epochs whose gradients the passive party logs for the measurement: the first two, the middle
    and the last one (the attack is reported at the best of them)."""
    return {0, min(1, epochs - 1), epochs // 2, epochs - 1}


def known_users(n: int, n_classes: int, seed: int) -> np.ndarray:
    """Positions of the aligned users whose labels the attacker knows (``KNOWN_PER_CLASS`` × classes,
    at most half of the ``n`` users), sorted."""
    m = min(KNOWN_PER_CLASS * n_classes, n // 2)
    return np.sort(np.random.default_rng([seed, 12]).choice(n, size=m, replace=False))


def gradient_scores(grads: np.ndarray, known: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Norm scores ``(n,)`` and cosine similarities ``(n, len(known))`` of the gradients ``(n, D)`` of
    one epoch (row ``i``: aligned user ``i``; a zero gradient has cosine 0 with everything).

    Raises
    ------
    ValueError
        If ``grads`` is not 2-D or ``known`` indexes outside it.
    """
    if grads.ndim != 2:
        raise ValueError(f"gradients must be (users, feature_dim), got shape {grads.shape}")
    if len(known) and (known.min() < 0 or known.max() >= len(grads)):
        raise ValueError(f"known users must index the {len(grads)} gradients, got {known.tolist()}")
    g = grads.astype(np.float64)
    norms = np.linalg.norm(g, axis=1)
    unit = g / np.where(norms > 0, norms, 1.0)[:, None]
    return norms, unit @ unit[known].T


def roc_auc(scores: np.ndarray, positive: np.ndarray) -> float:
    """ROC AUC of ``scores`` for the boolean ``positive`` (Mann–Whitney U with mid-ranks for ties);
    NaN if either class is empty."""
    n_pos = int(positive.sum())
    n_neg = len(positive) - n_pos
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    ranks = rankdata(scores)  # mid-ranks for ties
    return float((ranks[positive].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def score_norm_attack(norms: np.ndarray, labels: np.ndarray, n_classes: int) -> float:
    """AUC of the norm scores: of class 1 for two classes, else the mean one-vs-rest AUC over the
    classes present."""
    if n_classes == 2:
        return roc_auc(norms, labels == 1)
    aucs = [roc_auc(norms, labels == c) for c in range(n_classes)]
    finite = [a for a in aucs if np.isfinite(a)]
    return float(np.mean(finite)) if finite else float("nan")


def direction_guesses(cosines: np.ndarray, known_labels: np.ndarray, n_classes: int) -> np.ndarray:
    """Each user's class: the one whose known users have the largest mean cosine with it (``-1`` when
    nothing is known); classes without a known user are never guessed."""
    if cosines.shape[1] != len(known_labels):
        raise ValueError(f"{cosines.shape[1]} cosine columns for {len(known_labels)} known labels")
    if len(known_labels) == 0:
        return np.full(len(cosines), -1, dtype=np.int64)
    onehot = np.eye(n_classes)[known_labels]  # (m, C)
    counts = onehot.sum(axis=0)
    mean = cosines @ onehot / np.maximum(counts, 1)
    mean[:, counts == 0] = -np.inf
    return mean.argmax(axis=1)
