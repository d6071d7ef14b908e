"""Vote-fusion mechanisms that turn teacher vote histograms into (noisy) labels.

All mechanisms work on a whole batch at once: ``votes`` is a ``(Q, C)`` array of per-query vote
counts (each row sums to the number of teachers) and randomness comes from a caller-supplied
``numpy.random.Generator`` so runs can be pinned.

- :class:`Majority` — plain plurality, no noise: the non-private baseline.
- :class:`LNMax` — Laplace noise of scale ``1/gamma`` on every count, then argmax
  (Papernot et al., ICLR 2017, "Semi-supervised Knowledge Transfer ... (PATE)", §2.1).
- :class:`GNMax` — Gaussian noise ``N(0, sigma^2)`` on every count, then argmax
  (Papernot et al., ICLR 2018, "Scalable Private Learning with PATE", §4.1).
- :class:`ConfidentGNMax` — answer only if ``max_j n_j + N(0, sigma1^2) >= threshold``, then GNMax
  with ``sigma2`` (Papernot et al. 2018, Algorithm 1). Unanswered queries get label ``-1``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import numpy as np

from strategies.rdp_analysis import validate_votes

UNANSWERED = -1
MECHANISMS = ("majority", "lnmax", "gnmax", "confident_gnmax")


@dataclass(frozen=True)
class FusionResult:
    """Labels for one batch: ``labels[i] == UNANSWERED`` exactly where ``answered[i]`` is False."""

    labels: np.ndarray  # int64, (Q,)
    answered: np.ndarray  # bool, (Q,)

    def __len__(self) -> int:
        return len(self.labels)


def _positive(name: str, value: float | None) -> float:
    if value is None or not np.isfinite(value) or value <= 0:
        raise ValueError(f"{name} must be a finite number > 0, got {value!r}")
    return float(value)


def _noisy_argmax(votes: np.ndarray, noise: np.ndarray) -> np.ndarray:
    return np.argmax(votes + noise, axis=1).astype(np.int64)


@dataclass(frozen=True)
class Majority:
    """Noiseless plurality vote (non-private baseline; ties go to the lowest class index)."""

    name: ClassVar[str] = "majority"

    def privacy_params(self) -> dict[str, float]:
        """The noise parameters a privacy ledger charges for (none: Majority is not private)."""
        return {}

    def fuse(self, votes: np.ndarray, rng: np.random.Generator) -> FusionResult:
        votes = validate_votes(votes)
        labels = np.argmax(votes, axis=1).astype(np.int64)
        return FusionResult(labels, np.ones(len(labels), dtype=bool))


@dataclass(frozen=True)
class LNMax:
    """Laplacian noisy max: ``argmax_j n_j + Lap(1/gamma)`` (PATE 2017, Eq. 1)."""

    gamma: float
    name: ClassVar[str] = "lnmax"

    def __post_init__(self) -> None:
        _positive("gamma", self.gamma)

    def privacy_params(self) -> dict[str, float]:
        """The noise parameters a privacy ledger charges for: ``{"gamma": γ}``."""
        return {"gamma": float(self.gamma)}

    def fuse(self, votes: np.ndarray, rng: np.random.Generator) -> FusionResult:
        votes = validate_votes(votes)
        labels = _noisy_argmax(votes, rng.laplace(0.0, 1.0 / self.gamma, size=votes.shape))
        return FusionResult(labels, np.ones(len(labels), dtype=bool))


@dataclass(frozen=True)
class GNMax:
    """Gaussian noisy max: ``argmax_j n_j + N(0, sigma^2)`` (PATE 2018, §4.1)."""

    sigma: float
    name: ClassVar[str] = "gnmax"

    def __post_init__(self) -> None:
        _positive("sigma", self.sigma)

    def privacy_params(self) -> dict[str, float]:
        """The noise parameters a privacy ledger charges for: ``{"sigma": σ}``."""
        return {"sigma": float(self.sigma)}

    def fuse(self, votes: np.ndarray, rng: np.random.Generator) -> FusionResult:
        votes = validate_votes(votes)
        labels = _noisy_argmax(votes, rng.normal(0.0, self.sigma, size=votes.shape))
        return FusionResult(labels, np.ones(len(labels), dtype=bool))


@dataclass(frozen=True)
class ConfidentGNMax:
    """Confident GNMax (PATE 2018, Algorithm 1).

    A query is answered iff ``max_j n_j + N(0, sigma1^2) >= threshold``; answered queries get
    ``argmax_j n_j + N(0, sigma2^2)``. Both noise draws are independent.
    """

    threshold: float
    sigma1: float
    sigma2: float
    name: ClassVar[str] = "confident_gnmax"

    def __post_init__(self) -> None:
        _positive("sigma1", self.sigma1)
        _positive("sigma2", self.sigma2)
        if not np.isfinite(self.threshold) or self.threshold < 0:
            raise ValueError(f"threshold must be a finite number >= 0, got {self.threshold!r}")

    def privacy_params(self) -> dict[str, float]:
        """The noise parameters a privacy ledger charges for; ``sigma`` is σ2 of the answering step."""
        return {"sigma": float(self.sigma2), "sigma1": float(self.sigma1), "threshold": float(self.threshold)}

    def fuse(self, votes: np.ndarray, rng: np.random.Generator) -> FusionResult:
        votes = validate_votes(votes)
        answered = votes.max(axis=1) + rng.normal(0.0, self.sigma1, size=len(votes)) >= self.threshold
        labels = _noisy_argmax(votes, rng.normal(0.0, self.sigma2, size=votes.shape))
        return FusionResult(np.where(answered, labels, UNANSWERED).astype(np.int64), answered)


Mechanism = Majority | LNMax | GNMax | ConfidentGNMax


MECHANISM_REGISTRY: dict[str, type[Mechanism]] = {
    cls.name: cls for cls in (Majority, LNMax, GNMax, ConfidentGNMax)
}
"""The one map from mechanism names to classes: :func:`make_mechanism` and the privacy ledger use it."""
assert tuple(MECHANISM_REGISTRY) == MECHANISMS


def make_mechanism(
    name: str,
    *,
    sigma: float | None = None,
    sigma1: float | None = None,
    threshold: float | None = None,
    gamma: float | None = None,
) -> Mechanism:
    """Build a mechanism by name from :data:`MECHANISM_REGISTRY`.

    ``sigma`` is GNMax's sigma, or sigma2 for Confident-GNMax; parameters the mechanism does not use
    are ignored (a config carries all of them).

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
        return GNMax(sigma=_positive("sigma", sigma))
    if threshold is None:
        raise ValueError("confident_gnmax needs a threshold, got None")
    return ConfidentGNMax(threshold=threshold, sigma1=_positive("sigma1", sigma1),
                          sigma2=_positive("sigma", sigma))
