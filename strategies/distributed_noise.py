"""Noise at the teachers: distributed GNMax and Confident-GNMax, the votes summed under secure aggregation.

Each teacher node adds ``N(0, σ²·w_i)`` to every one of its per-query vote counts, with equal weights
``w_i = 1/m`` over the m nodes asked, encodes the result in fixed point and masks it
(``strategies.secagg``); the server decodes only the sum, which carries ``N(0, σ²)`` per count: the
noise of the central mechanism ([P18] Papernot et al. 2018, §4.1), so GNMax's labels have the central
distribution. Confident-GNMax ([P18] Algorithm 1) runs two aggregation steps with independent noise: the
threshold step (σ1 on every count; a query is answered iff ``max_j (n_j + z_j) >= T``) and, for the
answered queries only, the answer step (σ2, then argmax).

What is charged, and why (the server sees the *noisy histogram*, not only the argmax):

- GNMax: releasing ``n + N(0, σ2² I)`` is the Gaussian mechanism with L2 sensitivity √2 (one teacher
  moves two counts by 1), RDP ``α/σ2²`` ([M17] Mironov 2017, Table II) — exactly [P18] Proposition 8,
  the central data-independent charge. The data-dependent bound ([P18] Theorem 6) is *not* available:
  it needs the clean histogram, which no one holds, and it covers releasing the argmax only.
- Confident-GNMax threshold step: the released vector at σ1 costs ``α/σ1²``, twice the central check's
  ``α/(2σ1²)`` (which releases one noisy maximum). The ledger is built with ``sigma1 = σ1/√2`` so that
  its threshold charge ``α/(2·(σ1/√2)²)`` is this vector release exactly; the answer step costs ``α/σ2²``.

So the ledger runs ``budget_on="data_independent"`` (``PrivacyLedger.for_mechanism(voting, ...)``: the
only basis in :attr:`SecureVoting.budget_bases`) and is handed, instead of
votes it does not have, a stand-in histogram at which Theorem 6 gives no saving (every count equal to T,
or 1e-6·σ1 at T = 0 since a row without votes is refused; resp. equal counts: q >= 1/2, where its
conditions fail), so both of its totals equal the data-independent bound (:meth:`SecureVoting.stand_in`);
the smooth-sensitivity release is skipped.

Fixed point (``protocol.secagg``): a node sends ``round(SCALE·(n_i + z_i)) = SCALE·n_i + round(SCALE·z_i)``;
the rounding touches only noise. Given the total noise U (in grid units), the fractional parts of all but
one party's noise are independent of U and uniform up to a total variation of at most
``Σ_{k≠0} exp(-2π² kᵀΣk) <= 4(m-1)·e^{-2π²λ}`` (Poisson summation; Σ the parties' noise covariance given
U, λ its smallest eigenvalue). Then the decoded sum is ``round(SCALE·(n + Z) - S)/SCALE``, S the sum of those
fractional parts: a post-processing of the central Gaussian mechanism. The slack adds to δ per step; at
2^-16 of a vote and up to 250 nodes it is below 10^-50 for σ >= 0.01 and 10^-5000 for σ >= 0.1
(:func:`rounding_slack_log10`; a step refuses a slack above 1e-30).

Budget: the data-independent cost of a query is known before its votes are, so a step aggregates only
the prefix of the batch the budget pays for; the server never sees a noisy histogram the ledger would cut.

Dropouts: a node whose masked vector does not count leaves the ensemble; the server tops up the missing
variance ``σ²·(1 - Σ_{survivors} w_i)`` (as one more fixed-point party), so the released labels carry the
central noise and the ledger's charge stands. The server knows its own top-up, so it sees that step's
histogram with variance ``σ²·W`` only: :meth:`SecureVoting.server_view_epsilon` accounts for that view.

Trust: honest-but-curious server and nodes. A coalition of the server with c teacher nodes subtracts their
noise and their clean votes: it sees the other nodes' summed votes with variance ``σ²·(W - c/m)``
(:meth:`SecureVoting.server_view_epsilon` with ``colluding=c``; infinite ε once ``c/m >= W``), and c +
the server >= threshold nodes can unmask a single node (the secure-aggregation threshold).
"""

from __future__ import annotations

import math
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np
import numpy.typing as npt
from flwr.app import ConfigRecord
from flwr.serverapp import Grid

from protocol.pate import array_record
from protocol.secagg import SCALE, encode
from strategies.fusion import ConfidentGNMax, GNMax
from strategies.rdp_analysis import DEFAULT_ORDERS, ArrayLike, FloatArray
from strategies.rdp_conversion import epsilon_curve
from strategies.secagg import MessageFn, SecAggServer
from strategies.smooth_sensitivity import SmoothSensitivityRelease
from strategies.vote_release import UNANSWERED, Ballot, ChargingLedger, FusionResult

MAX_ROUNDING_SLACK = 1e-30
"""A step refuses a noise level whose fixed-point rounding slack (total variation) exceeds this."""


def rounding_slack_log10(sigma: float, weights: list[float], scale: int = SCALE) -> float:
    """log10 of the bound on the total variation the fixed-point rounding adds (module docstring).

    ``weights`` are the variance fractions of the parties whose noise is rounded (survivors and the
    server's top-up); the bound is ``4(m-1)·exp(-2π²λ)`` with λ the smallest eigenvalue of the covariance
    of the first m-1 parties' noise (in grid units) given the total, valid while ``2(m-1)e^{-2π²λ} <= 1/2``.

    Raises
    ------
    ValueError
        If ``sigma`` is not > 0 or a weight is not > 0.
    """
    if not sigma > 0 or any(not w > 0 for w in weights):
        raise ValueError(f"sigma and the weights must be > 0, got sigma={sigma}, weights={weights}")
    m = len(weights)
    if m == 1:
        return -math.inf  # one party: the decoded value is round(SCALE·(n + Z)) itself
    var = (scale * sigma) ** 2 * np.asarray(weights[:-1], dtype=float)
    cov = np.diag(var) - np.outer(var, var) / ((scale * sigma) ** 2 * sum(weights))
    lam = float(np.linalg.eigvalsh(cov).min())
    log_q = -2.0 * math.pi**2 * lam
    if math.log(2 * (m - 1)) + log_q > math.log(0.5):
        return 0.0  # no useful bound (the slack may be as large as 1)
    return (math.log(4 * (m - 1)) + log_q - math.log1p(-math.exp(log_q))) / math.log(10)


@dataclass
class _ServerView:
    """RDP of what the server itself sees: per step, the histogram at the survivors' variance only."""

    steps: list[tuple[float, int, float, float]] = field(default_factory=list)  # (σ, queries, W, w_i)

    def rdp(self, colluding: int, orders: FloatArray) -> FloatArray:
        total = np.zeros_like(orders)
        for sigma, n, survived, weight in self.steps:
            left = survived - colluding * weight
            if left <= 0:
                return np.full_like(orders, np.inf)
            total = total + n * orders / (sigma**2 * left)  # Gaussian, L2 sensitivity √2 ([M17] Table II)
        return total


class SecureVoting:
    """GNMax or Confident-GNMax with the noise added at the teacher nodes and the votes summed under secagg.

    A :class:`strategies.vote_release.VoteRelease`: hand it to
    :class:`strategies.ensemble_distillation.EnsembleDistillation` as the ``mechanism`` with
    ``PrivacyLedger.for_mechanism(voting, ...)``; the strategy then calls :meth:`gather`, and ``fuse``
    returns the labels decided there. It is charged as its central mechanism with ``σ1/√2`` (module
    docstring), data-independently only.

    Parameters
    ----------
    central : GNMax or ConfidentGNMax
        The central mechanism whose noise the sum carries.
    threshold : int or None (default: None)
        The secure-aggregation reconstruction threshold (None: a majority of the teacher nodes).
    rng : numpy.random.Generator or None (default: None)
        The server's top-up noise (None: seeded from the operating system).

    Raises
    ------
    ValueError
        If ``central`` is not GNMax or ConfidentGNMax.
    TypeError
        If ``threshold`` is neither None nor an int (a bool is refused).
    """

    budget_bases: ClassVar[tuple[str, ...]] = ("data_independent",)  # no one holds the clean votes

    def __init__(self, central: GNMax | ConfidentGNMax, threshold: int | None = None,
                 rng: np.random.Generator | None = None) -> None:
        if not isinstance(central, (GNMax, ConfidentGNMax)):
            raise ValueError(f"distributed noise supports GNMax and Confident-GNMax, got {central!r}")
        is_int = isinstance(threshold, (int, np.integer)) and not isinstance(threshold, bool)
        if threshold is not None and not is_int:
            raise TypeError(f"threshold (secure aggregation) must be an int or None, got {threshold!r} "
                            f"({type(threshold).__name__})")  # checked now, not when the first batch is due
        self.central = central
        self.name = central.name
        self.ledger_params = central.ledger_params
        self.charged = type(central).from_params(self.privacy_params())  # what the ledger charges
        self.secagg_threshold = threshold
        self._ledger: ChargingLedger | None = None
        self._rng = rng or np.random.default_rng(secrets.randbits(128))
        self._server: SecAggServer | None = None
        self._pending: tuple[np.ndarray, FusionResult] | None = None
        self._view = _ServerView()
        self.secagg_seconds: list[float] = []  # per batch, the setup included in the first
        self.setup_seconds: float | None = None

    def __repr__(self) -> str:
        return f"SecureVoting({self.central!r})"

    def privacy_params(self) -> dict[str, float]:
        """What the ledger charges: σ2; for Confident-GNMax also T and ``sigma1 = σ1/√2`` (the vector
        release)."""
        if isinstance(self.central, GNMax):
            return {"sigma2": float(self.central.sigma2)}
        return {"sigma2": float(self.central.sigma2), "sigma1": float(self.central.sigma1) / math.sqrt(2.0),
                "threshold": float(self.central.threshold)}

    # -- its costs: those of the central mechanism it charges as ------------------------------------

    def check_answered(self, answered: ArrayLike | None, n_queries: int) -> npt.NDArray[np.bool_]:
        """As the central mechanism's."""
        return self.charged.check_answered(answered, n_queries)

    def rdp_costs(self, votes: FloatArray, answered: npt.NDArray[np.bool_],
                  orders: FloatArray) -> tuple[FloatArray, FloatArray]:
        """The central mechanism's costs with ``σ1/√2`` (module docstring), at the stand-in votes."""
        return self.charged.rdp_costs(votes, answered, orders)

    def worst_case_rdp(self, orders: FloatArray, n_classes: int) -> FloatArray:
        """As the charged central mechanism's."""
        return self.charged.worst_case_rdp(orders, n_classes)

    def pure_epsilon(self) -> float | None:
        """None: it is charged in RDP only."""
        return None

    def smooth_sensitivity(self, votes: FloatArray, delta: float,
                           orders: FloatArray) -> SmoothSensitivityRelease | None:
        """None: there are no clean votes to analyse."""
        return None

    def release_epsilon(self, ledger: ChargingLedger, rng: np.random.Generator) -> dict[str, Any] | None:
        """No data-dependent release: the ε charged is data-independent already."""
        return {"error": "no smooth-sensitivity release: under secure aggregation the server never sees the "
                         "clean votes"}

    def misfit(self, n_teachers: int) -> tuple[str, str] | None:
        """The central mechanism's rule (the noise the sum carries is its own)."""
        return self.central.misfit(n_teachers)

    # -- the strategy's calls -----------------------------------------------------------------------

    def gather(self, ballot: Ballot, queries: np.ndarray) -> np.ndarray:
        """Run the batch's aggregation steps; return the stand-in histogram the ledger is charged on.

        The ensemble is checked before the batch is aggregated, not after: the server decodes the noisy
        sums here, so a batch whose nodes dropped out mid-way is released to it and must be charged (the
        top-up keeps the central noise); the next batch's check then stops the run.

        Raises
        ------
        protocol.secagg_crypto.SecAggError
            If fewer than the threshold of nodes take part in a step.
        """
        ballot.check_ensemble()
        grid, make_message, hosts, drop = ballot.grid, ballot.make_message, ballot.hosts, ballot.drop
        model, n_classes = ballot.model, ballot.n_classes
        t0 = time.perf_counter()
        if self._server is None:
            self._server = SecAggServer(sorted(hosts), threshold=self.secagg_threshold,
                                        timeout=ballot.timeout)
            for node, reason in self._server.setup(grid, make_message).items():
                drop(node, f"secure-aggregation setup: {reason}")
            self.setup_seconds = time.perf_counter() - t0
        q, fits = len(queries), self._queries_that_fit(len(queries), n_classes)
        queries = queries[:fits]  # what the budget cannot pay for is never aggregated nor seen
        first_sigma = self.central.sigma2 if isinstance(self.central, GNMax) else self.central.sigma1
        first = self._noisy_sum(grid, make_message, drop, queries, model, n_classes, first_sigma) if fits \
            else np.zeros((0, n_classes))
        if isinstance(self.central, GNMax):
            labels = np.zeros(q, dtype=np.int64)  # beyond `fits` the ledger cuts the batch: never released
            labels[:fits] = np.argmax(first, axis=1)
            result = FusionResult(labels, np.ones(q, dtype=bool))
        else:
            answered = np.zeros(q, dtype=bool)  # beyond `fits`: never checked, charged as checked (safe)
            answered[:fits] = first.max(axis=1) >= self.central.threshold
            labels = np.full(q, UNANSWERED, dtype=np.int64)
            if answered.any():
                second = self._noisy_sum(grid, make_message, drop, queries[answered[:fits]], model, n_classes,
                                         self.central.sigma2)
                labels[answered] = np.argmax(second, axis=1)
            result = FusionResult(labels, answered)
        stand_in = self.stand_in(q, n_classes, sum(len(t) for t in hosts.values()))
        self._pending = (stand_in, result)
        self.secagg_seconds.append(time.perf_counter() - t0)
        return stand_in

    def stand_in(self, n_queries: int, n_classes: int, n_teachers: int) -> np.ndarray:
        """The histogram the ledger is charged on in place of votes no one holds (module docstring).

        GNMax: every count ``n/C`` (equal counts: Theorem 6's q >= 1/2, no saving). Confident-GNMax: every
        count ``T`` (the check passes with probability 1/2: no saving on it nor on the answer), except
        that ``T = 0`` would make every row all zero, which the ledger refuses (no teacher voted); the
        counts are then ``1e-6·σ1``, where the check passes with probability ``1/2 + 4e-7`` and Theorem
        6's conditions still fail, so both accountings stay data-independent.
        """
        if isinstance(self.central, GNMax):
            return np.full((n_queries, n_classes), n_teachers / n_classes)
        count = float(self.central.threshold) or 1e-6 * float(self.central.sigma1)
        return np.full((n_queries, n_classes), count)

    def bind(self, ledger: ChargingLedger) -> None:
        """The ledger whose budget decides how much of a batch is aggregated at all."""
        self._ledger = ledger

    def _queries_that_fit(self, n: int, n_classes: int) -> int:
        """How many of ``n`` queries the budget pays for at their data-independent (worst-case) cost.

        Computed before aggregating, so the server never sees a noisy histogram the ledger would cut
        from the batch (at the worst case, Confident-GNMax's unanswered queries may leave room for more,
        which the ledger then charges as checked and unanswered: never released, never aggregated).
        """
        if self._ledger is None:
            raise RuntimeError("SecureVoting is not bound to a ledger (EnsembleDistillation binds it)")
        return self._ledger.fitting_queries(n, n_classes)

    def fuse(self, votes: np.ndarray, rng: np.random.Generator) -> FusionResult:
        """The labels :meth:`gather` decided for the stand-in ``votes`` it returned.

        Raises
        ------
        RuntimeError
            If ``votes`` is not the stand-in of the last :meth:`gather` (fusion happens at the nodes).
        """
        if self._pending is None or votes is not self._pending[0]:
            raise RuntimeError("SecureVoting fuses only the batch its gather() aggregated")
        result, self._pending = self._pending[1], None
        return result

    # -- one noisy, securely summed histogram -------------------------------------------------------

    def _noisy_sum(self, grid: Grid, make_message: MessageFn, drop: Callable[[int, str], None],
                   queries: np.ndarray, model: ConfigRecord, n_classes: int, sigma: float) -> np.ndarray:
        assert self._server is not None
        active = list(self._server.active)
        weight = 1.0 / len(active)
        std = {n: sigma * math.sqrt(weight) for n in active}
        records = {"model": model, "queries": array_record(x=queries)}
        step = self._server.aggregate(grid, make_message, std, (len(queries), n_classes), records)
        for node, reason in {**step.dropped, **step.late}.items():
            drop(node, f"secure aggregation: {reason}")
        survived = weight * len(step.survivors)
        weights = [weight] * len(step.survivors)
        total = step.total
        if len(step.survivors) < len(active):  # top up the missing variance, as one more fixed-point party
            top_up = sigma * math.sqrt(1.0 - survived)
            total = total + encode(self._rng.normal(0.0, top_up, size=total.shape), 1).view(np.int64) / SCALE
            weights.append(1.0 - survived)
        slack = rounding_slack_log10(sigma, weights)
        if slack > math.log10(MAX_ROUNDING_SLACK):
            raise ValueError(f"sigma={sigma}: the fixed-point rounding slack 10^{slack:.3g} exceeds "
                             f"{MAX_ROUNDING_SLACK} at resolution 1/{SCALE}")
        self._view.steps.append((float(sigma), len(queries), survived, weight))
        return total

    # -- reporting ----------------------------------------------------------------------------------

    def server_view_epsilon(self, delta: float, colluding: int = 0, conversion: str = "mironov") -> float:
        """ε of what the server (with ``colluding`` teacher nodes) saw: each step at variance σ²·(W - c·w).

        W is the variance fraction the step's survivors added, w = 1/m one node's share. Composition over
        every step of the run of the Gaussian vector release (RDP ``α/(σ²(W - c·w))``), converted at
        ``delta``; infinite once the coalition holds all the noise the server did not add itself.
        """
        if not self._view.steps:
            return 0.0
        rdp = self._view.rdp(colluding, DEFAULT_ORDERS)
        return float(np.min(epsilon_curve(DEFAULT_ORDERS, rdp, delta, conversion)))

    def report(self, delta: float) -> dict[str, Any]:
        """What a results file carries about the distributed mode."""
        return {
            "noise_at": "teachers",
            "secagg_threshold": None if self._server is None else self._server.threshold,
            "epsilon_server_view": self.server_view_epsilon(delta),
            "secagg_seconds_per_batch": float(np.mean(self.secagg_seconds)) if self.secagg_seconds else None,
            "secagg_setup_s": self.setup_seconds,
            "rounding_resolution": 1.0 / SCALE,
        }
