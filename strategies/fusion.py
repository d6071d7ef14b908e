"""Vote-fusion mechanisms that turn teacher vote histograms into (noisy) labels.

All mechanisms work on a whole batch at once: ``votes`` is a ``(Q, C)`` array of per-query vote
counts (each row sums to the number of teachers) and randomness comes from a caller-supplied
``numpy.random.Generator``: :func:`noise_generator` gives a secret one (OS entropy) unless a test or a
benchmark pins it with a seed.

- :class:`Majority` — plain plurality, no noise: the non-private baseline.
- :class:`LNMax` — Laplace noise of scale ``1/gamma`` on every count, then argmax
  (Papernot et al., ICLR 2017, "Semi-supervised Knowledge Transfer ... (PATE)", §2.1).
- :class:`GNMax` — Gaussian noise ``N(0, sigma2^2)`` on every count, then argmax
  (Papernot et al., ICLR 2018, "Scalable Private Learning with PATE", §4.1).
- :class:`ConfidentGNMax` — answer only if ``max_j n_j + N(0, sigma1^2) >= threshold``, then GNMax
  with ``sigma2`` (Papernot et al. 2018, Algorithm 1). Unanswered queries get label ``-1``.

The noise scales keep the paper's names everywhere (mechanism fields, :func:`make_mechanism`, the ledger,
the run's configuration): ``sigma1`` is σ1, the threshold check's noise, and ``sigma2`` is σ2, the answer
noise of GNMax and of Confident-GNMax's second step.

Every ``fuse`` refuses histograms that no ensemble answered (:func:`strategies.rdp_analysis.validate_votes`:
fewer than 2 classes, or a row without votes). Noise parameters must be real numbers (a bool or a string is
a ``TypeError``, naming the parameter). :func:`noise_misfit` says whether they mean anything for an
ensemble of n teachers; the run's configuration and the strategy refuse those that do not, before any
charge.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import ClassVar

import numpy as np
import numpy.typing as npt
from scipy.stats import norm

from protocol.privacy_noise import privacy_noise_seed
from strategies.rdp_analysis import (
    ArrayLike,
    FloatArray,
    rdp_gnmax_data_dependent,
    rdp_gnmax_data_independent,
    rdp_threshold,
    rdp_threshold_data_independent,
    validate_votes,
)
from strategies.rdp_lnmax import rdp_lnmax_data_dependent, rdp_lnmax_data_independent_exact
from strategies.smooth_sensitivity import SmoothSensitivityRelease, smooth_sensitivity_release
from strategies.vote_release import (
    UNANSWERED,
    CentralRelease,
    FusionResult,
    check_answered_shape,
    register,
)

MECHANISMS = ("majority", "lnmax", "gnmax", "confident_gnmax")


def noise_generator(seed: int | None) -> np.random.Generator:
    """The generator the privacy noise is drawn from, seeded by
    :func:`protocol.privacy_noise.privacy_noise_seed`.

    ``None`` (every default): seeded from 128 bits of OS entropy, so no one can reproduce the draws — the
    DP guarantee assumes the noise is unknown to whoever sees the labels. An integer pins the draws for a
    test or a benchmark, with a :class:`PrivacyWarning`: anyone who knows the seed (and the code is
    public) can subtract the noise.
    """
    return np.random.default_rng(privacy_noise_seed(seed, stacklevel=3))


def _real(name: str, value: object) -> float:
    """``value`` as a float if it is a real number (int or float, numpy's too), else TypeError naming it.

    A bool is refused although Python counts it as an int: ``sigma2=True`` is a slip, not σ2 = 1.
    """
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, float, np.integer, np.floating)):
        raise TypeError(f"{name} must be a real number (int or float), got {value!r} "
                        f"({type(value).__name__})")
    return float(value)


def _positive(name: str, value: object) -> float:
    if value is None:
        raise ValueError(f"{name} must be a finite number > 0, got None")
    number = _real(name, value)
    if not np.isfinite(number) or number <= 0:
        raise ValueError(f"{name} must be a finite number > 0, got {value!r}")
    return number


def _noisy_argmax(votes: np.ndarray, noise: np.ndarray) -> np.ndarray:
    return np.argmax(votes + noise, axis=1).astype(np.int64)


@register
@dataclass(frozen=True)
class Majority(CentralRelease):
    """Noiseless plurality vote (non-private baseline; ties go to the lowest class index)."""

    name: ClassVar[str] = "majority"
    budget_bases: ClassVar[tuple[str, ...]] = ()  # not private: no ledger

    def privacy_params(self) -> dict[str, float]:
        """The noise parameters a privacy ledger charges for (none: Majority is not private)."""
        return {}

    def fuse(self, votes: np.ndarray, rng: np.random.Generator) -> FusionResult:
        votes = validate_votes(votes)
        labels = np.argmax(votes, axis=1).astype(np.int64)
        return FusionResult(labels, np.ones(len(labels), dtype=bool))


@register
@dataclass(frozen=True)
class LNMax(CentralRelease):
    """Laplacian noisy max: ``argmax_j n_j + Lap(1/gamma)`` (PATE 2017, Eq. 1)."""

    gamma: float
    name: ClassVar[str] = "lnmax"
    ledger_params: ClassVar[tuple[str, ...]] = ("gamma",)

    def __post_init__(self) -> None:
        object.__setattr__(self, "gamma", _positive("gamma", self.gamma))

    def privacy_params(self) -> dict[str, float]:
        """The noise parameters a privacy ledger charges for: ``{"gamma": γ}``."""
        return {"gamma": float(self.gamma)}

    def fuse(self, votes: np.ndarray, rng: np.random.Generator) -> FusionResult:
        votes = validate_votes(votes)
        labels = _noisy_argmax(votes, rng.laplace(0.0, 1.0 / self.gamma, size=votes.shape))
        return FusionResult(labels, np.ones(len(labels), dtype=bool))

    def rdp_costs(self, votes: FloatArray, answered: npt.NDArray[np.bool_],
                  orders: FloatArray) -> tuple[FloatArray, FloatArray]:
        """Per-query RDP: data-dependent [P17] Theorem 3 (by way of [P18] Theorem 6's bound), never above the
        data-independent exact Laplace RDP of the two counts that move ([M17] Table II), which is tighter
        than the pure-ε/zCDP bound ([P17] Theorem 3 premise)."""
        di_answer = rdp_lnmax_data_independent_exact(self.gamma, orders)
        dd = np.minimum(rdp_lnmax_data_dependent(votes, self.gamma, orders), di_answer[None, :])
        return dd * answered[:, None], answered[:, None] * di_answer[None, :]

    def misfit(self, n_teachers: int) -> tuple[str, str] | None:
        """:func:`noise_misfit` of this mechanism."""
        return noise_misfit(self.name, n_teachers, self.privacy_params())


@register
@dataclass(frozen=True)
class GNMax(CentralRelease):
    """Gaussian noisy max: ``argmax_j n_j + N(0, sigma2^2)`` (PATE 2018, §4.1).

    ``sigma2`` is named σ2 as the answer noise of Confident-GNMax, whose second step this is."""

    sigma2: float
    name: ClassVar[str] = "gnmax"
    budget_bases: ClassVar[tuple[str, ...]] = ("data_dependent", "data_independent", "released")
    ledger_params: ClassVar[tuple[str, ...]] = ("sigma2",)

    def __post_init__(self) -> None:
        object.__setattr__(self, "sigma2", _positive("sigma2", self.sigma2))

    def privacy_params(self) -> dict[str, float]:
        """The noise parameters a privacy ledger charges for: ``{"sigma2": σ2}``."""
        return {"sigma2": float(self.sigma2)}

    def fuse(self, votes: np.ndarray, rng: np.random.Generator) -> FusionResult:
        votes = validate_votes(votes)
        labels = _noisy_argmax(votes, rng.normal(0.0, self.sigma2, size=votes.shape))
        return FusionResult(labels, np.ones(len(labels), dtype=bool))

    def rdp_costs(self, votes: FloatArray, answered: npt.NDArray[np.bool_],
                  orders: FloatArray) -> tuple[FloatArray, FloatArray]:
        """Per-query RDP of an answer: [P18] Theorem 6 (data-dependent) and Proposition 8 (``α/σ2²``)."""
        dd = rdp_gnmax_data_dependent(votes, self.sigma2, orders)
        di_answer = rdp_gnmax_data_independent(self.sigma2, orders)
        return dd * answered[:, None], answered[:, None] * di_answer[None, :]

    def smooth_sensitivity(self, votes: FloatArray, delta: float,
                           orders: FloatArray) -> SmoothSensitivityRelease | None:
        """[P18] §4.3's release of the data-dependent ε of ``votes``."""
        return smooth_sensitivity_release(votes, threshold=None, sigma1=None, sigma2=self.sigma2, delta=delta,
                                          orders=orders)

    def misfit(self, n_teachers: int) -> tuple[str, str] | None:
        """:func:`noise_misfit` of this mechanism."""
        return noise_misfit(self.name, n_teachers, self.privacy_params())


@register
@dataclass(frozen=True)
class ConfidentGNMax(CentralRelease):
    """Confident GNMax (PATE 2018, Algorithm 1).

    A query is answered iff ``max_j n_j + N(0, sigma1^2) >= threshold``; answered queries get
    ``argmax_j n_j + N(0, sigma2^2)``. Both noise draws are independent.
    """

    threshold: float
    sigma1: float
    sigma2: float
    name: ClassVar[str] = "confident_gnmax"
    budget_bases: ClassVar[tuple[str, ...]] = ("data_dependent", "data_independent", "released")
    ledger_params: ClassVar[tuple[str, ...]] = ("sigma2", "sigma1", "threshold")

    def __post_init__(self) -> None:
        object.__setattr__(self, "sigma1", _positive("sigma1", self.sigma1))
        object.__setattr__(self, "sigma2", _positive("sigma2", self.sigma2))
        threshold = _real("threshold", self.threshold)
        if not np.isfinite(threshold) or threshold < 0:
            raise ValueError(f"threshold must be a finite number >= 0, got {self.threshold!r}")
        object.__setattr__(self, "threshold", threshold)

    def privacy_params(self) -> dict[str, float]:
        """The noise parameters a privacy ledger charges for: σ2, σ1 and T."""
        return {"sigma2": float(self.sigma2), "sigma1": float(self.sigma1),
                "threshold": float(self.threshold)}

    def check_answered(self, answered: ArrayLike | None, n_queries: int) -> npt.NDArray[np.bool_]:
        """The threshold outcomes, required."""
        if answered is None:
            raise ValueError("answered is required for mechanism 'confident_gnmax' (the threshold outcomes)")
        return check_answered_shape(answered, n_queries)

    def rdp_costs(self, votes: FloatArray, answered: npt.NDArray[np.bool_],
                  orders: FloatArray) -> tuple[FloatArray, FloatArray]:
        """Per-query RDP: the threshold check on every query ([P18] Proposition 7 data-dependently,
        ``α/(2σ1²)`` data-independently), plus GNMax at σ2 on the answered ones ([P18] Theorem 6,
        Proposition 8)."""
        dd = rdp_gnmax_data_dependent(votes, self.sigma2, orders) * answered[:, None]
        di = answered[:, None] * rdp_gnmax_data_independent(self.sigma2, orders)[None, :]
        dd = dd + rdp_threshold(votes, self.threshold, self.sigma1, orders)
        di = di + rdp_threshold_data_independent(self.sigma1, orders)[None, :]
        return dd, di

    def smooth_sensitivity(self, votes: FloatArray, delta: float,
                           orders: FloatArray) -> SmoothSensitivityRelease | None:
        """[P18] §4.3's release of the expected data-dependent ε of ``votes`` (over the threshold
        outcomes)."""
        return smooth_sensitivity_release(votes, threshold=self.threshold, sigma1=self.sigma1,
                                          sigma2=self.sigma2, delta=delta, orders=orders)

    def misfit(self, n_teachers: int) -> tuple[str, str] | None:
        """:func:`noise_misfit` of this mechanism."""
        return noise_misfit(self.name, n_teachers, self.privacy_params())

    def fuse(self, votes: np.ndarray, rng: np.random.Generator) -> FusionResult:
        votes = validate_votes(votes)
        answered = votes.max(axis=1) + rng.normal(0.0, self.sigma1, size=len(votes)) >= self.threshold
        labels = _noisy_argmax(votes, rng.normal(0.0, self.sigma2, size=votes.shape))
        return FusionResult(np.where(answered, labels, UNANSWERED).astype(np.int64), answered)


Mechanism = Majority | LNMax | GNMax | ConfidentGNMax
"""The central mechanisms (each a :class:`strategies.vote_release.VoteRelease`)."""


MECHANISM_REGISTRY: dict[str, type[Mechanism]] = {
    cls.name: cls for cls in (Majority, LNMax, GNMax, ConfidentGNMax)
}
"""The one map from mechanism names to classes: :func:`make_mechanism` and the privacy ledger use it."""
assert tuple(MECHANISM_REGISTRY) == MECHANISMS


NOISE_RATIOS: dict[str, float] = {"threshold": 0.8, "sigma1": 0.6, "sigma2": 0.16}
"""The noise groups' settings (``conf/pate/noise/``) as fractions of the ensemble size n: [P18] Table 2's
MNIST setting, T = 200, σ1 = 150, σ2 = 40 for 250 teachers (σ2 is GNMax's noise too)."""


def noise_misfit(mechanism: str, n_teachers: int, params: Mapping[str, float]) -> tuple[str, str] | None:
    """The first noise setting of ``mechanism`` that means nothing for an ensemble of ``n_teachers``.

    ``params`` holds the mechanism's noise as :meth:`privacy_params` names it (``sigma2``, ``sigma1``,
    ``threshold``, ``gamma``). Returns ``(parameter, why)``, or None when every setting fits. The rules,
    each about noise that is meant relative to the ensemble (a count is at most n, the widest gap
    between two counts is n, a unanimous vote):

    * Confident-GNMax ``threshold`` T < n + σ1. The check is ``max count + N(0, σ1²) >= T`` and the
      max count is at most n, so even a unanimous query passes with probability at most
      Φ((n - T)/σ1): below Φ(-1) = 15.9 % from T = n + σ1 on, and ~0 for T far above n — while
      every check is charged. (T >= n alone is not refused: [P18] runs SVHN and Adult with
      T = 300 > n = 250 and σ1 = 200, where a unanimous query passes 40 % of the time. With the
      noise at the teachers, every count is noised and the check is ``max_j (n_j + z_j) >= T``: a
      query may then also pass on another count's noise, at most C·Φ((n - T)/σ1) in all — an answer
      the votes did not earn, so the same rule applies.)
    * Confident-GNMax ``sigma1`` σ1 < n: the max count ranges over [n/C, n]; threshold noise at
      least that wide makes whether a query is answered depend on the noise more than on the votes
      ([P18] uses σ1 = 0.1 n to 0.8 n).
    * ``sigma2`` σ2 < n (GNMax, and Confident-GNMax's answers), and LNMax's Laplace scale 1/γ < n: noise
      as large as the widest gap a vote can show (n, a unanimous vote) overturns even unanimous labels
      (at σ2 = n with 10 classes, two in three of them), while each answer is charged ([P18] uses
      σ2 = 0.02 n to 0.16 n, [P17] 1/γ = 0.08 n).
    """
    n = n_teachers
    if mechanism == "confident_gnmax":
        threshold, sigma1 = params["threshold"], params["sigma1"]
        if threshold >= n + sigma1:
            p = norm.cdf((n - threshold) / sigma1)
            reach = f"= {p:.1%}" if p >= 1e-3 else "< 0.1%"
            why = (f"T={threshold:g} must be < n + σ1 = {n} + {sigma1:g} = {n + sigma1:g}: even a unanimous "
                   f"vote (max count {n}) passes the check max count + N(0, σ1²) >= T with probability "
                   f"Φ((n - T)/σ1) {reach}, while every check is charged")
            return "threshold", why
        if sigma1 >= n:
            why = (f"σ1={sigma1:g} must be < n = {n}: threshold noise as wide as the whole range of the max "
                   "count (n/C to n) decides which queries are answered more than the votes do, while every "
                   "check is charged")
            return "sigma1", why
    if mechanism in ("gnmax", "confident_gnmax") and params["sigma2"] >= n:
        return "sigma2", (f"σ2={params['sigma2']:g} must be < n = {n}: noise as large as the widest gap a "
                         f"vote can show ({n}, a unanimous vote) overturns even unanimous labels, while each "
                         "answer is charged")
    if mechanism == "lnmax" and 1.0 / params["gamma"] >= n:
        return "gamma", (f"γ={params['gamma']:g} must be > 1/n = {1 / n:.4g}: Laplace noise of scale 1/γ = "
                         f"{1 / params['gamma']:g} as large as the widest gap a vote can show ({n}, a "
                         "unanimous vote) overturns even unanimous labels, while each answer is charged")
    return None


def make_mechanism(
    name: str,
    *,
    sigma1: float | None = None,
    sigma2: float | None = None,
    threshold: float | None = None,
    gamma: float | None = None,
) -> Mechanism:
    """Build a mechanism by name from :data:`MECHANISM_REGISTRY`.

    ``sigma2`` is the answer noise σ2 (GNMax's, and Confident-GNMax's second step), ``sigma1`` and
    ``threshold`` Confident-GNMax's check ([P18] Algorithm 1); parameters the mechanism does not use are
    ignored (a config carries all of them).

    Raises
    ------
    ValueError
        If ``name`` is unknown or a parameter the mechanism needs is missing or out of range.
    """
    cls = MECHANISM_REGISTRY.get(name)
    if cls is None:
        raise ValueError(f"unknown fusion mechanism {name!r}; choose one of {MECHANISMS}")
    if cls is Majority:
        return Majority()
    if cls is LNMax:
        return LNMax(gamma=_positive("gamma", gamma))
    if cls is GNMax:
        return GNMax(sigma2=_positive("sigma2", sigma2))
    if threshold is None:
        raise ValueError("confident_gnmax needs a threshold, got None")
    return ConfidentGNMax(threshold=threshold, sigma1=_positive("sigma1", sigma1),
                          sigma2=_positive("sigma2", sigma2))
