"""The privacy ledger's smooth-sensitivity release ([P18] Section 4.3).

To release the data-dependent ε at the end of a run ([P18] GNSS, :mod:`strategies.smooth_sensitivity`)
the ledger needs every vote histogram it charged; it keeps them in its row store
(:mod:`strategies.ledger_sidecar`).
"""

from __future__ import annotations

import numpy as np

from strategies.rdp_analysis import FloatArray
from strategies.smooth_sensitivity import SmoothSensitivityRelease, smooth_sensitivity_release

RELEASABLE = ("gnmax", "confident_gnmax")
"""Mechanisms whose data-dependent ε the smooth-sensitivity analysis of [P18] covers."""


def release_of(
    mechanism: str, params: dict[str, float], votes: FloatArray, delta: float, orders: FloatArray
) -> SmoothSensitivityRelease:
    """The smooth-sensitivity release of the expected data-dependent ε of ``votes`` ([P18] §4.3)."""
    if mechanism not in RELEASABLE:
        raise ValueError(f"the smooth-sensitivity release covers {RELEASABLE}, got mechanism {mechanism!r}")
    confident = mechanism == "confident_gnmax"
    return smooth_sensitivity_release(
        votes, threshold=params["threshold"] if confident else None,
        sigma1=params["sigma1"] if confident else None, sigma2=params["sigma"], delta=delta, orders=orders)


def released_prefix(
    mechanism: str, params: dict[str, float], past: FloatArray | None, batch: FloatArray, delta: float,
    orders: FloatArray, budget: float,
) -> tuple[int, float | None]:
    """Longest prefix of ``batch`` whose expected released ε (with ``past``) stays within ``budget``.

    The expected released ε grows with the queries (more RDP, more smooth sensitivity), so the prefix
    is found by bisection on its length; returns the length and the released ε there (None for 0
    queries in all).
    """
    def released(k: int) -> float | None:
        rows = batch[:k] if past is None else np.concatenate((past, batch[:k]))
        if rows.shape[0] == 0:
            return None
        return release_of(mechanism, params, rows, delta, orders).epsilon_released

    full = released(batch.shape[0])
    if full is not None and full <= budget:
        return batch.shape[0], full
    lo, hi, eps_lo = 0, batch.shape[0], released(0)  # invariant: lo fits, hi does not
    while hi - lo > 1:
        mid = (lo + hi) // 2
        eps_mid = released(mid)
        if eps_mid is not None and eps_mid <= budget:
            lo, eps_lo = mid, eps_mid
        else:
            hi = mid
    return lo, eps_lo
