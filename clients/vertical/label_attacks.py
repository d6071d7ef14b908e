"""Label-inference attacks a passive party can mount on the prototypes it receives (measurements).

Both attacks use only what a passive party legitimately holds: the features it sent for the aligned
users (in the shared aligned order) and the prototypes the active party sent back.

- **Exact (linear-system) attack.** In round ``t`` the prototype of class ``c`` is
  ``p_c^t = Σ_i w_ic f_i^t`` with ``w_ic = 1/n_c`` if user ``i`` has label ``c`` and 0 otherwise. Stacking
  the rounds gives ``P = Wᵀ F`` with ``F = [F^1 … F^T]`` of shape ``(n, D·T)``; once ``D·T ≥ n`` and ``F``
  has full row rank, least squares recovers ``W`` exactly and ``argmax_c W_ic / max_j W_jc`` is user
  ``i``'s label.
- **Nearest-prototype attack.** Label every aligned user with the class of the prototype nearest to its
  last features.

These functions exist to *measure* leakage next to task accuracy; the protection lives in
:mod:`clients.vertical.prototype_privacy`.
"""

from __future__ import annotations

import numpy as np


def exact_label_attack(
    feature_log: list[np.ndarray], prototype_log: list[np.ndarray], valid_log: list[np.ndarray]
) -> np.ndarray:
    """Solve the stacked prototype equations for every aligned user's label.

    Parameters
    ----------
    feature_log : list of (n, D) arrays
        The passive party's features of the aligned users at each release.
    prototype_log : list of (C, D) arrays
        The prototypes received at each release.
    valid_log : list of (C,) bool arrays
        Which classes were released each time (a withheld class contributes no equation).

    Returns
    -------
    np.ndarray
        ``(n,)`` guessed labels (``-1`` where nothing was released).

    Raises
    ------
    ValueError
        If the three logs differ in length or shapes disagree.
    """
    if not (len(feature_log) == len(prototype_log) == len(valid_log)):
        raise ValueError("feature, prototype and valid logs must have one entry per release")
    if not feature_log:
        return np.zeros(0, dtype=np.int64)
    n = feature_log[0].shape[0]
    n_classes = prototype_log[0].shape[0]
    scores = np.full((n, n_classes), -np.inf)
    groups: dict[tuple[int, ...], list[int]] = {}  # classes released in the same rounds share one solve
    for c in range(n_classes):
        rounds = tuple(t for t, v in enumerate(valid_log) if v[c])
        if rounds:
            groups.setdefault(rounds, []).append(c)
    for rounds, classes in groups.items():
        F = np.concatenate([feature_log[t].astype(np.float64) for t in rounds], axis=1)  # (n, D·T)
        P = np.concatenate([prototype_log[t][classes].astype(np.float64) for t in rounds], axis=1)
        W, *_ = np.linalg.lstsq(F.T, P.T, rcond=None)  # (n, len(classes))
        scores[:, classes] = W / np.maximum(np.abs(W).max(axis=0, keepdims=True), 1e-12)
    guesses = scores.argmax(axis=1)
    guesses[~np.isfinite(scores.max(axis=1))] = -1
    return guesses


def nearest_prototype_attack(features: np.ndarray, prototypes: np.ndarray, valid: np.ndarray) -> np.ndarray:
    """Class of the nearest released prototype for each aligned user (``-1`` if none was released)."""
    if not valid.any():
        return np.full(len(features), -1, dtype=np.int64)
    d = ((features[:, None, :] - prototypes[None, :, :]) ** 2).sum(axis=2)
    d[:, ~valid] = np.inf
    return d.argmin(axis=1)
