"""Rényi-DP analysis of LNMax, the Laplace noisy max of PATE 2017 ([P17] Section 2.1).

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

"""

from __future__ import annotations

import math

import numpy as np

from strategies.rdp_analysis import (
    DEFAULT_ORDERS,
    ArrayLike,
    FloatArray,
    check_orders,
    check_positive,
    log1mexp,
    logsumexp_excluding_argmax,
    validate_votes,
)

__all__ = ["rdp_lnmax_data_dependent", "rdp_lnmax_data_independent", "rdp_lnmax_data_independent_exact"]

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
    pure_eps = 2.0 * check_positive("gamma", gamma)
    orders = check_orders(orders)
    return np.minimum(0.5 * pure_eps**2 * orders, pure_eps)


def _logq_lnmax(votes: FloatArray, gamma: float) -> FloatArray:
    """Upper bound on ``ln Pr[LNMax outcome != argmax]`` per query ([P17] Lemma 4).

    With ``Δ_j = n_i* - n_j``, ``Pr[j beats i*] = (2 + γΔ_j) / (4 e^(γΔ_j))`` for two independent
    Laplace(1/γ) variables; summed by the union bound and capped at ``1 - 1/C`` (see
    ``_logq_gnmax``).
    """
    scaled = gamma * (votes - votes.max(axis=1, keepdims=True))  # -γΔ_j <= 0
    logq = logsumexp_excluding_argmax(np.log(2.0 - scaled) + math.log(0.25) + scaled, votes)
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
    votes = validate_votes(votes, answerable=False)
    independent = rdp_lnmax_data_independent(gamma, orders)
    orders = check_orders(orders)
    pure_eps = 2.0 * float(gamma)
    logq = _logq_lnmax(votes, float(gamma))
    rdp = np.tile(independent, (logq.shape[0], 1))

    rows = np.flatnonzero(logq <= -np.logaddexp(pure_eps, 0.0))  # q <= 1 / (e^ε + 1)
    if rows.size == 0:
        return rdp
    lq = logq[rows, None]
    lam_minus_1 = orders[None, :] - 1.0
    log1q = log1mexp(lq)
    log_t = np.logaddexp(
        log1q + (log1q - log1mexp(pure_eps + lq)) * lam_minus_1, lq + pure_eps * lam_minus_1
    )
    rdp[rows] = np.minimum(rdp[rows], log_t / lam_minus_1)
    return rdp


def rdp_lnmax_data_independent_exact(gamma: float, orders: ArrayLike = DEFAULT_ORDERS) -> FloatArray:
    """Exact data-independent RDP of one LNMax query: the Laplace RDP of the two counts that move.

    One teacher changing its vote moves two counts by 1 each (one up, one down) and leaves the others
    unchanged; the Laplace(b = 1/γ) noise is independent per count, so the histogram's Rényi
    divergence is twice that of a unit shift of one Laplace variable, [M17] Table II (Laplace
    mechanism, sensitivity 1)::

        2/(α-1) · log( α/(2α-1) · e^((α-1)/b) + (α-1)/(2α-1) · e^(-α/b) ),

    and releasing the argmax is post-processing. It never exceeds :func:`rdp_lnmax_data_independent`:
    each term is at most the pure ε = γ of its count (so the sum is at most 2γ), and at most its
    ½γ²-zCDP bound αγ²/2 ([BS16] Proposition 3.3), i.e. αγ² in all, half the 2αγ² used there.
    At small γ the gain is ≈2× in RDP (e.g. 100 queries at γ = 0.05, δ = 1e-5: ε 3.57, not 5.30).

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
    gamma = check_positive("gamma", gamma)
    orders = check_orders(orders)
    log_terms = np.logaddexp(np.log(orders / (2.0 * orders - 1.0)) + (orders - 1.0) * gamma,
                             np.log((orders - 1.0) / (2.0 * orders - 1.0)) - orders * gamma)
    exact = 2.0 * log_terms / (orders - 1.0)
    return np.minimum(exact, rdp_lnmax_data_independent(gamma, orders))  # equal or smaller; guards rounding
