"""How :class:`strategies.privacy_ledger.PrivacyLedger` adopts its stored file (a mixin, state set by the
ledger): a current journal once its settings, order grid, hash chain, row store and head log check out;
a v1 local randomised-response journal (:func:`strategies.local_rr.verify_v1_journal`), read-only."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from strategies.ledger_anchor import check_head, check_settings
from strategies.ledger_fields import LedgerBase
from strategies.ledger_journal import verify_journal
from strategies.ledger_sidecar import LedgerRows, read_sidecar, sidecar_row_count
from strategies.local_rr import v1_settings, verify_v1_journal
from strategies.rdp_analysis import DEFAULT_ORDERS
from strategies.vote_release import RENAMED_PARAMS, current_param_names


class LedgerRestore(LedgerBase):
    """:meth:`_restore` (a current ledger file) and :meth:`_adopt_v1` (a v1 local-RR journal)."""

    def _restore(self, stored: dict[str, Any], head: Sequence[tuple[int, str]]) -> None:
        """Adopt a stored ledger after checking it matches this one and its journal adds up.

        The file must extend the journal this ledger last wrote or adopted (no rollback); the entries
        already verified skip the cost recomputation. A file with an earlier name (``sigma``: ``sigma2``) is
        verified as stored, then read by the current names, and keeps its own (:meth:`_described`).
        """
        check_settings(self._path, self._config(), current_param_names(stored["config"]))
        written = {new: old for old, (new, _) in RENAMED_PARAMS.items() if old in stored["config"]}
        stored_orders = np.asarray(stored["orders"], dtype=float)
        if not np.array_equal(stored_orders, self._orders):
            raise ValueError(
                f"{self._path}: stored ledger has a different order grid "
                f"({stored_orders.size} orders in [{stored_orders.min():g}, {stored_orders.max():g}]) "
                f"than this one ({self._orders.size} orders in [{self._orders.min():g}, "
                f"{self._orders.max():g}])"
            )
        assert self._path is not None
        path = self._path
        totals, rows = verify_journal(path, stored, self._spec(written), lambda n: read_sidecar(path, n),
                                      known=self._history)
        check_head(path, stored["history"], head, sidecar_row_count(path), totals.checked)
        self._head_entries = len(head)
        self._rdp_dd, self._rdp_di = totals.rdp_data_dependent, totals.rdp_data_independent
        self._checked, self._answered, self._exhausted = totals.checked, totals.answered, totals.exhausted
        self._history, self._rows, self._written_names = list(stored["history"]), rows, written
        self._eps_released = totals.epsilon_released
        self._release = stored.get("release")

    def _adopt_v1(self, stored: dict[str, Any], head: Sequence[tuple[int, str]]) -> None:
        """Adopt a v1 local-RR journal (:func:`strategies.local_rr.verify_v1_journal`): its ε is the same
        min(Q·ε0, RDP) of Q queries, its paid labels are kept; it is not extended (:meth:`_charge`)."""
        assert self._path is not None
        if self._mechanism != "local_rr" or not np.array_equal(self._orders, DEFAULT_ORDERS):
            raise ValueError(f"{self._path}: stored ledger has mechanism='local_rr' (a v1 local randomised-"
                             f"response journal), but this ledger was created with mechanism="
                             f"{self._mechanism!r} on {self._orders.size} orders")
        mine = v1_settings(self._params, self._delta, self._budget, self._conversion, self._run)
        check_settings(self._path, mine, stored.get("config"),
                       intro="stored ledger has settings of another run or mechanism: ")
        v1 = verify_v1_journal(self._path, stored, mine, head, self._history)
        n_classes = v1.n_classes or 0
        per_query = self._model.worst_case_rdp(self._orders, n_classes) if n_classes else self._rdp_di * 0
        self._rdp_dd, self._rdp_di = v1.checked * per_query, v1.checked * per_query
        self._checked = self._answered = v1.checked
        self._history, self._head_entries, self._v1 = v1.history, len(head), True
        votes = np.full((v1.checked, n_classes), np.nan)  # a v1 journal kept no votes: none are needed
        self._rows = LedgerRows(votes, np.ones(v1.checked, dtype=bool), v1.query_ids, v1.labels)
        after_next = self._best((v1.checked + 1) * per_query, v1.checked + 1)[0]
        self._exhausted = bool(v1.history) and after_next > self._budget
