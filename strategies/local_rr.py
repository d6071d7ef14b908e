"""Local randomised response of teacher votes (each vote ε-LDP) and its own accounting.

For users who trust no aggregator: every teacher's vote on every query is randomised on its node by k-ary
randomised response (``protocol.local_rr``, ``clients.pate.local_rr``); the server counts the randomised votes
and labels each query by their plurality (ties broken at random). Debiasing the counts is affine with the
same factor for every class, so the plurality of the raw counts is the plurality of the debiased ones.

Accounting, per teacher (the unit of the central PATE analysis: one teacher's data changes its votes):
each query releases that teacher's vote once through k-RR, so Q queries compose Q mechanisms, each

- ε0-DP (pure, Kairouz et al. 2014), hence Q·ε0-DP by basic composition; and
- (α, ρ(α))-RDP with the exact Rényi divergence of k-RR between two inputs ([M17] Mironov 2017, Prop. 5
  on binary randomised response, here over C outputs):
  ``ρ(α) = 1/(α-1) · log(p^α q^(1-α) + q^α p^(1-α) + (C-2) q)``, composed additively ([M17] Prop. 1).

The ledger reports the smaller of ``Q·ε0`` and the RDP curve converted at δ ([M17] Prop. 3 or the
tighter conversion), as both hold. It is data-independent, charges every query (all are answered) and
stops at the budget. With a path it persists as a hash-chained journal (one entry per charge: the
accepted count and the paid-for query ids and labels, ``strategies.ledger_journal``'s chain), written
atomically and owner-only under the ledger lock; a reload recomputes the count from the entries and refuses
a journal whose sequence, chain or counts do not add up, and a live ledger refuses a rolled-back file.
"""

from __future__ import annotations

import dataclasses
import json
import math
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from protocol.local_rr import rr_probabilities
from strategies.fusion import FusionResult
from strategies.ledger_anchor import (
    append_head,
    check_head,
    check_no_orphans,
    check_pool,
    check_settings,
    read_head,
)
from strategies.ledger_journal import LedgerIntegrityError, check_extends, entry_hash, genesis_hash, seal
from strategies.ledger_sidecar import check_distinct_ids
from strategies.ledger_store import _atomic_write_json, _ledger_lock
from strategies.privacy_ledger import BudgetExhaustedError, ChargeResult
from strategies.rdp_analysis import DEFAULT_ORDERS, ArrayLike, FloatArray, validate_votes
from strategies.rdp_conversion import _check_conversion, _epsilon_curve


def rdp_randomised_response(epsilon: float, n_classes: int, orders: ArrayLike = DEFAULT_ORDERS) -> FloatArray:
    """Exact RDP of one k-ary randomised-response vote at each order (module docstring).

    Raises
    ------
    ValueError
        As :func:`protocol.local_rr.rr_probabilities`.
    """
    p, q = rr_probabilities(epsilon, n_classes)
    alpha = np.asarray(orders, dtype=float)
    log_terms = np.logaddexp(alpha * math.log(p) + (1 - alpha) * math.log(q),
                             alpha * math.log(q) + (1 - alpha) * math.log(p))
    if n_classes > 2:
        log_terms = np.logaddexp(log_terms, math.log((n_classes - 2) * q))
    return np.minimum(log_terms / (alpha - 1.0), epsilon)  # never above the pure ε0


@dataclasses.dataclass(frozen=True)
class LocalRR:
    """Plurality of the teachers' randomised votes; ``epsilon`` is each vote's local ε0."""

    epsilon: float
    name: ClassVar[str] = "local_rr"

    def __post_init__(self) -> None:
        rr_probabilities(self.epsilon, 2)  # validates ε0

    def privacy_params(self) -> dict[str, float]:
        """The parameter the ledger charges for: ``{"epsilon": ε0}``."""
        return {"epsilon": float(self.epsilon)}

    def request(self) -> dict[str, float]:
        """What a ``query.votes`` request asks the teacher nodes for (the ``ldp`` ConfigRecord)."""
        return {"epsilon": float(self.epsilon)}

    def fuse(self, votes: np.ndarray, rng: np.random.Generator) -> FusionResult:
        """Plurality of the randomised counts, ties broken uniformly at random."""
        votes = validate_votes(votes)
        labels = np.argmax(votes + rng.uniform(0.0, 0.5, size=votes.shape), axis=1).astype(np.int64)
        return FusionResult(labels, np.ones(len(labels), dtype=bool))


LOCAL_RR_FORMAT = "flwr-privkit/local-rr-ledger/1"


class LocalRRLedger:
    """Ledger of local randomised response (persisted when given a path); the strategy's ledger interface.

    Parameters
    ----------
    epsilon : float
        Each vote's local ε0.
    delta : float
        Target δ of the (ε, δ) report.
    epsilon_budget : float
        Largest total ε the queries may spend.
    conversion : {"mironov", "dp_accounting"}
        RDP → (ε, δ) conversion.
    path : str or pathlib.Path or None
        JSON journal to persist to after every charge (reloaded if it exists); None: memory only.
    run : dict or None
        The settings of the run the ledger belongs to (as :class:`strategies.privacy_ledger.PrivacyLedger`):
        in the journal's genesis, so another run's ledger is refused naming the setting.

    Raises
    ------
    ValueError
        On an out-of-range parameter, or a stored journal of other settings.
    LedgerIntegrityError
        If the stored journal's sequence, chain or counts do not add up.
    """

    mechanism: ClassVar[str] = "local_rr"
    budget_on: ClassVar[str] = "data_independent"

    def __init__(self, *, epsilon: float, delta: float, epsilon_budget: float,
                 conversion: str = "mironov", path: str | Path | None = None,
                 run: dict[str, Any] | None = None) -> None:
        rr_probabilities(epsilon, 2)
        if not 0 < delta < 1:
            raise ValueError(f"delta must be in (0, 1), got {delta}")
        if not (math.isfinite(epsilon_budget) and epsilon_budget > 0):
            raise ValueError(f"epsilon_budget must be a finite number > 0, got {epsilon_budget}")
        self.epsilon0, self.delta, self.epsilon_budget = float(epsilon), float(delta), float(epsilon_budget)
        self.conversion = _check_conversion(conversion)
        if run is not None and not isinstance(run, dict):
            raise TypeError(f"run must be a dict of the run's settings or None, got {type(run).__name__}")
        self.run = run
        self._pool: str | None = None
        self.queries_checked = 0
        self.exhausted = False
        self._n_classes: int | None = None
        self.path = None if path is None else Path(path)
        self._history: list[dict[str, Any]] = []
        if self.path is not None and self.path.exists():
            self._adopt()
        elif self.path is not None:
            check_no_orphans(self.path)

    def _config(self) -> dict[str, Any]:
        return {"epsilon0": self.epsilon0, "delta": self.delta, "epsilon_budget": self.epsilon_budget,
                "conversion": self.conversion, **({} if self.run is None else {"run": self.run})}

    def _adopt(self) -> None:
        """Take over what the file holds after checking it (the caller holds the lock, or is the init)."""
        assert self.path is not None
        head = read_head(self.path)  # before the journal (strategies.ledger_anchor.check_head)
        stored = json.loads(self.path.read_text(encoding="utf-8"))
        if not isinstance(stored, dict) or stored.get("format") != LOCAL_RR_FORMAT:
            raise ValueError(f"{self.path} is not a local randomised-response ledger ({LOCAL_RR_FORMAT})")
        check_settings(self.path, self._config(), stored.get("config"),
                       intro="stored ledger has settings of another run or mechanism: ")
        journal, prev, checked = stored.get("history"), genesis_hash(1, self._config(), []), 0
        if not isinstance(journal, list):
            raise LedgerIntegrityError(f"{self.path}: history must be a list of journal entries")
        for position, entry in enumerate(journal, start=1):
            n = entry.get("n_accepted") if isinstance(entry, dict) else None
            ok = (isinstance(n, int) and n >= 0 and entry.get("seq") == position
                  and entry.get("prev_hash") == prev and entry.get("hash") == entry_hash(entry)
                  and len(entry.get("query_ids", ())) == len(entry.get("labels", ())) == n)
            if not ok:
                raise LedgerIntegrityError(f"{self.path}: entry at position {position} is out of sequence, "
                                           "edited or miscounted")
            prev, checked = entry["hash"], checked + n
            charged_at = entry.get("n_classes", stored.get("n_classes"))  # entries before it was sealed: none
            if charged_at != stored.get("n_classes"):
                raise LedgerIntegrityError(f"{self.path}: n_classes {stored.get('n_classes')!r} differs from "
                                           f"the {charged_at} its entries were charged at (entry {position})")
        check_extends(self.path, journal, self._history)
        check_head(self.path, journal, head)
        if stored.get("queries_checked") != checked:
            raise LedgerIntegrityError(f"{self.path}: queries_checked {stored.get('queries_checked')!r} "
                                       f"differs from the {checked} its entries add up to")
        self._history, self.queries_checked = journal, checked
        self._n_classes = stored.get("n_classes")
        self.exhausted = bool(journal) and self._epsilon_after(checked + 1)[0] > self.epsilon_budget

    def bind_pool(self, digest: str) -> None:
        """As :meth:`strategies.privacy_ledger.PrivacyLedger.bind_pool`."""
        check_pool(self.path, self._history, digest)
        self._pool = digest

    @property
    def charged_query_ids(self) -> np.ndarray:
        """The caller's id of every charged query, in charge order (``-1`` where charged without ids)."""
        return np.asarray([i for e in self._history for i in e["query_ids"]], dtype=np.int64)

    def paid_labels(self) -> tuple[np.ndarray, np.ndarray]:
        """``(query_ids, labels)`` of the queries charged with labels, in charge order."""
        ids, labels = self.charged_query_ids, np.asarray([v for e in self._history for v in e["labels"]],
                                                        dtype=np.int64)
        keep = labels >= 0
        return ids[keep], labels[keep]

    def check_mechanism(self, mechanism: Any) -> None:
        """Raise ValueError unless ``mechanism`` is :class:`LocalRR` with this ledger's ε0."""
        if not isinstance(mechanism, LocalRR) or mechanism.epsilon != self.epsilon0:
            raise ValueError(f"ledger charges local_rr with epsilon={self.epsilon0}, got {mechanism!r}")

    def _epsilon_after(self, queries: int) -> tuple[float, float]:
        """(ε, best order) after ``queries`` votes per teacher: min(Q·ε0, the converted RDP)."""
        if queries == 0 or self._n_classes is None:
            return 0.0, math.nan
        rdp = queries * rdp_randomised_response(self.epsilon0, self._n_classes)
        curve = _epsilon_curve(DEFAULT_ORDERS, rdp, self.delta, self.conversion)
        best = int(np.argmin(curve))
        if queries * self.epsilon0 <= curve[best]:
            return queries * self.epsilon0, math.inf  # pure DP by basic composition
        return float(curve[best]), float(DEFAULT_ORDERS[best])

    def charge(self, votes: ArrayLike, answered: ArrayLike | None = None, *, labels: ArrayLike | None = None,
               query_ids: ArrayLike | None = None) -> ChargeResult:
        """Charge the longest prefix of the batch that fits the budget (every query is answered).

        Raises
        ------
        BudgetExhaustedError
            If an earlier charge exhausted the budget.
        ValueError
            If the votes are malformed or their class count changes.
        """
        if self.path is None:
            return self._charge(votes, labels, query_ids)
        with _ledger_lock(self.path):
            if self.path.exists():
                self._adopt()
            elif self._history:
                raise ValueError(f"{self.path}: the privacy ledger file vanished after "
                                 f"{self.queries_checked} checked queries; refusing to charge (restore the "
                                 "file or start a new ledger)")
            else:
                check_no_orphans(self.path)
            return self._charge(votes, labels, query_ids)

    def _charge(
        self, votes: ArrayLike, labels: ArrayLike | None, query_ids: ArrayLike | None
    ) -> ChargeResult:
        if self.exhausted:
            raise BudgetExhaustedError(f"privacy budget exhausted: epsilon_budget={self.epsilon_budget}")
        votes = validate_votes(votes)
        n = len(votes)
        ids = np.full(n, -1) if query_ids is None else np.asarray(query_ids).reshape(n)
        if query_ids is not None:
            check_distinct_ids(ids)  # before anything changes
        if self._n_classes not in (None, votes.shape[1]):
            raise ValueError(f"the class count changed from {self._n_classes} to {votes.shape[1]}")
        self._n_classes = votes.shape[1]
        accepted = 0
        while accepted < len(votes) and self._epsilon_after(self.queries_checked + accepted + 1)[0] \
                <= self.epsilon_budget:
            accepted += 1
        paid = np.full(n, -1) if labels is None else np.asarray(labels).reshape(n)
        entry = seal({"n_accepted": accepted, "n_classes": self._n_classes,
                      **({} if self._pool is None else {"pool_sha256": self._pool}),
                      "query_ids": ids[:accepted].astype(int).tolist(),
                      "labels": paid[:accepted].astype(int).tolist()}, self._history,
                     genesis_hash(1, self._config(), []))
        if self.path is not None:  # written before the totals change: a failed write charges nothing
            _atomic_write_json(self.path, {"format": LOCAL_RR_FORMAT, "config": self._config(),
                                           "n_classes": self._n_classes, "history": [*self._history, entry],
                                           "queries_checked": self.queries_checked + accepted})
            append_head(self.path, [*self._history, entry])
        self._history.append(entry)
        self.queries_checked += accepted
        self.exhausted = self._epsilon_after(self.queries_checked + 1)[0] > self.epsilon_budget
        eps, order = self._epsilon_after(self.queries_checked)
        return ChargeResult(n_accepted=accepted, n_answered=accepted, exhausted=self.exhausted,
                            epsilon_data_dependent=eps, epsilon_data_independent=eps,
                            best_order_data_dependent=order, best_order_data_independent=order)

    def epsilon(self) -> dict[str, float]:
        """The spent ε (the same on both accountings: it is data-independent)."""
        eps, order = self._epsilon_after(self.queries_checked)
        return {"data_dependent": eps, "data_independent": eps, "best_order_data_dependent": order,
                "best_order_data_independent": order}

    def release(self, rng: np.random.Generator) -> None:
        """No smooth-sensitivity release: the ε is data-independent already."""
        return None
