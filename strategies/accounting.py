"""Rényi-DP accounting for PATE vote fusion, and a persisted privacy ledger.

The module has two layers, kept apart on purpose:

* **Analysis functions** (pure numpy/scipy, vectorised over queries): the per-query RDP of the PATE
  aggregators at a grid of orders, data-independent and data-dependent, and the RDP → (ε, δ)
  conversion.
* :class:`PrivacyLedger`: bookkeeping only. It charges batches of vote histograms, stops before the
  budget would be exceeded, keeps a history and persists it atomically as JSON.

References
----------
* [P18] N. Papernot, S. Song, I. Mironov, A. Raghunathan, K. Talwar, Ú. Erlingsson. "Scalable
  Private Learning with PATE." ICLR 2018, arXiv:1802.08908. Theorem and proposition numbers below
  follow this paper; the reference implementation is tf-privacy ``research/pate_2018/core.py``.
* [P17] N. Papernot, M. Abadi, Ú. Erlingsson, I. Goodfellow, K. Talwar. "Semi-supervised Knowledge
  Transfer for Deep Learning from Private Training Data." ICLR 2017, arXiv:1610.05755.
* [M17] I. Mironov. "Rényi Differential Privacy." CSF 2017, arXiv:1702.07476.
* [BS16] M. Bun, T. Steinke. "Concentrated Differential Privacy: Simplifications, Extensions, and
  Lower Bounds." TCC 2016, arXiv:1605.02065.

Shapes: ``votes`` is ``(Q, C)`` (Q queries, C classes, each row a vote histogram); ``orders`` is
``(K,)``. Per-query results are ``(Q, K)``; totals are ``(K,)``.

Caveat (stated in [P18]): a data-dependent ε depends on the teachers' votes and is therefore not
itself differentially private. Report the data-independent ε beside it, or release the
data-dependent one through [P18]'s smooth-sensitivity mechanism, which this module does not implement.
"""

from __future__ import annotations

import contextlib
import dataclasses
import fcntl
import json
import math
import os
import tempfile
import warnings
from collections.abc import Iterator, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
from scipy import special, stats

__all__ = [
    "DEFAULT_ORDERS",
    "BudgetExhaustedError",
    "ChargeResult",
    "PrivacyLedger",
    "PrivacyWarning",
    "log_pr_answered",
    "rdp_confident_gnmax_expected",
    "rdp_gnmax_data_dependent",
    "rdp_gnmax_data_independent",
    "rdp_lnmax_data_dependent",
    "rdp_lnmax_data_independent",
    "rdp_threshold",
    "rdp_threshold_data_independent",
    "rdp_to_epsilon",
]

ArrayLike = npt.ArrayLike
FloatArray = npt.NDArray[np.float64]

DEFAULT_ORDERS: FloatArray = np.concatenate(
    (np.arange(2.0, 100.5, 0.5), 100.0 * 5.0 ** (np.arange(1, 102) / 101))
)
"""Default grid of Rényi orders: 298 distinct, sorted values from 2 to 500.

* 197 orders from 2 to 100 in steps of 0.5 (``np.arange(2, 100.5, 0.5)``), then
* 101 log-spaced orders in (100, 500]: ``100 * 5 ** (k / 101)`` for k = 1..101, i.e.
  ``np.logspace(2, log10(500), 102)[1:]``, written so that the last order is exactly 500.

Deviation: the [P18] scripts use ``concatenate((arange(2, 101, .5), logspace(2, log10(500), 100)))``,
which also has 298 entries but holds 100 twice and puts 100.5 before 100 (unsorted). The
orders below 100, where the paper's optima lie (e.g. 14 for MNIST), are identical.
"""
DEFAULT_ORDERS.setflags(write=False)

_MECHANISMS = ("gnmax", "confident_gnmax", "lnmax")
_BUDGET_BASES = ("data_dependent", "data_independent")
_LEDGER_FORMAT_VERSION = 1


class PrivacyWarning(UserWarning):
    """A legal but degenerate privacy setting, e.g. the best order sits at the edge of the grid."""


class BudgetExhaustedError(RuntimeError):
    """Raised by :meth:`PrivacyLedger.charge` once the privacy budget is exhausted."""


# ---------------------------------------------------------------------------------------------------
# Validation at the public boundary
# ---------------------------------------------------------------------------------------------------


def _check_positive(name: str, value: float) -> float:
    """Return ``value`` as a float if it is finite and > 0, else raise ValueError."""
    value = float(value)
    if math.isnan(value) or value <= 0:
        raise ValueError(f"{name} must be > 0, got {value}")
    if math.isinf(value):
        raise ValueError(f"{name} must be finite, got {value}")
    return value


def _check_finite(name: str, value: float) -> float:
    """Return ``value`` as a float if it is finite, else raise ValueError."""
    value = float(value)
    if not math.isfinite(value):
        raise ValueError(f"{name} must be finite, got {value}")
    return value


def _check_delta(delta: float) -> float:
    """Return ``delta`` as a float if 0 < delta < 1, else raise ValueError."""
    delta = float(delta)
    if not 0.0 < delta < 1.0:
        raise ValueError(f"delta must be in (0, 1), got {delta}")
    return delta


def _check_orders(orders: ArrayLike) -> FloatArray:
    """Return ``orders`` as a 1-D float array of finite orders > 1, else raise ValueError."""
    arr = np.asarray(orders, dtype=float)
    if arr.ndim != 1 or arr.size == 0:
        raise ValueError(f"orders must be a non-empty 1-D array, got shape {arr.shape}")
    if not np.all(np.isfinite(arr)):
        raise ValueError(f"orders must be finite, got {arr[~np.isfinite(arr)][0]}")
    if np.any(arr <= 1):
        raise ValueError(f"orders must all be > 1, got {arr[arr <= 1][0]}")
    return arr


def validate_votes(votes: ArrayLike) -> FloatArray:
    """Return ``votes`` as a ``(Q, C)`` float array of vote histograms, else raise ValueError.

    Rules: 2-D, non-empty, finite, non-negative, and every row sums to the same number of
    teachers (within a relative 1e-9, so that fractional votes are allowed).
    """
    try:
        arr = np.asarray(votes, dtype=float)
    except (TypeError, ValueError) as err:
        raise ValueError(f"votes must be a numeric array, got {type(votes).__name__}") from err
    if arr.ndim != 2:
        raise ValueError(f"votes must be 2-D (queries, classes), got shape {arr.shape}")
    if arr.size == 0:
        raise ValueError(f"votes must not be empty, got shape {arr.shape}")
    bad = ~np.isfinite(arr)
    if np.any(bad):
        row, col = np.argwhere(bad)[0]
        raise ValueError(f"votes must be finite, got {arr[row, col]} at row {row}, class {col}")
    if np.any(arr < 0):
        row, col = np.argwhere(arr < 0)[0]
        raise ValueError(f"votes must be >= 0, got {arr[row, col]} at row {row}, class {col}")
    sums = arr.sum(axis=1)
    unequal = ~np.isclose(sums, sums[0], rtol=1e-9, atol=0.0)
    if np.any(unequal):
        row = int(np.flatnonzero(unequal)[0])
        raise ValueError(
            "votes rows must all sum to the same number of teachers; "
            f"row {row} sums to {sums[row]:g}, row 0 to {sums[0]:g}"
        )
    return arr


# ---------------------------------------------------------------------------------------------------
# Log-space helpers
# ---------------------------------------------------------------------------------------------------


def _log1mexp(x: FloatArray) -> FloatArray:
    """Elementwise ``log(1 - exp(x))`` for ``x <= 0``, stable at both ends.

    Uses ``log1p(-exp(x))`` for x < -ln 2 and ``log(-expm1(x))`` otherwise (Mächler 2012);
    returns -inf at x = 0 and nan for x > 0 (callers mask those entries out).
    """
    x = np.asarray(x, dtype=float)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(x < -math.log(2.0), np.log1p(-np.exp(x)), np.log(-np.expm1(x)))


def _logsumexp_excluding_argmax(terms: FloatArray, votes: FloatArray) -> FloatArray:
    """Row-wise log-sum-exp of ``terms`` over all classes but one argmax of ``votes``."""
    terms = terms.copy()
    np.put_along_axis(terms, np.argmax(votes, axis=1)[:, None], -np.inf, axis=1)
    return special.logsumexp(terms, axis=1)


# ---------------------------------------------------------------------------------------------------
# GNMax
# ---------------------------------------------------------------------------------------------------


def rdp_gnmax_data_independent(sigma: float, orders: ArrayLike = DEFAULT_ORDERS) -> FloatArray:
    """Data-independent RDP of one GNMax query: ``α / σ²`` ([P18] Proposition 8).

    One teacher changing its vote moves two counts by 1, so the histogram has L2 sensitivity √2 and
    the Gaussian mechanism gives ``α · 2 / (2σ²)``; releasing only the argmax is post-processing.

    Parameters
    ----------
    sigma : float
        Standard deviation of the Gaussian noise added to every count (> 0).
    orders : array_like, default DEFAULT_ORDERS
        Rényi orders α > 1.

    Returns
    -------
    numpy.ndarray
        Shape ``(K,)``: the RDP at each order.

    Raises
    ------
    ValueError
        If ``sigma <= 0`` or an order is <= 1.
    """
    sigma = _check_positive("sigma", sigma)
    return _check_orders(orders) / sigma**2


def _logq_gnmax(votes: FloatArray, sigma: float) -> FloatArray:
    """Upper bound on ``ln Pr[GNMax outcome != argmax]`` per query ([P18] Proposition 7).

    Union bound ``q <= Σ_{i≠i*} Pr[n_i + N_i >= n_i* + N_i*] = Σ_{i≠i*} ½ erfc((n_i* - n_i) / 2σ)``,
    i.e. the survival function of N(0, 2σ²) at each gap, capped at ``1 - 1/C``: if q were larger,
    the argmax would not be the most likely outcome, and the cap is always achievable.
    """
    gaps = votes.max(axis=1, keepdims=True) - votes
    log_tails = stats.norm.logsf(gaps, scale=math.sqrt(2.0) * sigma)
    logq = _logsumexp_excluding_argmax(log_tails, votes)
    with np.errstate(divide="ignore"):
        return np.minimum(logq, np.log1p(-1.0 / votes.shape[1]))


def _rdp_gaussian_from_logq(logq: FloatArray, variance: float, orders: FloatArray) -> FloatArray:
    """Data-dependent RDP of a Gaussian-noise argmax given ``ln q`` per query ([P18] Theorem 6).

    The mechanism is assumed to be (μ, μ/σ²)-RDP for every μ, with ``variance`` = σ² (GNMax by
    Proposition 8; the threshold check with σ² = 2σ1²).
    Theorem 6 bounds its RDP at order λ, for a dataset where ``Pr[outcome != i*] <= q``, by::

        1/(λ-1) · log((1-q) · A^(λ-1) + q · B^(λ-1)),
        A = (1-q) / (1 - (q·e^ε2)^((μ2-1)/μ2)),   B = e^ε1 / q^(1/(μ1-1)),   εi = μi/σ²,

    with the two higher orders chosen as in tf-privacy (Proposition 10 there):
    ``μ2 = σ·sqrt(ln 1/q)``, ``μ1 = μ2 + 1``. The bound holds only where its conditions do:

    * ``λ < μ1`` (the theorem needs λ <= μ1; strict as in tf-privacy) and ``μ2 > 1``;
    * ``q·e^ε2 < 1``, i.e. ``ln 1/q > ε2``, so that A is positive and finite;
    * ``q <= e^((μ2-1)ε2) / (μ1/(μ1-1) · μ2/(μ2-1))^μ2``, the range where the bound increases in
      q, so that an *upper bound* on q may be plugged in.

    Where a condition fails, the data-independent ``λ/σ²`` is returned; the result is always the
    minimum of the two. ``q = 0`` (output fixed) gives 0.

    Parameters
    ----------
    logq : numpy.ndarray
        Shape ``(Q,)``, values in [-inf, 0].
    variance : float
        σ² of the RDP curve μ/σ², already validated. Passed squared so that the fallback equals
        the data-independent functions bit for bit (``(√2·σ1)²`` is not ``2·σ1²`` in floating point).
    orders : numpy.ndarray
        Shape ``(K,)``, already validated.

    Returns
    -------
    numpy.ndarray
        Shape ``(Q, K)``.
    """
    rdp = np.tile(orders / variance, (logq.shape[0], 1))
    rdp[np.isneginf(logq)] = 0.0

    finite = np.isfinite(logq)
    mu2 = np.sqrt(variance * -np.where(finite, logq, -1.0))
    mu1 = mu2 + 1.0
    eps1, eps2 = mu1 / variance, mu2 / variance
    with np.errstate(divide="ignore", invalid="ignore"):
        monotone = logq <= (mu2 - 1.0) * eps2 - mu2 * (
            np.log1p(1.0 / (mu1 - 1.0)) + np.log1p(1.0 / (mu2 - 1.0))
        )
    rows = np.flatnonzero(finite & (mu2 > 1.0) & (-logq > eps2) & monotone)
    if rows.size == 0:
        return rdp

    lq, m1, m2, e1, e2 = (a[rows, None] for a in (logq, mu1, mu2, eps1, eps2))
    lam_minus_1 = orders[None, :] - 1.0
    log1q = _log1mexp(lq)  # ln(1 - q)
    log_a = lam_minus_1 * (log1q - _log1mexp((lq + e2) * (1.0 - 1.0 / m2)))
    log_b = lam_minus_1 * (e1 - lq / (m1 - 1.0))
    bound = np.logaddexp(log1q + log_a, lq + log_b) / lam_minus_1
    applies = orders[None, :] < m1
    rdp[rows] = np.where(applies, np.minimum(rdp[rows], bound), rdp[rows])
    return rdp


def rdp_gnmax_data_dependent(
    votes: ArrayLike, sigma: float, orders: ArrayLike = DEFAULT_ORDERS
) -> FloatArray:
    """Data-dependent RDP of GNMax, per query ([P18] Theorem 6 with Proposition 7's bound on q).

    q is bounded by Proposition 7 (union bound over the Gaussian pairwise comparisons), then plugged
    into Theorem 6 under its validity conditions (see ``_rdp_gaussian_from_logq``). Where they fail
    for an order, the data-independent bound of Proposition 8 is used, so the result never exceeds
    ``α / σ²``.

    Parameters
    ----------
    votes : array_like
        Shape ``(Q, C)``: one vote histogram per query.
    sigma : float
        Standard deviation of the Gaussian noise on each count (> 0).
    orders : array_like, default DEFAULT_ORDERS
        Rényi orders α > 1.

    Returns
    -------
    numpy.ndarray
        Shape ``(Q, K)``: RDP of each query at each order.

    Raises
    ------
    ValueError
        If ``votes`` is malformed, ``sigma <= 0`` or an order is <= 1.
    """
    votes = validate_votes(votes)
    sigma = _check_positive("sigma", sigma)
    orders = _check_orders(orders)
    return _rdp_gaussian_from_logq(_logq_gnmax(votes, sigma), sigma**2, orders)


# ---------------------------------------------------------------------------------------------------
# Confident-GNMax threshold step
# ---------------------------------------------------------------------------------------------------


def log_pr_answered(votes: ArrayLike, threshold: float, sigma1: float) -> FloatArray:
    """``ln Pr[max_i n_i + N(0, σ1²) >= T]`` per query: the Confident-GNMax check ([P18] Algorithm 1).

    Deviation: tf-privacy rounds ``max(votes)`` to an integer first (for Interactive GNMax, whose
    votes are differences); here the maximum is used as is, which is identical for integer votes.

    Parameters
    ----------
    votes : array_like
        Shape ``(Q, C)``.
    threshold : float
        The threshold T.
    sigma1 : float
        Standard deviation of the threshold noise (> 0).

    Returns
    -------
    numpy.ndarray
        Shape ``(Q,)``, values in [-inf, 0].

    Raises
    ------
    ValueError
        If ``votes`` is malformed, ``threshold`` is not finite or ``sigma1 <= 0``.
    """
    votes = validate_votes(votes)
    threshold = _check_finite("threshold", threshold)
    sigma1 = _check_positive("sigma1", sigma1)
    return stats.norm.logsf(threshold - votes.max(axis=1), scale=sigma1)


def rdp_threshold_data_independent(sigma1: float, orders: ArrayLike = DEFAULT_ORDERS) -> FloatArray:
    """Data-independent RDP of the threshold check: ``α / (2σ1²)`` ([P18] Algorithm 1, step 1).

    ``max_i n_i`` has sensitivity 1 (one teacher changes it by at most 1), so the check is a
    Gaussian mechanism of sensitivity 1 followed by post-processing: RDP ``α · 1² / (2σ1²)``
    ([M17] Table II). This is [P18] Proposition 8 with σ replaced by √2·σ1, as in tf-privacy.

    Parameters
    ----------
    sigma1 : float
        Standard deviation of the threshold noise (> 0).
    orders : array_like, default DEFAULT_ORDERS
        Rényi orders α > 1.

    Returns
    -------
    numpy.ndarray
        Shape ``(K,)``.

    Raises
    ------
    ValueError
        If ``sigma1 <= 0`` or an order is <= 1.
    """
    sigma1 = _check_positive("sigma1", sigma1)
    return _check_orders(orders) / (2.0 * sigma1**2)


def rdp_threshold(
    votes: ArrayLike, threshold: float, sigma1: float, orders: ArrayLike = DEFAULT_ORDERS
) -> FloatArray:
    """Data-dependent RDP of the threshold check, per query ([P18] Theorem 6 applied to step 1).

    The check has two outcomes; the likely one is whichever is more probable, so
    ``q = min(p, 1 - p)`` with ``p = Pr[answered]`` (exact, not a bound). Theorem 6 is applied with
    the check's RDP curve ``μ / (2σ1²)``, i.e. the GNMax analysis with σ = √2·σ1, under the same
    validity conditions; the result never exceeds :func:`rdp_threshold_data_independent`.

    Parameters
    ----------
    votes : array_like
        Shape ``(Q, C)``.
    threshold : float
        The threshold T.
    sigma1 : float
        Standard deviation of the threshold noise (> 0).
    orders : array_like, default DEFAULT_ORDERS
        Rényi orders α > 1.

    Returns
    -------
    numpy.ndarray
        Shape ``(Q, K)``.

    Raises
    ------
    ValueError
        If ``votes`` is malformed, ``threshold`` is not finite, ``sigma1 <= 0`` or an order <= 1.
    """
    log_p = log_pr_answered(votes, threshold, sigma1)
    orders = _check_orders(orders)
    logq = np.minimum(log_p, _log1mexp(log_p))
    return _rdp_gaussian_from_logq(logq, 2.0 * float(sigma1) ** 2, orders)


def rdp_confident_gnmax_expected(
    votes: ArrayLike,
    threshold: float,
    sigma1: float,
    sigma2: float,
    orders: ArrayLike = DEFAULT_ORDERS,
) -> tuple[FloatArray, float]:
    """Expected data-dependent RDP of Confident-GNMax over a set of queries ([P18] Table 2 analysis).

    As in the paper's analysis (tf-privacy ``smooth_sensitivity_table.py``): every query pays the
    threshold check (:func:`rdp_threshold`), and pays the GNMax cost (:func:`rdp_gnmax_data_dependent`
    with σ2) weighted by its probability of being answered. The result is the RDP *expected* over
    the threshold noise, which is how [P18] reports ε before the student's queries are answered;
    :class:`PrivacyLedger` charges the realised outcomes instead.

    Parameters
    ----------
    votes : array_like
        Shape ``(Q, C)``.
    threshold : float
        The threshold T.
    sigma1 : float
        Standard deviation of the threshold noise (> 0).
    sigma2 : float
        Standard deviation of the GNMax noise (> 0).
    orders : array_like, default DEFAULT_ORDERS
        Rényi orders α > 1.

    Returns
    -------
    rdp_total : numpy.ndarray
        Shape ``(K,)``: the summed (composed) RDP over the Q queries.
    expected_answered : float
        ``Σ Pr[answered]`` over the queries.

    Raises
    ------
    ValueError
        If an input is malformed (see the functions above).
    """
    votes = validate_votes(votes)
    pr_answered = np.exp(log_pr_answered(votes, threshold, sigma1))
    rdp_check = rdp_threshold(votes, threshold, sigma1, orders)
    rdp_answer = rdp_gnmax_data_dependent(votes, sigma2, orders)
    rdp_total = rdp_check.sum(axis=0) + pr_answered @ rdp_answer
    return rdp_total, float(pr_answered.sum())


# ---------------------------------------------------------------------------------------------------
# LNMax (PATE 2017)
# ---------------------------------------------------------------------------------------------------


def rdp_lnmax_data_independent(gamma: float, orders: ArrayLike = DEFAULT_ORDERS) -> FloatArray:
    """Data-independent RDP of one LNMax query: pure ε = 2γ turned into RDP.

    LNMax adds Laplace(1/γ) noise to every count; the histogram has L1 sensitivity 2, so a query is
    (2γ, 0)-DP, the premise of [P17] Theorem 3. Pure ε-DP is (∞, ε)-RDP ([M17]) and Rényi divergence
    is non-decreasing in the order, so it is (α, ε)-RDP for every α; it is also (α, αε²/2)-RDP via
    ½ε²-zCDP ([BS16] Proposition 3.3). The minimum of the two is returned.

    Parameters
    ----------
    gamma : float
        Inverse scale of the Laplace noise (> 0).
    orders : array_like, default DEFAULT_ORDERS
        Rényi orders α > 1.

    Returns
    -------
    numpy.ndarray
        Shape ``(K,)``.

    Raises
    ------
    ValueError
        If ``gamma <= 0`` or an order is <= 1.
    """
    pure_eps = 2.0 * _check_positive("gamma", gamma)
    orders = _check_orders(orders)
    return np.minimum(0.5 * pure_eps**2 * orders, pure_eps)


def _logq_lnmax(votes: FloatArray, gamma: float) -> FloatArray:
    """Upper bound on ``ln Pr[LNMax outcome != argmax]`` per query ([P17] Lemma 4).

    With ``Δ_j = n_i* - n_j``, ``Pr[j beats i*] = (2 + γΔ_j) / (4 e^(γΔ_j))`` for two independent
    Laplace(1/γ) variables; summed by the union bound and capped at ``1 - 1/C`` (see
    ``_logq_gnmax``).
    """
    scaled = gamma * (votes - votes.max(axis=1, keepdims=True))  # -γΔ_j <= 0
    logq = _logsumexp_excluding_argmax(np.log(2.0 - scaled) + math.log(0.25) + scaled, votes)
    with np.errstate(divide="ignore"):
        return np.minimum(logq, np.log1p(-1.0 / votes.shape[1]))


def rdp_lnmax_data_dependent(
    votes: ArrayLike, gamma: float, orders: ArrayLike = DEFAULT_ORDERS
) -> FloatArray:
    """Data-dependent RDP of LNMax, per query ([P17] Theorem 3 in RDP form).

    [P17] Theorem 3: for a (2γ, 0)-DP mechanism with ``Pr[outcome != o*] <= q`` and
    ``q < (e^2γ - 1) / (e^4γ - 1) = 1 / (e^2γ + 1)``, the log moment of order l satisfies::

        m(l) <= log((1-q) · ((1-q) / (1 - e^2γ·q))^l + q · e^(2γl)),

    and the RDP at order λ is ``m(λ-1) / (λ-1)``. q comes from [P17] Lemma 4 (``_logq_lnmax``).
    Deviation: the theorem's strict ``<`` on q is applied as ``<=``, as in tf-privacy; at equality
    the bound is still finite (``1 - e^2γ·q = q > 0``).
    Where the condition on q fails the bound is +inf, and as in tf-privacy ``rdp_pure_eps`` the
    result is the minimum with :func:`rdp_lnmax_data_independent`.

    Parameters
    ----------
    votes : array_like
        Shape ``(Q, C)``.
    gamma : float
        Inverse scale of the Laplace noise (> 0).
    orders : array_like, default DEFAULT_ORDERS
        Rényi orders α > 1.

    Returns
    -------
    numpy.ndarray
        Shape ``(Q, K)``.

    Raises
    ------
    ValueError
        If ``votes`` is malformed, ``gamma <= 0`` or an order is <= 1.
    """
    votes = validate_votes(votes)
    independent = rdp_lnmax_data_independent(gamma, orders)
    orders = _check_orders(orders)
    pure_eps = 2.0 * float(gamma)
    logq = _logq_lnmax(votes, float(gamma))
    rdp = np.tile(independent, (logq.shape[0], 1))

    rows = np.flatnonzero(logq <= -np.logaddexp(pure_eps, 0.0))  # q <= 1 / (e^ε + 1)
    if rows.size == 0:
        return rdp
    lq = logq[rows, None]
    lam_minus_1 = orders[None, :] - 1.0
    log1q = _log1mexp(lq)
    log_t = np.logaddexp(
        log1q + (log1q - _log1mexp(pure_eps + lq)) * lam_minus_1, lq + pure_eps * lam_minus_1
    )
    rdp[rows] = np.minimum(rdp[rows], log_t / lam_minus_1)
    return rdp


# ---------------------------------------------------------------------------------------------------
# RDP → (ε, δ)
# ---------------------------------------------------------------------------------------------------


def _epsilon_curve(orders: FloatArray, rdp: FloatArray, delta: float) -> FloatArray:
    """``rdp + ln(1/δ) / (α - 1)`` along the last axis ([M17] Proposition 3)."""
    return rdp + math.log(1.0 / delta) / (orders - 1.0)


def _warn_if_edge(order: float, orders: FloatArray, what: str) -> None:
    """Warn with :class:`PrivacyWarning` when ``order`` is the smallest or largest of ``orders``."""
    if order in (orders.min(), orders.max()):
        side = "smallest" if order == orders.min() else "largest"
        warnings.warn(
            f"{what}: the best order {order:g} is the {side} of the grid "
            f"[{orders.min():g}, {orders.max():g}]; extend the grid for a tighter ε",
            PrivacyWarning,
            stacklevel=3,
        )


def rdp_to_epsilon(orders: ArrayLike, rdp: ArrayLike, delta: float) -> tuple[float, float]:
    """Convert an RDP curve to (ε, δ)-DP: ``ε = min_α rdp(α) + ln(1/δ) / (α - 1)``.

    This is the classic conversion of [M17] Proposition 3, the one [P18] uses (tf-privacy
    ``compute_eps_from_delta``); tighter conversions exist (e.g. Balle et al. 2020, Theorem 21, used
    by Opacus) but are deliberately not used, so that numbers match the paper.

    Parameters
    ----------
    orders : array_like
        Shape ``(K,)``, orders α > 1.
    rdp : array_like
        Shape ``(K,)``: the total RDP at each order, >= 0; +inf is allowed (no guarantee there).
    delta : float
        Target δ in (0, 1).

    Returns
    -------
    epsilon : float
        The smallest ε over the grid; ``inf`` if the RDP is infinite at every order.
    best_order : float
        The order achieving it; ``nan`` if ``epsilon`` is infinite.

    Raises
    ------
    ValueError
        If the shapes differ, ``rdp`` holds nan or negative values, an order is <= 1, or ``delta``
        is outside (0, 1).

    Warns
    -----
    PrivacyWarning
        If the best order is the smallest or the largest of the grid.
    """
    orders = _check_orders(orders)
    rdp = np.asarray(rdp, dtype=float)
    delta = _check_delta(delta)
    if rdp.shape != orders.shape:
        raise ValueError(f"rdp must have the same shape as orders, got {rdp.shape} and {orders.shape}")
    if np.any(np.isnan(rdp)) or np.any(rdp < 0):
        bad = rdp[np.isnan(rdp) | (rdp < 0)][0]
        raise ValueError(f"rdp must be >= 0 (inf allowed), got {bad}")
    eps = _epsilon_curve(orders, rdp, delta)
    if np.all(np.isinf(eps)):
        return math.inf, math.nan
    best = int(np.argmin(eps))
    _warn_if_edge(float(orders[best]), orders, "rdp_to_epsilon")
    return float(eps[best]), float(orders[best])


# ---------------------------------------------------------------------------------------------------
# Ledger
# ---------------------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class ChargeResult:
    """Outcome of one :meth:`PrivacyLedger.charge`.

    Attributes
    ----------
    n_accepted : int
        Length of the prefix of the batch that was charged (queries beyond it must not be answered).
    n_answered : int
        Queries of the accepted prefix that were answered (for Confident-GNMax, passed the check).
    exhausted : bool
        True if the batch was cut short, or (``budget_on="data_independent"`` only) if one more
        query would exceed the budget. Further charges raise :class:`BudgetExhaustedError`.
    epsilon_data_dependent, epsilon_data_independent : float
        Total ε spent after this charge, on each accounting.
    best_order_data_dependent, best_order_data_independent : float
        The orders achieving those ε.
    """

    n_accepted: int
    n_answered: int
    exhausted: bool
    epsilon_data_dependent: float
    epsilon_data_independent: float
    best_order_data_dependent: float
    best_order_data_independent: float


def _atomic_write_json(path: Path, payload: dict[str, Any]) -> None:
    """Write ``payload`` to ``path`` atomically: temp file in the same dir, fsync, os.replace."""
    text = json.dumps(payload, indent=1, allow_nan=False)
    fd, tmp_name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp_name, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp_name)
        raise
    # Make the rename itself durable (POSIX); not possible on every platform.
    with contextlib.suppress(OSError):
        dir_fd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)


_LEDGER_KEYS = (
    "format_version",
    "config",
    "orders",
    "rdp_data_dependent",
    "rdp_data_independent",
    "queries_checked",
    "queries_answered",
    "exhausted",
    "history",
)


@contextlib.contextmanager
def _ledger_lock(path: Path) -> Iterator[None]:
    """Exclusive lock on ``<path>.lock`` for one read-charge-write of a shared ledger file.

    Every process that charges the same ledger file takes it (POSIX ``flock``), so two runs over the
    same teachers serialize their charges instead of the last writer silently dropping the other's.
    The lock file itself holds nothing and may stay on disk.
    """
    with open(path.with_name(path.name + ".lock"), "a", encoding="utf-8") as handle:
        fcntl.flock(handle.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle.fileno(), fcntl.LOCK_UN)


def _read_ledger_file(path: Path) -> dict[str, Any]:
    """Read a persisted ledger, raising ValueError unless it has this version's format."""
    stored = json.loads(path.read_text(encoding="utf-8"))  # JSONDecodeError is a ValueError
    if not isinstance(stored, dict) or stored.get("format_version") != _LEDGER_FORMAT_VERSION:
        version = stored.get("format_version") if isinstance(stored, dict) else None
        raise ValueError(
            f"{path}: not a privacy ledger of format_version {_LEDGER_FORMAT_VERSION} "
            f"(found format_version {version!r})"
        )
    missing = [key for key in _LEDGER_KEYS if key not in stored]
    if missing:
        raise ValueError(f"{path}: privacy ledger is missing {', '.join(missing)}")
    return stored


class PrivacyLedger:
    """RDP privacy ledger for PATE vote fusion, persisted atomically as JSON.

    The ledger only does bookkeeping: costs come from the analysis functions of this module. It
    tracks the total RDP on two accountings at once, data-dependent ([P18] Theorem 6) and
    data-independent ([P18] Proposition 8), converts them with :func:`rdp_to_epsilon`, and enforces
    the budget on the accounting named by ``budget_on``.

    Parameters
    ----------
    path : str or pathlib.Path or None
        JSON file to persist to after every charge; ``None`` keeps the ledger in memory. If the file
        exists it is reloaded (history and totals), and its mechanism, parameters and orders must
        equal the ones given, else ValueError: a ledger is never reset silently.
    mechanism : {"gnmax", "confident_gnmax", "lnmax"}
        The fusion mechanism being charged.
    delta : float
        Target δ in (0, 1).
    epsilon_budget : float
        Largest total ε (on ``budget_on``) the ledger lets the queries spend (> 0).
    sigma : float or None, default None
        GNMax noise σ ("gnmax"), or σ2 of the answering step ("confident_gnmax").
    sigma1 : float or None, default None
        Threshold noise σ1 ("confident_gnmax" only).
    threshold : float or None, default None
        Threshold T ("confident_gnmax" only).
    gamma : float or None, default None
        Laplace inverse scale γ ("lnmax" only).
    orders : array_like, default DEFAULT_ORDERS
        Rényi orders α > 1.
    budget_on : {"data_dependent", "data_independent"}, default "data_dependent"
        Which ε the budget bounds. The data-dependent ε is itself a function of the votes (see the
        module caveat); "data_independent" gives a guarantee that needs no further release step.

    Raises
    ------
    ValueError
        On an unknown mechanism or budget basis, a missing or superfluous parameter, an invalid
        value, a budget below the ε of zero queries, or a stored ledger that does not match.
    """

    def __init__(
        self,
        path: str | Path | None,
        *,
        mechanism: str,
        delta: float,
        epsilon_budget: float,
        sigma: float | None = None,
        sigma1: float | None = None,
        threshold: float | None = None,
        gamma: float | None = None,
        orders: ArrayLike = DEFAULT_ORDERS,
        budget_on: str = "data_dependent",
    ) -> None:
        if mechanism not in _MECHANISMS:
            raise ValueError(f"mechanism must be one of {_MECHANISMS}, got {mechanism!r}")
        if budget_on not in _BUDGET_BASES:
            raise ValueError(f"budget_on must be one of {_BUDGET_BASES}, got {budget_on!r}")
        self._params = self._check_params(
            mechanism, sigma=sigma, sigma1=sigma1, threshold=threshold, gamma=gamma
        )
        self._mechanism = mechanism
        self._delta = _check_delta(delta)
        self._budget = _check_positive("epsilon_budget", epsilon_budget)
        self._budget_on = budget_on
        self._orders = _check_orders(orders).copy()
        floor = float(np.min(_epsilon_curve(self._orders, np.zeros_like(self._orders), self._delta)))
        if self._budget < floor:
            raise ValueError(
                f"epsilon_budget must be >= the ε of zero queries on this order grid ({floor:.4g}), "
                f"got {self._budget}"
            )
        self._path = None if path is None else Path(path)

        self._rdp_dd = np.zeros_like(self._orders)
        self._rdp_di = np.zeros_like(self._orders)
        self._checked = 0
        self._answered = 0
        self._exhausted = False
        self._history: list[dict[str, Any]] = []
        if self._path is not None and self._path.exists():
            self._restore(_read_ledger_file(self._path))

    # -- construction helpers ----------------------------------------------------------------------

    @staticmethod
    def _check_params(mechanism: str, **given: float | None) -> dict[str, float]:
        """Validate the mechanism's parameters; return the ones it uses, as floats."""
        needed = {
            "gnmax": ("sigma",),
            "confident_gnmax": ("sigma", "sigma1", "threshold"),
            "lnmax": ("gamma",),
        }[mechanism]
        params: dict[str, float] = {}
        for name, value in given.items():
            if name in needed and value is None:
                raise ValueError(f"{name} is required for mechanism {mechanism!r}")
            if name not in needed and value is not None:
                raise ValueError(f"{name} is not used by mechanism {mechanism!r}, got {value}")
            if value is not None:
                check = _check_finite if name == "threshold" else _check_positive
                params[name] = check(name, value)
        return params

    def _config(self) -> dict[str, Any]:
        """The settings a stored ledger must match to be reloaded."""
        return {
            "mechanism": self._mechanism,
            "delta": self._delta,
            "epsilon_budget": self._budget,
            "budget_on": self._budget_on,
            **self._params,
        }

    def _restore(self, stored: dict[str, Any]) -> None:
        """Load totals and history from a stored ledger after checking it matches this one."""
        mine, theirs = self._config(), stored["config"]
        for key in ["mechanism", *sorted((set(mine) | set(theirs)) - {"mechanism"})]:
            if mine.get(key) != theirs.get(key):
                raise ValueError(
                    f"{self._path}: stored ledger has {key}={theirs.get(key)!r}, "
                    f"but this ledger was created with {key}={mine.get(key)!r}"
                )
        stored_orders = np.asarray(stored["orders"], dtype=float)
        if not np.array_equal(stored_orders, self._orders):
            raise ValueError(
                f"{self._path}: stored ledger has a different order grid "
                f"({stored_orders.size} orders in [{stored_orders.min():g}, {stored_orders.max():g}]) "
                f"than this one ({self._orders.size} orders in [{self._orders.min():g}, "
                f"{self._orders.max():g}])"
            )
        self._rdp_dd = np.asarray(stored["rdp_data_dependent"], dtype=float)
        self._rdp_di = np.asarray(stored["rdp_data_independent"], dtype=float)
        self._checked = int(stored["queries_checked"])
        self._answered = int(stored["queries_answered"])
        self._exhausted = bool(stored["exhausted"])
        self._history = list(stored["history"])

    @classmethod
    def load(cls, path: str | Path) -> PrivacyLedger:
        """Reload a ledger from ``path`` with the settings stored in it.

        Raises
        ------
        FileNotFoundError
            If ``path`` does not exist.
        ValueError
            If the file is not a ledger this version can read.
        """
        stored = _read_ledger_file(Path(path))
        return cls(path, orders=stored["orders"], **stored["config"])

    # -- per-query costs ---------------------------------------------------------------------------

    def _costs(self, votes: FloatArray, answered: npt.NDArray[np.bool_]) -> tuple[FloatArray, FloatArray]:
        """Per-query RDP ``(Q, K)`` on both accountings: check for every query, answer if answered."""
        p, orders = self._params, self._orders
        if self._mechanism == "lnmax":
            dd = rdp_lnmax_data_dependent(votes, p["gamma"], orders)
            di_answer = rdp_lnmax_data_independent(p["gamma"], orders)
        else:
            dd = rdp_gnmax_data_dependent(votes, p["sigma"], orders)
            di_answer = rdp_gnmax_data_independent(p["sigma"], orders)
        dd = dd * answered[:, None]
        di = answered[:, None] * di_answer[None, :]
        if self._mechanism == "confident_gnmax":
            dd = dd + rdp_threshold(votes, p["threshold"], p["sigma1"], orders)
            di = di + rdp_threshold_data_independent(p["sigma1"], orders)[None, :]
        return dd, di

    def _worst_case_query(self) -> FloatArray:
        """Largest RDP one more query can cost on ``budget_on`` (its data-independent cost)."""
        p, orders = self._params, self._orders
        if self._mechanism == "lnmax":
            return rdp_lnmax_data_independent(p["gamma"], orders)
        cost = rdp_gnmax_data_independent(p["sigma"], orders)
        if self._mechanism == "confident_gnmax":
            cost = cost + rdp_threshold_data_independent(p["sigma1"], orders)
        return cost

    def _check_answered(self, answered: ArrayLike | None, n_queries: int) -> npt.NDArray[np.bool_]:
        """Validate ``answered`` for this mechanism and batch; return a boolean ``(Q,)`` array."""
        if answered is None:
            if self._mechanism == "confident_gnmax":
                raise ValueError(
                    "answered is required for mechanism 'confident_gnmax' (the threshold outcomes)"
                )
            return np.ones(n_queries, dtype=bool)
        arr = np.asarray(answered)
        if arr.dtype != np.bool_ or arr.shape != (n_queries,):
            raise ValueError(
                f"answered must be a boolean array of shape ({n_queries},), got dtype {arr.dtype} "
                f"and shape {arr.shape}"
            )
        if self._mechanism != "confident_gnmax" and not arr.all():
            raise ValueError(
                f"answered must be all True for mechanism {self._mechanism!r} (every query is answered), "
                f"got False at index {int(np.flatnonzero(~arr)[0])}"
            )
        return arr

    # -- charging ----------------------------------------------------------------------------------

    def charge(self, votes: ArrayLike, answered: ArrayLike | None = None) -> ChargeResult:
        """Charge a batch of queries, keeping the longest prefix that fits the budget.

        With a ledger file, the charge holds an exclusive lock on ``<path>.lock`` and first adopts
        what the file holds, so processes sharing the file charge one budget and lose no charge.

        Each query pays the threshold check (Confident-GNMax) and, if answered, the answering step
        (GNMax or LNMax), on both accountings. The longest prefix of the batch whose total ε (on
        ``budget_on``) stays within the budget is found in a dry run; only then are the totals
        updated, the history extended and the ledger persisted. The caller must not release the
        answers to queries beyond ``n_accepted``.

        Each batch is validated on its own, so the number of teachers (row sum) may change between
        batches, e.g. when a teacher node drops out.

        Parameters
        ----------
        votes : array_like
            Shape ``(Q, C)``: the vote histograms of the batch, in the order the answers are
            released.
        answered : numpy.ndarray of bool or None, default None
            Shape ``(Q,)``: which queries the fusion answered. Required for "confident_gnmax" (the
            threshold outcomes); for "gnmax" and "lnmax" every query is answered, so it must be
            None or all True.

        Returns
        -------
        ChargeResult
            The accepted prefix, its answered count, whether the budget is exhausted, and the total
            ε on both accountings after the charge. ``exhausted`` is True if the batch was cut
            short, or, on the data-independent accounting, if one more query would not fit (a
            data-dependent cost is unknown until the query's votes are, so there only a cut
            batch exhausts the budget).

        Raises
        ------
        BudgetExhaustedError
            If an earlier charge exhausted the budget.
        ValueError
            If ``votes`` or ``answered`` is malformed.
        OSError
            If persisting fails; the ledger then stays as it was before the call.

        Warns
        -----
        PrivacyWarning
            If the best order of either ε is at the edge of the order grid.
        """
        if self._path is None:
            return self._charge(votes, answered)
        with _ledger_lock(self._path):
            self._refresh()
            return self._charge(votes, answered)

    def _refresh(self) -> None:
        """Adopt the ledger file's state (another process may have charged it since my last write).

        Raises
        ------
        ValueError
            If the file vanished after charges were recorded (a ledger is never reset silently), or
            no longer matches this ledger's settings.
        """
        assert self._path is not None
        if self._path.exists():
            self._restore(_read_ledger_file(self._path))
        elif self._checked or self._history:
            raise ValueError(f"{self._path}: the privacy ledger file vanished after {self._checked} checked "
                             "queries; refusing to charge (restore the file or start a new ledger)")

    def _charge(self, votes: ArrayLike, answered: ArrayLike | None) -> ChargeResult:
        """:meth:`charge` on the current state (the caller holds the ledger file's lock)."""
        if self._exhausted:
            spent = self.epsilon()[self._budget_on]
            raise BudgetExhaustedError(
                f"privacy budget exhausted: spent ε={spent:.4f} ({self._budget_on}) of epsilon_budget="
                f"{self._budget} at δ={self._delta}"
            )
        votes = validate_votes(votes)
        answered_arr = self._check_answered(answered, votes.shape[0])

        # Dry run: cumulative totals after each prefix, nothing changes until the prefix is chosen.
        cost_dd, cost_di = self._costs(votes, answered_arr)
        cum_dd = self._rdp_dd + np.cumsum(cost_dd, axis=0)
        cum_di = self._rdp_di + np.cumsum(cost_di, axis=0)
        cum = cum_dd if self._budget_on == "data_dependent" else cum_di
        over = np.min(_epsilon_curve(self._orders, cum, self._delta), axis=1) > self._budget
        n_accepted = int(np.argmax(over)) if over.any() else votes.shape[0]
        # The committed totals are the very rows the decision was made on (no re-summation).
        rdp_dd = cum_dd[n_accepted - 1] if n_accepted else self._rdp_dd.copy()
        rdp_di = cum_di[n_accepted - 1] if n_accepted else self._rdp_di.copy()
        n_answered = int(answered_arr[:n_accepted].sum())

        # On the data-independent accounting every query costs exactly its worst case, so the budget
        # is exhausted as soon as one more query cannot fit. A data-dependent cost is only known once
        # the votes are: a high-consensus query may still fit, so only a cut batch exhausts it.
        exhausted = n_accepted < votes.shape[0]
        if self._budget_on == "data_independent":
            next_cost = np.min(_epsilon_curve(self._orders, rdp_di + self._worst_case_query(), self._delta))
            exhausted = exhausted or bool(next_cost > self._budget)
        (eps_dd, order_dd), (eps_di, order_di) = self._best(rdp_dd), self._best(rdp_di)

        history = [
            *self._history,
            {
                "time": datetime.now(UTC).isoformat(timespec="seconds"),
                "n_offered": int(votes.shape[0]),
                "n_accepted": n_accepted,
                "n_answered": n_answered,
                "n_teachers": float(votes[0].sum()),
                "exhausted": exhausted,
                "epsilon_data_dependent": eps_dd,
                "epsilon_data_independent": eps_di,
                "best_order_data_dependent": order_dd,
                "best_order_data_independent": order_di,
            },
        ]
        checked, answered_total = self._checked + n_accepted, self._answered + n_answered
        if self._path is not None:
            payload = self._payload(
                rdp_dd=rdp_dd,
                rdp_di=rdp_di,
                checked=checked,
                answered=answered_total,
                exhausted=exhausted,
                history=history,
            )
            _atomic_write_json(self._path, payload)
        self._rdp_dd, self._rdp_di = rdp_dd, rdp_di
        self._checked, self._answered = checked, answered_total
        self._exhausted, self._history = exhausted, history

        _warn_if_edge(order_dd, self._orders, "data-dependent ε")
        _warn_if_edge(order_di, self._orders, "data-independent ε")
        return ChargeResult(
            n_accepted=n_accepted,
            n_answered=n_answered,
            exhausted=exhausted,
            epsilon_data_dependent=eps_dd,
            epsilon_data_independent=eps_di,
            best_order_data_dependent=order_dd,
            best_order_data_independent=order_di,
        )

    def _best(self, rdp: FloatArray) -> tuple[float, float]:
        """(ε, best order) of a total RDP curve, without warning."""
        eps = _epsilon_curve(self._orders, rdp, self._delta)
        best = int(np.argmin(eps))
        return float(eps[best]), float(self._orders[best])

    # -- persistence -------------------------------------------------------------------------------

    def _payload(
        self,
        *,
        rdp_dd: FloatArray,
        rdp_di: FloatArray,
        checked: int,
        answered: int,
        exhausted: bool,
        history: Sequence[dict[str, Any]],
    ) -> dict[str, Any]:
        """The JSON document for a ledger state."""
        return {
            "format_version": _LEDGER_FORMAT_VERSION,
            "config": self._config(),
            "orders": self._orders.tolist(),
            "rdp_data_dependent": rdp_dd.tolist(),
            "rdp_data_independent": rdp_di.tolist(),
            "queries_checked": checked,
            "queries_answered": answered,
            "exhausted": exhausted,
            "history": list(history),
        }

    def to_dict(self) -> dict[str, Any]:
        """The ledger as the JSON-compatible dict it is persisted as."""
        return self._payload(
            rdp_dd=self._rdp_dd,
            rdp_di=self._rdp_di,
            checked=self._checked,
            answered=self._answered,
            exhausted=self._exhausted,
            history=self._history,
        )

    # -- read-only views ---------------------------------------------------------------------------

    def epsilon(self) -> dict[str, float]:
        """Total ε spent so far on both accountings, with the best orders (no edge warning).

        Returns
        -------
        dict
            Keys ``data_dependent``, ``data_independent``, ``best_order_data_dependent``,
            ``best_order_data_independent``.
        """
        eps_dd, order_dd = self._best(self._rdp_dd)
        eps_di, order_di = self._best(self._rdp_di)
        return {
            "data_dependent": eps_dd,
            "data_independent": eps_di,
            "best_order_data_dependent": order_dd,
            "best_order_data_independent": order_di,
        }

    @property
    def mechanism(self) -> str:
        """The fusion mechanism this ledger charges."""
        return self._mechanism

    @property
    def path(self) -> Path | None:
        """The JSON file the ledger persists to, or None."""
        return self._path

    @property
    def orders(self) -> FloatArray:
        """The order grid (a copy)."""
        return self._orders.copy()

    @property
    def rdp_data_dependent(self) -> FloatArray:
        """Total data-dependent RDP at each order (a copy)."""
        return self._rdp_dd.copy()

    @property
    def rdp_data_independent(self) -> FloatArray:
        """Total data-independent RDP at each order (a copy)."""
        return self._rdp_di.copy()

    @property
    def queries_checked(self) -> int:
        """Queries charged so far (each one passed through the threshold check, if any)."""
        return self._checked

    @property
    def queries_answered(self) -> int:
        """Queries answered so far."""
        return self._answered

    @property
    def exhausted(self) -> bool:
        """Whether the budget is exhausted (further charges raise BudgetExhaustedError)."""
        return self._exhausted

    @property
    def delta(self) -> float:
        """The target δ of every ε this ledger reports."""
        return self._delta

    @property
    def epsilon_budget(self) -> float:
        """The ε budget, on the accounting named by ``budget_on``."""
        return self._budget

    @property
    def budget_on(self) -> str:
        """Which accounting the budget bounds: "data_dependent" or "data_independent"."""
        return self._budget_on

    @property
    def remaining(self) -> float:
        """Budget left: ``epsilon_budget`` minus the ε spent on ``budget_on`` (>= 0)."""
        return max(0.0, self._budget - self.epsilon()[self._budget_on])

    @property
    def history(self) -> list[dict[str, Any]]:
        """One entry per charge (copies): counts, ε after the charge, time."""
        return [dict(entry) for entry in self._history]
