"""The privacy ledger's smooth-sensitivity release ([P18] Section 4.3).

To release the data-dependent ε at the end of a run ([P18] GNSS, :mod:`strategies.smooth_sensitivity`)
the ledger needs every vote histogram it charged; it keeps them in its row store
(:mod:`strategies.ledger_sidecar`).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from strategies.ledger_fields import LedgerBase
from strategies.ledger_store import atomic_write_json, ledger_lock
from strategies.rdp_analysis import FloatArray
from strategies.smooth_sensitivity import draw_released_epsilon
from strategies.vote_release import VoteRelease


def released_prefix(
    model: VoteRelease, past: FloatArray | None, batch: FloatArray, delta: float, orders: FloatArray,
    budget: float,
) -> tuple[int, float | None]:
    """Longest prefix of ``batch`` whose expected released ε (with ``past``) stays within ``budget``.

    The expected released ε grows with the queries (more RDP, more smooth sensitivity), so the prefix
    is found by bisection on its length; returns the length and the released ε there (None for 0
    queries in all). ``past`` and ``batch`` may have different numbers of teachers (a node dropped out
    between batches): the release analyses each query with its own.
    """
    def released(k: int) -> float | None:
        rows = batch[:k] if past is None else np.concatenate((past, batch[:k]))
        if rows.shape[0] == 0:
            return None
        release = model.smooth_sensitivity(rows, delta, orders)
        assert release is not None  # the ledger budgets on "released" only for a release it covers
        return release.epsilon_released

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


class LedgerRelease(LedgerBase):
    """:meth:`release` of :class:`strategies.privacy_ledger.PrivacyLedger` (a mixin, state set by it)."""

    def release(self, rng: np.random.Generator) -> dict[str, Any] | None:
        """Release the data-dependent ε through [P18]'s smooth-sensitivity mechanism, once.

        Computes :func:`strategies.smooth_sensitivity.smooth_sensitivity_release` on every charged
        vote histogram (Confident-GNMax: expected over the threshold outcomes, as [P18] evaluates
        it), each with its own number of teachers (batches after a node dropped out have fewer),
        draws the noisy released ε once from ``rng`` and records it in the ledger (file). A second
        call for the same charged queries returns the recorded release without drawing again.

        Parameters
        ----------
        rng : numpy.random.Generator
            Source of the release noise (seed it for a reproducible draw).

        Returns
        -------
        dict or None
            ``queries_checked``, ``epsilon_released`` (expectation), ``epsilon_released_std``,
            ``epsilon_released_draw`` (the noisy draw) and ``smooth_sensitivity`` (the release's
            :meth:`~strategies.smooth_sensitivity.SmoothSensitivityRelease.to_dict`); None for a
            release the analysis does not cover (LNMax, local RR: ``"released"`` not in its
            ``budget_bases``).

        Raises
        ------
        ValueError
            If nothing was charged or the smooth-sensitivity conditions fail (see
            ``smooth_sensitivity_release``).
        """
        if "released" not in self._model.budget_bases:
            return None
        if self._path is None:
            return self._do_release(rng)
        with ledger_lock(self._path):
            self._refresh()
            return self._do_release(rng)

    def _do_release(self, rng: np.random.Generator) -> dict[str, Any]:
        if self._release is not None and self._release.get("queries_checked") == self._checked:
            return dict(self._release)
        if not self._checked:
            raise ValueError("nothing to release: the ledger has no charged queries")
        result = self._model.smooth_sensitivity(self._rows.votes, self._delta, self._orders)
        assert result is not None  # covered: "released" is in its budget_bases
        release = {
            "queries_checked": self._checked,
            "epsilon_released": result.epsilon_released,
            "epsilon_released_std": result.epsilon_released_std,
            "epsilon_released_draw": draw_released_epsilon(result, rng),
            "smooth_sensitivity": result.to_dict(),
        }
        if self._path is not None:
            atomic_write_json(self._path, self._payload(**{**self._state(), "release": release}))
        self._release = release
        return dict(release)
