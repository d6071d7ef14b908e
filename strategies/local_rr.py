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

:class:`LocalRR` is a :class:`strategies.vote_release.VoteRelease`: the one ledger
(:class:`strategies.privacy_ledger.PrivacyLedger`, ``budget_on="data_independent"``) charges it and reports
the smaller of ``Q·ε0`` and the RDP curve converted at δ ([M17] Prop. 3 or the tighter conversion), as both
hold. Every query is answered; the charge stops at the budget.

Ledgers written before the vote-release seam kept their own journal (format
:data:`strategies.ledger_store.LOCAL_RR_V1_FORMAT`: one hash-chained entry per charge with the accepted
count and the paid-for query ids and labels, no row store): :func:`verify_v1_journal` checks one, so the
ledger loads it and reports its ε and paid labels.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import numpy.typing as npt
from flwr.app import ConfigRecord

from protocol.local_rr import LDP, rr_probabilities
from strategies.ledger_anchor import check_head
from strategies.ledger_journal import LedgerIntegrityError, check_extends, entry_hash, genesis_hash
from strategies.rdp_analysis import DEFAULT_ORDERS, ArrayLike, FloatArray, validate_votes
from strategies.vote_release import Ballot, CentralRelease, FusionResult, register


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


@register
@dataclasses.dataclass(frozen=True)
class LocalRR(CentralRelease):
    """Plurality of the teachers' randomised votes; ``epsilon`` is each vote's local ε0."""

    epsilon: float
    name: ClassVar[str] = "local_rr"
    budget_bases: ClassVar[tuple[str, ...]] = ("data_independent",)
    ledger_params: ClassVar[tuple[str, ...]] = ("epsilon",)

    def __post_init__(self) -> None:
        rr_probabilities(self.epsilon, 2)  # validates ε0

    def privacy_params(self) -> dict[str, float]:
        """The parameter the ledger charges for: ``{"epsilon": ε0}``."""
        return {"epsilon": float(self.epsilon)}

    def request(self) -> dict[str, float]:
        """What a ``query.votes`` request asks the teacher nodes for (the ``ldp`` ConfigRecord)."""
        return {"epsilon": float(self.epsilon)}

    def gather(self, ballot: Ballot, queries: np.ndarray) -> np.ndarray:
        """The summed randomised votes: a plain round whose request asks every node for k-RR votes."""
        return ballot.count_votes(queries, {LDP: ConfigRecord(self.request())})

    def fuse(self, votes: np.ndarray, rng: np.random.Generator) -> FusionResult:
        """Plurality of the randomised counts, ties broken uniformly at random."""
        votes = validate_votes(votes)
        labels = np.argmax(votes + rng.uniform(0.0, 0.5, size=votes.shape), axis=1).astype(np.int64)
        return FusionResult(labels, np.ones(len(labels), dtype=bool))

    def rdp_costs(self, votes: FloatArray, answered: npt.NDArray[np.bool_],
                  orders: FloatArray) -> tuple[FloatArray, FloatArray]:
        """Every query releases each teacher's vote once through k-RR: the exact RDP of
        :func:`rdp_randomised_response` on both accountings (it does not depend on the votes)."""
        cost = answered[:, None] * rdp_randomised_response(self.epsilon, votes.shape[1], orders)[None, :]
        return cost, cost.copy()

    def worst_case_rdp(self, orders: FloatArray, n_classes: int) -> FloatArray:
        """Every query costs the same: :func:`rdp_randomised_response`."""
        return rdp_randomised_response(self.epsilon, n_classes, orders)

    def pure_epsilon(self) -> float | None:
        """ε0: each query is ε0-DP per teacher (Kairouz et al. 2014), Q·ε0 by basic composition."""
        return float(self.epsilon)


@dataclasses.dataclass(frozen=True)
class V1Journal:
    """What a verified v1 local-RR journal holds: its entries, their count and the paid-for rows."""

    history: list[dict[str, Any]]
    checked: int
    n_classes: int | None
    query_ids: npt.NDArray[np.int64]
    labels: npt.NDArray[np.int64]


def v1_settings(params: Mapping[str, float], delta: float, epsilon_budget: float, conversion: str,
                run: dict[str, Any] | None) -> dict[str, Any]:
    """The settings a v1 local-RR journal recorded, for a ledger of these (its genesis binds them)."""
    return {"epsilon0": params["epsilon"], "delta": delta, "epsilon_budget": epsilon_budget,
            "conversion": conversion, **({} if run is None else {"run": run})}


def verify_v1_journal(path: Path, stored: dict[str, Any], config: dict[str, Any],
                      head: Sequence[tuple[int, str]], known: Sequence[dict[str, Any]]) -> V1Journal:
    """Check a v1 local-RR journal as the code that wrote it did: sequence, hash chain from the genesis of
    ``config``, counts, class count, head log and (for a live ledger) that it extends ``known``.

    Raises
    ------
    LedgerIntegrityError
        If its sequence, chain or counts do not add up.
    LedgerRollbackError
        If it does not reach its head log.
    """
    journal, prev, checked = stored.get("history"), genesis_hash(1, config, []), 0
    if not isinstance(journal, list):
        raise LedgerIntegrityError(f"{path}: history must be a list of journal entries")
    for position, entry in enumerate(journal, start=1):
        n = entry.get("n_accepted") if isinstance(entry, dict) else None
        ok = (isinstance(n, int) and n >= 0 and entry.get("seq") == position
              and entry.get("prev_hash") == prev and entry.get("hash") == entry_hash(entry)
              and len(entry.get("query_ids", ())) == len(entry.get("labels", ())) == n)
        if not ok:
            raise LedgerIntegrityError(f"{path}: entry at position {position} is out of sequence, "
                                       "edited or miscounted")
        prev, checked = entry["hash"], checked + n
        charged_at = entry.get("n_classes", stored.get("n_classes"))  # entries before it was sealed: none
        if charged_at != stored.get("n_classes"):
            raise LedgerIntegrityError(f"{path}: n_classes {stored.get('n_classes')!r} differs from "
                                       f"the {charged_at} its entries were charged at (entry {position})")
    check_extends(path, journal, known)
    check_head(path, journal, head)
    if stored.get("queries_checked") != checked:
        raise LedgerIntegrityError(f"{path}: queries_checked {stored.get('queries_checked')!r} "
                                   f"differs from the {checked} its entries add up to")
    ids = np.asarray([i for e in journal for i in e["query_ids"]], dtype=np.int64)
    labels = np.asarray([v for e in journal for v in e["labels"]], dtype=np.int64)
    return V1Journal(journal, checked, stored.get("n_classes"), ids, labels)
