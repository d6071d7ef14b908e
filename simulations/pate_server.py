"""Server side of a PATE run: build the strategy from a :class:`PateConfig`, run it, write results.

Shared by the Hydra entry point (``python -m simulations.pate``) and the ``flwr run`` ServerApp.
"""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Callable
from logging import INFO
from pathlib import Path
from typing import Any

from flwr.common.logger import log
from flwr.serverapp import Grid

from simulations.pate_config import PateConfig, majority_of
from simulations.results import write_results
from strategies.accounting import PrivacyLedger
from strategies.distributed_noise import SecureVoting
from strategies.ensemble_distillation import EnsembleDistillation, ProgressEvent
from strategies.fusion import make_mechanism
from strategies.ledger_anchor import existing_ledger_files
from strategies.local_rr import LocalRR

DEFAULT_STUDENT_MODEL_NAME = "student_model"
"""What the student node saves its model as (``.pt`` + ``.json``) in its output folder, unless set."""


def build_mechanism(cfg: PateConfig) -> Any:
    """The run's fusion by ``strategy.noise_at``: the central mechanism ("server"), its noise added at the
    teacher nodes with the votes summed under secure aggregation ("teachers"), or local randomised
    response of every vote ("votes")."""
    s = cfg.strategy
    if s.noise_at == "votes":
        return LocalRR(epsilon=s.rr_epsilon)
    central = make_mechanism(s.mechanism, sigma1=s.sigma1, sigma2=s.sigma2, threshold=s.threshold,
                             gamma=s.gamma)
    if s.noise_at == "teachers":
        return SecureVoting(central, threshold=s.secagg_threshold or None)
    return central


def run_binding(cfg: PateConfig) -> dict[str, Any]:
    """What ties a ledger to its run: everything that decides which samples the charged queries are (the
    dataset, its split and seeds) and which teachers voted on them (their number, their assignment to the
    teacher nodes, their training, where the noise is added). The ledger keeps it in its journal's genesis;
    a resume with any of it changed is refused, naming the setting."""
    return {"data": dataclasses.asdict(cfg.data), "teacher": dataclasses.asdict(cfg.teacher),
            "teacher_nodes": cfg.federation.teacher_nodes, "noise_at": cfg.strategy.noise_at}


def build_ledger(cfg: PateConfig) -> Any:
    """The run's privacy ledger (reloaded if its file exists), or None for the non-private majority.

    Raises
    ------
    ValueError
        If ``run.resume`` is off and the ledger file, its row store or its head log exists (an earlier
        run's ledger is never reset, nor extended by a run that would ask its queries again, whatever its
        counts say), or if ``run.resume`` is on and the stored ledger belongs to another run
        (:func:`run_binding`) or fails its checks.
    """
    s = cfg.strategy
    if s.mechanism == "majority" and s.noise_at != "votes":
        return None
    path = Path(cfg.run.ledger_path or Path(cfg.run.output_dir) / "privacy_ledger.json")
    if path.is_dir():
        raise ValueError(f"run.ledger_path={str(path)!r}: is a directory; name the ledger file "
                         "(e.g. .../privacy_ledger.json)")
    existing = existing_ledger_files(path)
    if existing and not cfg.run.resume:
        files = ", ".join(p.name for p in existing)
        raise ValueError(f"run.resume=False: the ledger {path} already holds {_recorded_charges(path)} of an "
                         f"earlier run (files: {files}); set run.resume=true to continue that run (its "
                         "queries are not asked again), or choose another run.output_dir")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise ValueError(f"the ledger's folder {path.parent} cannot be created: {err.strerror}") from err
    if not os.access(path.parent, os.W_OK | os.X_OK):
        raise ValueError(f"the ledger's folder {path.parent} is not writable: every charge must be persisted "
                         "before its labels are released")
    mechanism = build_mechanism(cfg)
    run = run_binding(cfg)
    return PrivacyLedger.for_mechanism(mechanism, path, delta=s.delta, epsilon_budget=s.epsilon_budget,
                                       budget_on=s.budget_on, conversion=s.conversion, run=run)


def _recorded_charges(path: Path) -> str:
    """What a ledger file says it charged, for a refusal (it is not trusted, only quoted)."""
    try:
        return f"{int(json.loads(path.read_text())['queries_checked'])} charged queries"
    except (OSError, ValueError, KeyError, TypeError):
        return "charges (its file is missing or unreadable)"


def build_strategy(
    cfg: PateConfig, on_progress: Callable[[ProgressEvent], None] | None = None
) -> EnsembleDistillation:
    """An :class:`EnsembleDistillation` configured from ``cfg``."""
    s = cfg.strategy
    mechanism = build_mechanism(cfg)
    student = cfg.student
    if not student.model_name:
        student = dataclasses.replace(student, model_name=DEFAULT_STUDENT_MODEL_NAME)
    return EnsembleDistillation(
        mechanism=mechanism, ledger=build_ledger(cfg), data=cfg.data, teacher_model=cfg.teacher,
        student_model=cfg.student_model, student=student, teacher_training=cfg.teacher_training,
        query_batch_size=s.query_batch_size,
        max_queries=s.max_queries or None, min_teachers=s.min_teachers or majority_of(cfg.data.num_teachers),
        seed=s.seed,
        timeout=cfg.federation.timeout_s, step_timeout=cfg.federation.step_timeout_s, on_progress=on_progress,
        resume=cfg.run.resume, pipeline_queries=cfg.federation.pipeline_queries)


PHASE_LOG_PREFIX = "PATE phase: "
"""What :func:`log_progress` puts before a phase's name (``teacher training``, ``querying``, ...)."""


def log_progress(event: ProgressEvent) -> None:
    """Log a run's progress at INFO: each phase as it starts (``PATE phase: teacher training``), and each
    charged query batch. The ServerApp of a deployment has no live display; ``flwr run --stream`` and
    ``flwr log`` show these lines."""
    if event.phase == "queries":
        log(INFO, "PATE queries: %d checked, %d answered, %d in the pool, data-dependent ε %.4g",
            event.queries_checked, event.queries_answered, event.pool_size, event.epsilon)
    else:
        log(INFO, "%s%s", PHASE_LOG_PREFIX, event.phase)


def run_pate_server(
    grid: Grid, cfg: PateConfig, on_progress: Callable[[ProgressEvent], None] | None = None
) -> dict[str, Any]:
    """Run the PATE phases on ``grid``; write and return the results (also ``<output_dir>/results.json``)."""
    strategy = build_strategy(cfg, on_progress)
    result = strategy.start(grid)
    results = {"config": dataclasses.asdict(cfg), **result.report}
    write_results(cfg.run.output_dir, results)
    return results
