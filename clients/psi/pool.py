"""How the PSI's work is cut and run: the process pool of the hot loops, task slices, payload chunks.

Both backends (:mod:`clients.psi.fnp_receiver`, :mod:`clients.psi.fnp_sender`, :mod:`clients.psi.ecdh`)
run their hot loops through :func:`pool_map` over the slices :func:`work_slices` cuts, in the pool
:func:`process_pool` opens, and cut every fixed-width stream (ciphertexts, points) into bounded message
chunks with :func:`split_chunks`. Every function here that takes ``pool`` accepts ``None``: work in this
process.
"""

from __future__ import annotations

import math
import multiprocessing
import os
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import Executor, ProcessPoolExecutor
from contextlib import contextmanager
from typing import TypeVar

TASKS_PER_WORKER = 4
"""Tasks per pool worker: enough to even out uneven tasks, few enough to keep pickling cheap."""

PRELOAD = ["clients.psi"]
"""Modules the fork server imports before it forks pool workers (the hot loops and their libraries)."""

T = TypeVar("T")
R = TypeVar("R")

__all__ = [
    "PRELOAD",
    "TASKS_PER_WORKER",
    "flatten",
    "pool_map",
    "pool_size",
    "process_pool",
    "resolve_workers",
    "split_chunks",
    "work_slices",
]


def resolve_workers(workers: int | None) -> int:
    """``None`` → one worker per core (``os.cpu_count()``); otherwise ``workers`` (>= 1)."""
    if workers is None:
        return os.cpu_count() or 1
    if workers < 1:
        raise ValueError(f"workers must be >= 1, got {workers}")
    return workers


@contextmanager
def process_pool(workers: int | None = None) -> Iterator[Executor | None]:
    """A process pool for the PSI hot loops, or ``None`` (work in this process) for one worker.

    Uses the ``forkserver`` start method: the pool may be opened inside threaded hosts (Ray actors,
    Flower's SuperNode) where ``fork`` is unsafe. The fork server imports :data:`PRELOAD` once, so a
    worker starts without importing the PSI modules again (≈ 0.2 s of CPU per worker otherwise, paid at
    every pool: a Flower handler opens one per chunk). Every PSI function that takes ``pool`` accepts
    ``None``.
    """
    count = resolve_workers(workers)
    if count == 1:
        yield None
        return
    context = multiprocessing.get_context("forkserver")
    context.set_forkserver_preload(PRELOAD)  # no effect once the fork server runs
    with ProcessPoolExecutor(max_workers=count, mp_context=context) as pool:
        yield pool


def pool_size(pool: Executor | None) -> int:
    """Workers of ``pool`` (1 without a pool)."""
    return getattr(pool, "_max_workers", 1) if pool is not None else 1


def pool_map(pool: Executor | None, fn: Callable[[T], R], tasks: Sequence[T]) -> list[R]:
    """Apply ``fn`` to every task, in the pool if there is one and more than one task; keep the order."""
    if pool is None or len(tasks) <= 1:
        return [fn(task) for task in tasks]
    return list(pool.map(fn, tasks))


def flatten(parts: Iterable[list[R]]) -> list[R]:
    """The items of every part, in order."""
    return [item for part in parts for item in part]


def work_slices(count: int, pool: Executor | None, minimum: int = 1) -> list[tuple[int, int]]:
    """Split ``range(count)`` into about four slices per worker (one slice without a pool)."""
    pieces = 1 if pool is None else pool_size(pool) * TASKS_PER_WORKER
    size = max(minimum, math.ceil(count / max(1, pieces)))
    return [(start, min(count, start + size)) for start in range(0, count, size)]


def split_chunks(blob: bytes, width: int, chunk_bytes: int) -> list[bytes]:
    """Cut a stream of ``width``-byte values into chunks of at most ``chunk_bytes`` (whole values)."""
    per_chunk = max(1, chunk_bytes // width) * width
    return [blob[i : i + per_chunk] for i in range(0, len(blob), per_chunk)]
