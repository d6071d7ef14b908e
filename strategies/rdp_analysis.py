"""Rényi-DP analysis of the PATE aggregators: GNMax, the Confident-GNMax threshold check, validation.

Pure numpy/scipy, vectorised over queries: the per-query RDP of GNMax and of the threshold check at a
grid of orders, data-independent and data-dependent. LNMax lives in :mod:`strategies.rdp_lnmax`, the
RDP → (ε, δ) conversion in :mod:`strategies.rdp_conversion`, the bookkeeping in
:mod:`strategies.privacy_ledger`; :mod:`strategies.accounting` re-exports all of them.

References
----------
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
data-dependent one through [P18]'s smooth-sensitivity mechanism (:mod:`strategies.smooth_sensitivity`).
"""

from __future__ import annotations

import math

import numpy as np
import numpy.typing as npt
from scipy import special, stats

from protocol.privacy_noise import PrivacyWarning  # defined on the ground floor: the parties raise it too

__all__ = [
    "DEFAULT_ORDERS",
    "PrivacyWarning",
    "log_pr_answered",
    "rdp_confident_gnmax_expected",
    "rdp_gnmax_data_dependent",
    "rdp_gnmax_data_independent",
    "rdp_threshold",
    "rdp_threshold_data_independent",
    "validate_votes",
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


# ---------------------------------------------------------------------------------------------------
# Validation at the public boundary
# ---------------------------------------------------------------------------------------------------


def check_positive(name: str, value: float) -> float:
    """Return ``value`` as a float if it is finite and > 0, else raise ValueError."""
    value = float(value)
    if math.isnan(value) or value <= 0:
        raise ValueError(f"{name} must be > 0, got {value}")
    if math.isinf(value):
        raise ValueError(f"{name} must be finite, got {value}")
    return value


def check_finite(name: str, value: float) -> float:
    """Return ``value`` as a float if it is finite, else raise ValueError."""
    value = float(value)
    if not math.isfinite(value):
        raise ValueError(f"{name} must be finite, got {value}")
    return value


def check_delta(delta: float) -> float:
    """Return ``delta`` as a float if 0 < delta < 1, else raise ValueError."""
    delta = float(delta)
    if not 0.0 < delta < 1.0:
        raise ValueError(f"delta must be in (0, 1), got {delta}")
    return delta


def check_orders(orders: ArrayLike) -> FloatArray:
    """Return ``orders`` as a 1-D float array of finite orders > 1, else raise ValueError."""
    arr = np.asarray(orders, dtype=float)
    if arr.ndim != 1 or arr.size == 0:
        raise ValueError(f"orders must be a non-empty 1-D array, got shape {arr.shape}")
    if not np.all(np.isfinite(arr)):
        raise ValueError(f"orders must be finite, got {arr[~np.isfinite(arr)][0]}")
    if np.any(arr <= 1):
        raise ValueError(f"orders must all be > 1, got {arr[arr <= 1][0]}")
    return arr


def validate_votes(
    votes: ArrayLike, *, same_teachers: bool = True, answerable: bool = True
) -> FloatArray:
    """Return ``votes`` as a ``(Q, C)`` float array of vote histograms, else raise ValueError.

    Rules: 2-D, non-empty, finite, non-negative; (``answerable``, the default) at least 2 classes and
    no all-zero row; and (``same_teachers``, the default) every row sums to the same number of teachers
    (within a relative 1e-9, so that fractional votes are allowed). ``same_teachers=False`` is for the
    smooth-sensitivity release, whose analysis takes each query's own number of teachers (an ensemble
    that lost a node mid-run).

    Why ``answerable`` (C >= 2, a vote in every row) is the default, used by every mechanism's ``fuse``
    and by the ledgers' ``charge``: with one class, or with no teacher voting on a query, the fused
    "label" does not depend on any teacher's data — a constant, or pure noise — yet the query would be
    charged and its label handed to the student as if the ensemble had answered it. The RDP formulas
    themselves are defined for such histograms (the cost of a constant output is 0); the analysis
    functions pass ``answerable=False`` so that they stay total on well-formed histograms (the
    smooth-sensitivity release too: it names a row without votes in its own words).
    """
    try:
        arr = np.asarray(votes, dtype=float)
    except (TypeError, ValueError) as err:
        raise ValueError(f"votes must be a numeric array, got {type(votes).__name__}") from err
    if arr.ndim != 2:
        raise ValueError(f"votes must be 2-D (queries, classes), got shape {arr.shape}")
    if arr.size == 0:
        raise ValueError(f"votes must not be empty, got shape {arr.shape}")
    if answerable and arr.shape[1] < 2:
        raise ValueError(f"votes must have >= 2 classes (columns), got {arr.shape[1]}: with one class the "
                         "label is fixed whatever the teachers vote, yet every query would be charged")
    bad = ~np.isfinite(arr)
    if np.any(bad):
        row, col = np.argwhere(bad)[0]
        raise ValueError(f"votes must be finite, got {arr[row, col]} at row {row}, class {col}")
    if np.any(arr < 0):
        row, col = np.argwhere(arr < 0)[0]
        raise ValueError(f"votes must be >= 0, got {arr[row, col]} at row {row}, class {col}")
    empty = ~arr.any(axis=1)
    if answerable and np.any(empty):
        row = int(np.flatnonzero(empty)[0])
        raise ValueError(f"votes row {row} is all zero: no teacher voted on that query, so its label would "
                         "be pure noise, yet it would be charged")
    if not same_teachers:
        return arr
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


def log1mexp(x: FloatArray) -> FloatArray:
    """Elementwise ``log(1 - exp(x))`` for ``x <= 0``, stable at both ends.

    Uses ``log1p(-exp(x))`` for x < -ln 2 and ``log(-expm1(x))`` otherwise (Mächler 2012);
    returns -inf at x = 0 and nan for x > 0 (callers mask those entries out).
    """
    x = np.asarray(x, dtype=float)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(x < -math.log(2.0), np.log1p(-np.exp(x)), np.log(-np.expm1(x)))


def logsumexp_excluding_argmax(terms: FloatArray, votes: FloatArray) -> FloatArray:
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
    sigma = check_positive("sigma", sigma)
    return check_orders(orders) / sigma**2


def _logq_gnmax(votes: FloatArray, sigma: float) -> FloatArray:
    """Upper bound on ``ln Pr[GNMax outcome != argmax]`` per query ([P18] Proposition 7).

    Union bound ``q <= Σ_{i≠i*} Pr[n_i + N_i >= n_i* + N_i*] = Σ_{i≠i*} ½ erfc((n_i* - n_i) / 2σ)``,
    i.e. the survival function of N(0, 2σ²) at each gap, capped at ``1 - 1/C``: if q were larger,
    the argmax would not be the most likely outcome, and the cap is always achievable.
    """
    gaps = votes.max(axis=1, keepdims=True) - votes
    log_tails = stats.norm.logsf(gaps, scale=math.sqrt(2.0) * sigma)
    logq = logsumexp_excluding_argmax(log_tails, votes)
    with np.errstate(divide="ignore"):
        return np.minimum(logq, np.log1p(-1.0 / votes.shape[1]))


def rdp_gaussian_from_logq(logq: FloatArray, variance: float, orders: FloatArray) -> FloatArray:
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
    log1q = log1mexp(lq)  # ln(1 - q)
    log_a = lam_minus_1 * (log1q - log1mexp((lq + e2) * (1.0 - 1.0 / m2)))
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
    into Theorem 6 under its validity conditions (see ``rdp_gaussian_from_logq``). Where they fail
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
    votes = validate_votes(votes, answerable=False)
    sigma = check_positive("sigma", sigma)
    orders = check_orders(orders)
    return rdp_gaussian_from_logq(_logq_gnmax(votes, sigma), sigma**2, orders)


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
    votes = validate_votes(votes, answerable=False)
    threshold = check_finite("threshold", threshold)
    sigma1 = check_positive("sigma1", sigma1)
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
    sigma1 = check_positive("sigma1", sigma1)
    return check_orders(orders) / (2.0 * sigma1**2)


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
    orders = check_orders(orders)
    logq = np.minimum(log_p, log1mexp(log_p))
    return rdp_gaussian_from_logq(logq, 2.0 * float(sigma1) ** 2, orders)


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
    votes = validate_votes(votes, answerable=False)
    pr_answered = np.exp(log_pr_answered(votes, threshold, sigma1))
    rdp_check = rdp_threshold(votes, threshold, sigma1, orders)
    rdp_answer = rdp_gnmax_data_dependent(votes, sigma2, orders)
    rdp_total = rdp_check.sum(axis=0) + pr_answered @ rdp_answer
    return rdp_total, float(pr_answered.sum())
