"""The vote-release seam: where a PATE run's noise is added, and what the release costs.

A :class:`VoteRelease` is one way of turning the teachers' votes on a batch of queries into labels:

1. :meth:`~VoteRelease.gather` — collect the batch's votes through the :class:`Ballot` the strategy
   hands it (a plain round of ``query.votes`` messages, the same with a request for randomised votes,
   or its own secure-aggregation steps);
2. :meth:`~VoteRelease.fuse` — turn them into labels (``-1`` where a query is not answered);
3. :meth:`~VoteRelease.rdp_costs` — the per-query RDP of what it released, data-dependent where its
   analysis allows it and data-independent always, which the one ledger
   (:class:`strategies.privacy_ledger.PrivacyLedger`) charges;
4. :meth:`~VoteRelease.privacy_params` — its noise, which with its ``name`` is what the ledger binds
   into its journal's genesis, and from which :func:`release_from_params` rebuilds its costs when a
   stored ledger is loaded.

Implemented by the central mechanisms (:mod:`strategies.fusion`: Majority, LNMax, GNMax,
Confident-GNMax), noise at the teachers under secure aggregation
(:class:`strategies.distributed_noise.SecureVoting`) and local randomised response
(:class:`strategies.local_rr.LocalRR`). A new mechanism is one class with the ``@register`` decorator
(most of it inherited from :class:`CentralRelease`), plus its Hydra config group file to select it by name.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, ClassVar, Protocol, TypeVar

import numpy as np
import numpy.typing as npt
from flwr.app import ConfigRecord, Message
from flwr.serverapp import Grid

from strategies.rdp_analysis import ArrayLike, FloatArray, check_finite, check_positive
from strategies.smooth_sensitivity import SmoothSensitivityRelease

UNANSWERED = -1
BUDGET_BASES = ("data_dependent", "data_independent", "released")
"""The accountings a ledger's budget may bound; "released" is [P18] §4.3's smooth-sensitivity release."""


@dataclass(frozen=True)
class FusionResult:
    """Labels for one batch: ``labels[i] == UNANSWERED`` exactly where ``answered[i]`` is False."""

    labels: np.ndarray  # int64, (Q,)
    answered: np.ndarray  # bool, (Q,)

    def __len__(self) -> int:
        return len(self.labels)


MessageFn = Callable[..., Message]


@dataclass(frozen=True)
class Ballot:
    """What the strategy hands a release to gather one batch of votes.

    ``count_votes(queries, records)`` runs one plain round — a ``query.votes`` message to every remaining
    teacher node, with ``records`` added to it — and returns the summed ``(Q, C)`` histogram of the valid
    replies (a malformed or missing one drops its node; the ensemble is checked after the round). The
    strategy may send the student's next ``query.queries`` request in the same round (its reply is set aside:
    :mod:`strategies.pate_queries`).
    ``check_ensemble()`` stops the run if the ensemble no longer fits; ``drop(node, reason)`` removes a node.
    """

    grid: Grid
    make_message: MessageFn
    hosts: dict[int, list[int]]
    drop: Callable[[int, str], None]
    model: ConfigRecord
    n_classes: int
    timeout: float
    count_votes: Callable[[np.ndarray, dict[str, ConfigRecord]], np.ndarray]
    check_ensemble: Callable[[], None]


class ChargingLedger(Protocol):
    """What a release may ask of the ledger that charges it
    (:class:`strategies.privacy_ledger.PrivacyLedger`)."""

    @property
    def budget_on(self) -> str: ...

    def fitting_queries(self, n: int, n_classes: int) -> int: ...

    def release(self, rng: np.random.Generator) -> dict[str, Any] | None: ...


class VoteRelease(Protocol):
    """One way of releasing labels from teacher votes, and its privacy cost (module docstring).

    ``budget_bases`` are the accountings a ledger of it may bound (empty: not private, no ledger);
    ``ledger_params`` the names of :meth:`privacy_params`.
    """

    name: ClassVar[str]
    budget_bases: ClassVar[tuple[str, ...]]
    ledger_params: ClassVar[tuple[str, ...]]

    def privacy_params(self) -> dict[str, float]:
        """Its noise, named as ``ledger_params``: what the ledger records and charges for."""
        ...

    def gather(self, ballot: Ballot, queries: np.ndarray) -> np.ndarray:
        """The ``(Q, C)`` votes (or the stand-in the ledger is charged on) of one batch of queries."""
        ...

    def fuse(self, votes: np.ndarray, rng: np.random.Generator) -> FusionResult:
        """Labels for the batch :meth:`gather` returned."""
        ...

    def check_answered(self, answered: ArrayLike | None, n_queries: int) -> npt.NDArray[np.bool_]:
        """``answered`` validated for a batch of ``n_queries`` (None: every query answered, if it may be)."""
        ...

    def rdp_costs(self, votes: FloatArray, answered: npt.NDArray[np.bool_],
                  orders: FloatArray) -> tuple[FloatArray, FloatArray]:
        """Per-query RDP ``(Q, K)`` at ``orders``: (data-dependent, data-independent)."""
        ...

    def worst_case_rdp(self, orders: FloatArray, n_classes: int) -> FloatArray:
        """The largest RDP one more query can cost (its data-independent cost)."""
        ...

    def pure_epsilon(self) -> float | None:
        """ε of one query as pure ε-DP, when it has one (composed by addition), else None."""
        ...

    def smooth_sensitivity(self, votes: FloatArray, delta: float,
                           orders: FloatArray) -> SmoothSensitivityRelease | None:
        """[P18] §4.3's smooth-sensitivity release of the data-dependent ε of ``votes`` (None: not
        covered)."""
        ...

    def release_epsilon(self, ledger: ChargingLedger, rng: np.random.Generator) -> dict[str, Any] | None:
        """Release the run's data-dependent ε, once, at its end (ValueError: refused, with the reason)."""
        ...

    def misfit(self, n_teachers: int) -> tuple[str, str] | None:
        """``(parameter, why)`` if its noise means nothing for ``n_teachers`` teachers, else None."""
        ...

    def bind(self, ledger: ChargingLedger) -> None:
        """The ledger that will charge it (before the first batch)."""
        ...

    def report(self, delta: float) -> dict[str, Any]:
        """What a results file carries about it beyond the ledger's ε."""
        ...


class CentralRelease:
    """Defaults of a release whose noise the server adds to the summed votes of a plain round.

    A subclass defines ``name``, ``budget_bases``, ``ledger_params``, :meth:`privacy_params`,
    :meth:`from_params`, :meth:`fuse` and (if private) :meth:`rdp_costs`.
    """

    name: ClassVar[str]
    budget_bases: ClassVar[tuple[str, ...]] = ("data_dependent", "data_independent")
    ledger_params: ClassVar[tuple[str, ...]] = ()

    def privacy_params(self) -> dict[str, float]:
        raise NotImplementedError

    @classmethod
    def from_params(cls, params: Mapping[str, float]) -> Any:
        """The release a ledger of ``privacy_params() == params`` charges (a stored ledger's costs)."""
        return cls(**params)

    def gather(self, ballot: Ballot, queries: np.ndarray) -> np.ndarray:
        return ballot.count_votes(queries, {})

    def check_answered(self, answered: ArrayLike | None, n_queries: int) -> npt.NDArray[np.bool_]:
        """Every query is answered: ``answered`` must be None or all True."""
        arr = check_answered_shape(answered, n_queries)
        if not arr.all():
            raise ValueError(f"answered must be all True for mechanism {self.name!r} (every query is "
                             f"answered), got False at index {int(np.flatnonzero(~arr)[0])}")
        return arr

    def rdp_costs(self, votes: FloatArray, answered: npt.NDArray[np.bool_],
                  orders: FloatArray) -> tuple[FloatArray, FloatArray]:
        raise NotImplementedError(f"{self.name} is not private: it has no privacy cost")

    def worst_case_rdp(self, orders: FloatArray, n_classes: int) -> FloatArray:
        """The data-independent cost of one answered query, at ``n_classes`` equal counts."""
        votes = np.full((1, n_classes), 1.0)
        return self.rdp_costs(votes, np.ones(1, dtype=bool), orders)[1][0]

    def pure_epsilon(self) -> float | None:
        return None

    def smooth_sensitivity(self, votes: FloatArray, delta: float,
                           orders: FloatArray) -> SmoothSensitivityRelease | None:
        return None

    def release_epsilon(self, ledger: ChargingLedger, rng: np.random.Generator) -> dict[str, Any] | None:
        """The ledger's smooth-sensitivity release ([P18] §4.3), where :meth:`smooth_sensitivity` covers
        it."""
        return ledger.release(rng)

    def misfit(self, n_teachers: int) -> tuple[str, str] | None:
        return None

    def bind(self, ledger: ChargingLedger) -> None:
        return None

    def report(self, delta: float) -> dict[str, Any]:
        return {}


def check_answered_shape(answered: ArrayLike | None, n_queries: int) -> npt.NDArray[np.bool_]:
    """``answered`` as a boolean ``(n_queries,)`` array (None: all True); ValueError otherwise."""
    if answered is None:
        return np.ones(n_queries, dtype=bool)
    arr = np.asarray(answered)
    if arr.dtype != np.bool_ or arr.shape != (n_queries,):
        raise ValueError(f"answered must be a boolean array of shape ({n_queries},), got dtype {arr.dtype} "
                         f"and shape {arr.shape}")
    return arr


RENAMED_PARAMS: dict[str, tuple[str, str]] = {
    "sigma": ("sigma2", "the answer noise σ2 of GNMax / Confident-GNMax"),
}
"""Noise parameter names of earlier versions: ``old: (new, what it is)``. ``sigma`` (GNMax's σ,
Confident-GNMax's σ2) is ``sigma2``, the answer noise σ2 of Papernot et al. 2018, Algorithm 1. A stored
ledger's description is read with either (:func:`current_param_names`); a new one is written with the new."""


def current_param_names(described: Mapping[str, Any]) -> dict[str, Any]:
    """``described`` (a stored ledger's settings) with every :data:`RENAMED_PARAMS` key under its new name.

    Raises
    ------
    ValueError
        If it holds a parameter under both names (a file that was edited or merged).
    """
    out = dict(described)
    for old, (new, _) in RENAMED_PARAMS.items():
        if old in out:
            if new in out:
                raise ValueError(f"a ledger description holds both {old} (the earlier name) and {new}")
            out[new] = out.pop(old)
    return out


RELEASES: dict[str, type[Any]] = {}
"""The registered releases by name: :func:`release_from_params` and the run's configuration build from it."""

R = TypeVar("R")


def register(cls: type[R]) -> type[R]:
    """Class decorator: make a release constructible by name (for the config and a stored ledger)."""
    name = cls.name  # type: ignore[attr-defined]
    if name in RELEASES and RELEASES[name] is not cls:
        raise ValueError(f"a release named {name!r} is already registered: {RELEASES[name]!r}")
    RELEASES[name] = cls
    return cls


def private_releases() -> tuple[str, ...]:
    """The names of the registered releases a ledger charges."""
    return tuple(name for name, cls in RELEASES.items() if cls.budget_bases)


def check_params(name: str, given: Mapping[str, float | None]) -> dict[str, float]:
    """The parameters of release ``name`` a ledger charges for, validated, as floats.

    A ``threshold`` must be finite, every other parameter finite and > 0.

    Raises
    ------
    ValueError
        On an unknown or non-private release, a missing or superfluous parameter, or a value out of range.
    """
    cls = RELEASES.get(name)
    if cls is None or not cls.budget_bases:
        raise ValueError(f"mechanism must be one of {private_releases()}, got {name!r}")
    for old, (new, what) in RENAMED_PARAMS.items():
        if given.get(old) is not None:
            raise ValueError(f"{old} was renamed: give {new} ({what}); got {old}={given[old]!r}")
    needed = cls.ledger_params
    params: dict[str, float] = {}
    for key, value in given.items():
        if key in needed and value is None:
            raise ValueError(f"{key} is required for mechanism {name!r}")
        if key not in needed and value is not None:
            raise ValueError(f"{key} is not used by mechanism {name!r}, got {value}")
        if value is not None:
            params[key] = (check_finite if key == "threshold" else check_positive)(key, value)
    missing = [key for key in needed if key not in params]
    if missing:
        raise ValueError(f"{missing[0]} is required for mechanism {name!r}")
    return params


def release_from_params(name: str, given: Mapping[str, float | None]) -> VoteRelease:
    """The registered release ``name`` with the (validated) ledger parameters ``given``."""
    params = check_params(name, given)
    release: VoteRelease = RELEASES[name].from_params(params)
    return release


def check_budget_basis(mechanism: VoteRelease, budget_on: str) -> None:
    """Refuse a ledger budget on an accounting ``mechanism``'s analysis does not give.

    Raises
    ------
    ValueError
        Naming the bases it allows, e.g. ``budget_on='data_independent'`` for noise no one sees added.
    """
    if budget_on not in mechanism.budget_bases:
        allowed = " or ".join(f"budget_on={b!r}" for b in mechanism.budget_bases)
        raise ValueError(f"{mechanism!r} is charged data-independently or as its analysis allows: the ledger "
                         f"needs {allowed}, got {budget_on!r}")
