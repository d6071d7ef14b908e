"""Teacher-side local randomised response: every hosted teacher's vote is randomised before it is counted.

The node applies k-ary randomised response (``protocol.local_rr``) to each teacher's predicted class on each
query, with noise from the operating system's entropy, and returns only the histogram of the randomised
votes (a post-processing of them), so each vote is ε-LDP whoever reads the reply.
"""

from __future__ import annotations

import numpy as np

from protocol.local_rr import rr_probabilities


def randomised_histogram(predictions: np.ndarray, n_classes: int, epsilon: float,
                         rng: np.random.Generator) -> np.ndarray:
    """The ``(Q, C)`` histogram of the ``(K, Q)`` teachers' predictions after k-ary randomised response.

    A vote keeps its class with probability ``p``; otherwise it moves to one of the other ``C - 1`` classes
    uniformly (``q`` each), drawn as an offset in ``1 .. C-1`` added modulo ``C``.

    Raises
    ------
    ValueError
        If a prediction is not a class in ``[0, C)``, or as :func:`protocol.local_rr.rr_probabilities`.
    """
    p, _ = rr_probabilities(epsilon, n_classes)
    predictions = np.asarray(predictions, dtype=np.int64)
    out_of_range = predictions.size and (predictions.min() < 0 or predictions.max() >= n_classes)
    if predictions.ndim != 2 or out_of_range:
        raise ValueError(f"predictions must be a (K, Q) array of classes in [0, {n_classes}), got shape "
                         f"{predictions.shape}")
    keep = rng.random(predictions.shape) < p
    offset = rng.integers(1, n_classes, size=predictions.shape)
    reported = np.where(keep, predictions, (predictions + offset) % n_classes)
    votes = np.zeros((predictions.shape[1], n_classes), dtype=np.int64)
    for row in reported:
        np.add.at(votes, (np.arange(len(row)), row), 1)
    return votes
