"""The query phase of :class:`strategies.ensemble_distillation.EnsembleDistillation` (a mixin, state set
by the strategy): batches of the student's pool, in pool order or the student's choice, go to every
teacher node; the summed vote histograms are fused and charged to the ledger until the pool,
``max_queries`` or the budget ends. A resumed run first takes what its ledger already paid for.

Pipelining (issue 27 §3; ``pipeline_queries``, on by default): when the next batch's request does not depend
on the answers to the current one (pool order, and the pool-order part of ``uncertainty``:
:func:`protocol.pate.asks_in_pool_order`), the student's ``query.queries`` request for batch b+1 goes out in
the same round as the teachers' ``query.votes`` of batch b, so in a deployment a batch costs one round
trip, not two. The prefetched reply is read and checked only when its batch is due, and only if its request
is the very one sequential order would send then; when the run stops first (budget, ``max_queries``, pool),
it is dropped unread. Privacy: the server may hold one batch of the student's samples that is never voted on
(the student's samples reach the server whenever it asks, voted on or not); teachers see no query that
sequential order would not send them, and nothing more is charged. With the noise at the teachers
(``SecureVoting``), whose gather runs secure-aggregation steps rather than a plain round, the request is not
sent early: that path stays sequential.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from logging import INFO
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np
from flwr.app import ConfigRecord, Message
from flwr.common.logger import log
from flwr.serverapp import Grid

from protocol.codec import to_record
from protocol.pate import (
    MSG_NEXT_QUERIES,
    MSG_VOTES,
    ModelSpec,
    StudentSettings,
    array_record,
    asks_in_pool_order,
    read_array,
)
from strategies.grid_utils import send_and_receive
from strategies.pate_replies import check_batch, check_histogram, check_queries
from strategies.pate_run import Ensemble
from strategies.privacy_ledger import PrivacyLedger
from strategies.vote_release import Ballot, VoteRelease


@dataclass
class QueryRider:
    """The student's ``query.queries`` request for the next batch, in pool order, sent with the current
    batch's ``query.votes`` round (module docstring).

    ``sent`` once a plain round carried ``message``; ``reply`` is then the student's reply to it (or the
    SuperLink's error for it), None if none came in time; the reply is read only when its batch is due.
    """

    message: Message
    offset: int
    count: int
    sent: bool = False
    reply: Message | None = None

    def take_reply(self, replies: list[Message], student: int) -> list[Message]:
        """Keep the reply to :attr:`message` among a round's ``replies``; return the others.

        A reply is the student's, or one whose ``reply_to_message_id`` is the request's (the SuperLink
        answers for a node that went away; a grid that pushes messages gives them their ids).
        """
        request_id = self.message.metadata.message_id
        others = []
        for reply in replies:
            if reply.metadata.src_node_id == student or (
                    request_id and reply.metadata.reply_to_message_id == request_id):
                self.reply = reply
            else:
                others.append(reply)
        return others


class QueryHost(Protocol):
    """What :class:`QueryPhase` needs from the strategy it is mixed into
    (:class:`strategies.ensemble_distillation.EnsembleDistillation`): its settings, its state and its
    bookkeeping."""

    mechanism: VoteRelease
    ledger: PrivacyLedger | None
    teacher_model: ModelSpec
    student_model: ModelSpec
    student: StudentSettings
    query_batch_size: int
    max_queries: int | None
    step_timeout: float
    resume: bool
    pipeline_queries: bool
    _rng: np.random.Generator

    def _require_ensemble(self) -> Ensemble:
        """The ensemble the nodes described; raises before they did."""

    def _message(self, node: int, message_type: str, **records: Any) -> Message:
        """A message of ``message_type`` to ``node`` with the strategy's data settings and ``records``."""

    def _collect(
        self, replies: Iterable[Message], expected: set[int], step: str, timeout: float | None = None
    ) -> dict[int, Message]:
        """Map node -> successful reply; nodes with an error or no reply leave the ensemble."""

    def _drop(self, node: int, reason: str) -> None:
        """``node`` leaves the ensemble for ``reason`` (the student's failure ends the run)."""

    def _check_ensemble_size(self) -> None:
        """Stop before the next charge if the ensemble is below ``min_teachers`` or its noise's scale."""

    def _emit(self, phase: str, checked: int = 0, answered: int = 0, pool_size: int = 0) -> None:
        """Report progress (``phase``, queries checked and answered, pool size) to ``on_progress``, if set."""


if TYPE_CHECKING:
    _Host = QueryHost  # type checkers see the host's members on ``self``
else:
    _Host = object  # at run time the mixin has no base: the host class supplies them


class QueryPhase(_Host):
    """:meth:`_query_phase` and the steps it takes: fetch a batch of queries, gather their votes.

    Mixed into a :class:`QueryHost`, whose settings, state and bookkeeping it uses.
    """

    _n_classes: int | None  # pinned by the student's first query reply (the host starts it at None)

    # -- the query phase ----------------------------------------------------------------------------

    def _query_phase(self, grid: Grid) -> tuple[np.ndarray, np.ndarray, int, int]:
        """Label the student's pool batch by batch until the pool, ``max_queries`` or the budget ends.

        The batches follow the pool's order, or, with ``student.query_selection = uncertainty``, after the
        first ``selection_warmup`` the student's choice (:meth:`_next_queries`). With ``pipeline_queries``
        the next batch's request rides with the current batch's votes where it can (:meth:`_query_rider`;
        module docstring). Returns the answered pool positions, their fused labels, the pool size and the
        number of queries checked.
        """
        ensemble = self._require_ensemble()
        asked = np.zeros(0, dtype=np.int64)
        positions = np.zeros(0, dtype=np.int64)
        labels = np.zeros(0, dtype=np.int64)
        pool_size: int | None = None
        if self.resume and self.ledger is not None:
            asked, positions, labels = self._resumed()
        self._emit("querying", len(asked), len(labels))
        rider: QueryRider | None = None
        while pool_size is None or len(asked) < self._query_end(pool_size):
            so_far = (asked, positions, labels)
            batch_x, batch_pos, pool_size = self._next_queries(grid, ensemble.student,
                                                               self._batch_count(len(asked)), so_far, rider)
            if len(batch_pos) == 0 or (self.resume and self.ledger is not None and self.ledger.exhausted):
                break  # the pool is done, or a resumed run's ledger was already exhausted
            rider = self._query_rider(ensemble.student, batch_pos, so_far, pool_size)
            votes = self._gather_votes(grid, batch_x, rider)
            check_batch(votes, batch_pos)
            fused = self.mechanism.fuse(votes, self._rng)
            n_keep, exhausted = len(fused), False
            if self.ledger is not None:
                charge = self.ledger.charge(votes, fused.answered, labels=fused.labels, query_ids=batch_pos)
                n_keep, exhausted = charge.n_accepted, charge.exhausted
            kept = fused.answered[:n_keep]
            asked = np.concatenate([asked, batch_pos[:n_keep]])
            positions = np.concatenate([positions, batch_pos[:n_keep][kept]])
            labels = np.concatenate([labels, fused.labels[:n_keep][kept]])
            self._emit("queries", len(asked), len(labels), pool_size)
            if exhausted:
                log(INFO, "privacy budget reached after %d checked / %d answered queries", len(asked),
                    len(labels))
                break
        return positions.astype(np.int64), labels.astype(np.int64), int(pool_size or 0), len(asked)

    def _resumed(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """What earlier runs on this ledger paid for: (the asked positions, answered positions, labels).

        Every query a resumed ledger charged must be a pool position of this run, charged with its label;
        in pool order these are 0, 1, ..., n - 1; with the student's choice (``uncertainty``), distinct
        positions. Those queries are not asked again and their stored labels are used as they are, so
        nothing is charged twice.

        Raises
        ------
        RuntimeError
            If the ledger holds charges that are not this strategy's pool positions (charged without
            labels, out of order in pool order, or by another kind of run).
        """
        assert self.ledger is not None
        asked = np.asarray(self.ledger.charged_query_ids, dtype=np.int64)
        in_order = np.array_equal(asked, np.arange(len(asked)))
        chosen = self.student.query_selection == "uncertainty" and len(np.unique(asked)) == len(asked) and (
            not len(asked) or asked.min() >= 0)
        if not (in_order or chosen):
            rule = "distinct pool positions" if self.student.query_selection == "uncertainty" else (
                "pool positions 0..n-1")
            raise RuntimeError(f"cannot resume from ledger {self.ledger.path}: its {len(asked)} charged "
                               f"queries are not {rule} charged with their labels")
        paid_positions, paid_labels = self.ledger.paid_labels()
        if len(asked):
            log(INFO, "resuming: %d queries already checked, %d answered; their labels are reused",
                len(asked), len(paid_labels))
        return asked, np.asarray(paid_positions, dtype=np.int64), np.asarray(paid_labels, dtype=np.int64)

    def _query_end(self, pool_size: int) -> int:
        """How many queries the run checks at most: the pool's size, or ``max_queries`` if smaller."""
        return min(pool_size, self.max_queries or pool_size)

    def _batch_count(self, n_asked: int) -> int:
        """The size of the batch to request once ``n_asked`` queries were checked."""
        limit = self.max_queries
        return self.query_batch_size if limit is None else min(self.query_batch_size, limit - n_asked)

    def _in_pool_order(self, asked: np.ndarray, n_answered: int) -> bool:
        """Whether the request after ``asked`` (``n_answered`` of them answered) names a pool offset."""
        return self.student.query_selection == "pool_order" or asks_in_pool_order(
            asked, n_answered, self.student.selection_warmup, self._n_classes)

    def _query_rider(self, student: int, batch_pos: np.ndarray,
                     so_far: tuple[np.ndarray, np.ndarray, np.ndarray], pool_size: int) -> QueryRider | None:
        """The request for the batch after ``batch_pos``, if it can be sent before that batch's answers.

        None without ``pipeline_queries``; when the pool (``pool_size``, from this batch's reply) or
        ``max_queries`` ends with this batch; or when the student may choose next. The next request names a
        pool offset whatever this batch's answers if it does with all of them answered: fewer answers never
        turn pool order into a choice (:func:`protocol.pate.asks_in_pool_order`). The offset assumes the
        whole batch is charged: a batch the budget cuts ends the run.
        """
        asked, positions, _ = so_far
        after = np.concatenate([asked, batch_pos])
        if (not self.pipeline_queries or len(after) >= self._query_end(pool_size)
                or not self._in_pool_order(after, len(positions) + len(batch_pos))):
            return None
        offset, count = len(after), self._batch_count(len(after))
        return QueryRider(self._query_message(student, offset, count, so_far), offset, count)

    def _query_message(self, student: int, offset: int | None, count: int,
                       so_far: tuple[np.ndarray, np.ndarray, np.ndarray]) -> Message:
        """A ``query.queries`` request: ``count`` samples from pool ``offset``, or (None) the student's choice
        given the answers ``so_far`` (asked positions, answered positions, labels)."""
        if offset is not None:
            return self._message(student, MSG_NEXT_QUERIES, request=ConfigRecord({"offset": offset,
                                                                                  "count": count}))
        asked, positions, labels = so_far
        return self._message(student, MSG_NEXT_QUERIES,
                             request=ConfigRecord({"count": count, "select": "margin"}),
                             chosen=array_record(asked=asked, positions=positions, labels=labels),
                             model=to_record(self.student_model), student=to_record(self.student))

    def _next_queries(
        self, grid: Grid, student: int, count: int, so_far: tuple[np.ndarray, np.ndarray, np.ndarray],
        rider: QueryRider | None = None,
    ) -> tuple[np.ndarray, np.ndarray, int]:
        """The next ``count`` query samples, their pool positions and the pool size.

        In pool order (and while the asked positions are the pool's first ones, fewer than
        ``selection_warmup`` or too few of them answered: :func:`protocol.pate.asks_in_pool_order`) the
        request names an offset; else the student chooses, from the answers ``so_far`` (asked positions,
        answered positions, labels; :mod:`clients.pate.query_selection`). If a ``rider`` carrying this very
        request was sent with the last votes, its reply is taken instead of asking again; either reply is
        checked the same way (its ``pool_size`` too counts from here on, as that of a request sent now).
        """
        asked, positions, _ = so_far
        offset = len(asked) if self._in_pool_order(asked, len(positions)) else None
        if rider is not None and rider.sent and (rider.offset, rider.count) == (offset, count):
            reply = rider.reply
        else:
            message = self._query_message(student, offset, count, so_far)
            reply = next(iter(send_and_receive(grid, [message], timeout=self.step_timeout)), None)
        if reply is None or reply.has_error():
            reason = "no reply" if reply is None else reply.error.reason
            raise RuntimeError(f"student node {student} failed to supply queries: {reason}")
        try:
            x = read_array(reply.content, "queries", "x")
            pos = read_array(reply.content, "queries", "positions")
            meta = reply.content["meta"]
            pool_size, n_classes = int(meta["pool_size"]), int(meta["n_classes"])
        except (KeyError, TypeError, ValueError) as err:
            raise RuntimeError(f"node {student} (student): malformed query reply: {err!r}") from err
        problem = check_queries(x, pos, offset, count, pool_size, n_classes, self._n_classes, asked=asked)
        if problem:
            raise RuntimeError(f"node {student} (student): malformed query reply: {problem}")
        self._n_classes = n_classes
        return x, pos.astype(np.int64), pool_size

    def _gather_votes(self, grid: Grid, batch_x: np.ndarray, rider: QueryRider | None = None) -> np.ndarray:
        """The votes of one batch of queries, as the mechanism gathers them (:meth:`VoteRelease.gather`);
        the ``rider`` goes with its first plain round, if it makes one (``SecureVoting`` does not)."""
        ensemble = self._require_ensemble()
        ballot = Ballot(grid=grid, make_message=self._message, hosts=ensemble.teacher_hosts, drop=self._drop,
                        model=to_record(self.teacher_model), n_classes=int(self._n_classes),
                        timeout=self.step_timeout,
                        count_votes=lambda x, records: self._count_votes(grid, x, records, rider),
                        check_ensemble=self._check_ensemble_size)
        return self.mechanism.gather(ballot, batch_x)

    def _count_votes(self, grid: Grid, batch_x: np.ndarray, records: dict[str, ConfigRecord],
                     rider: QueryRider | None = None) -> np.ndarray:
        """Sum the vote histograms of all remaining teacher nodes for one batch (``records`` added to each
        request); a node whose reply is malformed leaves the ensemble, which is checked after the round.

        A ``rider`` not sent yet goes in the same round; its reply is set aside, unread, for
        :meth:`_next_queries`.
        """
        ensemble = self._require_ensemble()
        queries = array_record(x=batch_x)
        model = to_record(self.teacher_model)
        msgs = [self._message(node, MSG_VOTES, model=model, queries=queries, **records)
                for node in sorted(ensemble.teacher_hosts)]
        riding = rider if rider is not None and not rider.sent else None
        if riding is not None:
            msgs.append(riding.message)
            riding.sent = True
        replies = send_and_receive(grid, msgs, timeout=self.step_timeout)
        if riding is not None:
            replies = riding.take_reply(replies, ensemble.student)
        by_node = self._collect(replies, set(ensemble.teacher_hosts), "voting", self.step_timeout)
        total = np.zeros((len(batch_x), 0), dtype=np.int64)
        for node, reply in sorted(by_node.items()):
            problem, votes = check_histogram(reply, len(batch_x), len(ensemble.teacher_hosts[node]),
                                             self._n_classes)
            if problem:
                self._drop(node, f"malformed vote histogram: {problem}")
                continue
            total = votes if total.shape[1] == 0 else total + votes
        self._check_ensemble_size()
        return total
