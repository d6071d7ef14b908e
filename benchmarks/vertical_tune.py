"""``strategy.tune = auto`` beside ``tune = off`` (issue 26 §1): per population, validation and test accuracy.

Cases as ``benchmarks.vertical_guard``: digits halves at aligned fraction 0.1 (40 epochs, one minibatch
per exchange) and the synthetic tabular set of ``benchmarks.vertical_scale`` at 10⁴ users (10 % aligned,
the whole epoch in one exchange, 5 epochs). Runs per case: the prototype method with ``tune = off`` and
``tune = auto`` (both with the guard), and the two baselines the tuned run competes with, the label
holder alone (``active_only``) and VFL + head fusion, each with the guard off (as trained alone). Per
run: accuracy of aligned users, active-only users and passive-only users on validation and test, the
round trips per phase, wall time, the load average when it started, and with ``auto`` the ``tune``
record (every trial's settings, epochs, round trips, validation accuracy per population, what the
passive party saw).

Usage::

    python -m benchmarks.vertical_tune --jobs 2 --out benchmarks/results/vertical_tune.json
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

import torch
from rich.console import Console

from benchmarks.vertical import method_strategy, run_once
from benchmarks.vertical_scale import SCALE_CASE
from simulations.results import json_safe

CASES: dict[str, dict[str, Any]] = {
    "digits_f0.1": {"dataset": "digits", "fraction": 0.1, "epochs": 40, "steps_per_exchange": 1},
    "synthetic10k": {"dataset": "synthetic10k", **SCALE_CASE},
}
RUNS = (("active_only", "off", "off"), ("vfl_head_fusion", "off", "off"), ("proto", "validation", "off"),
        ("proto", "validation", "auto"))
"""(method, guard, tune) per case."""
POPULATIONS = ("aligned", "active_only", "passive_only_1")
console = Console()


def tune_run(case: str, method: str, guard: str, tune: str, seed: int) -> dict[str, Any]:
    """One in-process run; accuracies per population, round trips, the tune record."""
    torch.set_num_threads(1)
    load = os.getloadavg()
    c = CASES[case]
    strategy = method_strategy(method, epochs=c["epochs"], steps_per_exchange=c["steps_per_exchange"],
                               guard=guard, tune=tune, attack=False)
    result = run_once(c["dataset"], c["fraction"], seed, strategy)
    return {"case": case, **c, "method": method, "guard_setting": guard, "tune_setting": tune, "seed": seed,
            "val": {p: result["val"].get(p) for p in POPULATIONS},
            "test": {p: result["test"].get(p) for p in POPULATIONS},
            "guard": result.get("guard"), "fusion": result["fusion"], "round_trips": result["round_trips"],
            "tune": result.get("tune"), "wall_s": result["wall_s"], "loadavg_at_start": load}


def main(argv: list[str] | None = None) -> None:
    """Command line: ``--cases``, ``--seed``, ``--jobs``, ``--out FILE.json`` (rewritten after every run)."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cases", default=",".join(CASES))
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--jobs", type=int, default=1, help="runs in parallel (processes)")
    parser.add_argument("--out", type=Path, help="JSON, rewritten after every run")
    args = parser.parse_args(argv)
    cases = args.cases.split(",")
    unknown = set(cases) - set(CASES)
    if unknown:
        parser.error(f"unknown cases {sorted(unknown)}; choose from {list(CASES)}")
    tasks = [(case, *run, args.seed) for case in cases for run in RUNS]
    rows: list[dict[str, Any]] = []
    with ProcessPoolExecutor(args.jobs, mp_context=multiprocessing.get_context("spawn")) as pool:
        for row in pool.map(tune_run, *zip(*tasks, strict=True)):
            rows.append(row)
            chosen = row["tune"]["chosen"] if row["tune"] else "-"
            console.print(f"{row['case']:13s} {row['method']:16s} tune={row['tune_setting']:4s} "
                          f"test {row['test']} val {row['val']} chosen {chosen} {row['wall_s']:.0f} s")
            if args.out:
                args.out.parent.mkdir(parents=True, exist_ok=True)
                args.out.write_text(json.dumps(json_safe({"rows": rows}), indent=2))


if __name__ == "__main__":
    main()
