"""``strategy.tune = auto`` beside ``tune = off`` (issue 26 §1): per population, validation and test accuracy.

Cases as ``benchmarks.vertical_guard``: digits halves at aligned fraction 0.05 and 0.1 (40 epochs, one
minibatch per exchange) and the synthetic tabular set of ``benchmarks.vertical_scale`` at 10⁴ users (10 %
aligned, the whole epoch in one exchange, 5 epochs). Runs per case: the prototype method with
``tune = off`` and ``tune = auto`` (both with the guard), and the two baselines the tuned run competes with,
the label holder alone (``active_only``) and VFL + head fusion, each with the guard off (as trained alone).
Per run: accuracy of aligned users, active-only users and passive-only users on validation and test, the
round trips per phase, wall time, the load average when it started, and with ``auto`` the ``tune``
record (every trial's settings, epochs, round trips, validation accuracy per population, what the
passive party saw).

Usage::

    python -m benchmarks.vertical_tune --jobs 2 --out benchmarks/results/vertical_tune.json
"""

from __future__ import annotations

import os
from typing import Any

import torch

from benchmarks.vertical import case_runs_main, method_strategy, run_once
from benchmarks.vertical_scale import SCALE_CASE

CASES: dict[str, dict[str, Any]] = {
    "digits_f0.05": {"dataset": "digits", "fraction": 0.05, "epochs": 40, "steps_per_exchange": 1},
    "digits_f0.1": {"dataset": "digits", "fraction": 0.1, "epochs": 40, "steps_per_exchange": 1},
    "synthetic10k": {"dataset": "synthetic10k", **SCALE_CASE},
}
RUNS = (("active_only", "off", "off"), ("vfl_head_fusion", "off", "off"), ("proto", "validation", "off"),
        ("proto", "validation", "auto"))
"""(method, guard, tune) per case."""
POPULATIONS = ("aligned", "active_only", "passive_only_1")


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


def describe(row: dict[str, Any]) -> str:
    """One run's progress line: its case, method, tune setting, accuracies, chosen trial, wall time."""
    chosen = row["tune"]["chosen"] if row["tune"] else "-"
    return (f"{row['case']:13s} {row['method']:16s} tune={row['tune_setting']:4s} "
            f"test {row['test']} val {row['val']} chosen {chosen} {row['wall_s']:.0f} s")


def main(argv: list[str] | None = None) -> None:
    """Command line of :func:`benchmarks.vertical.case_runs_main`, every case by default."""
    case_runs_main(argv, description=__doc__.split("\n\n")[0], cases=CASES, default_cases=",".join(CASES),
                   runs=RUNS, run=tune_run, describe=describe)


if __name__ == "__main__":
    main()
