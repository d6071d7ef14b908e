"""Local randomised response of teacher votes (each vote ε-LDP) and its own accounting.

For users who trust no aggregator: every teacher's vote on every query is randomised on its node by k-ary
randomised response (``protocol.local_rr``, ``clients.local_rr``); the server counts the randomised votes
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
stops at the budget. It keeps its totals in memory only: a restart starts a new ledger.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, ClassVar

import numpy as np

from protocol.local_rr import rr_probabilities
from strategies.fusion import FusionResult
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


class LocalRRLedger:
    """In-memory ledger of local randomised response; the strategy's ledger interface.

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

    Raises
    ------
    ValueError
        On an out-of-range parameter.
    """

    mechanism: ClassVar[str] = "local_rr"
    budget_on: ClassVar[str] = "data_independent"
    path = None

    def __init__(self, *, epsilon: float, delta: float, epsilon_budget: float,
                 conversion: str = "mironov") -> None:
        rr_probabilities(epsilon, 2)
        if not 0 < delta < 1:
            raise ValueError(f"delta must be in (0, 1), got {delta}")
        if not (math.isfinite(epsilon_budget) and epsilon_budget > 0):
            raise ValueError(f"epsilon_budget must be a finite number > 0, got {epsilon_budget}")
        self.epsilon0, self.delta, self.epsilon_budget = float(epsilon), float(delta), float(epsilon_budget)
        self.conversion = _check_conversion(conversion)
        self.queries_checked = 0
        self.exhausted = False
        self._n_classes: int | None = None

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
        if self.exhausted:
            raise BudgetExhaustedError(f"privacy budget exhausted: epsilon_budget={self.epsilon_budget}")
        votes = validate_votes(votes)
        if self._n_classes not in (None, votes.shape[1]):
            raise ValueError(f"the class count changed from {self._n_classes} to {votes.shape[1]}")
        self._n_classes = votes.shape[1]
        accepted = 0
        while accepted < len(votes) and self._epsilon_after(self.queries_checked + accepted + 1)[0] \
                <= self.epsilon_budget:
            accepted += 1
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
