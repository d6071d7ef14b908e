"""RDP → (ε, δ)-DP conversion ([M17] Proposition 3).

References
----------
* [M17] I. Mironov. "Rényi Differential Privacy." CSF 2017, arXiv:1702.07476.
* [P18] N. Papernot et al. "Scalable Private Learning with PATE." ICLR 2018, arXiv:1802.08908.
"""

from __future__ import annotations

import math
import warnings

import numpy as np

from strategies.rdp_analysis import ArrayLike, FloatArray, PrivacyWarning, _check_delta, _check_orders

__all__ = ["rdp_to_epsilon"]

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
