"""Benchmark: PSI throughput of both backends, side by side with baselines and the primitive floor.

n × n IDs with 50 % overlap. Variants, all measured in the same run on the same machine:

- ``ecdh-<group>``: :mod:`clients.psi.ecdh` (Diffie–Hellman PSI over ``--ecdh-group``, default
  x25519; both roles in this process, each step in the process pool) at 10^4, 10^5 with ``--ecdh``
  (10^6 with ``--ecdh-1e6``), beside ``floor-ecdh-<group>``, both parties' primitive cost measured
  in this run on one core (:mod:`benchmarks.psi_ecdh`).

- ``fnp-bins``: :mod:`clients.psi` (bins, CRT encryption, mod-p decryption, precomputed randomness,
  gmpy2 loops, process pool); also split into ``fnp-bins-precompute`` (data-independent: key
  generation, the receiver's encryption randomness, the sender's re-randomisers) and
  ``fnp-bins-online`` (everything after it).
- ``textbook``: FNP without bins (one polynomial of degree |X|, i.e. ``num_bins=1``) at
  ``--textbook-n`` (default 500), same optimised primitives.
- ``fnp-phe``: the same protocol (same bins and degree) written with phe's ``EncryptedNumber``
  objects: phe encryption, ``*``/``+`` for Horner, ``obfuscate()`` to re-randomise, full CRT decryption.
- ``floor``: the primitive floor measured in this run on one core. Per sender ID: one full-length
  exponentiation (the mask r), the M - 1 Horner steps of one bin, the receiver's share B·M/|Y| of
  coefficient encryptions (CRT randomness included) and one mod-p decryption. ``cpu_s`` is n times
  that; ``wall_s`` divides it by the workers. ``ratio_to_floor`` of every row is its ``cpu_s`` over
  the floor of its own (B, M). The floor leaves out the sender's re-randomiser s^n (one more
  full-length exponentiation per ID that soundness requires); its cost is reported beside the floor.

CPU seconds are the main process plus the pool workers (read from ``/proc`` before each step's pool
closes). Each row records the wall and CPU seconds of every step and the machine's load average.

    python -m benchmarks.psi --quick --out psi.json        # n = 1e3, textbook n = 500, phe n = 1e3
    python -m benchmarks.psi --out psi.json                # n = 1e3 and 1e4 (phe at both)
    python -m benchmarks.psi --large --out psi.json        # adds n = 1e5 (bins only)
    python -m benchmarks.psi --sizes 10000 --no-phe        # chosen sizes (rows are saved as they come)
    python -m benchmarks.psi --ecdh --ecdh-only --out benchmarks/results/psi_ecdh.json   # ECDH 1e4, 1e5
    python -m benchmarks.psi --ecdh --ecdh-1e6 --ecdh-only --out ...                     # and 1e6
    python -m benchmarks.psi --ecdh --ecdh-only --ecdh-group edwards25519 ...            # the other group
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
from concurrent.futures import Executor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import gmpy2
from gmpy2 import mpz
from phe import paillier

from benchmarks.psi_ecdh import ECDH_SIZES, ecdh_rows, measure_ecdh_floor, run_ecdh
from benchmarks.psi_meter import FLOOR_REPEATS, Meter, id_sets, make_row, median_s
from clients import psi
from clients.psi.paillier import bin_coefficients, crt_randomisers
from clients.psi.pool import flatten, pool_map, pool_size

# --------------------------------------------------------------------------------------------------
# The primitive floor
# --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Floor:
    """Median single-core seconds of each primitive (2048-bit key unless told otherwise)."""

    full_exponentiation: float
    horner_step: float
    encryption: float
    mod_p_decryption: float
    rerandomiser: float

    def per_id(self, num_bins: int, degree: int, sender_size: int) -> float:
        share = num_bins * degree / max(1, sender_size)
        return (
            self.full_exponentiation
            + (degree - 1) * self.horner_step
            + share * self.encryption
            + self.mod_p_decryption
        )


def measure_floor(key_bits: int, id_bits: int) -> Floor:
    """Time each primitive with the same gmpy2 calls the protocol uses."""
    _, private_key = paillier.generate_paillier_keypair(n_length=key_bits)
    p, q = mpz(private_key.p), mpz(private_key.q)
    n = p * q
    nsq, psq, hp = n * n, p * p, mpz(private_key.hp)
    c = mpz(secrets.randbelow(int(nsq)))
    r = mpz(secrets.randbelow(int(n)))
    y = mpz(secrets.randbits(id_bits))
    coeff = mpz(secrets.randbelow(int(n)))
    return Floor(
        full_exponentiation=median_s(lambda: gmpy2.powmod(c, r, nsq)),
        horner_step=median_s(lambda: gmpy2.powmod(c, y, nsq) * c % nsq, 4 * FLOOR_REPEATS),
        encryption=median_s(lambda: (1 + coeff * n) * crt_randomisers((p, q, 1))[0] % nsq),
        mod_p_decryption=median_s(lambda: (gmpy2.powmod(c, p - 1, psq) - 1) // p * hp % p),
        rerandomiser=median_s(lambda: gmpy2.powmod(r, n, nsq)),
    )


# --------------------------------------------------------------------------------------------------
# Variants
# --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Outcome:
    """One protocol run: the meter, the public parameters, the intersection size."""

    meter: Meter
    num_bins: int
    degree: int
    intersection: int


PRECOMPUTE_STEPS = ["keygen", "receiver_precompute", "sender_precompute"]
ONLINE_STEPS = ["setup", "evaluate", "finish", "share"]


def run_fnp(
    n: int,
    workers: int,
    key_bits: int,
    num_bins: int | None = None,
    precompute_weight: float = psi.PRECOMPUTED_WEIGHT,
) -> Outcome:
    """clients.psi end to end, step by step (``num_bins=1`` is textbook FNP)."""
    receiver_ids, sender_ids = id_sets(n)
    meter = Meter(workers)
    with meter.step("keygen"):
        receiver = psi.PSIReceiver(
            receiver_ids,
            key_bits=key_bits,
            peer_size=n,
            num_bins=num_bins,
            precompute_weight=precompute_weight,
        )
    with meter.step("receiver_precompute") as pool:
        receiver.precompute(pool)
    sender = psi.PSISender(sender_ids)
    with meter.step("sender_precompute") as pool:
        sender.receive_public_key(receiver.modulus)
        sender.precompute(pool)
    with meter.step("setup") as pool:
        setup = receiver.setup_message(pool)
    with meter.step("evaluate") as pool:
        responses = sender.evaluate_all(setup, pool)
    with meter.step("finish") as pool:
        receiver.finish(responses, pool)
    with meter.step("share"):
        alignment = sender.conclude(receiver.intersection_message())
    if len(alignment.ids) != n - n // 2:
        raise RuntimeError(f"wrong intersection size {len(alignment.ids)} for n = {n}")
    return Outcome(meter, receiver.num_bins, receiver.degree, len(alignment.ids))


def _phe_encrypt(task: tuple[int, list[int]]) -> list[int]:
    """phe encryption of coefficients (raw: phe's EncodedNumber refuses |m| >= n/3)."""
    n, coeffs = task
    public_key = paillier.PaillierPublicKey(n)
    return [paillier.EncryptedNumber(public_key, public_key.raw_encrypt(a)).ciphertext(False) for a in coeffs]


def _phe_evaluate(task: tuple[int, list[tuple[list[int], list[int]]]]) -> list[int]:
    """Horner with EncryptedNumber ``*`` and ``+``; ``obfuscate()`` re-randomises."""
    n, groups = task
    public_key = paillier.PaillierPublicKey(n)
    out = []
    for coeff_ints, ys in groups:
        coeffs = [paillier.EncryptedNumber(public_key, c) for c in coeff_ints]
        for y in ys:
            acc = coeffs[-1] + y
            for coeff in reversed(coeffs[:-1]):
                acc = acc * y + coeff
            # r uniform in Z_n: EncodedNumber.encode refuses |m| >= n/3, so the encoding is built directly
            masked = acc * paillier.EncodedNumber(public_key, 1 + secrets.randbelow(n - 1), 0) + y
            masked.obfuscate()
            out.append(masked.ciphertext(be_secure=False))
    return out


def _phe_decrypt(task: tuple[int, int, list[int]]) -> list[int]:
    p, q, ciphertexts = task
    private_key = paillier.PaillierPrivateKey(paillier.PaillierPublicKey(p * q), p, q)
    return [private_key.raw_decrypt(c) for c in ciphertexts]


def _chunks(items: list[Any], pool: Executor | None) -> list[list[Any]]:
    pieces = 1 if pool is None else 4 * pool_size(pool)
    size = max(1, -(-len(items) // pieces))
    return [items[i : i + size] for i in range(0, len(items), size)]


def run_phe(
    n: int, workers: int, key_bits: int, precompute_weight: float = psi.PRECOMPUTED_WEIGHT
) -> Outcome:
    """The same protocol (same B, M, hashing, shuffle) with phe objects and no precomputation."""
    receiver_ids, sender_ids = id_sets(n)
    meter = Meter(workers)
    with meter.step("keygen"):
        public_key, private_key = paillier.generate_paillier_keypair(n_length=key_bits)
        num_bins, degree = psi.choose_bins(n, n, precompute_weight=precompute_weight)
    n_mod = public_key.n
    with meter.step("setup") as pool:
        salt = secrets.token_bytes(psi.SALT_BYTES)
        bins: list[list[int]] = [[] for _ in range(num_bins)]
        members = set()
        for data in psi.prepare_ids(receiver_ids).canonical:
            value, index = psi.hash_id(salt, data, psi.DEFAULT_ID_BITS, num_bins)
            bins[index].append(value)
            members.add(value)
        if max(map(len, bins)) > degree:
            raise RuntimeError("bin overflow (probability 2^-40): run again")
        coeffs = [int(a) for a in bin_coefficients((mpz(n_mod), degree, psi.DEFAULT_ID_BITS, bins))]
        encrypted = flatten(pool_map(pool, _phe_encrypt, [(n_mod, part) for part in _chunks(coeffs, pool)]))
    with meter.step("evaluate") as pool:
        by_bin: dict[int, list[int]] = {}
        for data in psi.prepare_ids(sender_ids).canonical:
            value, index = psi.hash_id(salt, data, psi.DEFAULT_ID_BITS, num_bins)
            by_bin.setdefault(index, []).append(value)
        groups = [(encrypted[b * degree : (b + 1) * degree], ys) for b, ys in sorted(by_bin.items())]
        replies = flatten(pool_map(pool, _phe_evaluate, [(n_mod, part) for part in _chunks(groups, pool)]))
        secrets.SystemRandom().shuffle(replies)
    with meter.step("finish") as pool:
        tasks = [(private_key.p, private_key.q, part) for part in _chunks(replies, pool)]
        matches = sum(value in members for value in flatten(pool_map(pool, _phe_decrypt, tasks)))
    if matches != n - n // 2:
        raise RuntimeError(f"wrong intersection size {matches} for n = {n}")
    return Outcome(meter, num_bins, degree, matches)


# --------------------------------------------------------------------------------------------------
# Rows, table, main
# --------------------------------------------------------------------------------------------------


def outcome_rows(n: int, variant: str, outcome: Outcome, floor: Floor) -> list[dict[str, Any]]:
    meter = outcome.meter
    floor_s = n * floor.per_id(outcome.num_bins, outcome.degree, n)
    params = {"num_bins": outcome.num_bins, "degree": outcome.degree, "floor_cpu_s": round(floor_s, 3)}
    steps = {name: {k: round(v, 3) for k, v in s.items()} for name, s in meter.steps.items()}
    rows = [make_row(n, variant, *meter.total(), floor_s, steps=steps, **params)]
    if all(name in meter.steps for name in PRECOMPUTE_STEPS):
        rows.append(make_row(n, f"{variant}-precompute", *meter.total(PRECOMPUTE_STEPS), floor_s, **params))
        rows.append(make_row(n, f"{variant}-online", *meter.total(ONLINE_STEPS), floor_s, **params))
    return rows


def floor_row(
    n: int, num_bins: int, degree: int, floor: Floor, workers: int, variant: str = "floor"
) -> dict[str, Any]:
    cpu = n * floor.per_id(num_bins, degree, n)
    return make_row(
        n,
        variant,
        cpu / workers,
        cpu,
        cpu,
        num_bins=num_bins,
        degree=degree,
        rerandomiser_cpu_s=round(n * floor.rerandomiser, 3),
    )


def print_table(rows: list[dict[str, Any]]) -> None:
    header = (
        f"{'n':>7} {'variant':<22} {'B':>6} {'M':>4} {'wall_s':>9} {'cpu_s':>9} {'ids/s':>8} {'ratio':>6}"
    )
    print(header)
    print("-" * len(header))
    for row in rows:
        print(
            f"{row['n']:>7} {row['variant']:<22} {row.get('num_bins', ''):>6} {row.get('degree', ''):>4} "
            f"{row['wall_s']:>9.2f} {row['cpu_s']:>9.2f} {row['ids_per_s'] or 0:>8.1f} "
            f"{row['ratio_to_floor'] or 0:>6.2f}"
        )
    for row in rows:
        if "steps" in row:
            steps = ", ".join(f"{k} {v['wall_s']:.1f}/{v['cpu_s']:.1f}" for k, v in row["steps"].items())
            print(f"  {row['variant']} n={row['n']} steps (wall/cpu s): {steps}")


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="n = 1e3 only (textbook and phe included)")
    parser.add_argument("--large", action="store_true", help="add n = 1e5 (bins variant only)")
    parser.add_argument("--sizes", type=int, nargs="+", help="run these n instead (textbook still runs)")
    parser.add_argument("--out", type=Path, help="write the rows as JSON here")
    parser.add_argument("--workers", type=int, default=None, help="pool size (default: every core)")
    parser.add_argument("--key-bits", type=int, default=psi.DEFAULT_KEY_BITS)
    parser.add_argument("--textbook-n", type=int, default=500)
    parser.add_argument("--no-phe", action="store_true", help="skip the phe-object variant")
    parser.add_argument("--ecdh", action="store_true", help="add ECDH rows at n = 1e4, 1e5")
    parser.add_argument("--ecdh-group", choices=psi.ECDH_GROUPS, default=psi.DEFAULT_ECDH_GROUP)
    parser.add_argument("--ecdh-1e6", action="store_true", help="add the ECDH row at n = 1e6 (minutes)")
    parser.add_argument(
        "--ecdh-only", action="store_true", help="skip every Paillier variant (--sizes: the ECDH sizes)"
    )
    parser.add_argument(
        "--precompute-weight",
        type=float,
        default=psi.PRECOMPUTED_WEIGHT,
        help="weight of the precomputable randomness when choosing bins (1.0: minimise total work)",
    )
    args = parser.parse_args(argv)

    workers = psi.resolve_workers(args.workers)
    sizes = [1000] if args.quick else [1000, 10_000]
    if args.large:
        sizes.append(100_000)
    if args.sizes:
        sizes = args.sizes
    phe_sizes = [] if args.no_phe else [n for n in sizes if n <= 10_000]
    machine: dict[str, Any] = {"cpus": os.cpu_count(), "workers": workers, "loadavg_start": os.getloadavg()}
    ecdh_sizes = (ECDH_SIZES if args.ecdh else []) + ([1_000_000] if args.ecdh_1e6 else [])
    if args.ecdh_only:
        ecdh_sizes = args.sizes or ecdh_sizes  # --sizes then picks the ECDH sizes
        sizes, phe_sizes = [], []
    floor = measure_floor(args.key_bits, psi.DEFAULT_ID_BITS)
    ecdh_floor = measure_ecdh_floor(args.ecdh_group) if ecdh_sizes else None
    print(
        f"floor (ms, 1 core, {args.key_bits}-bit): full exp {floor.full_exponentiation * 1e3:.2f}, "
        f"Horner step {floor.horner_step * 1e3:.3f}, CRT encryption {floor.encryption * 1e3:.2f}, "
        f"mod-p decryption {floor.mod_p_decryption * 1e3:.2f}, re-randomiser {floor.rerandomiser * 1e3:.2f}; "
        f"load {machine['loadavg_start']}",
        flush=True,
    )
    result: dict[str, Any] = {
        "rows": [],
        "floor_ms": {k: round(v * 1e3, 4) for k, v in vars(floor).items()},
        "ecdh_floor": {"group": args.ecdh_group, **ecdh_floor.summary()} if ecdh_floor else None,
        "machine": machine,
        "key_bits": args.key_bits,
        "precompute_weight": args.precompute_weight,
    }

    def record(new_rows: list[dict[str, Any]]) -> None:
        """Keep, print and save rows as they come: a long run on a shared machine may be cut short."""
        result["rows"].extend(new_rows)
        machine["loadavg_now"] = os.getloadavg()
        for row in new_rows:
            print(
                f"  done: n={row['n']} {row['variant']} wall {row['wall_s']} s, cpu {row['cpu_s']} s",
                flush=True,
            )
        if args.out:
            args.out.write_text(json.dumps(result, indent=2))

    for n in sizes:
        outcome = run_fnp(n, workers, args.key_bits, precompute_weight=args.precompute_weight)
        record([floor_row(n, outcome.num_bins, outcome.degree, floor, workers)])
        record(outcome_rows(n, "fnp-bins", outcome, floor))
        if n in phe_sizes:
            phe_outcome = run_phe(n, workers, args.key_bits, args.precompute_weight)
            record(outcome_rows(n, "fnp-phe", phe_outcome, floor))
    if ecdh_floor is not None:
        print(
            f"ECDH floor ({args.ecdh_group}, 1 core): {ecdh_floor.summary()}",
            flush=True,
        )
    for n in ecdh_sizes:
        record(ecdh_rows(n, run_ecdh(n, workers, args.ecdh_group), ecdh_floor, workers))  # type: ignore[arg-type]
    if not args.ecdh_only:
        textbook = run_fnp(args.textbook_n, workers, args.key_bits, num_bins=1)
        record([floor_row(args.textbook_n, 1, textbook.degree, floor, workers, "floor-textbook")])
        record(outcome_rows(args.textbook_n, "textbook", textbook, floor))
    print_table(result["rows"])
    print(f"load average: start {machine['loadavg_start']}, end {machine['loadavg_now']}")
    return result


if __name__ == "__main__":
    main()
