"""Read-only views of :class:`strategies.privacy_ledger.PrivacyLedger` (a mixin, state set by the ledger),
the JSON document it is persisted as, and the outcome of a charge (:class:`ChargeResult`)."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from strategies.ledger_fields import LedgerBase
from strategies.ledger_store import LEDGER_FORMAT_VERSION
from strategies.rdp_analysis import FloatArray


class BudgetExhaustedError(RuntimeError):
    """Raised by :meth:`PrivacyLedger.charge` once the privacy budget is exhausted."""


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
    epsilon_released : float or None
        Expected smooth-sensitivity released ε after this charge (``budget_on="released"`` only).
    """

    n_accepted: int
    n_answered: int
    exhausted: bool
    epsilon_data_dependent: float
    epsilon_data_independent: float
    best_order_data_dependent: float
    best_order_data_independent: float
    epsilon_released: float | None = None


class LedgerViews(LedgerBase):
    """Properties over the ledger's state; every array or list returned is a copy."""

    def epsilon(self) -> dict[str, float]:
        """Total ε spent so far on both accountings, with the best orders (no edge warning).

        Returns
        -------
        dict
            Keys ``data_dependent``, ``data_independent``, ``best_order_data_dependent``,
            ``best_order_data_independent``; with ``budget_on="released"`` also ``released``, the
            expected released ε of the charged queries. All ε are 0 before any query is checked.
        """
        eps_dd, order_dd = self._best(self._rdp_dd, self._checked)
        eps_di, order_di = self._best(self._rdp_di, self._checked)
        out = {
            "data_dependent": eps_dd,
            "data_independent": eps_di,
            "best_order_data_dependent": order_dd,
            "best_order_data_independent": order_di,
        }
        if self._budget_on == "released":
            out["released"] = 0.0 if self._eps_released is None else float(self._eps_released)
        return out

    @property
    def conversion(self) -> str:
        """The RDP → (ε, δ) conversion of this ledger's ε: "mironov" or "dp_accounting"."""
        return self._conversion

    @property
    def mechanism(self) -> str:
        """The fusion mechanism this ledger charges."""
        return self._mechanism

    @property
    def params(self) -> dict[str, float]:
        """The noise parameters charged (a copy), named as in ``VoteRelease.privacy_params()``."""
        return dict(self._params)

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
        """The journal, one entry per charge (copies): counts, ε after the charge, time, the batch's
        costs, sequence number and hashes (see :mod:`strategies.ledger_journal`)."""
        return [dict(entry) for entry in self._history]

    @property
    def charged_query_ids(self) -> np.ndarray:
        """The caller's id of every charged query, in charge order (``-1`` where charged without ids)."""
        return self._rows.query_ids.copy()

    @property
    def votes(self) -> FloatArray | None:
        """The charged vote histograms ``(queries_checked, C)`` (a copy); None before any."""
        return self._rows.votes.copy() if len(self._rows) else None

    def paid_labels(self) -> tuple[np.ndarray, np.ndarray]:
        """``(query_ids, labels)`` of the answered queries charged with labels, in charge order (copies).

        What the privacy spent bought: stored with each charge, so they survive a failed student and a
        restart (``PrivacyLedger.load(path).paid_labels()``). Queries charged without labels are not
        in it. Both arrays are int64 of one length.
        """
        keep = self._rows.labels >= 0  # -1: unanswered, or charged without labels
        return self._rows.query_ids[keep].copy(), self._rows.labels[keep].copy()

    @property
    def last_release(self) -> dict[str, Any] | None:
        """The recorded smooth-sensitivity release (see ``PrivacyLedger.release``), or None."""
        return None if self._release is None else dict(self._release)

    def _state(self) -> dict[str, Any]:
        """The current state as :meth:`_payload` keywords."""
        return {"rdp_dd": self._rdp_dd, "rdp_di": self._rdp_di, "checked": self._checked,
                "answered": self._answered, "exhausted": self._exhausted, "history": self._history,
                "eps_released": self._eps_released, "release": self._release}

    def _payload(
        self,
        *,
        rdp_dd: FloatArray,
        rdp_di: FloatArray,
        checked: int,
        answered: int,
        exhausted: bool,
        history: Sequence[dict[str, Any]],
        eps_released: float | None,
        release: dict[str, Any] | None,
    ) -> dict[str, Any]:
        """The JSON document for a ledger state (the totals in it are derived from ``history``)."""
        payload: dict[str, Any] = {
            "format_version": LEDGER_FORMAT_VERSION,
            "config": self._described(),
            "orders": self._orders.tolist(),
            "rdp_data_dependent": rdp_dd.tolist(),
            "rdp_data_independent": rdp_di.tolist(),
            "queries_checked": checked,
            "queries_answered": answered,
            "exhausted": exhausted,
            "history": list(history),
        }
        if "released" in self._model.budget_bases:
            payload["release"] = release
        if self._budget_on == "released":
            payload["epsilon_released"] = eps_released
        return payload

    def to_dict(self) -> dict[str, Any]:
        """The ledger as the JSON-compatible dict it is persisted as."""
        return self._payload(**self._state())

    def fitting_queries(self, n: int, n_classes: int) -> int:
        """How many of ``n`` more queries the budget pays for at their data-independent (worst-case) cost.

        For a release that must decide before it sees a batch's votes how much of it to aggregate at all
        (:class:`strategies.distributed_noise.SecureVoting`): what the ledger would cut is never aggregated.
        """
        worst = self._model.worst_case_rdp(self._orders, n_classes)
        steps = np.arange(1, n + 1)[:, None]
        curve = self._curve(self._rdp_di[None, :] + steps * worst[None, :])
        over = curve.min(axis=1) > self._budget
        return int(np.argmax(over)) if over.any() else n

