"""What one query costs the privacy ledger, per mechanism: parameter checks and per-query RDP.

The costs come from the analysis modules ([P18] Theorem 6 and Proposition 8 for GNMax and the
threshold check, [P17] Theorem 3 for LNMax); this module only dispatches on the mechanism name.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

from strategies.rdp_analysis import (
    ArrayLike,
    FloatArray,
    _check_finite,
    _check_positive,
    rdp_gnmax_data_dependent,
    rdp_gnmax_data_independent,
    rdp_threshold,
    rdp_threshold_data_independent,
)
from strategies.rdp_lnmax import rdp_lnmax_data_dependent, rdp_lnmax_data_independent_exact

MECHANISM_PARAMS: dict[str, tuple[str, ...]] = {
    "gnmax": ("sigma",),
    "confident_gnmax": ("sigma", "sigma1", "threshold"),
    "lnmax": ("gamma",),
}
"""The noise parameters each private mechanism is charged for (``sigma`` is σ2 for Confident-GNMax)."""


def check_params(mechanism: str, **given: float | None) -> dict[str, float]:
    """Validate the mechanism's parameters; return the ones it uses, as floats."""
    needed = MECHANISM_PARAMS[mechanism]
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


def lnmax_answer_rdp(gamma: float, orders: FloatArray) -> FloatArray:
    """Data-independent RDP of one LNMax answer, as the ledger charges it: the exact Laplace RDP of the
    two counts that move ([M17] Table II), tighter than the pure-ε/zCDP bound ([P17] Theorem 3 premise)."""
    return rdp_lnmax_data_independent_exact(gamma, orders)


def query_costs(
    mechanism: str, params: dict[str, float], orders: FloatArray, votes: FloatArray,
    answered: npt.NDArray[np.bool_],
) -> tuple[FloatArray, FloatArray]:
    """Per-query RDP ``(Q, K)`` on both accountings: check for every query, answer if answered."""
    if mechanism == "lnmax":
        di_answer = lnmax_answer_rdp(params["gamma"], orders)
        dd = np.minimum(rdp_lnmax_data_dependent(votes, params["gamma"], orders), di_answer[None, :])
    else:
        dd = rdp_gnmax_data_dependent(votes, params["sigma"], orders)
        di_answer = rdp_gnmax_data_independent(params["sigma"], orders)
    dd = dd * answered[:, None]
    di = answered[:, None] * di_answer[None, :]
    if mechanism == "confident_gnmax":
        dd = dd + rdp_threshold(votes, params["threshold"], params["sigma1"], orders)
        di = di + rdp_threshold_data_independent(params["sigma1"], orders)[None, :]
    return dd, di


def worst_case_query(mechanism: str, params: dict[str, float], orders: FloatArray) -> FloatArray:
    """Largest RDP one more query can cost (its data-independent cost)."""
    if mechanism == "lnmax":
        return lnmax_answer_rdp(params["gamma"], orders)
    cost = rdp_gnmax_data_independent(params["sigma"], orders)
    if mechanism == "confident_gnmax":
        cost = cost + rdp_threshold_data_independent(params["sigma1"], orders)
    return cost


def check_answered(mechanism: str, answered: ArrayLike | None, n_queries: int) -> npt.NDArray[np.bool_]:
    """Validate ``answered`` for this mechanism and batch; return a boolean ``(Q,)`` array."""
    if answered is None:
        if mechanism == "confident_gnmax":
            raise ValueError("answered is required for mechanism 'confident_gnmax' (the threshold outcomes)")
        return np.ones(n_queries, dtype=bool)
    arr = np.asarray(answered)
    if arr.dtype != np.bool_ or arr.shape != (n_queries,):
        raise ValueError(
            f"answered must be a boolean array of shape ({n_queries},), got dtype {arr.dtype} "
            f"and shape {arr.shape}"
        )
    if mechanism != "confident_gnmax" and not arr.all():
        raise ValueError(
            f"answered must be all True for mechanism {mechanism!r} (every query is answered), "
            f"got False at index {int(np.flatnonzero(~arr)[0])}"
        )
    return arr
