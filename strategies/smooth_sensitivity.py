"""Smooth-sensitivity release of the data-dependent ε of (Confident-)GNMax ([P18] Section 4.3, App. B).

A data-dependent ε is a function of the teachers' votes, so publishing it leaks. [P18] releases it
through the Gaussian noise with smooth sensitivity mechanism (GNSS): at a fixed Rényi order λ, the
data-dependent RDP ``f(D)`` is published as ``f(D) + SS_β(D) · N(0, σ_SS²)``, where ``SS_β`` is the
β-smooth sensitivity of ``f`` ([P18] Definition 21, after Nissim et al. 2007), which costs its own RDP
([P18] Theorem 23). The analysis follows the authors' evaluation for Confident-GNMax step by step:

1. λ is the optimum of the expected data-dependent ε (:func:`rdp_confident_gnmax_expected`);
2. per query, the local sensitivity of the RDP bound at distance d = 0 .. n-1 (n teachers): of the
   GNMax bound ([P18] Algorithms 3-5, Proposition 13) and of the threshold check; the GNMax part is
   weighted by the query's probability of being answered (the *expected* local sensitivity);
3. β on the grid ``arange(0.3/λ, 0.495/λ, 0.01/λ)``; ``SS_β = max_d e^(-βd) · LS(d)`` of the summed
   local sensitivities; σ_SS minimises ``λ e^(2β) / σ² + 2 SS_β σ``, i.e. ``σ_SS = (λ e^(2β)/SS_β)^(1/3)``;
   the β minimising ``RDP + GNSS cost + 2 SS_β σ_SS`` is kept;
4. released ε (expectation) = ``RDP(λ) + ln(1/δ)/(λ-1) + GNSS cost``, with standard deviation
   ``SS_β · σ_SS``.

Queries may have different numbers of teachers (a teacher node that drops out mid-run leaves the
later histograms with fewer votes). Each query i is then analysed with its own n_i, and its local
sensitivity extended to the distances d = n_i .. N-1 (N = max n_i) by its supremum; see
:func:`smooth_sensitivity_release` for why this stays a valid bound.

The analysis is valid only under conditions C5 and C6 ([P18] Appendix B.4.2): the Theorem 6 bound
β(q) is non-decreasing in q on (0, q0), and so is ``β(B_U(q)) - β(q)`` on (0, B_L(q0)). They are
verified symbolic-numerically (derivative by sympy, its minimum by scipy), and a setting where they
fail is refused.

References
----------
* [P18] N. Papernot, S. Song, I. Mironov, A. Raghunathan, K. Talwar, Ú. Erlingsson. "Scalable
  Private Learning with PATE." ICLR 2018, arXiv:1802.08908.
* [NRS07] K. Nissim, S. Raskhodnikova, A. Smith. "Smooth Sensitivity and Sampling in Private Data
  Analysis." STOC 2007.
"""

from __future__ import annotations

import dataclasses
import functools
import math
from typing import Any

import numpy as np
import numpy.typing as npt
from scipy import optimize, special, stats

from strategies.rdp_analysis import (
    DEFAULT_ORDERS,
    ArrayLike,
    FloatArray,
    check_delta,
    check_finite,
    check_positive,
    rdp_confident_gnmax_expected,
    rdp_gaussian_from_logq,
    rdp_gnmax_data_dependent,
    validate_votes,
)
from strategies.rdp_conversion import rdp_to_epsilon

__all__ = ["SmoothSensitivityRelease", "draw_released_epsilon", "smooth_sensitivity_release"]


@dataclasses.dataclass(frozen=True)
class SmoothSensitivityRelease:
    """The smooth-sensitivity release of a data-dependent ε at one order ([P18] Section 4.3).

    Attributes
    ----------
    epsilon_data_dependent : float
        The (unreleasable) data-dependent ε at ``order``: ``RDP(λ) + ln(1/δ)/(λ-1)``.
    epsilon_released : float
        Expectation of the released ε: ``epsilon_data_dependent`` plus the GNSS RDP cost.
    epsilon_released_std : float
        Standard deviation of the release noise, ``expected_ss * sigma_ss``.
    beta : float
        Smoothness parameter β of the smooth sensitivity.
    sigma_ss : float
        σ_SS of the GNSS noise (in units of the smooth sensitivity).
    expected_ss : float
        β-smooth sensitivity of the expected RDP, ``E[SS_β]``.
    order : float
        The Rényi order λ, the optimum of the data-dependent ε.
    delta : float
        The target δ.
    data_independent : bool
        True if the data-dependent bound equals the data-independent one for every vote histogram
        at ``order``: nothing depends on the data, the ε needs no noise (β = 0, std 0).
    """

    epsilon_data_dependent: float
    epsilon_released: float
    epsilon_released_std: float
    beta: float
    sigma_ss: float
    expected_ss: float
    order: float
    delta: float
    data_independent: bool = False

    def to_dict(self) -> dict[str, Any]:
        """The release as a JSON-compatible dict (``sigma_ss`` is None when it is infinite)."""
        out = dataclasses.asdict(self)
        out["sigma_ss"] = self.sigma_ss if math.isfinite(self.sigma_ss) else None
        return out


# ---------------------------------------------------------------------------------------------------
# Scalar RDP bounds at one order (the same formulas as strategies.rdp_analysis)
# ---------------------------------------------------------------------------------------------------


def _rdp_gaussian(logq: float, variance: float, order: float) -> float:
    """[P18] Theorem 6 at one order, minimised with the data-independent bound (``rdp_analysis``)."""
    return float(rdp_gaussian_from_logq(np.array([logq]), variance, np.array([order]))[0, 0])


def _mu1_mu2(sigma: float, logq: float) -> tuple[float, float]:
    """The higher orders of [P18] Proposition 10: ``μ2 = σ sqrt(ln 1/q)``, ``μ1 = μ2 + 1``."""
    mu2 = sigma * math.sqrt(-logq)
    return mu2 + 1.0, mu2


def _data_dependent_bound(sigma: float, logq: float, order: float) -> float:
    """[P18] Theorem 6 at one order, without checking its conditions (the caller compares to q0)."""
    variance = sigma**2
    mu1, mu2 = _mu1_mu2(sigma, logq)
    eps1, eps2 = mu1 / variance, mu2 / variance
    log1q = math.log1p(-math.exp(logq))
    log_a = (order - 1.0) * (log1q - math.log1p(-math.exp((logq + eps2) * (1.0 - 1.0 / mu2))))
    log_b = (order - 1.0) * (eps1 - logq / (mu1 - 1.0))
    return float(np.logaddexp(log1q + log_a, logq + log_b)) / (order - 1.0)


@functools.lru_cache(maxsize=256)
def _logq0(sigma: float, order: float) -> float:
    """ln q0: above q0 the data-independent bound ``λ/σ²`` is smaller than Theorem 6 ([P18] App. B.4)."""
    def valid(logq: float) -> bool:
        mu1, mu2 = _mu1_mu2(sigma, logq)
        if mu1 < order:
            return False
        return logq <= (mu2 - 1.0) * mu2 / sigma**2 - mu2 * math.log(mu1 / (mu1 - 1.0) * mu2 / (mu2 - 1.0))

    def dep_minus_ind(logq: float) -> float:
        return _data_dependent_bound(sigma, logq, order) - order / sigma**2

    logub = min(-((1.0 + 1.0 / sigma) ** 2), -(((order - 0.99) / sigma) ** 2), -1.0 / sigma**2)
    if not valid(logub):
        raise ValueError(f"Theorem 6 of [P18] does not apply at sigma={sigma}, order={order:g}")
    if dep_minus_ind(logub) < 0:
        return logub
    loglb = 2.0 * logub
    while dep_minus_ind(loglb) > 0:
        if loglb < -10000:
            raise ValueError(f"no q0 found for sigma={sigma}, order={order:g}")
        loglb *= 1.5
    return float(optimize.brentq(dep_minus_ind, loglb, logub))


def _rdp_gnmax_at(sigma: float, logq: float, order: float) -> float:
    """The RDP bound the sensitivity analysis differentiates: Theorem 6 below q0, ``λ/σ²`` above."""
    if logq >= _logq0(sigma, order):
        return order / sigma**2
    return _data_dependent_bound(sigma, logq, order)


def _b_lower(q: float, sigma: float, num_classes: int) -> float:
    """B_L(q): the smallest q at distance 1 ([P18] Proposition 13)."""
    return (num_classes - 1) / 2.0 * special.erfc(1.0 / sigma + special.erfcinv(2.0 * q / (num_classes - 1)))


def _b_upper(q: float, sigma: float, num_classes: int) -> float:
    """B_U(q): the largest q at distance 1 ([P18] Proposition 13)."""
    return min(1.0, (num_classes - 1) / 2.0 * special.erfc(
        -1.0 / sigma + special.erfcinv(2.0 * q / (num_classes - 1))))


def _local_sensitivity_at_q(logq: float, sigma: float, num_classes: int, order: float) -> float:
    """Upper bound on the local sensitivity of the GNMax RDP at ln q ([P18] Algorithm 3)."""
    logq0 = _logq0(sigma, order)
    logq1 = math.log(_b_lower(math.exp(logq0), sigma, num_classes))
    if logq1 <= logq <= logq0:
        logq = logq1
    beta = _rdp_gnmax_at(sigma, logq, order)
    beta_up = _rdp_gnmax_at(sigma, math.log(_b_upper(math.exp(logq), sigma, num_classes)), order)
    beta_low = _rdp_gnmax_at(sigma, math.log(_b_lower(math.exp(logq), sigma, num_classes)), order)
    return max(beta_up - beta, beta - beta_low)


def _logq(votes: FloatArray, sigma: float) -> float:
    """``rdp_analysis._logq_gnmax`` for one histogram, with the same terms but without the array overhead.

    ``norm.logsf(gap, scale=√2σ)`` is ``log_ndtr(-gap / (√2σ))``; the sum excludes one argmax.
    """
    top = int(np.argmax(votes))
    terms = special.log_ndtr((votes - votes[top]) / (math.sqrt(2.0) * sigma))
    terms[top] = -np.inf
    peak = float(terms.max())
    logq = peak + math.log(float(np.exp(terms - peak).sum()))
    return min(logq, math.log1p(-1.0 / votes.shape[0]))


def local_sensitivity_gnmax(votes: FloatArray, num_teachers: int, sigma: float, order: float) -> FloatArray:
    """Local sensitivity of the GNMax RDP at distance d = 0 .. n-1 ([P18] Algorithms 4 and 5).

    Walks from ``votes`` towards the histograms that move q the most, one teacher per step: to a
    larger gap between the top two counts while q > q0, to a smaller one while q < q1 = B_L(q0);
    between q1 and q0 every distance has the plateau value LS(q1).
    """
    num_classes = votes.shape[0]
    logq0 = _logq0(sigma, order)
    logq1 = math.log(_b_lower(math.exp(logq0), sigma, num_classes))
    logq = _logq(votes, sigma)
    res = np.full(num_teachers, _local_sensitivity_at_q(logq1, sigma, num_classes, order))
    if logq1 <= logq <= logq0:
        return res
    current = np.sort(votes)[::-1].copy()
    res[0] = _local_sensitivity_at_q(logq, sigma, num_classes, order)
    go_left = logq > logq0
    d = 0
    while d + 1 < num_teachers and ((go_left and logq > logq0 and current[1] > 0) or
                                    (not go_left and logq < logq1)):
        d += 1
        if go_left:
            current[0] += 1
            current[1] -= 1
            current[1:] = np.sort(current[1:])[::-1]
        else:
            current[0] -= 1
            current[1] += 1
        logq = _logq(current, sigma)
        res[d] = _local_sensitivity_at_q(logq, sigma, num_classes, order)
    return res


def _rdp_threshold_at(log_p: float, sigma1: float, order: float) -> float:
    """Data-dependent RDP of the threshold check at one order (``rdp_analysis.rdp_threshold``)."""
    logq = min(log_p, math.log(-math.expm1(log_p)) if log_p < 0 else -math.inf)
    return _rdp_gaussian(logq, 2.0 * sigma1**2, order)


@functools.lru_cache(maxsize=64)
def _threshold_rdp_by_max(num_teachers: int, threshold: float, sigma1: float, order: float) -> FloatArray:
    """Threshold-check RDP for every possible top count v = 0 .. n."""
    log_p = stats.norm.logsf(threshold - np.arange(num_teachers + 1.0), scale=sigma1)
    return np.array([_rdp_threshold_at(float(lp), sigma1, order) for lp in log_p])


def local_sensitivity_threshold(
    top: int, num_teachers: int, threshold: float, sigma1: float, order: float
) -> FloatArray:
    """Local sensitivity of the threshold-check RDP at distance d = 0 .. n-1, for top count ``top``.

    The check's RDP depends on the top count only, which one teacher moves by at most 1: at distance
    d the sensitivity is the largest step of the RDP over top counts ``top ± d``.
    """
    rdp = _threshold_rdp_by_max(num_teachers, threshold, sigma1, order)
    steps = np.abs(np.diff(rdp))  # steps[v] = |rdp[v+1] - rdp[v]|
    at_v = np.maximum(np.concatenate(([-np.inf], steps)), np.concatenate((steps, [-np.inf])))
    ls = np.zeros(num_teachers)
    for d in range(max(top, num_teachers - top)):
        candidates = [at_v[v] for v in (top + d, top - d) if 0 <= v <= num_teachers]
        ls[d] = max(candidates)
    return ls


def rdp_gnss(beta: float, sigma_ss: float, order: float) -> float:
    """RDP at order λ of the GNSS mechanism ([P18] Theorem 23), valid for 1 < λ < 1/(2β).

    ``λ e^(2β) / σ² + (β λ - ½ ln(1 - 2 λ β)) / (λ - 1)``.

    Raises
    ------
    ValueError
        If the order is outside (1, 1/(2β)).
    """
    if beta > 0 and not 1 < order < 1 / (2 * beta):
        raise ValueError(f"order must be in (1, 1/(2*beta)) = (1, {1 / (2 * beta):g}), got {order:g}")
    return order * math.exp(2 * beta) / sigma_ss**2 + (
        -0.5 * math.log(1 - 2 * order * beta) + beta * order) / (order - 1)


# ---------------------------------------------------------------------------------------------------
# Conditions C5 and C6
# ---------------------------------------------------------------------------------------------------


def _is_non_decreasing(expr: Any, q: Any, bounds: tuple[float, float]) -> bool:
    """Whether a sympy expression of q has a non-negative derivative on ``bounds`` (numeric minimum)."""
    import sympy as sp

    derivative = sp.lambdify(q, sp.diff(expr, q), modules=[
        "numpy", {"erfc": special.erfc, "erfcinv": special.erfcinv}])
    res = optimize.minimize_scalar(derivative, bounds=bounds, method="bounded")
    if not res.success:
        raise ValueError(f"the minimiser checking conditions C5-C6 did not converge on {bounds}")
    return bool(res.fun >= 0)


@functools.lru_cache(maxsize=64)
def check_conditions(sigma: float, num_classes: int, order: float) -> tuple[bool, bool]:
    """Conditions C5 and C6 of [P18] Appendix B.4.2 for GNMax with noise σ at order λ.

    C5: the Theorem 6 bound β(q) is non-decreasing on (0, q0). C6: ``β(B_U(q)) - β(q)`` is
    non-decreasing on (0, B_L(q0)). Returns ``(c5, c6)``; c6 is False if c5 is.
    """
    import sympy as sp

    q = sp.symbols("q", positive=True, real=True)
    mu2 = sigma * sp.sqrt(sp.log(1 / q))
    mu1 = mu2 + 1
    a = (1 - q) / (1 - (q * sp.exp(mu2 / sigma**2)) ** (1 - 1 / mu2))
    b = sp.exp(mu1 / sigma**2) / q ** (1 / (mu1 - 1))
    beta = sp.log((1 - q) * a ** (order - 1) + q * b ** (order - 1)) / (order - 1)
    q0 = math.exp(_logq0(sigma, order))
    if not _is_non_decreasing(beta, q, (0, q0)):
        return False, False
    bu = (num_classes - 1) / 2 * sp.erfc(sp.erfcinv(2 * q / (num_classes - 1)) - 1 / sigma)
    c6 = _is_non_decreasing(beta.subs(q, bu) - beta, q, (0, _b_lower(q0, sigma, num_classes)))
    return True, c6


# ---------------------------------------------------------------------------------------------------
# The release
# ---------------------------------------------------------------------------------------------------


def _check_integer_votes(votes: FloatArray) -> npt.NDArray[np.int64]:
    """Each query's number of teachers, requiring integer vote counts and at least one vote per query.

    The analysis moves one teacher at a time, so counts must be integers; a query nobody voted on
    has no histogram to analyse.
    """
    if not np.array_equal(votes, np.round(votes)):
        row, col = np.argwhere(votes != np.round(votes))[0]
        raise ValueError(f"votes must be integer counts for the smooth-sensitivity analysis, got "
                         f"{votes[row, col]} at row {row}, class {col}")
    teachers = np.round(votes.sum(axis=1)).astype(np.int64)
    if np.any(teachers < 1):
        row = int(np.flatnonzero(teachers < 1)[0])
        raise ValueError(f"votes row {row} has no votes: every query needs at least one teacher")
    return teachers


@functools.lru_cache(maxsize=64)
def _gnmax_sensitivity_sup(sigma: float, num_classes: int, order: float) -> float:
    """Upper bound on the GNMax local sensitivity over every histogram: the plateau value LS(q1).

    [P18] Algorithm 3 bounds LS on [q1, q0] by LS(q1); under C5-C6 LS is no larger outside it, which
    is why Algorithms 4-5 fill every distance beyond their walk with this value.
    """
    logq1 = math.log(_b_lower(math.exp(_logq0(sigma, order)), sigma, num_classes))
    return _local_sensitivity_at_q(logq1, sigma, num_classes, order)


def _extended(ls: FloatArray, sup: float, length: int) -> FloatArray:
    """``ls`` (distances 0 .. n_i-1) padded to ``length`` distances with the supremum ``sup``."""
    if ls.shape[0] == length:
        return ls
    return np.concatenate((ls, np.full(length - ls.shape[0], max(sup, float(ls.max())))))


def _expected_rdp(votes: FloatArray, teachers: npt.NDArray[np.int64], threshold: float | None,
                  sigma1: float | None, sigma2: float, orders: ArrayLike) -> FloatArray:
    """Summed expected RDP of the queries, computed per group of equal teacher counts.

    The per-query RDP depends on the histogram only (not on n), and the :mod:`strategies.rdp_analysis`
    functions take one n per call; with a single n this is one call, as before.
    """
    total: FloatArray | None = None
    for n in np.unique(teachers):
        group = votes[teachers == n]
        if threshold is None or sigma1 is None:
            part = rdp_gnmax_data_dependent(group, sigma2, orders).sum(axis=0)
        else:
            part, _ = rdp_confident_gnmax_expected(group, threshold, sigma1, sigma2, orders)
        total = part if total is None else total + part
    assert total is not None
    return total


def _is_data_independent(votes: FloatArray, num_teachers: int, threshold: float | None,
                         sigma1: float | None, sigma2: float, order: float) -> bool:
    """Whether both steps' data-dependent bounds equal the data-independent ones for every histogram.

    As in [P18]'s evaluation: GNMax is checked on the unanimous histogram (the smallest q), the
    threshold check at top counts 0 and n (its RDP depends on the top count only).
    """
    unanimous = np.zeros((1, votes.shape[1]))
    unanimous[0, 0] = num_teachers
    step2 = math.isclose(float(rdp_gnmax_data_dependent(unanimous, sigma2, [order])[0, 0]),
                         order / sigma2**2, rel_tol=1e-5, abs_tol=1e-8)
    if threshold is None or sigma1 is None:
        return step2
    rdp = _threshold_rdp_by_max(num_teachers, threshold, sigma1, order)
    ind = order / (2.0 * sigma1**2)
    return step2 and all(math.isclose(rdp[v], ind, rel_tol=1e-5, abs_tol=1e-8) for v in (0, num_teachers))


def smooth_sensitivity_release(
    votes: ArrayLike,
    *,
    threshold: float | None,
    sigma1: float | None,
    sigma2: float,
    delta: float,
    orders: ArrayLike = DEFAULT_ORDERS,
) -> SmoothSensitivityRelease:
    """Smooth-sensitivity release of the expected data-dependent ε of Confident-GNMax ([P18] §4.3).

    Parameters
    ----------
    votes : array_like
        Shape ``(Q, C)``: integer vote histograms of every query checked; row i sums to the number
        of teachers n_i that voted on query i (rows may differ, e.g. after a node dropped out).
    threshold, sigma1 : float or None
        Threshold T and its noise σ1 (> 0). Both None: plain GNMax, every query answered.
    sigma2 : float
        GNMax noise σ2 of the answering step (> 0).
    delta : float
        Target δ in (0, 1).
    orders : array_like, default DEFAULT_ORDERS
        Grid on which the order λ of the data-dependent optimum is chosen.

    Returns
    -------
    SmoothSensitivityRelease
        ε before and after the release at the optimal order, β, σ_SS, E[SS_β].

    Notes
    -----
    Different numbers of teachers. The neighbouring relation is [P18]'s: one teacher's training data
    changes, so that teacher's vote may change in every query it took part in. Datasets at distance d
    differ in d teachers; query i, answered by n_i of them, then differs in at most ``min(d, n_i)``
    votes (a changed teacher that did not vote on query i leaves it unchanged). For d < n_i, the
    histograms query i can reach are exactly those of [P18]'s analysis with n = n_i (Algorithms 4-5
    walk one vote per step, and Proposition 13's B_L/B_U bound q after a one-vote move, whatever n
    is), so its local-sensitivity bound at distance d is [P18]'s with its own n_i. For d >= n_i every
    n_i-vote histogram is reachable, so the query's supremum bounds it: LS(q1) for GNMax (see
    ``_gnmax_sensitivity_sup``), the largest step of the threshold RDP over top counts 0 .. n_i for
    the check. The RDP of the queries composes additively, so the sum of these per-query bounds
    bounds the local sensitivity of the total at each distance, as in [P18] App. B. Distances run over
    0 .. N-1 with N = max n_i, as [P18] takes 0 .. n-1. With all n_i equal nothing is padded and the
    result is [P18]'s, bit for bit.

    Raises
    ------
    ValueError
        On malformed votes (non-finite, negative, non-integer, a row without votes), σ <= 0, δ outside
        (0, 1), only one of threshold and sigma1 given, or if conditions C5-C6 fail at the order.
    """
    votes = validate_votes(votes, same_teachers=False, answerable=False)  # rows without votes: named below
    if (threshold is None) != (sigma1 is None):
        raise ValueError(f"threshold and sigma1 must be given together, got threshold={threshold!r} "
                         f"and sigma1={sigma1!r}")
    sigma2 = check_positive("sigma2", sigma2)
    delta = check_delta(delta)
    if threshold is not None and sigma1 is not None:
        threshold = check_finite("threshold", threshold)
        sigma1 = check_positive("sigma1", sigma1)
    teachers = _check_integer_votes(votes)
    num_teachers = int(teachers.max())
    num_classes = votes.shape[1]

    rdp_total = _expected_rdp(votes, teachers, threshold, sigma1, sigma2, orders)
    if threshold is None or sigma1 is None:
        pr_answered = np.ones(votes.shape[0])
    else:
        pr_answered = stats.norm.sf(threshold - votes.max(axis=1), scale=sigma1)
    epsilon_dd, order = rdp_to_epsilon(orders, rdp_total, delta)
    rdp_at_order = float(rdp_total[int(np.flatnonzero(np.asarray(orders, dtype=float) == order)[0])])

    if all(_is_data_independent(votes, int(n), threshold, sigma1, sigma2, order)
           for n in np.unique(teachers)):
        return SmoothSensitivityRelease(epsilon_dd, epsilon_dd, 0.0, 0.0, math.inf, 0.0, order, delta, True)
    c5, c6 = check_conditions(sigma2, num_classes, order)
    if not (c5 and c6):
        failed = "C5" if not c5 else "C6"
        raise ValueError(f"condition {failed} of the smooth-sensitivity analysis ([P18] Appendix B.4.2) "
                         f"fails for sigma2={sigma2}, {num_classes} classes at order {order:g}; "
                         "the data-dependent ε cannot be released this way")

    ls_total = np.zeros(num_teachers)
    gnmax_sup = _gnmax_sensitivity_sup(sigma2, num_classes, order)
    for row, p, n in zip(votes, pr_answered, teachers.tolist(), strict=True):
        ls_total += p * _extended(local_sensitivity_gnmax(row, n, sigma2, order), gnmax_sup, num_teachers)
        if threshold is not None and sigma1 is not None:
            steps = np.abs(np.diff(_threshold_rdp_by_max(n, threshold, sigma1, order)))
            ls = local_sensitivity_threshold(int(round(row.max())), n, threshold, sigma1, order)
            ls_total += _extended(ls, float(steps.max()), num_teachers)

    best: tuple[float, float, float, float] | None = None  # cost, beta, ss, sigma_ss
    decay = np.arange(num_teachers)
    for beta in np.arange(0.3 / order, 0.495 / order, 0.01 / order):
        ss = float(np.max(ls_total * np.exp(-beta * decay)))
        sigma_ss = (order * math.exp(2 * beta) / ss) ** (1 / 3)
        cost = rdp_at_order + rdp_gnss(beta, sigma_ss, order) + 2 * ss * sigma_ss
        if best is None or cost < best[0]:
            best = (cost, float(beta), ss, sigma_ss)
    assert best is not None
    _, beta, ss, sigma_ss = best
    released = epsilon_dd + rdp_gnss(beta, sigma_ss, order)
    return SmoothSensitivityRelease(epsilon_data_dependent=epsilon_dd, epsilon_released=released,
                                    epsilon_released_std=ss * sigma_ss, beta=beta, sigma_ss=sigma_ss,
                                    expected_ss=ss, order=order, delta=delta)


def draw_released_epsilon(release: SmoothSensitivityRelease, rng: np.random.Generator) -> float:
    """One noisy release: ``epsilon_released + SS_β · σ_SS · N(0, 1)`` drawn from ``rng`` ([P18] GNSS).

    Raises
    ------
    TypeError
        If ``rng`` is not a numpy Generator (a seeded one makes the draw reproducible).
    """
    if not isinstance(rng, np.random.Generator):
        raise TypeError(f"rng must be a numpy.random.Generator, got {type(rng).__name__}")
    return float(release.epsilon_released + release.epsilon_released_std * rng.standard_normal())
