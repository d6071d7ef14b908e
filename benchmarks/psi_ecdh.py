"""The ECDH rows of ``benchmarks/psi.py --ecdh``: the protocol end to end beside its primitive floor.

n × n IDs, 50 % shared, both roles of :mod:`clients.psi.ecdh` in this process (``align_ecdh``'s order),
every step in its own process pool. Per size two rows:

- ``ecdh-<group>``: wall and CPU seconds of every step (CPU: the main process plus the pool workers);
- ``floor-ecdh-<group>``: n times both parties' primitive cost per ID, measured in the same run on one
  core: one hash into the group and two scalar multiplications per party (its own point, the peer's
  point), with the very calls the hot loops make (:attr:`clients.psi.ecdh_groups.Group.multiplier`,
  :attr:`~clients.psi.ecdh_groups.Group.encoder`). Its ``wall_s`` divides the CPU by the workers.

IDs per second per core: ``ids_per_s_per_core`` = 2n / CPU seconds (the IDs of both sets, per
core-second of work) and ``wall_ids_per_s_per_core`` = 2n / (wall seconds × workers) — the convention
of SecretFlow's published ECDH-PSI figures (``docs/psi.md``). ``ratio_to_floor`` is CPU over floor.
"""

from __future__ import annotations

import secrets
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from benchmarks.psi_meter import Meter, id_sets, make_row
from clients import psi
from clients.psi import ecdh
from clients.psi.ecdh_groups import ecdh_group

ECDH_SIZES = [10_000, 100_000]
"""Sizes of ``--ecdh`` (``--ecdh-1e6`` adds 10^6)."""
FLOOR_CALLS = 1000
"""Calls per timed batch of a primitive."""
FLOOR_BATCHES = 7
"""Timed batches per primitive (the median batch counts)."""


@dataclass(frozen=True)
class ECDHFloor:
    """Single-core CPU seconds of one call of each ECDH primitive of ``group`` (median batch)."""

    group: str
    hash_to_group: float
    scalar_multiplication: float

    def per_id(self) -> float:
        """Both parties' cost per ID of an n × n run: one hash and two multiplications each."""
        return 2 * (self.hash_to_group + 2 * self.scalar_multiplication)

    def summary(self) -> dict[str, float]:
        """Microseconds per call, and scalar multiplications and IDs (both sets) per core-second."""
        return {
            "hash_to_group_us": round(self.hash_to_group * 1e6, 2),
            "scalar_multiplication_us": round(self.scalar_multiplication * 1e6, 2),
            "scalar_multiplications_per_s_per_core": round(1 / self.scalar_multiplication, 1),
            "floor_ids_per_s_per_core": round(2 / self.per_id(), 1),
        }


def _cpu_s_per_call(fn: Callable[[], object]) -> float:
    """Median over :data:`FLOOR_BATCHES` batches of the CPU seconds per call of ``fn``."""
    batches = []
    for _ in range(FLOOR_BATCHES):
        start = time.process_time()
        for _ in range(FLOOR_CALLS):
            fn()
        batches.append((time.process_time() - start) / FLOOR_CALLS)
    return statistics.median(batches)


def measure_ecdh_floor(group: str) -> ECDHFloor:
    """Time the hash and the scalar multiplication of ``group`` as the hot loops call them."""
    operations = ecdh_group(group)
    data = psi.canonical_id_bytes("user-00000001")
    encode = operations.encoder("floor")
    point = encode(data)
    multiply = operations.multiplier(operations.random_scalar())
    return ECDHFloor(
        group=group,
        hash_to_group=_cpu_s_per_call(lambda: encode(data)),
        scalar_multiplication=_cpu_s_per_call(lambda: multiply(point)),
    )


def run_ecdh(n: int, workers: int, group: str, chunk_bytes: int = psi.DEFAULT_CHUNK_BYTES) -> Meter:
    """clients.psi.ecdh end to end over ``group``, step by step, both roles in this process."""
    receiver_ids, sender_ids = id_sets(n)
    meter = Meter(workers)
    with meter.step("prepare"):
        receiver_prepared, sender_prepared = psi.prepare_ids(receiver_ids), psi.prepare_ids(sender_ids)
        session = {"session_id": secrets.token_hex(16), "group": group}
        receiver = ecdh.ECDHReceiver(receiver_prepared, peer_size=n, **session)
        sender = ecdh.ECDHSender(sender_prepared, peer_size=n, **session)
    session_id = session["session_id"]
    with meter.step("receiver_blind") as pool:
        receiver.blind(pool, chunk_bytes)
    with meter.step("sender_blind") as pool:
        sender.blind(pool, chunk_bytes)
    with meter.step("sender_exponentiate") as pool:
        for index in range(receiver.num_chunks):
            doubled = sender.exponentiate_peer(session_id, index, receiver.point_chunk(index), pool)
            receiver.receive_doubled(session_id, index, doubled)
    with meter.step("receiver_exponentiate") as pool:
        for index in range(sender.num_chunks):
            receiver.exponentiate_peer(session_id, index, sender.point_chunk(index), pool)
    with meter.step("finish"):
        receiver.finish()
    with meter.step("share"):
        alignment = sender.conclude(receiver.intersection_message())
    if len(alignment.ids) != n - n // 2:
        raise RuntimeError(f"wrong intersection size {len(alignment.ids)} for n = {n}")
    return meter


def ecdh_rows(n: int, meter: Meter, floor: ECDHFloor, workers: int) -> list[dict[str, Any]]:
    """The ``ecdh-<group>`` row (its steps, cost per ID) and the ``floor-ecdh-<group>`` row of size n."""
    floor_s = n * floor.per_id()
    wall, cpu = meter.total()
    steps = {name: {k: round(v, 3) for k, v in s.items()} for name, s in meter.steps.items()}
    rates = {
        "ids_per_s_per_core": round(2 * n / cpu, 1),
        "wall_ids_per_s_per_core": round(2 * n / (wall * workers), 1),
        "cpu_us_per_id": round(cpu / n * 1e6, 1),
        "floor_cpu_s": round(floor_s, 3),
    }
    floor_rates = {
        "ids_per_s_per_core": round(2 * n / floor_s, 1),
        "cpu_us_per_id": round(floor.per_id() * 1e6, 1),
    }
    return [
        make_row(n, f"floor-ecdh-{floor.group}", floor_s / workers, floor_s, floor_s, **floor_rates),
        make_row(n, f"ecdh-{floor.group}", wall, cpu, floor_s, steps=steps, **rates),
    ]
