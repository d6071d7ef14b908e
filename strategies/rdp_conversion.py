"""RDP → (ε, δ)-DP conversion: [M17] Proposition 3 (default) or the tighter [BBGHS20] Theorem 21.

``conversion="mironov"``: ``ε = rdp(α) + ln(1/δ)/(α-1)``, the one [P18] and its code use.
``conversion="dp_accounting"``: ``ε = rdp(α) + ln(1 - 1/α) - (ln δ + ln α)/(α-1)`` ([BBGHS20]
Theorem 21; also [CKS20] Proposition 12), the conversion of Google's dp-accounting library; it is
never larger, since ``ln(1 - 1/α) < 0`` and ``ln α / (α-1) > 0``, clipped at 0.

References
----------
* [M17] I. Mironov. "Rényi Differential Privacy." CSF 2017, arXiv:1702.07476.
* [BBGHS20] B. Balle, G. Barthe, M. Gaboardi, J. Hsu, T. Sato. "Hypothesis Testing Interpretations
  and Renyi Differential Privacy." AISTATS 2020, arXiv:1905.09982.
* [CKS20] C. Canonne, G. Kamath, T. Steinke. "The Discrete Gaussian for Differential Privacy."
  NeurIPS 2020, arXiv:2004.00010.
* [P18] N. Papernot et al. "Scalable Private Learning with PATE." ICLR 2018, arXiv:1802.08908.
"""

from __future__ import annotations

import math
import warnings

import numpy as np

from strategies.rdp_analysis import ArrayLike, FloatArray, PrivacyWarning, check_delta, check_orders

__all__ = ["CONVERSIONS", "rdp_to_epsilon"]

CONVERSIONS = ("mironov", "dp_accounting")
"""The RDP → (ε, δ) conversions: [M17] Proposition 3, or [BBGHS20] Theorem 21 (dp-accounting)."""

# ---------------------------------------------------------------------------------------------------
# RDP → (ε, δ)
# ---------------------------------------------------------------------------------------------------


def check_conversion(conversion: str) -> str:
    """Return ``conversion`` if it is one of :data:`CONVERSIONS`, else raise ValueError."""
    if conversion not in CONVERSIONS:
        raise ValueError(f"conversion must be one of {CONVERSIONS}, got {conversion!r}")
    return conversion


def epsilon_curve(
    orders: FloatArray, rdp: FloatArray, delta: float, conversion: str = "mironov"
) -> FloatArray:
    """ε at every order along the last axis, by ``conversion`` (see the module docstring)."""
    if conversion == "mironov":
        return rdp + math.log(1.0 / delta) / (orders - 1.0)
    eps = rdp + np.log1p(-1.0 / orders) - (math.log(delta) + np.log(orders)) / (orders - 1.0)
    return np.maximum(eps, 0.0)


def warn_if_edge(order: float, orders: FloatArray, what: str) -> None:
    """Warn with :class:`PrivacyWarning` when ``order`` is the smallest or largest of ``orders``."""
    if order in (orders.min(), orders.max()):
        side = "smallest" if order == orders.min() else "largest"
        warnings.warn(
            f"{what}: the best order {order:g} is the {side} of the grid "
            f"[{orders.min():g}, {orders.max():g}]; extend the grid for a tighter ε",
            PrivacyWarning,
            stacklevel=3,
        )


def rdp_to_epsilon(
    orders: ArrayLike, rdp: ArrayLike, delta: float, conversion: str = "mironov"
) -> tuple[float, float]:
    """Convert an RDP curve to (ε, δ)-DP: the smallest ε over the order grid.

    The default is the classic conversion of [M17] Proposition 3, ``rdp(α) + ln(1/δ) / (α - 1)``,
    the one [P18] uses (tf-privacy ``compute_eps_from_delta``), so that numbers match the paper.
    ``conversion="dp_accounting"`` uses the tighter [BBGHS20] Theorem 21 (see the module docstring).

    Parameters
    ----------
    orders : array_like
        Shape ``(K,)``, orders α > 1.
    rdp : array_like
        Shape ``(K,)``: the total RDP at each order, >= 0; +inf is allowed (no guarantee there).
    delta : float
        Target δ in (0, 1).
    conversion : {"mironov", "dp_accounting"}, default "mironov"
        Which conversion to apply.

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
        is outside (0, 1), or ``conversion`` is unknown.

    Warns
    -----
    PrivacyWarning
        If the best order is the smallest or the largest of the grid.
    """
    orders = check_orders(orders)
    rdp = np.asarray(rdp, dtype=float)
    delta = check_delta(delta)
    conversion = check_conversion(conversion)
    if rdp.shape != orders.shape:
        raise ValueError(f"rdp must have the same shape as orders, got {rdp.shape} and {orders.shape}")
    if np.any(np.isnan(rdp)) or np.any(rdp < 0):
        bad = rdp[np.isnan(rdp) | (rdp < 0)][0]
        raise ValueError(f"rdp must be >= 0 (inf allowed), got {bad}")
    eps = epsilon_curve(orders, rdp, delta, conversion)
    if np.all(np.isinf(eps)):
        return math.inf, math.nan
    best = int(np.argmin(eps))
    warn_if_edge(float(orders[best]), orders, "rdp_to_epsilon")
    return float(eps[best]), float(orders[best])
