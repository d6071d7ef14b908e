"""Checks of what a PATE node replies, before its content is used: each returns what is wrong, or "".

A malformed reply from a teacher node drops that node (the strategy logs the reason and reports it in
``dropped_nodes``); a malformed reply from the student stops the run naming it: the student supplies
every query, so there is nothing to fall back on. Both happen before the batch is fused or charged.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from flwr.app import Message

from protocol.pate import read_array
from strategies.ledger_sidecar import first_repeat
from strategies.rdp_analysis import validate_votes


def check_queries(x: np.ndarray, pos: np.ndarray, offset: int | None, count: int, pool_size: int,
                  n_classes: int, pinned_classes: int | None, *, asked: np.ndarray | None = None) -> str:
    """``""`` for a well-formed batch of query samples (asked: ``count`` from ``offset``, or with ``offset``
    None ``count`` the student chose: in the pool and none of the ``asked`` ones), else the problem.

    ``pinned_classes`` is the class count the student reported first (None before its first reply).
    Positions are the query ids the ledger charges and stores labels under: a repeated one would be
    charged once per appearance for one label, so repeats are named before the order rule.
    """
    if pinned_classes is not None and n_classes != pinned_classes:
        return f"n_classes changed from {pinned_classes} to {n_classes}"
    if n_classes < 2:
        return f"n_classes={n_classes}: a classifier needs >= 2 classes"
    if pool_size < 0:
        return f"pool_size={pool_size} is negative"
    if pos.ndim != 1 or len(pos) != len(x) or len(pos) > count:
        return f"positions of shape {pos.shape} do not match {len(x)} samples (asked for {count})"
    if not np.issubdtype(pos.dtype, np.integer):
        return f"positions must be integers, got dtype {pos.dtype}"
    repeat = first_repeat(pos)
    if repeat is not None:
        return (f"query ids must be distinct, got id {pos[repeat[0]]} at rows {repeat[0]} and {repeat[1]} "
                "(each appearance would be charged, for one label)")
    if offset is not None and len(pos) and not np.array_equal(pos, np.arange(offset, offset + len(pos))):
        return f"positions must be {offset}..{offset + len(pos) - 1} in order, got {pos[:5].tolist()}..."
    if offset is None and len(pos) and (pos.min() < 0 or pos.max() >= pool_size):
        return f"chosen positions must lie in [0, {pool_size}), got [{pos.min()}, {pos.max()}]"
    if offset is None and asked is not None and np.isin(pos, asked).any():
        return f"chosen position {pos[np.isin(pos, asked)][0]} was asked before (it would be charged twice)"
    if not np.issubdtype(x.dtype, np.floating) or (x.size and not np.isfinite(x).all()):
        return f"samples must be finite floats, got dtype {x.dtype} with non-finite values or not float"
    return ""


def check_histogram(
    reply: Message, n_queries: int, n_hosted: int, n_classes: int | None
) -> tuple[str, np.ndarray]:
    """``("", votes)`` for a valid ``(Q, C)`` vote histogram of a node hosting ``n_hosted`` teachers, else
    ``(problem, what was read)``.

    ``C`` is the class count the student reported with its queries. A row without votes from a node
    that hosts teachers is named (its teachers did not vote on that query).
    """
    try:
        votes = read_array(reply.content, "votes", "votes")
    except (KeyError, TypeError, ValueError) as err:
        return str(err), np.zeros(0)
    if votes.ndim != 2 or votes.shape[0] != n_queries:
        return f"expected shape ({n_queries}, C), got {votes.shape}", votes
    if votes.shape[1] < 2:
        return f"a vote histogram needs >= 2 class columns, got {votes.shape[1]}", votes
    if n_classes is not None and votes.shape[1] != n_classes:
        return f"expected {n_classes} class columns, got {votes.shape[1]}", votes
    if not np.issubdtype(votes.dtype, np.integer):
        nan = " with NaN" if votes.dtype.kind in "fc" and np.isnan(votes).any() else ""
        return f"counts must be non-negative integers, got dtype {votes.dtype}{nan}", votes
    if votes.min(initial=0) < 0:
        return f"counts must be non-negative integers, got {int(votes.min())}", votes
    sums = votes.sum(axis=1)
    if np.any(sums != n_hosted):
        row = int(np.flatnonzero(sums != n_hosted)[0])
        empty = " (all zero: none of them voted)" if sums[row] == 0 else ""
        problem = f"each row must sum to the node's {n_hosted} teachers; row {row} sums to {sums[row]}{empty}"
        return problem, votes
    return "", votes.astype(np.int64)


def check_batch(votes: np.ndarray, query_ids: np.ndarray) -> None:
    """Refuse a summed batch before it is fused or charged: distinct query ids, C >= 2, every row voted.

    The replies were checked node by node above; this holds the summed batch to the ledger's own rules,
    so that nothing is fused (and noise drawn) for a batch the ledger would refuse, or charged twice for
    one query id.

    Raises
    ------
    RuntimeError
        Naming the rule and the row or id.
    """
    repeat = first_repeat(query_ids)
    if repeat is not None:
        raise RuntimeError(f"refusing a batch before fusing or charging it: query id "
                           f"{query_ids[repeat[0]]} appears at rows {repeat[0]} and {repeat[1]}")
    try:
        validate_votes(votes)
    except ValueError as err:
        raise RuntimeError(f"refusing the batch of queries {query_ids[0]}..{query_ids[-1]} before fusing "
                           f"or charging it: {err}") from err


def prepared_pool_digest(replies: list[Message], student: int, timeout: float,
                         teachers_training: Sequence[int] = ()) -> str:
    """The SHA-256 of the student's pool from its reply to ``query.prepare``.

    ``query.prepare`` runs in the same step as ``train.teachers``; ``teachers_training`` are the teacher
    nodes that had not replied either when the step ran out of time. Then the teachers' training is what
    ran out of time: a simulation runs as many node messages at once as it has actors (one per CPU by
    default), so the student's preparation can wait behind the teachers' training.

    Raises
    ------
    RuntimeError
        If the student did not reply within ``timeout``, replied with an error, or sent no valid digest.
    """
    if not replies and teachers_training:
        raise RuntimeError(f"the teachers' training did not finish within {timeout:.0f} s "
                           f"(federation.timeout_s): no reply to train.teachers from teacher nodes "
                           f"{sorted(teachers_training)}, nor to query.prepare from student node {student}, "
                           "which runs in the same step (in a simulation it can wait for a free actor "
                           "behind the teachers); raise federation.timeout_s or train fewer teacher-epochs")
    if not replies:
        raise RuntimeError(f"student node {student} did not finish preparing its data within "
                           f"{timeout:.0f} s (federation.timeout_s)")
    if replies[0].has_error():
        raise RuntimeError(f"student node {student} failed to prepare its data: {replies[0].error.reason}")
    content = replies[0].content
    digest = content["prepared"].get("pool_sha256") if "prepared" in content else None
    if not isinstance(digest, str) or len(digest) != 64:
        raise RuntimeError(f"node {student} (student): malformed reply to query.prepare: pool_sha256 is "
                           f"{str(digest)[:80]!r}")
    return digest


def check_sites_agree(described: dict[int, Message], student: int, teacher_nodes: list[int]) -> None:
    """Every teacher node's samples must mean what the student's do: same input shape, feature schema and
    classes (from their ``query.describe`` replies).

    Raises
    ------
    RuntimeError
        Naming the first teacher node and setting that disagree, with both values.
    """
    reference = described[student].content["role"]
    for node in teacher_nodes:
        for key in ("input_shape", "feature_schema", "classes"):
            theirs, mine = reference.get(key), described[node].content["role"].get(key)
            if mine is None or mine != theirs:
                raise RuntimeError(f"node {node} (teacher) disagrees with student node {student} on "
                                   f"{key}: {str(mine)[:300]} vs the student's {str(theirs)[:300]}")
