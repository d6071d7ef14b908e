"""What a PATE run's strategy keeps and reports (:mod:`strategies.ensemble_distillation`): who is who in
the ensemble, the progress events for live displays, the result, and the error that stops a run whose
ensemble became too small."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from flwr.serverapp.strategy import Result


class EnsembleTooSmallError(RuntimeError):
    """Fewer teachers remain than the configured minimum, or than the mechanism's noise is meant for."""


@dataclass(frozen=True)
class ProgressEvent:
    """A progress update for live displays.

    ``phase`` is ``teacher training`` (it starts), ``querying`` (the query phase starts; a resumed run's
    counts are already past 0), ``queries`` (after each batch), ``student training`` (it starts) or
    ``done``.
    """

    phase: str
    queries_checked: int = 0
    queries_answered: int = 0
    pool_size: int = 0
    epsilon: float = 0.0


@dataclass
class PateResult(Result):
    """Flower's ``Result`` plus the full PATE report (:meth:`EnsembleDistillation.report`)."""

    report: dict[str, Any] = field(default_factory=dict)


@dataclass
class Ensemble:
    """Server-side view of who is who; the teachers' hosts shrink when nodes fail."""

    student: int
    teacher_hosts: dict[int, list[int]]
    dropped: dict[int, str] = field(default_factory=dict)

    @property
    def num_teachers(self) -> int:
        return sum(len(t) for t in self.teacher_hosts.values())
