"""Vertical rounds at 10⁴ and 10⁵ users per party (issue 12 item 4): wall time per epoch, memory, accuracy.

Seeded synthetic tabular data (``clients.vertical.data.synthetic_tabular``: 10 classes, 32 columns, 16
per party), 2 parties, 10 % of the training users aligned, the whole epoch in one exchange
(``steps_per_exchange = 0``); the prototype method beside the active-party-only and VFL + local head
baselines, over an in-process link with the aligned set computed directly (the PSI phase is
benchmarked separately, ``benchmarks.psi``). Per run: seconds per epoch (mean over epochs), seconds per
1000 users per epoch, the peak resident memory of the process (both parties and the server live in it),
each party's state size (what a Flower node keeps in ``context.state``: models, optimiser, logs) and
its data size.

Usage::

    python -m benchmarks.vertical_scale --epochs 5 --out benchmarks/results/vertical_scale.json
"""

from __future__ import annotations

import argparse
import resource
import time
from typing import Any

import torch

from benchmarks.vertical import METHODS, method_strategy, prepare_run, run_prepared, runs_main

SCALE_METHODS = ("active_only", "vfl_head_fusion", "proto")
SCALE_CASE: dict[str, Any] = {"fraction": 0.1, "epochs": 5, "steps_per_exchange": 0}
"""The runs' settings: 10 % aligned, the whole epoch in one exchange, 5 epochs (``--epochs``)."""


def scale_run(dataset: str, method: str, seed: int, epochs: int) -> dict[str, Any]:
    """One in-process run of ``method`` on ``dataset``; its results plus the timing and memory measured."""
    torch.set_num_threads(1)
    strategy = method_strategy(method, epochs=epochs, steps_per_exchange=SCALE_CASE["steps_per_exchange"],
                               attack=method == "proto")
    start = time.perf_counter()
    cfg, parties, aligned_ids = prepare_run(dataset, SCALE_CASE["fraction"], seed, strategy)
    setup_s = time.perf_counter() - start
    stamps = [time.perf_counter()]
    result = run_prepared(cfg, parties, aligned_ids, on_epoch=lambda *_: stamps.append(time.perf_counter()))
    epoch_s = [b - a for a, b in zip(stamps[1:-1], stamps[2:], strict=True)] or [stamps[-1] - stamps[0]]
    users = {name: len(p.data.ids) for name, p in parties.items()}
    return {
        "dataset": dataset, "method": method, "seed": seed, "epochs": epochs,
        "users_per_party": users, "n_aligned": result["n_aligned"],
        "accuracy": result["test"]["aligned"], "val_accuracy": result["val"]["aligned"],
        "epoch_s": sum(epoch_s) / len(epoch_s),
        "epoch_s_per_1000_users": 1000 * sum(epoch_s) / len(epoch_s) / max(users.values()),
        "setup_s": setup_s, "wall_s": result["wall_s"],
        "round_trips_per_epoch": result["round_trips_per_epoch"],
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "party_state_mb": {name: len(p.state_bytes()) / 2**20 for name, p in parties.items()},
        "party_data_mb": {name: sum(a.nbytes for a in (p.data.x, p.data.val_x, p.data.test_x)) / 2**20
                          for name, p in parties.items()},
        "attack": result.get("attack"),
    }


def add_options(parser: argparse.ArgumentParser) -> None:
    """``--datasets``, ``--methods``, ``--epochs``, ``--seed``."""
    parser.add_argument("--datasets", default="synthetic10k,synthetic100k")
    parser.add_argument("--methods", default=",".join(SCALE_METHODS))
    parser.add_argument("--epochs", type=int, default=SCALE_CASE["epochs"])
    parser.add_argument("--seed", type=int, default=0)


def tasks(parser: argparse.ArgumentParser, args: argparse.Namespace) -> list[tuple[Any, ...]]:
    """:func:`scale_run`'s arguments: every chosen method on every dataset."""
    methods = args.methods.split(",")
    unknown = set(methods) - set(METHODS)
    if unknown:
        parser.error(f"unknown methods {sorted(unknown)}; choose from {list(METHODS)}")
    return [(d, m, args.seed, args.epochs) for d in args.datasets.split(",") for m in methods]


def describe(row: dict[str, Any]) -> str:
    """One run's progress line: dataset, method, users per party, test accuracy, time per epoch, peak RSS."""
    return (f"{row['dataset']:14s} {row['method']:16s} users/party "
            f"{max(row['users_per_party'].values())}  test {row['accuracy']:.4f}  "
            f"{row['epoch_s']:.1f} s/epoch ({row['epoch_s_per_1000_users']:.3f} s per 1000 "
            f"users)  peak {row['peak_rss_mb']:.0f} MB")


def main(argv: list[str] | None = None) -> None:
    """Command line of :func:`benchmarks.vertical.runs_main` with :func:`add_options`: ``--datasets``,
    ``--methods``, ``--epochs``, ``--seed``, ``--jobs``, ``--out FILE.json``; a fresh process per run."""
    runs_main(argv, description=__doc__.split("\n\n")[0], add_options=add_options, tasks=tasks,
              run=scale_run, describe=describe, one_run_per_process=True)


if __name__ == "__main__":
    main()
