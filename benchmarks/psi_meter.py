"""What the PSI benchmarks share: wall and CPU seconds per step (pool workers included), ID sets, rows.

Used by :mod:`benchmarks.psi` (both backends) and :mod:`benchmarks.psi_ecdh` (the ECDH rows).
"""

from __future__ import annotations

import os
import secrets
import statistics
import time
from collections.abc import Callable, Iterator
from concurrent.futures import Executor
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from clients import psi

FLOOR_REPEATS = 40


def _process_cpu_s(pid: int) -> float:
    """utime + stime of a live process (Linux ``/proc``), 0 elsewhere."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


@dataclass
class Meter:
    """Wall and CPU seconds per named step; each step gets its own process pool."""

    workers: int
    steps: dict[str, dict[str, float]] = field(default_factory=dict)

    @contextmanager
    def step(self, name: str) -> Iterator[Executor | None]:
        wall, cpu = time.perf_counter(), time.process_time()
        workers_cpu = 0.0
        with psi.process_pool(self.workers) as pool:
            yield pool
            if pool is not None:
                workers_cpu = sum(_process_cpu_s(pid) for pid in getattr(pool, "_processes", {}) or {})
        self.steps[name] = {
            "wall_s": time.perf_counter() - wall,
            "cpu_s": time.process_time() - cpu + workers_cpu,
        }

    def total(self, names: list[str] | None = None) -> tuple[float, float]:
        chosen = [self.steps[name] for name in (names or list(self.steps))]
        return sum(s["wall_s"] for s in chosen), sum(s["cpu_s"] for s in chosen)


def id_sets(n: int) -> tuple[list[str], list[str]]:
    """n IDs each, half of them shared, in shuffled row order."""
    rng = secrets.SystemRandom()
    receiver = [f"user-{i:08d}" for i in range(n)]
    sender = [f"user-{i:08d}" for i in range(n // 2, n + n // 2)]
    rng.shuffle(receiver)
    rng.shuffle(sender)
    return receiver, sender


def median_s(fn: Callable[[], object], repeats: int = FLOOR_REPEATS) -> float:
    """Median wall seconds of one call of ``fn`` over ``repeats`` calls."""
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def make_row(
    n: int, variant: str, wall_s: float, cpu_s: float, floor_s: float, **extra: Any
) -> dict[str, Any]:
    """One result row: n × n IDs, wall and CPU seconds, n per wall second, CPU over the floor."""
    return {
        "n": n,
        "variant": variant,
        "wall_s": round(wall_s, 3),
        "cpu_s": round(cpu_s, 3),
        "ids_per_s": round(n / wall_s, 2) if wall_s > 0 else None,
        "ratio_to_floor": round(cpu_s / floor_s, 3) if floor_s > 0 else None,
        **extra,
    }
