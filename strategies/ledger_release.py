"""The privacy ledger's vote sidecar and its smooth-sensitivity release ([P18] Section 4.3).

To release the data-dependent ε at the end of a run ([P18] GNSS, :mod:`strategies.smooth_sensitivity`)
the ledger needs every vote histogram it charged. They are kept in ``<ledger>.votes.npz`` beside the
ledger JSON, written atomically before the JSON, whose ``votes_digest`` (SHA-256 of the arrays) pins
the sidecar: a reloaded ledger with charges refuses a missing or mismatched sidecar. The sidecar is
written first, so a crash between the two writes leaves it with rows beyond the JSON's
``queries_checked``; those are ignored (they were never charged).
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import tempfile
from pathlib import Path

import numpy as np
import numpy.typing as npt

from strategies.rdp_analysis import FloatArray
from strategies.smooth_sensitivity import SmoothSensitivityRelease, smooth_sensitivity_release

RELEASABLE = ("gnmax", "confident_gnmax")
"""Mechanisms whose data-dependent ε the smooth-sensitivity analysis of [P18] covers."""


def sidecar_path(path: Path) -> Path:
    """``<ledger>.votes.npz``: where the ledger at ``path`` keeps its vote histograms."""
    return path.with_name(path.name + ".votes.npz")


def votes_digest(votes: FloatArray, answered: npt.NDArray[np.bool_]) -> str:
    """SHA-256 of the shapes and bytes of ``votes`` (float64) and ``answered`` (bool)."""
    h = hashlib.sha256()
    for arr in (np.ascontiguousarray(votes, dtype=np.float64), np.ascontiguousarray(answered, dtype=bool)):
        h.update(repr(arr.shape).encode())
        h.update(arr.tobytes())
    return h.hexdigest()


def write_sidecar(path: Path, votes: FloatArray, answered: npt.NDArray[np.bool_]) -> None:
    """Write the sidecar of the ledger at ``path`` atomically: temp file, fsync, os.replace."""
    target = sidecar_path(path)
    fd, tmp_name = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as handle:
            np.savez(handle, votes=votes, answered=answered)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp_name, target)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp_name)
        raise


def read_sidecar(path: Path, digest: str, n_rows: int) -> tuple[FloatArray, npt.NDArray[np.bool_]]:
    """Read and check the sidecar of the ledger at ``path`` against its stored digest.

    Raises
    ------
    ValueError
        If the sidecar is missing, unreadable, or does not match ``digest`` and ``n_rows``.
    """
    target = sidecar_path(path)
    if not target.exists():
        raise ValueError(f"{path}: the ledger has {n_rows} charged queries but its vote sidecar {target} "
                         "is missing; refusing to continue (restore it or start a new ledger)")
    try:
        with np.load(target, allow_pickle=False) as data:
            votes, answered = np.asarray(data["votes"], dtype=float), np.asarray(data["answered"], dtype=bool)
    except (OSError, KeyError, ValueError) as err:
        raise ValueError(f"{target}: not a readable vote sidecar ({err})") from err
    # A crash between the sidecar write and the JSON write leaves extra rows: the JSON's prefix counts.
    votes, answered = votes[:n_rows], answered[:n_rows]
    if votes.shape[0] != n_rows or votes_digest(votes, answered) != digest:
        raise ValueError(f"{target}: vote sidecar does not match the ledger ({votes.shape[0]} rows, "
                         f"ledger has {n_rows} charged queries and votes_digest {digest[:12]}...)")
    return votes, answered


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
