"""The persisted RDP privacy ledger of a PATE run: charges, budget, history.

Bookkeeping only: costs come from :mod:`strategies.rdp_analysis` and :mod:`strategies.rdp_lnmax`,
ε from :mod:`strategies.rdp_conversion`, persistence from :mod:`strategies.ledger_store`.

References
----------
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

import dataclasses
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from strategies.fusion import MECHANISM_REGISTRY, Mechanism
from strategies.ledger_costs import check_answered, check_params, query_costs, worst_case_query
from strategies.ledger_release import RELEASABLE, read_sidecar, release_of, released_prefix, write_sidecar
from strategies.ledger_release import votes_digest as _votes_digest
from strategies.ledger_store import (
    LEDGER_FORMAT_VERSION,
    _atomic_write_json,
    _ledger_lock,
    _read_ledger_file,
)
from strategies.ledger_views import LedgerViews
from strategies.rdp_analysis import (
    DEFAULT_ORDERS,
    ArrayLike,
    FloatArray,
    _check_delta,
    _check_orders,
    _check_positive,
    validate_votes,
)
from strategies.rdp_conversion import _check_conversion, _epsilon_curve, _warn_if_edge
from strategies.smooth_sensitivity import draw_released_epsilon

__all__ = ["BudgetExhaustedError", "ChargeResult", "PrivacyLedger"]

_MECHANISMS = ("gnmax", "confident_gnmax", "lnmax")
_BUDGET_BASES = ("data_dependent", "data_independent", "released")


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



class PrivacyLedger(LedgerViews):
    """RDP privacy ledger for PATE vote fusion, persisted atomically as JSON.

    The ledger only does bookkeeping: costs come from the analysis functions of this module. It
    tracks the total RDP on two accountings at once, data-dependent ([P18] Theorem 6) and
    data-independent ([P18] Proposition 8), converts them with :func:`rdp_to_epsilon`, and enforces
    the budget on the accounting named by ``budget_on``.

    Parameters
    ----------
    path : str or pathlib.Path or None
        JSON file to persist to after every charge; ``None`` keeps the ledger in memory. If the file
        exists it is reloaded (history and totals), and its mechanism, parameters and orders must
        equal the ones given, else ValueError: a ledger is never reset silently.
    mechanism : {"gnmax", "confident_gnmax", "lnmax"}
        The fusion mechanism being charged.
    delta : float
        Target δ in (0, 1).
    epsilon_budget : float
        Largest total ε (on ``budget_on``) the ledger lets the queries spend (> 0).
    sigma : float or None, default None
        GNMax noise σ ("gnmax"), or σ2 of the answering step ("confident_gnmax").
    sigma1 : float or None, default None
        Threshold noise σ1 ("confident_gnmax" only).
    threshold : float or None, default None
        Threshold T ("confident_gnmax" only).
    gamma : float or None, default None
        Laplace inverse scale γ ("lnmax" only).
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

    The vote histograms of "gnmax" and "confident_gnmax" charges are kept for :meth:`release`: in
    memory, and with a ledger file in the ``<path>.votes.npz`` sidecar (:mod:`strategies.ledger_release`).

    Raises
    ------
    ValueError
        On an unknown mechanism or budget basis, a missing or superfluous parameter, an invalid
        value, a budget below the ε of zero queries, or a stored ledger that does not match.
    """

    def __init__(
        self,
        path: str | Path | None,
        *,
        mechanism: str,
        delta: float,
        epsilon_budget: float,
        sigma: float | None = None,
        sigma1: float | None = None,
        threshold: float | None = None,
        gamma: float | None = None,
        orders: ArrayLike = DEFAULT_ORDERS,
        budget_on: str = "data_dependent",
        conversion: str = "mironov",
    ) -> None:
        if mechanism not in _MECHANISMS:
            raise ValueError(f"mechanism must be one of {_MECHANISMS}, got {mechanism!r}")
        if budget_on not in _BUDGET_BASES:
            raise ValueError(f"budget_on must be one of {_BUDGET_BASES}, got {budget_on!r}")
        if budget_on == "released" and mechanism not in RELEASABLE:
            raise ValueError(f"budget_on='released' needs a mechanism in {RELEASABLE}, got {mechanism!r}")
        self._conversion = _check_conversion(conversion)
        self._params = check_params(mechanism, sigma=sigma, sigma1=sigma1, threshold=threshold, gamma=gamma)
        self._mechanism = mechanism
        self._delta = _check_delta(delta)
        self._budget = _check_positive("epsilon_budget", epsilon_budget)
        self._budget_on = budget_on
        self._orders = _check_orders(orders).copy()
        floor = float(np.min(self._curve(np.zeros_like(self._orders))))
        if self._budget < floor:
            raise ValueError(
                f"epsilon_budget must be >= the ε of zero queries on this order grid ({floor:.4g}), "
                f"got {self._budget}"
            )
        self._path = None if path is None else Path(path)

        self._rdp_dd = np.zeros_like(self._orders)
        self._rdp_di = np.zeros_like(self._orders)
        self._checked = 0
        self._answered = 0
        self._exhausted = False
        self._history: list[dict[str, Any]] = []
        self._votes: FloatArray | None = None  # charged histograms (releasable mechanisms only)
        self._answered_flags = np.zeros(0, dtype=bool)
        self._eps_released: float | None = None
        self._release: dict[str, Any] | None = None
        if self._path is not None and self._path.exists():
            self._restore(_read_ledger_file(self._path))

    # -- construction helpers ----------------------------------------------------------------------

    def _curve(self, rdp: FloatArray) -> FloatArray:
        """ε at every order (along the last axis) by this ledger's conversion."""
        return _epsilon_curve(self._orders, rdp, self._delta, self._conversion)

    def _config(self) -> dict[str, Any]:
        """The settings a stored ledger must match to be reloaded."""
        return {
            "mechanism": self._mechanism,
            "delta": self._delta,
            "epsilon_budget": self._budget,
            "budget_on": self._budget_on,
            **({} if self._conversion == "mironov" else {"conversion": self._conversion}),
            **self._params,
        }

    def _restore(self, stored: dict[str, Any]) -> None:
        """Load totals and history from a stored ledger after checking it matches this one."""
        mine, theirs = self._config(), stored["config"]
        for key in ["mechanism", *sorted((set(mine) | set(theirs)) - {"mechanism"})]:
            if mine.get(key) != theirs.get(key):
                raise ValueError(
                    f"{self._path}: stored ledger has {key}={theirs.get(key)!r}, "
                    f"but this ledger was created with {key}={mine.get(key)!r}"
                )
        stored_orders = np.asarray(stored["orders"], dtype=float)
        if not np.array_equal(stored_orders, self._orders):
            raise ValueError(
                f"{self._path}: stored ledger has a different order grid "
                f"({stored_orders.size} orders in [{stored_orders.min():g}, {stored_orders.max():g}]) "
                f"than this one ({self._orders.size} orders in [{self._orders.min():g}, "
                f"{self._orders.max():g}])"
            )
        self._rdp_dd = np.asarray(stored["rdp_data_dependent"], dtype=float)
        self._rdp_di = np.asarray(stored["rdp_data_independent"], dtype=float)
        self._checked = int(stored["queries_checked"])
        self._answered = int(stored["queries_answered"])
        self._exhausted = bool(stored["exhausted"])
        self._history = list(stored["history"])
        self._eps_released = stored.get("epsilon_released")
        self._release = stored.get("release")
        if self._mechanism in RELEASABLE and self._path is not None:
            digest = stored.get("votes_digest")
            if self._checked and digest is None:
                raise ValueError(f"{self._path}: the ledger has {self._checked} charged queries but no "
                                 "votes_digest for its vote sidecar; refusing to continue")
            if self._checked:
                self._votes, self._answered_flags = read_sidecar(self._path, digest, self._checked)
            else:
                self._votes, self._answered_flags = None, np.zeros(0, dtype=bool)

    @classmethod
    def for_mechanism(
        cls,
        mechanism: Mechanism,
        path: str | Path | None,
        *,
        delta: float,
        epsilon_budget: float,
        orders: ArrayLike = DEFAULT_ORDERS,
        budget_on: str = "data_dependent",
        conversion: str = "mironov",
    ) -> PrivacyLedger:
        """The ledger of the fusion ``mechanism``: its name and noise parameters are taken from it.

        This is the construction to use: σ, σ1, T and γ are given once, by the mechanism that adds
        the noise, so the ledger cannot charge for other noise than the fusion's.

        Parameters
        ----------
        mechanism : GNMax, ConfidentGNMax or LNMax
            A mechanism of :data:`strategies.fusion.MECHANISM_REGISTRY`.
        path, delta, epsilon_budget, orders, budget_on, conversion
            As for the constructor.

        Raises
        ------
        ValueError
            If ``mechanism`` is not a registered private mechanism (e.g. Majority), or as the
            constructor.
        """
        name = getattr(mechanism, "name", None)
        registered = MECHANISM_REGISTRY.get(name) if isinstance(name, str) else None
        if registered is None or not isinstance(mechanism, registered):
            raise ValueError(f"mechanism must be a registered mechanism {tuple(MECHANISM_REGISTRY)}, "
                             f"got {mechanism!r}")
        if name not in _MECHANISMS:
            raise ValueError(f"mechanism {name!r} is not private and needs no privacy ledger")
        return cls(path, mechanism=name, delta=delta, epsilon_budget=epsilon_budget, orders=orders,
                   budget_on=budget_on, conversion=conversion, **mechanism.privacy_params())

    def check_mechanism(self, mechanism: Mechanism) -> None:
        """Raise ValueError unless this ledger charges exactly ``mechanism``'s name and noise.

        Raises
        ------
        ValueError
            Naming the first field that differs, e.g. ``sigma``.
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
        stored = _read_ledger_file(Path(path))
        return cls(path, orders=stored["orders"], **stored["config"])

    # -- charging ----------------------------------------------------------------------------------

    def charge(self, votes: ArrayLike, answered: ArrayLike | None = None) -> ChargeResult:
        """Charge a batch of queries, keeping the longest prefix that fits the budget.

        With a ledger file, the charge holds an exclusive lock on ``<path>.lock`` and first adopts
        what the file holds, so processes sharing the file charge one budget and lose no charge.

        Each query pays the threshold check (Confident-GNMax) and, if answered, the answering step
        (GNMax or LNMax), on both accountings. The longest prefix of the batch whose total ε (on
        ``budget_on``) stays within the budget is found in a dry run; only then are the totals
        updated, the history extended and the ledger persisted. The caller must not release the
        answers to queries beyond ``n_accepted``.

        Each batch is validated on its own, so the number of teachers (row sum) may change between
        batches, e.g. when a teacher node drops out.

        Parameters
        ----------
        votes : array_like
            Shape ``(Q, C)``: the vote histograms of the batch, in the order the answers are
            released.
        answered : numpy.ndarray of bool or None, default None
            Shape ``(Q,)``: which queries the fusion answered. Required for "confident_gnmax" (the
            threshold outcomes); for "gnmax" and "lnmax" every query is answered, so it must be
            None or all True.

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
            If ``votes`` or ``answered`` is malformed.
        OSError
            If persisting fails; the ledger then stays as it was before the call.

        Warns
        -----
        PrivacyWarning
            If the best order of either ε is at the edge of the order grid.
        """
        if self._path is None:
            return self._charge(votes, answered)
        with _ledger_lock(self._path):
            self._refresh()
            return self._charge(votes, answered)

    def _refresh(self) -> None:
        """Adopt the ledger file's state (another process may have charged it since my last write).

        Raises
        ------
        ValueError
            If the file vanished after charges were recorded (a ledger is never reset silently), or
            no longer matches this ledger's settings.
        """
        assert self._path is not None
        if self._path.exists():
            self._restore(_read_ledger_file(self._path))
        elif self._checked or self._history:
            raise ValueError(f"{self._path}: the privacy ledger file vanished after {self._checked} checked "
                             "queries; refusing to charge (restore the file or start a new ledger)")

    def _charge(self, votes: ArrayLike, answered: ArrayLike | None) -> ChargeResult:
        """:meth:`charge` on the current state (the caller holds the ledger file's lock)."""
        if self._exhausted:
            spent = self.epsilon()[self._budget_on]
            raise BudgetExhaustedError(
                f"privacy budget exhausted: spent ε={spent:.4f} ({self._budget_on}) of epsilon_budget="
                f"{self._budget} at δ={self._delta}"
            )
        votes = validate_votes(votes)
        answered_arr = check_answered(self._mechanism, answered, votes.shape[0])

        # Dry run: cumulative totals after each prefix, nothing changes until the prefix is chosen.
        cost_dd, cost_di = query_costs(self._mechanism, self._params, self._orders, votes, answered_arr)
        cum_dd = self._rdp_dd + np.cumsum(cost_dd, axis=0)
        cum_di = self._rdp_di + np.cumsum(cost_di, axis=0)
        eps_released = self._eps_released
        if self._budget_on == "released":
            n_accepted, eps_released = released_prefix(self._mechanism, self._params, self._votes, votes,
                                                       self._delta, self._orders, self._budget)
        else:
            cum = cum_dd if self._budget_on == "data_dependent" else cum_di
            over = np.min(self._curve(cum), axis=1) > self._budget
            n_accepted = int(np.argmax(over)) if over.any() else votes.shape[0]
        # The committed totals are the very rows the decision was made on (no re-summation).
        rdp_dd = cum_dd[n_accepted - 1] if n_accepted else self._rdp_dd.copy()
        rdp_di = cum_di[n_accepted - 1] if n_accepted else self._rdp_di.copy()
        n_answered = int(answered_arr[:n_accepted].sum())

        # On the data-independent accounting every query costs exactly its worst case, so the budget
        # is exhausted as soon as one more query cannot fit. A data-dependent cost is only known once
        # the votes are: a high-consensus query may still fit, so only a cut batch exhausts it.
        exhausted = n_accepted < votes.shape[0]
        if self._budget_on == "data_independent":
            worst = worst_case_query(self._mechanism, self._params, self._orders)
            exhausted = exhausted or bool(np.min(self._curve(rdp_di + worst)) > self._budget)
        (eps_dd, order_dd), (eps_di, order_di) = self._best(rdp_dd), self._best(rdp_di)

        entry: dict[str, Any] = {
            "time": datetime.now(UTC).isoformat(timespec="seconds"),
            "n_offered": int(votes.shape[0]),
            "n_accepted": n_accepted,
            "n_answered": n_answered,
            "n_teachers": float(votes[0].sum()),
            "exhausted": exhausted,
            "epsilon_data_dependent": eps_dd,
            "epsilon_data_independent": eps_di,
            "best_order_data_dependent": order_dd,
            "best_order_data_independent": order_di,
        }
        if self._budget_on == "released":
            entry["epsilon_released"] = eps_released
        history = [*self._history, entry]
        checked, answered_total = self._checked + n_accepted, self._answered + n_answered
        kept_votes, kept_flags = self._votes, self._answered_flags
        if self._mechanism in RELEASABLE and n_accepted:
            new = votes[:n_accepted]
            kept_votes = new if kept_votes is None else np.concatenate((kept_votes, new))
            kept_flags = np.concatenate((kept_flags, answered_arr[:n_accepted]))
        if self._path is not None:
            if self._mechanism in RELEASABLE and n_accepted:
                write_sidecar(self._path, kept_votes, kept_flags)  # before the JSON that pins it
            payload = self._payload(rdp_dd=rdp_dd, rdp_di=rdp_di, checked=checked, answered=answered_total,
                                    exhausted=exhausted, history=history, votes=kept_votes, flags=kept_flags,
                                    eps_released=eps_released, release=self._release)
            _atomic_write_json(self._path, payload)
        self._rdp_dd, self._rdp_di = rdp_dd, rdp_di
        self._checked, self._answered = checked, answered_total
        self._exhausted, self._history = exhausted, history
        self._votes, self._answered_flags, self._eps_released = kept_votes, kept_flags, eps_released

        _warn_if_edge(order_dd, self._orders, "data-dependent ε")
        _warn_if_edge(order_di, self._orders, "data-independent ε")
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

    def _best(self, rdp: FloatArray) -> tuple[float, float]:
        """(ε, best order) of a total RDP curve, without warning."""
        eps = self._curve(rdp)
        best = int(np.argmin(eps))
        return float(eps[best]), float(self._orders[best])

    # -- the smooth-sensitivity release ------------------------------------------------------------

    def release(self, rng: np.random.Generator) -> dict[str, Any] | None:
        """Release the data-dependent ε through [P18]'s smooth-sensitivity mechanism, once.

        Computes :func:`strategies.smooth_sensitivity.smooth_sensitivity_release` on every charged
        vote histogram (Confident-GNMax: expected over the threshold outcomes, as [P18] evaluates
        it), draws the noisy released ε once from ``rng`` and records it in the ledger (file). A
        second call for the same charged queries returns the recorded release without drawing again.

        Parameters
        ----------
        rng : numpy.random.Generator
            Source of the release noise (seed it for a reproducible draw).

        Returns
        -------
        dict or None
            ``queries_checked``, ``epsilon_released`` (expectation), ``epsilon_released_std``,
            ``epsilon_released_draw`` (the noisy draw) and ``smooth_sensitivity`` (the release's
            :meth:`~strategies.smooth_sensitivity.SmoothSensitivityRelease.to_dict`); None for
            "lnmax", which the analysis does not cover.

        Raises
        ------
        ValueError
            If nothing was charged, the vote histograms differ in their number of teachers, or the
            smooth-sensitivity conditions fail (see ``smooth_sensitivity_release``).
        """
        if self._mechanism not in RELEASABLE:
            return None
        if self._path is None:
            return self._do_release(rng)
        with _ledger_lock(self._path):
            self._refresh()
            return self._do_release(rng)

    def _do_release(self, rng: np.random.Generator) -> dict[str, Any]:
        if self._release is not None and self._release.get("queries_checked") == self._checked:
            return dict(self._release)
        if self._votes is None or not self._checked:
            raise ValueError("nothing to release: the ledger has no charged queries")
        result = release_of(self._mechanism, self._params, self._votes, self._delta, self._orders)
        release = {
            "queries_checked": self._checked,
            "epsilon_released": result.epsilon_released,
            "epsilon_released_std": result.epsilon_released_std,
            "epsilon_released_draw": draw_released_epsilon(result, rng),
            "smooth_sensitivity": result.to_dict(),
        }
        if self._path is not None:
            _atomic_write_json(self._path, self._payload(**{**self._state(), "release": release}))
        self._release = release
        return dict(release)

    # -- persistence -------------------------------------------------------------------------------

    def _state(self) -> dict[str, Any]:
        """The current state as :meth:`_payload` keywords."""
        return {"rdp_dd": self._rdp_dd, "rdp_di": self._rdp_di, "checked": self._checked,
                "answered": self._answered, "exhausted": self._exhausted, "history": self._history,
                "votes": self._votes, "flags": self._answered_flags, "eps_released": self._eps_released,
                "release": self._release}

    def _payload(
        self,
        *,
        rdp_dd: FloatArray,
        rdp_di: FloatArray,
        checked: int,
        answered: int,
        exhausted: bool,
        history: Sequence[dict[str, Any]],
        votes: FloatArray | None,
        flags: npt.NDArray[np.bool_],
        eps_released: float | None,
        release: dict[str, Any] | None,
    ) -> dict[str, Any]:
        """The JSON document for a ledger state."""
        payload: dict[str, Any] = {
            "format_version": LEDGER_FORMAT_VERSION,
            "config": self._config(),
            "orders": self._orders.tolist(),
            "rdp_data_dependent": rdp_dd.tolist(),
            "rdp_data_independent": rdp_di.tolist(),
            "queries_checked": checked,
            "queries_answered": answered,
            "exhausted": exhausted,
            "history": list(history),
        }
        if self._mechanism in RELEASABLE:
            payload["votes_digest"] = None if votes is None else _votes_digest(votes, flags)
            payload["release"] = release
        if self._budget_on == "released":
            payload["epsilon_released"] = eps_released
        return payload

    def to_dict(self) -> dict[str, Any]:
        """The ledger as the JSON-compatible dict it is persisted as."""
        return self._payload(**self._state())

    # -- read-only views ---------------------------------------------------------------------------

    def epsilon(self) -> dict[str, float]:
        """Total ε spent so far on both accountings, with the best orders (no edge warning).

        Returns
        -------
        dict
            Keys ``data_dependent``, ``data_independent``, ``best_order_data_dependent``,
            ``best_order_data_independent``; with ``budget_on="released"`` also ``released``, the
            expected released ε of the charged queries (0 before any charge).
        """
        eps_dd, order_dd = self._best(self._rdp_dd)
        eps_di, order_di = self._best(self._rdp_di)
        out = {
            "data_dependent": eps_dd,
            "data_independent": eps_di,
            "best_order_data_dependent": order_dd,
            "best_order_data_independent": order_di,
        }
        if self._budget_on == "released":
            out["released"] = 0.0 if self._eps_released is None else float(self._eps_released)
        return out
