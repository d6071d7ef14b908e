"""The persisted RDP privacy ledger of a PATE run: charges, budget, journal, paid-for labels.

Bookkeeping only: costs come from :mod:`strategies.rdp_analysis` and :mod:`strategies.rdp_lnmax`,
ε from :mod:`strategies.rdp_conversion`, persistence from :mod:`strategies.ledger_store`.

The API a strategy calls
------------------------
``ledger.charge(votes, answered, *, labels=None, query_ids=None) -> ChargeResult``
    Charges the longest prefix of the batch that fits the budget (``result.n_accepted``). With
    ``labels`` and ``query_ids`` (integer arrays of shape ``(Q,)``, one per query of the batch: the
    fused labels, ``-1`` for unanswered queries, and the ids the caller knows its queries by, e.g.
    pool positions), the labels of the accepted prefix are stored in the same atomic step as the
    charge. Without them the call is today's ``charge(votes, answered)``.
``ledger.paid_labels() -> tuple[numpy.ndarray, numpy.ndarray]``
    ``(query_ids, labels)`` (int64) of every answered query charged with labels, in charge order:
    what the privacy spent bought. They survive a failed student and a restart
    (``PrivacyLedger.load(path).paid_labels()``).

Files
-----
``<path>`` (JSON) is an append-only journal (:mod:`strategies.ledger_journal`): one hash-chained
entry per charge with the batch's costs; the totals in it are derived and a reader recomputes and
checks them, refusing a file that does not add up with :class:`LedgerIntegrityError`. A live ledger
also refuses a file rolled back behind what it last wrote or adopted. ``<path>.votes.npz``
(:mod:`strategies.ledger_sidecar`) holds one row per charged query: the votes and answered flag that
determine its cost, and its id and label. It is written atomically before the JSON, whose entries pin
its rows by SHA-256, so the JSON's ``os.replace`` commits charge and labels together: a crash before
it leaves both as they were. All files are owner-only (0o600); ``<path>.lock`` serializes writers.

An empty ledger (no query checked) reports ε = 0: releasing nothing is 0-DP.

References
----------
* [P18] N. Papernot, S. Song, I. Mironov, A. Raghunathan, K. Talwar, Ú. Erlingsson. "Scalable
  Private Learning with PATE." ICLR 2018, arXiv:1802.08908. Theorem and proposition numbers below
  follow this paper; the reference implementation is tf-privacy ``research/pate_2018/core.py``.
* [P17] N. Papernot, M. Abadi, Ú. Erlingsson, I. Goodfellow, K. Talwar. "Semi-supervised Knowledge
  Transfer for Deep Learning from Private Training Data." ICLR 2017, arXiv:1610.05755.
* [M17] I. Mironov. "Rényi Differential Privacy." CSF 2017, arXiv:1702.07476.
* [BS16] M. Bun, T. Steinke. "Concentrated Differential Privacy: Simplifications, Extensions, and
  Lower Bounds." TCC 2016, arXiv:1605.02065.

"""

from __future__ import annotations

import math
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

import strategies.fusion  # noqa: F401  (registers the central mechanisms a stored ledger may name)
from strategies.ledger_anchor import (
    append_head,
    check_no_orphans,
    check_pool,
    read_head,
    refuse_vanished,
)
from strategies.ledger_journal import JournalSpec, LedgerIntegrityError, genesis_hash, seal
from strategies.ledger_release import LedgerRelease, released_prefix
from strategies.ledger_restore import LedgerRestore
from strategies.ledger_sidecar import (
    LedgerRows,
    batch_rows,
    rows_digest,
    sidecar_path,
    write_sidecar,
)
from strategies.ledger_store import (
    LEDGER_FORMAT_VERSION,
    LOCAL_RR_V1_FORMAT,
    atomic_write_json,
    ledger_lock,
    read_ledger_file,
    remove_orphan_temps,
)
from strategies.ledger_views import BudgetExhaustedError, ChargeResult, LedgerViews
from strategies.rdp_analysis import (
    DEFAULT_ORDERS,
    ArrayLike,
    FloatArray,
    check_delta,
    check_orders,
    check_positive,
    validate_votes,
)
from strategies.rdp_conversion import check_conversion, epsilon_curve, warn_if_edge
from strategies.vote_release import (
    BUDGET_BASES,
    RELEASES,
    VoteRelease,
    check_budget_basis,
    check_params,
    current_param_names,
    private_releases,
)

__all__ = ["BudgetExhaustedError", "ChargeResult", "LedgerIntegrityError", "PrivacyLedger"]


class PrivacyLedger(LedgerViews, LedgerRelease, LedgerRestore):
    """RDP privacy ledger for PATE vote fusion, persisted atomically as JSON.

    The ledger only does bookkeeping: costs come from the analysis functions of this module. It
    tracks the total RDP on two accountings at once, data-dependent ([P18] Theorem 6) and
    data-independent ([P18] Proposition 8), converts them with :func:`rdp_to_epsilon`, and enforces
    the budget on the accounting named by ``budget_on``.

    Parameters
    ----------
    path : str or pathlib.Path or None
        JSON file to persist to after every charge; ``None`` keeps the ledger in memory. If the file
        exists it is reloaded (its journal verified and its totals recomputed), and its mechanism,
        parameters and orders must equal the ones given, else ValueError: a ledger is never reset
        silently.
    mechanism : str
        The name of the release being charged, a private one of
        :data:`strategies.vote_release.RELEASES` ("gnmax", "confident_gnmax", "lnmax", "local_rr", ...):
        its costs come from the release rebuilt from the parameters (:meth:`VoteRelease.rdp_costs`).
    delta : float
        Target δ in (0, 1).
    epsilon_budget : float
        Largest total ε (on ``budget_on``) the ledger lets the queries spend (> 0).
    **params : float or None
        The release's noise, named as its ``privacy_params()``: ``sigma2`` (answer noise σ2 of GNMax and
        Confident-GNMax), ``sigma1`` and ``threshold`` (Confident-GNMax's check σ1, T: [P18] Algorithm 1),
        ``gamma`` (LNMax), ``epsilon`` (local RR's ε0); None counts as not given (``sigma``: refused).
    orders : array_like, default DEFAULT_ORDERS
        Rényi orders α > 1.
    budget_on : {"data_dependent", "data_independent", "released"}, default "data_dependent"
        Which ε the budget bounds. The data-dependent ε is itself a function of the votes (see the
        module caveat); "data_independent" gives a guarantee that needs no further release step;
        "released" bounds the *expected* smooth-sensitivity released ε of the charged prefix
        ([P18] Section 4.3; "gnmax" and "confident_gnmax" only).
    conversion : {"mironov", "dp_accounting"}, default "mironov"
        RDP → (ε, δ) conversion of the ledger's ε ([M17] Proposition 3, or the tighter [BBGHS20]
        Theorem 21, see :mod:`strategies.rdp_conversion`). The smooth-sensitivity release keeps
        [P18]'s own conversion (Proposition 3).
    run : dict or None, default None
        The settings of the run the ledger belongs to — whatever decides which samples its queries are
        and which teachers vote (dataset, split and seeds, teachers, their assignment and training). Part
        of the journal's genesis: a stored ledger of another run, or of none, is refused, naming the first
        setting that differs and both values.

    Every charged vote histogram, its answered flag and (if given) its query id and label are kept:
    in memory, and with a ledger file in the ``<path>.votes.npz`` row store
    (:mod:`strategies.ledger_sidecar`), for recomputing costs, :meth:`release` and :meth:`paid_labels`.

    Raises
    ------
    ValueError
        On an unknown mechanism or budget basis, a missing or superfluous parameter, an invalid
        value, a budget below the smallest ε a query can be reported at, or a stored ledger that does
        not match.
    LedgerIntegrityError
        (a ValueError) If the stored ledger fails a journal check (:mod:`strategies.ledger_journal`).
    """

    def __init__(
        self,
        path: str | Path | None,
        *,
        mechanism: str,
        delta: float,
        epsilon_budget: float,
        orders: ArrayLike = DEFAULT_ORDERS,
        budget_on: str = "data_dependent",
        conversion: str = "mironov",
        run: dict[str, Any] | None = None,
        **params: float | None,
    ) -> None:
        if mechanism not in private_releases():
            raise ValueError(f"mechanism must be one of {private_releases()}, got {mechanism!r}")
        if budget_on not in BUDGET_BASES:
            raise ValueError(f"budget_on must be one of {BUDGET_BASES}, got {budget_on!r}")
        model_cls = RELEASES[mechanism]
        if budget_on == "released" and "released" not in model_cls.budget_bases:
            releasable = tuple(n for n, c in RELEASES.items() if "released" in c.budget_bases)
            raise ValueError(f"budget_on='released' needs a mechanism in {releasable}, got {mechanism!r}")
        self._conversion = check_conversion(conversion)
        self._params = check_params(mechanism, params)
        self._model = model_cls.from_params(self._params)
        self._mechanism = mechanism
        self._delta = check_delta(delta)
        self._budget = check_positive("epsilon_budget", epsilon_budget)
        self._budget_on = budget_on
        self._orders = check_orders(orders).copy()
        floor = float(np.min(self._curve(np.zeros_like(self._orders))))
        if self._budget < floor:  # below it, no query could ever fit
            raise ValueError(
                f"epsilon_budget must be >= the ε the conversion gives zero RDP on this order grid "
                f"({floor:.4g}), got {self._budget}"
            )
        if run is not None and not isinstance(run, dict):
            raise TypeError(f"run must be a dict of the run's settings or None, got {type(run).__name__}")
        self._run = run
        self._pool = None  # the student pool's SHA-256, once bound (:meth:`bind_pool`)
        self._path = None if path is None else Path(path)

        self._rdp_dd = np.zeros_like(self._orders)
        self._rdp_di = np.zeros_like(self._orders)
        self._checked = 0
        self._answered = 0
        self._exhausted = False
        self._history = []  # the journal, as last written or adopted
        self._rows = LedgerRows.empty()  # one row per charged query
        self._eps_released = None
        self._release = None
        self._head_entries = 0  # entries the head log records, as last read or appended
        self._v1 = False  # adopted a v1 local-RR journal (read-only)
        self._written_names = {}  # parameter -> its earlier name, as the adopted file has it
        if self._path is not None and (self._path.exists() or not self._path.parent.is_dir()):
            self._sync()
        elif self._path is not None:  # another process may be mid-way through the file's first charge
            with ledger_lock(self._path):
                self._sync()

    # -- construction helpers ----------------------------------------------------------------------

    def _curve(self, rdp: FloatArray) -> FloatArray:
        """ε at every order (along the last axis) by this ledger's conversion."""
        return epsilon_curve(self._orders, rdp, self._delta, self._conversion)

    def _pure_below(self, eps: FloatArray, checked: FloatArray) -> FloatArray:
        """``eps`` (the RDP-converted ε after ``checked`` queries), capped by the release's pure ε if it has
        one: ``checked·ε0`` by basic composition (Dwork and Roth 2014, Theorem 3.14), which also holds."""
        pure = self._model.pure_epsilon()
        return eps if pure is None else np.minimum(eps, checked * pure)

    def _config(self) -> dict[str, Any]:
        """The settings a stored ledger must match to be reloaded (its parameters by their current names)."""
        return {
            "mechanism": self._mechanism,
            "delta": self._delta,
            "epsilon_budget": self._budget,
            "budget_on": self._budget_on,
            **({} if self._conversion == "mironov" else {"conversion": self._conversion}),
            **({} if self._run is None else {"run": self._run}),
            **self._params,
        }

    def _described(self, written_names: dict[str, str] | None = None) -> dict[str, Any]:
        """:meth:`_config` as the file records it and its genesis binds it: by the current names, or a
        renamed parameter's earlier one (``written_names``, default the adopted file's, whose chain starts
        there)."""
        names = self._written_names if written_names is None else written_names
        return {names.get(key, key): value for key, value in self._config().items()}

    def _spec(self, written_names: dict[str, str] | None = None) -> JournalSpec:
        """What the journal checks need of this ledger (``written_names``: as :meth:`_described`)."""
        genesis = genesis_hash(LEDGER_FORMAT_VERSION, self._described(written_names), self._orders.tolist())
        return JournalSpec(genesis=genesis, orders=self._orders, costs=self._costs, spent=self._best,
                           budget=self._budget, budget_on=self._budget_on)

    def _costs(self, votes: FloatArray, answered: npt.NDArray[np.bool_]) -> tuple[FloatArray, FloatArray]:
        """Per-query RDP of charged rows on both accountings (ValueError if they are invalid)."""
        votes = validate_votes(votes)
        answered = self._model.check_answered(answered, votes.shape[0])
        return self._model.rdp_costs(votes, answered, self._orders)

    @classmethod
    def for_mechanism(
        cls,
        mechanism: VoteRelease,
        path: str | Path | None,
        *,
        delta: float,
        epsilon_budget: float,
        orders: ArrayLike = DEFAULT_ORDERS,
        budget_on: str | None = None,
        conversion: str = "mironov",
        run: dict[str, Any] | None = None,
    ) -> PrivacyLedger:
        """The ledger of the vote release ``mechanism``: its name and noise parameters are taken from it.

        This is the construction to use: σ, σ1, T, γ, ε0 are given once, by the release that adds the
        noise, so the ledger cannot charge for other noise than the release's.

        Parameters
        ----------
        mechanism : VoteRelease
            A registered private release (:data:`strategies.vote_release.RELEASES`), or one that charges
            as one (:class:`strategies.distributed_noise.SecureVoting`).
        budget_on : str or None, default None
            As for the constructor; None: the first of the release's ``budget_bases`` ("data_dependent"
            for the central mechanisms, "data_independent" for noise at the teachers or the votes).
        path, delta, epsilon_budget, orders, conversion, run
            As for the constructor.

        Raises
        ------
        ValueError
            If ``mechanism`` is not a registered private release (e.g. Majority), or its accounting cannot
            bound ``budget_on``, or as the constructor.
        """
        name = getattr(mechanism, "name", None)
        if not isinstance(name, str) or name not in RELEASES or isinstance(mechanism, type):
            raise ValueError(f"mechanism must be a registered mechanism {tuple(RELEASES)}, got {mechanism!r}")
        if not mechanism.budget_bases:
            raise ValueError(f"mechanism {name!r} is not private and needs no privacy ledger")
        basis = budget_on or mechanism.budget_bases[0]
        check_budget_basis(mechanism, basis)
        return cls(path, mechanism=name, delta=delta, epsilon_budget=epsilon_budget, orders=orders,
                   budget_on=basis, conversion=conversion, run=run, **mechanism.privacy_params())

    def check_mechanism(self, mechanism: VoteRelease) -> None:
        """Raise ValueError unless this ledger charges exactly ``mechanism``'s name and noise.

        Raises
        ------
        ValueError
            Naming the first field that differs, e.g. ``sigma2``.
        """
        if mechanism.name != self._mechanism:
            raise ValueError(f"ledger charges {self._mechanism!r} but the mechanism is {mechanism.name!r}")
        theirs = mechanism.privacy_params()
        for key in sorted(set(theirs) | set(self._params)):
            if theirs.get(key) != self._params.get(key):
                raise ValueError(f"ledger charges {key}={self._params.get(key)!r} but the {mechanism.name} "
                                 f"mechanism has {key}={theirs.get(key)!r}")

    @classmethod
    def load(cls, path: str | Path) -> PrivacyLedger:
        """Reload a ledger from ``path`` with the settings stored in it.

        Raises
        ------
        FileNotFoundError
            If ``path`` does not exist.
        ValueError
            If the file is not a ledger this version can read.
        """
        stored = read_ledger_file(Path(path))
        if stored.get("format") == LOCAL_RR_V1_FORMAT:
            config = stored.get("config") if isinstance(stored.get("config"), dict) else {}
            return cls(path, mechanism="local_rr", budget_on="data_independent",
                       epsilon=config.get("epsilon0"),
                       **{key: config.get(key) for key in ("delta", "epsilon_budget", "conversion", "run")})
        return cls(path, orders=stored["orders"], **current_param_names(stored["config"]))

    def bind_pool(self, digest: str) -> None:
        """Charge from now on for the student pool of SHA-256 ``digest`` (recorded in every entry).

        Raises
        ------
        ValueError
            If the ledger's entries paid labels for another pool (``strategies.ledger_anchor.check_pool``).
        """
        check_pool(self._path, self._history, digest)
        self._pool = digest

    # -- charging ----------------------------------------------------------------------------------

    def charge(
        self, votes: ArrayLike, answered: ArrayLike | None = None, *, labels: ArrayLike | None = None,
        query_ids: ArrayLike | None = None,
    ) -> ChargeResult:
        """Charge a batch of queries, keeping the longest prefix that fits the budget.

        With a ledger file, the charge holds an exclusive lock on ``<path>.lock`` and first adopts
        what the file holds (after verifying its journal), so processes sharing the file charge one
        budget and lose no charge.

        Each query pays the threshold check (Confident-GNMax) and, if answered, the answering step
        (GNMax or LNMax), on both accountings. The longest prefix of the batch whose total ε (on
        ``budget_on``) stays within the budget is found in a dry run; only then are the totals
        updated, the journal extended and the ledger persisted. The caller must not release the
        answers to queries beyond ``n_accepted``.

        Each batch is validated on its own, so the number of teachers (row sum) may change between
        batches, e.g. when a teacher node drops out; the number of classes may not.

        Parameters
        ----------
        votes : array_like
            Shape ``(Q, C)``: the vote histograms of the batch, in the order the answers are
            released.
        answered : numpy.ndarray of bool or None, default None
            Shape ``(Q,)``: which queries the fusion answered. Required for "confident_gnmax" (the
            threshold outcomes); for "gnmax" and "lnmax" every query is answered, so it must be
            None or all True.
        labels, query_ids : array_like of int or None, default None
            Shape ``(Q,)`` each, given together: the fused labels (in ``[0, C)``, ``-1`` where not
            answered) and the caller's ids of the queries. Those of the accepted prefix are stored
            with the charge, in the same atomic write; see :meth:`paid_labels`.

        Returns
        -------
        ChargeResult
            The accepted prefix, its answered count, whether the budget is exhausted, and the total
            ε on both accountings after the charge. ``exhausted`` is True if the batch was cut
            short, or, on the data-independent accounting, if one more query would not fit (a
            data-dependent cost is unknown until the query's votes are, so there only a cut
            batch exhausts the budget).

        Raises
        ------
        BudgetExhaustedError
            If an earlier charge exhausted the budget.
        ValueError
            If ``votes``, ``answered``, ``labels`` or ``query_ids`` is malformed.
        LedgerIntegrityError
            (a ValueError) If the ledger file fails a journal check or was rolled back.
        OSError
            If persisting fails; the ledger (file, row store and memory) then stays as it was.

        Warns
        -----
        PrivacyWarning
            If the best order of either ε is at the edge of the order grid.
        """
        if self._path is None:
            return self._charge(votes, answered, labels, query_ids)
        with ledger_lock(self._path):
            self._refresh()
            return self._charge(votes, answered, labels, query_ids)

    def _refresh(self) -> None:
        """Adopt the ledger file's state (another process may have charged it since my last write).

        Runs under the lock, so it also removes temp files a killed writer left behind.

        Raises
        ------
        ValueError
            If the file vanished after charges were recorded (a ledger is never reset silently), or
            no longer matches this ledger's settings.
        LedgerIntegrityError
            If the file fails a journal check or does not extend what this ledger last wrote.
        """
        assert self._path is not None
        remove_orphan_temps(self._path, sidecar_path(self._path))
        self._sync()

    def _sync(self) -> None:
        """Adopt what the ledger file holds (checked against its head log), or check that it may be
        started afresh: the one way both the constructor and :meth:`_refresh` read the file."""
        assert self._path is not None
        if self._path.exists():
            head = read_head(self._path)  # before the journal (strategies.ledger_anchor.check_head)
            stored = read_ledger_file(self._path)
            if stored.get("format") == LOCAL_RR_V1_FORMAT:
                self._adopt_v1(stored, head)
            else:
                self._restore(stored, head)
            return
        refuse_vanished(self._path, self._checked, self._history)
        check_no_orphans(self._path)

    def _charge(
        self, votes: ArrayLike, answered: ArrayLike | None, labels: ArrayLike | None,
        query_ids: ArrayLike | None,
    ) -> ChargeResult:
        """:meth:`charge` on the current state (the caller holds the ledger file's lock)."""
        if self._v1:
            raise ValueError(f"{self._path}: a v1 local randomised-response journal loads and verifies but "
                             "is not extended; start a new run in another output folder")
        if self._exhausted:
            spent = self.epsilon()[self._budget_on]
            raise BudgetExhaustedError(
                f"privacy budget exhausted: spent ε={spent:.4f} ({self._budget_on}) of epsilon_budget="
                f"{self._budget} at δ={self._delta}"
            )
        votes = validate_votes(votes)
        answered_arr = self._model.check_answered(answered, votes.shape[0])
        batch = batch_rows(votes, answered_arr, labels, query_ids)
        self._rows.extended(batch[:0])  # the number of classes must not change

        # Dry run: cumulative totals after each prefix, nothing changes until the prefix is chosen.
        cost_dd, cost_di = self._model.rdp_costs(votes, answered_arr, self._orders)
        sum_dd, sum_di = np.cumsum(cost_dd, axis=0), np.cumsum(cost_di, axis=0)
        cum_dd, cum_di = self._rdp_dd + sum_dd, self._rdp_di + sum_di
        eps_released = self._eps_released
        if self._budget_on == "released":
            past = self._rows.votes if len(self._rows) else None
            n_accepted, eps_released = released_prefix(self._model, past, votes, self._delta, self._orders,
                                                       self._budget)
        else:
            cum = cum_dd if self._budget_on == "data_dependent" else cum_di
            counts = self._checked + np.arange(1, votes.shape[0] + 1)
            over = self._pure_below(np.min(self._curve(cum), axis=1), counts) > self._budget
            n_accepted = int(np.argmax(over)) if over.any() else votes.shape[0]
        # The committed totals are the very rows the decision was made on (no re-summation); the
        # journal records the batch's cost, which a reader adds to the previous total the same way.
        zero = np.zeros_like(self._orders)
        batch_dd, batch_di = (sum_dd[n_accepted - 1], sum_di[n_accepted - 1]) if n_accepted else (zero, zero)
        rdp_dd = cum_dd[n_accepted - 1] if n_accepted else self._rdp_dd.copy()
        rdp_di = cum_di[n_accepted - 1] if n_accepted else self._rdp_di.copy()
        n_answered = int(answered_arr[:n_accepted].sum())
        checked, answered_total = self._checked + n_accepted, self._answered + n_answered

        # On the data-independent accounting every query costs exactly its worst case, so the budget
        # is exhausted as soon as one more query cannot fit. A data-dependent cost is only known once
        # the votes are: a high-consensus query may still fit, so only a cut batch exhausts it.
        exhausted = n_accepted < votes.shape[0]
        if self._budget_on == "data_independent":
            worst = self._model.worst_case_rdp(self._orders, votes.shape[1])
            next_eps = self._pure_below(np.min(self._curve(rdp_di + worst)), np.float64(checked + 1))
            exhausted = exhausted or bool(next_eps > self._budget)
        (eps_dd, order_dd), (eps_di, order_di) = self._best(rdp_dd, checked), self._best(rdp_di, checked)

        new_rows = batch[:n_accepted]
        entry: dict[str, Any] = {
            "time": datetime.now(UTC).isoformat(timespec="seconds"),
            "n_offered": int(votes.shape[0]),
            "n_accepted": n_accepted,
            "n_answered": n_answered,
            "n_teachers": float(votes[0].sum()),
            "exhausted": exhausted,
            "epsilon_data_dependent": eps_dd,
            "epsilon_data_independent": eps_di,
            "best_order_data_dependent": order_dd if math.isfinite(order_dd) else None,  # None: pure ε
            "best_order_data_independent": order_di if math.isfinite(order_di) else None,
            "cost_data_dependent": batch_dd.tolist(),
            "cost_data_independent": batch_di.tolist(),
            "rows_sha256": rows_digest(new_rows) if n_accepted else None,
            **({} if self._pool is None else {"pool_sha256": self._pool}),
        }
        if self._budget_on == "released":
            entry["epsilon_released"] = eps_released
        history = [*self._history, seal(entry, self._history, self._spec().genesis)]
        rows = self._rows.extended(new_rows)
        if self._path is not None:
            if n_accepted:  # the row store first: the JSON that pins its rows is the commit point
                write_sidecar(self._path, rows.votes, rows.answered, rows.query_ids, rows.labels)
            payload = self._payload(rdp_dd=rdp_dd, rdp_di=rdp_di, checked=checked, answered=answered_total,
                                    exhausted=exhausted, history=history, eps_released=eps_released,
                                    release=self._release)
            atomic_write_json(self._path, payload)
            append_head(self._path, history, self._head_entries)  # after the commit: never ahead of it
            self._head_entries = len(history)
        self._rdp_dd, self._rdp_di = rdp_dd, rdp_di
        self._checked, self._answered = checked, answered_total
        self._exhausted, self._history = exhausted, history
        self._rows, self._eps_released = rows, eps_released

        if checked:  # an empty ledger's ε is exactly 0, whatever the grid
            warn_if_edge(order_dd, self._orders, "data-dependent ε")
            warn_if_edge(order_di, self._orders, "data-independent ε")
        return ChargeResult(
            n_accepted=n_accepted,
            n_answered=n_answered,
            exhausted=exhausted,
            epsilon_data_dependent=eps_dd,
            epsilon_data_independent=eps_di,
            best_order_data_dependent=order_dd,
            best_order_data_independent=order_di,
            epsilon_released=eps_released if self._budget_on == "released" else None,
        )

    def _best(self, rdp: FloatArray, checked: int) -> tuple[float, float]:
        """(ε, best order) of a total RDP curve after ``checked`` queries, without warning.

        No query checked, nothing released: ε = 0 (not the conversion's δ term at the best order);
        the order reported is still the conversion's best.
        """
        eps = self._curve(rdp)
        best = int(np.argmin(eps))
        pure = self._model.pure_epsilon()
        if checked and pure is not None and checked * pure <= eps[best]:
            return checked * pure, math.inf  # pure DP by basic composition beats the RDP curve
        return (float(eps[best]) if checked else 0.0), float(self._orders[best])
