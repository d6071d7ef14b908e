"""Label inference from a passive party's own forward embeddings (Sun et al., "Label Leakage and
Protection from Forward Embedding in Vertical Federated Learning", arXiv:2203.01451, 2022) — a
measurement, like :mod:`clients.vertical.label_attacks` and :mod:`clients.vertical.gradient_attacks`.

Split learning trains a passive party's encoder so that its outputs (the forward embeddings it sends)
help the label holder's top model: users of one class end up close together. The passive party needs
nothing it did not compute itself to exploit that: it clusters its embeddings of the aligned users into
``C`` clusters (k-means, the paper's attack; here Lloyd's algorithm from k-means++ seeds, best of a few
seeded restarts) and reads each cluster as one class. Which class is which, it cannot tell from the
clustering alone; two mappings are measured:

- **known users** (the attack reported as ``fwd_cluster``): the attacker knows the labels of the same
  few aligned users as the gradient direction attack (:func:`clients.vertical.gradient_attacks.known_users`,
  ``KNOWN_PER_CLASS`` × ``C`` drawn at random). Each cluster is guessed as the most frequent known label
  among its members (ties: the smaller class); a cluster holding no known user is guessed as the most
  frequent known label overall. Scored on the other users, beside the same chance level as the direction
  attack (the largest class share among them);
- **best one-to-one mapping** (``fwd_cluster_best``): the cluster-to-class bijection with the most
  correct users (Hungarian algorithm on the confusion matrix). Nobody without the labels can pick it:
  it is an *upper bound* on any attacker who has the clustering and no labels. Even clusters independent
  of the labels score above the largest class share under their best mapping, so its chance level is
  measured too (``fwd_cluster_best_chance``: the best mapping's accuracy for labels permuted at random).

The active party scores both (:func:`cluster_guesses`, :func:`best_mapping_accuracy`,
:func:`permutation_chance`); the passive party only sends its cluster indices.
"""

from __future__ import annotations

import numpy as np
from scipy.optimize import linear_sum_assignment

N_INIT = 5
"""Seeded k-means restarts; the clustering with the least within-cluster sum of squares is kept."""
MAX_ITER = 100
"""Lloyd iterations per restart at most (it stops earlier once the assignment is stable)."""


def check_embeddings(points: np.ndarray, k: int) -> np.ndarray:
    """``points`` as a finite float64 ``(n, d)`` array with ``1 <= k <= n``.

    Raises
    ------
    ValueError
        If ``points`` is not 2-D, holds a non-finite value (the first one is named) or ``k`` is out of
        range.
    """
    points = np.asarray(points, dtype=np.float64)
    if points.ndim != 2:
        raise ValueError(f"embeddings must be (users, dim), got shape {points.shape}")
    bad = np.argwhere(~np.isfinite(points))
    if len(bad):
        row, col = bad[0]
        raise ValueError(f"embeddings must be finite, got {points[row, col]} at row {row}, column {col}")
    if not 1 <= k <= len(points):
        raise ValueError(f"k-means needs 1 <= k <= {len(points)} users, got k={k}")
    return points


def _plus_plus_seeds(points: np.ndarray, k: int, rng: np.random.Generator) -> np.ndarray:
    """k-means++ seeding (Arthur & Vassilvitskii, SODA 2007): each next centre drawn with probability
    proportional to the squared distance to the nearest centre so far."""
    centres = [points[rng.integers(len(points))]]
    d2 = ((points - centres[0]) ** 2).sum(axis=1)
    for _ in range(1, k):
        total = d2.sum()
        pick = rng.choice(len(points), p=d2 / total) if total > 0 else rng.integers(len(points))
        centres.append(points[pick])
        d2 = np.minimum(d2, ((points - points[pick]) ** 2).sum(axis=1))
    return np.array(centres)


def _lloyd(points: np.ndarray, centres: np.ndarray) -> tuple[np.ndarray, float]:
    """Lloyd's iterations from ``centres``; the assignment and its within-cluster sum of squares (an
    emptied cluster is re-seeded at the point farthest from its centre)."""
    assign = np.full(len(points), -1)
    for _ in range(MAX_ITER):
        d2 = ((points[:, None, :] - centres[None, :, :]) ** 2).sum(axis=2)
        new = d2.argmin(axis=1)
        if np.array_equal(new, assign):
            break
        assign = new
        for c in range(len(centres)):
            members = assign == c
            if members.any():
                centres[c] = points[members].mean(axis=0)
            else:
                centres[c] = points[d2[np.arange(len(points)), assign].argmax()]
    d2 = ((points - centres[assign]) ** 2).sum(axis=1)
    return assign, float(d2.sum())


def kmeans(points: np.ndarray, k: int, seed: int) -> np.ndarray:
    """Cluster index ``(n,)`` in ``[0, k)`` of every row of ``points`` ``(n, d)``: k-means (Lloyd from
    k-means++ seeds), the best of :data:`N_INIT` restarts drawn from ``seed`` (same seed, same answer).

    Raises
    ------
    ValueError
        As :func:`check_embeddings`.
    """
    points = check_embeddings(points, k)
    rng = np.random.default_rng([seed, 26])
    best, best_inertia = np.zeros(len(points), dtype=np.int64), np.inf
    for _ in range(N_INIT):
        assign, inertia = _lloyd(points, _plus_plus_seeds(points, k, rng))
        if inertia < best_inertia:
            best, best_inertia = assign.astype(np.int64), inertia
    return best


def _check_indices(values: np.ndarray, n_classes: int, what: str) -> np.ndarray:
    """``values`` as a 1-D int64 array of indices in ``[0, n_classes)``, else a ValueError naming them."""
    values = np.asarray(values)
    if values.ndim != 1 or (len(values) and (values.min() < 0 or values.max() >= n_classes)):
        span = f" and values in [{values.min()}, {values.max()}]" if values.size else ""
        raise ValueError(f"{what} must be a 1-D array of indices in [0, {n_classes}), got shape "
                         f"{values.shape}{span}")
    return values.astype(np.int64)


def cluster_guesses(clusters: np.ndarray, known: np.ndarray, known_labels: np.ndarray,
                    n_classes: int) -> np.ndarray:
    """Every user's guessed class: its cluster's most frequent known label (ties: the smaller class),
    for a cluster without a known user the most frequent known label overall (``-1`` when nothing is
    known).

    Raises
    ------
    ValueError
        If ``clusters`` holds an index outside ``[0, n_classes)``, ``known`` indexes outside it, or
        ``known`` and ``known_labels`` differ in length.
    """
    clusters = _check_indices(clusters, n_classes, "clusters")
    if len(known) != len(known_labels):
        raise ValueError(f"{len(known)} known users for {len(known_labels)} known labels")
    if len(known) == 0:
        return np.full(len(clusters), -1, dtype=np.int64)
    if np.min(known) < 0 or np.max(known) >= len(clusters):
        raise ValueError(f"known users must index the {len(clusters)} users, got "
                         f"{np.asarray(known).tolist()}")
    counts = np.zeros((n_classes, n_classes), dtype=np.int64)  # [cluster, known label]
    np.add.at(counts, (clusters[known], _check_indices(known_labels, n_classes, "known labels")), 1)
    overall = counts.sum(axis=0).argmax()
    mapping = np.where(counts.sum(axis=1) > 0, counts.argmax(axis=1), overall)
    return mapping[clusters]


def best_mapping_accuracy(clusters: np.ndarray, labels: np.ndarray, n_classes: int) -> float:
    """Accuracy of the best one-to-one cluster → class mapping (Hungarian algorithm): an upper bound on
    what the clustering gives an attacker without labels (NaN for no users).

    Raises
    ------
    ValueError
        If ``clusters`` or ``labels`` holds an index outside ``[0, n_classes)`` or they differ in length.
    """
    clusters = _check_indices(clusters, n_classes, "clusters")
    labels = _check_indices(labels, n_classes, "labels")
    if len(clusters) != len(labels):
        raise ValueError(f"{len(clusters)} cluster indices for {len(labels)} labels")
    if len(labels) == 0:
        return float("nan")
    confusion = np.zeros((n_classes, n_classes), dtype=np.int64)
    np.add.at(confusion, (clusters, labels), 1)
    rows, cols = linear_sum_assignment(confusion, maximize=True)
    return float(confusion[rows, cols].sum() / len(labels))


def permutation_chance(clusters: np.ndarray, labels: np.ndarray, n_classes: int, seed: int,
                       rounds: int = 20) -> float:
    """Chance level of :func:`best_mapping_accuracy`: its mean over ``rounds`` random permutations of
    ``labels`` (drawn from ``seed``), i.e. for clusters independent of the labels with the same sizes."""
    rng = np.random.default_rng([seed, 27])
    return float(np.mean([best_mapping_accuracy(clusters, rng.permutation(labels), n_classes)
                          for _ in range(rounds)]))
