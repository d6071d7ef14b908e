"""EnsembleDistillation: PATE-style ensemble-label distillation as a Flower strategy.

Phases (Papernot et al. 2018, Section 2), driven by :meth:`EnsembleDistillation.start`:

1. *describe* — every node says its role (teacher nodes: which teachers they host; one student);
2. *teacher training* (``configure_train`` / ``aggregate_train``) — each teacher trains on its own
   disjoint shard, on its own node; in the same step, with the same timeout, the student prepares its
   data (``query.prepare``), so no step with a short timeout ever builds a dataset;
3. *queries* — batches of the student's unlabeled samples go to every teacher node (one message per
   node per batch); the server sums the nodes' vote histograms, fuses them with the configured
   mechanism (``strategies.fusion``) and charges the privacy ledger (``strategies.accounting``),
   which accepts only the prefix of a batch that fits the budget; answering stops at the budget
   (:mod:`strategies.pate_queries`). In pool order the student's next batch is requested in the same round
   as the current batch's votes (``pipeline_queries``), so a batch costs one round trip, not two;
4. *student training* (``configure_evaluate`` / ``aggregate_evaluate``) — the fused labels go to the
   student, which trains, evaluates and saves its model.

Faults: a teacher node that returns an error, a malformed histogram (e.g. a row without votes, fewer
than 2 classes), or no reply in time leaves the ensemble for the rest of the run (later histograms, and
so the accounting, count only the remaining teachers); below ``min_teachers`` teachers, or once the
mechanism's noise no longer fits the teachers that remain (:func:`strategies.fusion.noise_misfit`, checked
at ``describe`` against the hosted teachers and after every drop), the run stops with
:class:`EnsembleTooSmallError` before the next charge. A student failure, or a malformed query reply
(e.g. repeated query ids), stops the run. Every batch is checked once more before it is fused or charged
(distinct query ids, every row voted, C >= 2). The strategy never sees teacher data or per-teacher
predictions.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from logging import INFO, WARNING
from typing import Any

import numpy as np
from flwr.app import ArrayRecord, ConfigRecord, Message, MetricRecord, RecordDict
from flwr.common.logger import log
from flwr.serverapp import Grid
from flwr.serverapp.strategy import Strategy

from protocol.codec import to_record
from protocol.pate import (
    MSG_DESCRIBE,
    MSG_PREPARE_DATA,
    MSG_TRAIN_STUDENT,
    MSG_TRAIN_TEACHERS,
    ROLE_STUDENT,
    ROLE_TEACHER,
    DataSpec,
    ModelSpec,
    StudentSettings,
    TeacherSettings,
    array_record,
)
from strategies.fusion import noise_generator
from strategies.grid_utils import send_and_receive
from strategies.pate_queries import QueryPhase
from strategies.pate_replies import (
    check_sites_agree,
    prepared_pool_digest,
)
from strategies.pate_run import Ensemble, EnsembleTooSmallError, PateResult, ProgressEvent
from strategies.privacy_ledger import PrivacyLedger
from strategies.vote_release import VoteRelease, check_budget_basis


class EnsembleDistillation(QueryPhase, Strategy):
    """PATE ensemble-label distillation over Flower nodes.

    Parameters
    ----------
    mechanism : VoteRelease
        How the votes are gathered, fused and charged (:mod:`strategies.vote_release`): the central
        ``Majority`` (non-private), ``LNMax``, ``GNMax``, ``ConfidentGNMax`` (``strategies.fusion``), noise
        at the teachers under secure aggregation (``SecureVoting``) or local randomised response
        (``LocalRR``).
    ledger : PrivacyLedger or None
        The privacy ledger to charge (``PrivacyLedger.for_mechanism(mechanism, ...)``); required for every
        private mechanism, None for a non-private one (empty ``budget_bases``: Majority).
    data : DataSpec
        Dataset and split every node reconstructs.
    teacher_model, student_model : ModelSpec
        Architectures and local training settings.
    student : StudentSettings, optional
        Student-side options.
    teacher_training : TeacherSettings, optional
        How every teacher learns (default: supervised on its shard alone), sent with ``train.teachers``.
    query_batch_size : int (default: 128)
        Queries per message (one message per teacher node per batch).
    max_queries : int or None (default: None)
        Stop after this many queries were checked (None: the whole pool).
    min_teachers : int (default: 1)
        Stop with :class:`EnsembleTooSmallError` when fewer teachers remain.
    seed : int or None (default: None)
        None: the fusion noise comes from OS entropy (:func:`strategies.fusion.noise_generator`). An
        integer pins it, for tests and benchmarks only (a :class:`PrivacyWarning` says so).
    timeout : float (default: 600.0)
        Seconds to wait for the replies of a training step (teachers, student).
    step_timeout : float (default: 120.0)
        Seconds to wait for the replies of a quick step (describe, a query batch, a batch of votes):
        a node that vanished is dropped after this, not after ``timeout``.
    on_progress : callable, optional
        Called with a :class:`ProgressEvent` after each phase and each batch.
    resume : bool (default: False)
        Continue a run that stopped after charges: the queries ``ledger`` already charged are not asked
        again, and the labels stored with their charges go to the student with the new ones.
    pipeline_queries : bool (default: True)
        Request the student's next batch (in pool order) in the same round as the current batch's votes:
        one round trip per batch instead of two. The same queries, charges and labels; the server may hold
        one batch of the student's samples that no teacher is asked about (:mod:`strategies.pate_queries`).
        False: each request waits for the previous batch's charge.
    """

    def __init__(
        self,
        *,
        mechanism: VoteRelease,
        ledger: PrivacyLedger | None,
        data: DataSpec,
        teacher_model: ModelSpec,
        student_model: ModelSpec,
        student: StudentSettings | None = None,
        teacher_training: TeacherSettings | None = None,
        query_batch_size: int = 128,
        max_queries: int | None = None,
        min_teachers: int = 1,
        seed: int | None = None,
        timeout: float = 600.0,
        step_timeout: float = 120.0,
        on_progress: Callable[[ProgressEvent], None] | None = None,
        resume: bool = False,
        pipeline_queries: bool = True,
    ) -> None:
        if (not mechanism.budget_bases) != (ledger is None):
            raise ValueError("a ledger is required for every private mechanism, and Majority (non-private) "
                             f"takes none; got {type(mechanism).__name__} with ledger={ledger!r}")
        if ledger is not None:
            ledger.check_mechanism(mechanism)  # name and every noise parameter (σ, σ1, T, γ, ε0)
            check_budget_basis(mechanism, ledger.budget_on)  # e.g. noise no one sees: data-independent
        if query_batch_size < 1:
            raise ValueError(f"query_batch_size must be >= 1, got {query_batch_size}")
        if max_queries is not None and max_queries < 1:
            raise ValueError(f"max_queries must be >= 1 or None, got {max_queries}")
        if not 1 <= min_teachers <= data.num_teachers:
            raise ValueError(f"min_teachers must be in [1, {data.num_teachers}], got {min_teachers}")
        self.mechanism = mechanism
        self.ledger = ledger
        self.data = data
        self.teacher_model = teacher_model
        self.student_model = student_model
        self.student = student or StudentSettings()
        self.teacher_training = teacher_training or TeacherSettings()
        self.query_batch_size = query_batch_size
        self.max_queries = max_queries
        self.min_teachers = min_teachers
        self.timeout = timeout
        self.step_timeout = step_timeout
        self.on_progress = on_progress
        self.resume = resume
        self.pipeline_queries = pipeline_queries
        self._rng = noise_generator(seed)
        self._ensemble: Ensemble | None = None
        self._n_classes: int | None = None  # pinned by the student's first query reply
        self._teacher_metrics: dict[int, dict[str, float]] = {}
        self._student_metrics: dict[str, float] = {}
        self._released: dict[str, Any] | None = None  # the data-dependent ε's release, once made ({}: none)
        if ledger is not None:
            mechanism.bind(ledger)  # e.g. SecureVoting aggregates only what the budget pays for

    # -- Flower's five hooks ------------------------------------------------------------------------

    def summary(self) -> None:
        """Log the strategy's configuration."""
        log(INFO, "EnsembleDistillation: mechanism=%s, %d teachers, batch=%d, max_queries=%s, "
            "min_teachers=%d, dataset=%s", self.mechanism, self.data.num_teachers,
            self.query_batch_size, self.max_queries, self.min_teachers, self.data.dataset)

    def configure_train(
        self, server_round: int, arrays: ArrayRecord, config: ConfigRecord, grid: Grid
    ) -> Iterable[Message]:
        """One ``train.teachers`` message per teacher node."""
        ensemble = self._require_ensemble()
        return [self._message(node, MSG_TRAIN_TEACHERS, model=to_record(self.teacher_model),
                              teacher_training=to_record(self.teacher_training))
                for node in sorted(ensemble.teacher_hosts)]

    def aggregate_train(
        self, server_round: int, replies: Iterable[Message]
    ) -> tuple[ArrayRecord | None, MetricRecord | None]:
        """Record each teacher's metrics; drop nodes that failed. No model is aggregated."""
        ensemble = self._require_ensemble()
        by_node = self._collect(replies, set(ensemble.teacher_hosts), "teacher training")
        for node, reply in by_node.items():
            metrics = reply.content["metrics"]
            for t, acc, size in zip(metrics["teacher_ids"], metrics["test_accuracy"], metrics["train_size"],
                                    strict=True):
                self._teacher_metrics[int(t)] = {"test_accuracy": float(acc), "train_size": int(size),
                                                 "node": node}
        self._check_ensemble_size()
        accs = [m["test_accuracy"] for m in self._teacher_metrics.values()]
        return None, MetricRecord({"teachers": len(accs), "mean_teacher_accuracy": float(np.mean(accs))})

    def configure_evaluate(
        self, server_round: int, arrays: ArrayRecord, config: ConfigRecord, grid: Grid
    ) -> Iterable[Message]:
        """The ``train.student`` message: fused labels (in ``arrays``) plus the privacy bill (``config``)."""
        ensemble = self._require_ensemble()
        msg = self._message(ensemble.student, MSG_TRAIN_STUDENT, model=to_record(self.student_model),
                            labels=arrays, student=to_record(self.student),
                            privacy=ConfigRecord(dict(config)))
        return [msg]

    def aggregate_evaluate(self, server_round: int, replies: Iterable[Message]) -> MetricRecord | None:
        """The student's metrics; a student failure ends the run."""
        ensemble = self._require_ensemble()
        replies = list(replies)
        reply = next((r for r in replies if r.metadata.src_node_id == ensemble.student), None)
        if reply is None:
            raise RuntimeError(f"student node {ensemble.student} did not reply to {MSG_TRAIN_STUDENT} "
                               f"within {self.timeout:.0f} s")
        if reply.has_error():
            raise RuntimeError(f"student node {ensemble.student} failed to train: {reply.error.reason}")
        self._student_metrics = {k: float(v) for k, v in reply.content["metrics"].items()}
        return MetricRecord(self._student_metrics)

    # -- the phases ---------------------------------------------------------------------------------

    def start(  # type: ignore[override]
        self,
        grid: Grid,
        initial_arrays: ArrayRecord | None = None,
        num_rounds: int = 1,
        timeout: float | None = None,
        train_config: ConfigRecord | None = None,
        evaluate_config: ConfigRecord | None = None,
        evaluate_fn: Callable[[int, ArrayRecord], MetricRecord | None] | None = None,
    ) -> PateResult:
        """Run the four phases once; ``num_rounds`` must be 1 (PATE has no global-model rounds).

        Raises
        ------
        EnsembleTooSmallError
            If failures leave fewer than ``min_teachers`` teachers.
        RuntimeError
            If the nodes do not form one student plus teachers covering the run, or the student fails.
        BudgetExhaustedError
            If the ledger was already exhausted when the run started.
        """
        if num_rounds != 1:
            raise ValueError(f"EnsembleDistillation runs its phases once: num_rounds must be 1, "
                             f"got {num_rounds}")
        if timeout is not None:
            self.timeout = timeout
        t0 = time.monotonic()
        self.summary()
        result = PateResult()
        self._ensemble = self._describe(grid)
        self._emit("teacher training")
        student = self._ensemble.student
        replies = send_and_receive(grid,   # the student prepares its data while the teachers train
            [*self.configure_train(1, ArrayRecord(), ConfigRecord(), grid),
             self._message(student, MSG_PREPARE_DATA)], timeout=self.timeout)
        replied = {r.metadata.src_node_id for r in replies}
        self._check_prepared([r for r in replies if r.metadata.src_node_id == student],
                             sorted(set(self._ensemble.teacher_hosts) - replied))
        _, train_metrics = self.aggregate_train(1, [r for r in replies if r.metadata.src_node_id != student])
        if train_metrics is not None:
            result.train_metrics_clientapp[1] = train_metrics

        positions, labels, pool_size, checked = self._query_phase(grid)

        if len(labels) == 0:
            raise RuntimeError(f"no query was answered ({checked} checked): the privacy budget or the "
                               "threshold left the student nothing to learn from")
        self._emit("student training", checked, len(labels), pool_size)
        bill = self._privacy_bill()
        student_replies = send_and_receive(grid,
            self.configure_evaluate(1, array_record(positions=positions, labels=labels),
                                    ConfigRecord(bill), grid), timeout=self.timeout)
        eval_metrics = self.aggregate_evaluate(1, student_replies)
        if eval_metrics is not None:
            result.evaluate_metrics_clientapp[1] = eval_metrics
        self._emit("done", checked, len(labels), pool_size)
        result.report = self.report(queries_checked=checked, answered=len(labels), pool_size=pool_size,
                                    wall_s=time.monotonic() - t0)
        return result

    def _check_prepared(self, replies: list[Message], teachers_training: list[int]) -> None:
        """The student's reply to ``query.prepare``: its data is ready (else the run stops naming why, and
        names the ``teachers_training`` that had not replied either), and the ledger is bound to its pool
        before any charge (its paid labels belong to that pool only)."""
        digest = prepared_pool_digest(replies, self._require_ensemble().student, self.timeout,
                                      teachers_training)
        if self.ledger is not None:
            self.ledger.bind_pool(digest)

    def _describe(self, grid: Grid) -> Ensemble:
        """Ask every connected node its role; check one student, a teacher covering the run, and that every
        node's samples have the student's input shape, feature schema and classes."""
        nodes = sorted(grid.get_node_ids())
        replies = send_and_receive(grid, [self._message(n, MSG_DESCRIBE) for n in nodes],
                                        timeout=self.step_timeout)
        hosts: dict[int, list[int]] = {}
        students: list[int] = []
        answered = {r.metadata.src_node_id: r for r in replies if not r.has_error()}
        errors = {r.metadata.src_node_id: r.error.reason for r in replies if r.has_error()}
        if errors and any(str(r.content["role"]["role"]) == ROLE_STUDENT for r in answered.values()):
            node = min(errors)  # a misconfigured node is fixed, not ridden out: before anything trains
            raise RuntimeError(f"node {node} could not describe itself: {errors[node]}; a node that fails "
                               "before the run starts stops it (fix its node_config or data file, or leave "
                               "it out of the federation): nothing was trained or charged")
        dropped = {n: f"describe failed: {errors[n]}" if n in errors else "no usable reply to describe"
                   for n in nodes if n not in answered}
        for node, reason in dropped.items():
            log(WARNING, "node %d takes no part in this run: %s", node, reason)
        for node, reply in answered.items():
            role = str(reply.content["role"]["role"])
            if role == ROLE_STUDENT:
                students.append(node)
            elif role == ROLE_TEACHER:
                hosts[node] = [int(t) for t in reply.content["role"]["teachers"]]
        if len(students) != 1:
            failed = f"; nodes that could not describe themselves: {dropped}" if dropped else ""
            raise RuntimeError(f"a PATE run needs exactly one student node, found {len(students)}{failed}")
        check_sites_agree(answered, students[0], sorted(hosts))
        hosted = sorted(t for ts in hosts.values() for t in ts)
        if len(hosted) != len(set(hosted)):
            twice = sorted({t for t in hosted if hosted.count(t) > 1})
            raise RuntimeError(f"teachers {twice} are hosted by more than one node: "
                               "each teacher must vote once")
        missing = sorted(set(range(self.data.num_teachers)) - set(hosted))
        if missing:
            log(WARNING, "teachers %s are not hosted by any connected node; the ensemble has %d of %d",
                missing, len(hosted), self.data.num_teachers)
        ensemble = Ensemble(student=students[0], teacher_hosts=hosts, dropped=dropped)
        self._ensemble = ensemble
        self._check_ensemble_size()
        return ensemble

    # -- bookkeeping --------------------------------------------------------------------------------

    def _message(self, node: int, message_type: str, **records: Any) -> Message:
        content = RecordDict({"data": to_record(self.data), **records})
        return Message(content, dst_node_id=node, message_type=message_type)

    def _collect(
        self, replies: Iterable[Message], expected: set[int], step: str, timeout: float | None = None
    ) -> dict[int, Message]:
        """Map node -> successful reply; nodes with an error or no reply leave the ensemble."""
        good: dict[int, Message] = {}
        failed: dict[int, str] = {}
        unattributed: list[str] = []  # errors the SuperLink sends for a vanished node come from itself
        for reply in replies:
            node = reply.metadata.src_node_id
            if node not in expected:
                if reply.has_error():
                    unattributed.append(reply.error.reason)
                continue
            if reply.has_error():
                failed[node] = f"error in {step}: {reply.error.reason}"
            else:
                good[node] = reply
        silent = sorted(expected - set(good) - set(failed))
        for node in silent:
            failed[node] = f"no reply to {step} within {timeout or self.timeout:.0f} s"
        if len(silent) == 1 and len(unattributed) == 1:
            failed[silent[0]] = f"error in {step} (reported by the SuperLink): {unattributed[0]}"
        for node, reason in failed.items():
            self._drop(node, reason)
        return good

    def _drop(self, node: int, reason: str) -> None:
        ensemble = self._require_ensemble()
        if node == ensemble.student:
            raise RuntimeError(f"student node {node} failed: {reason}")
        teachers = ensemble.teacher_hosts.pop(node, [])
        ensemble.dropped[node] = reason
        log(WARNING, "teacher node %d (teachers %s) leaves the ensemble: %s", node, teachers, reason)

    def _check_ensemble_size(self) -> None:
        """Stop before the next charge if the ensemble is below ``min_teachers`` or its noise's scale.

        Called after ``describe`` (against the teachers the nodes host, which may be fewer than
        ``data.num_teachers``) and after every step that may drop a node (with the noise at the teachers,
        before each batch: see ``SecureVoting.gather``). The noise rule (:meth:`VoteRelease.misfit`, e.g.
        :func:`strategies.fusion.noise_misfit`): a threshold or noise scale meant relative to the
        ensemble that n teachers cannot reach would have every later query charged for (almost) no
        answer or a label the noise decides.
        """
        ensemble = self._require_ensemble()
        n = ensemble.num_teachers
        if n < self.min_teachers:
            raise EnsembleTooSmallError(
                f"only {n} teachers remain (min_teachers={self.min_teachers}); "
                f"dropped nodes: {ensemble.dropped}")
        misfit = self.mechanism.misfit(n)  # None for Majority (no noise) and LocalRR (ε0 is per vote)
        if misfit is not None:
            raise EnsembleTooSmallError(
                f"the noise of {self.mechanism.name} does not fit the ensemble's {n} teachers ("
                f"data.num_teachers="
                f"{self.data.num_teachers}): {misfit[1]}; dropped nodes: {ensemble.dropped}")

    def _require_ensemble(self) -> Ensemble:
        if self._ensemble is None:
            raise RuntimeError("the ensemble is unknown: start() describes the nodes first")
        return self._ensemble

    def _privacy_bill(self) -> dict[str, float | str]:
        """The ε the run spent; on first call after the query phase, also releases the data-dependent ε.

        The release is the mechanism's (:meth:`VoteRelease.release_epsilon`: [P18]'s smooth-sensitivity
        mechanism, ``PrivacyLedger.release``, for GNMax and Confident-GNMax), done once per run with a
        generator spawned from the strategy seed; a release the analysis refuses (e.g. conditions C5-C6
        fail) is logged and reported as ``{"error": ...}``.
        """
        bill: dict[str, float | str] = {"mechanism": self.mechanism.name}
        if self.ledger is not None:
            eps = self.ledger.epsilon()
            bill.update(epsilon_data_dependent=eps["data_dependent"],
                        epsilon_data_independent=eps["data_independent"],
                        delta=self.ledger.delta)
            if self._released is None:
                try:
                    self._released = self.mechanism.release_epsilon(self.ledger, self._rng.spawn(1)[0]) or {}
                except ValueError as err:
                    log(WARNING, "smooth-sensitivity release of the data-dependent ε refused: %s", err)
                    self._released = {"error": str(err)}
            if "epsilon_released" in self._released:
                bill.update(epsilon_released=self._released["epsilon_released"],
                            epsilon_released_draw=self._released["epsilon_released_draw"])
        return bill

    def _emit(self, phase: str, checked: int = 0, answered: int = 0, pool_size: int = 0) -> None:
        if self.on_progress is None:
            return
        eps = self.ledger.epsilon()["data_dependent"] if self.ledger is not None else float("inf")
        self.on_progress(ProgressEvent(phase, checked, answered, pool_size, eps))

    def report(self, *, queries_checked: int, answered: int, pool_size: int, wall_s: float) -> dict[str, Any]:
        """Everything a results file needs about the run (no raw data, no per-query labels)."""
        ensemble = self._require_ensemble()
        eps = self.ledger.epsilon() if self.ledger is not None else None
        if self.ledger is not None and self.ledger.queries_checked and self._released is None:
            self._privacy_bill()  # the smooth-sensitivity release happens once, when the ε is billed
        released: dict[str, Any] = self._released or {}
        return {
            "mechanism": self.mechanism.name,
            "teachers": {str(t): m for t, m in sorted(self._teacher_metrics.items())},
            "teachers_remaining": ensemble.num_teachers,
            "dropped_nodes": {str(k): v for k, v in ensemble.dropped.items()},
            "pool_size": pool_size,
            "queries_checked": queries_checked,
            "answered": answered,
            "epsilon_data_dependent": eps["data_dependent"] if eps else float("inf"),
            "epsilon_data_independent": eps["data_independent"] if eps else float("inf"),
            "best_order_data_dependent": eps["best_order_data_dependent"] if eps else None,
            "epsilon_released": released.get("epsilon_released"),
            "epsilon_released_std": released.get("epsilon_released_std"),
            "epsilon_released_draw": released.get("epsilon_released_draw"),
            "smooth_sensitivity": released.get("smooth_sensitivity",
                                               {"error": released["error"]} if "error" in released else None),
            "delta": self.ledger.delta if self.ledger is not None else None,
            "ledger_path": str(self.ledger.path) if self.ledger is not None and self.ledger.path else None,
            "student": dict(self._student_metrics),
            "wall_s": wall_s,
            **(self.mechanism.report(self.ledger.delta) if self.ledger is not None else {}),
        }
