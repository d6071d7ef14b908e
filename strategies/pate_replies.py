"""Checks of what a PATE node replies, before its content is used: each returns what is wrong, or "".

A malformed reply from a teacher node drops that node (the strategy logs the reason and reports it in
``dropped_nodes``); a malformed reply from the student stops the run naming it.
"""

from __future__ import annotations

import numpy as np
from flwr.app import Message

from protocol.pate import read_array


def check_queries(x: np.ndarray, pos: np.ndarray, offset: int, count: int, pool_size: int, n_classes: int,
                  pinned_classes: int | None) -> str:
    """``""`` for a well-formed batch of query samples (asked: ``count`` from ``offset``), else the problem.

    ``pinned_classes`` is the class count the student reported first (None before its first reply).
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
    if len(pos) and not np.array_equal(pos, np.arange(offset, offset + len(pos))):
        return f"positions must be {offset}..{offset + len(pos) - 1} in order, got {pos[:5].tolist()}..."
    if not np.issubdtype(x.dtype, np.floating) or (x.size and not np.isfinite(x).all()):
        return f"samples must be finite floats, got dtype {x.dtype} with non-finite values or not float"
    return ""


def check_histogram(
    reply: Message, n_queries: int, n_hosted: int, n_classes: int | None
) -> tuple[str, np.ndarray]:
    """``("", votes)`` for a valid ``(Q, C)`` vote histogram of a node hosting ``n_hosted`` teachers, else
    ``(problem, what was read)``.

    ``C`` is the class count the student reported with its queries.
    """
    try:
        votes = read_array(reply.content, "votes", "votes")
    except (KeyError, TypeError, ValueError) as err:
        return str(err), np.zeros(0)
    if votes.ndim != 2 or votes.shape[0] != n_queries:
        return f"expected shape ({n_queries}, C), got {votes.shape}", votes
    if n_classes is not None and votes.shape[1] != n_classes:
        return f"expected {n_classes} class columns, got {votes.shape[1]}", votes
    if not np.issubdtype(votes.dtype, np.integer):
        nan = " with NaN" if votes.dtype.kind in "fc" and np.isnan(votes).any() else ""
        return f"counts must be non-negative integers, got dtype {votes.dtype}{nan}", votes
    if votes.min(initial=0) < 0:
        return f"counts must be non-negative integers, got {int(votes.min())}", votes
    if np.any(votes.sum(axis=1) != n_hosted):
        return f"each row must sum to the node's {n_hosted} teachers", votes
    return "", votes.astype(np.int64)
