"""Local randomised response of teacher votes: the record key and the k-ary mechanism both sides share.

Each teacher's vote on each query is released through k-ary randomised response (Warner 1965; the k-ary
form of Kairouz, Oh, Viswanath, "Extremal Mechanisms for Local Differential Privacy", NeurIPS 2014): the
true class with probability ``e^ε / (e^ε + C - 1)``, each other class with ``1 / (e^ε + C - 1)``, so the
ratio of any output's probabilities under two inputs is at most ``e^ε``: every vote is ε-LDP on its own,
whoever aggregates it.
"""

from __future__ import annotations

import math

LDP = "ldp"
"""ConfigRecord of a ``query.votes`` request asking for randomised votes: ``{"epsilon": ε}``."""


MAX_RR_EPSILON = 50.0
"""Largest ε0 accepted: at 50 a vote is reported truthfully with probability > 1 − 10⁻²⁰ (no privacy left to
account), and far above it ``e^ε`` overflows a float."""


def rr_probabilities(epsilon: float, n_classes: int) -> tuple[float, float]:
    """``(p, q)``: the probability of reporting the true class, and each particular other class.

    Raises
    ------
    TypeError
        If ``epsilon`` is not a number (a bool is not one).
    ValueError
        If ``epsilon`` is not a finite number in (0, :data:`MAX_RR_EPSILON`] or ``n_classes < 2``.
    """
    if isinstance(epsilon, bool) or not isinstance(epsilon, (int, float)):
        raise TypeError(f"the randomised-response epsilon must be a number, got {epsilon!r}")
    if not (math.isfinite(epsilon) and epsilon > 0):
        raise ValueError(f"the randomised-response epsilon must be a finite number > 0, got {epsilon!r}")
    if epsilon > MAX_RR_EPSILON:
        raise ValueError(f"the randomised-response epsilon must be <= {MAX_RR_EPSILON:g} (beyond it votes "
                         f"are practically never randomised and e^epsilon overflows), got {epsilon!r}")
    if n_classes < 2:
        raise ValueError(f"randomised response needs >= 2 classes, got {n_classes}")
    denominator = math.exp(epsilon) + n_classes - 1
    return math.exp(epsilon) / denominator, 1.0 / denominator
