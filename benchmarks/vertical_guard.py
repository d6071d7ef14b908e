"""The label holder's guard before and after (issue 26 §1): per population, the method with ``guard =
off`` and ``guard = validation`` beside the label holder alone.

Cases: digits halves at aligned fractions 0.05 and 0.1 (the benchmark's default settings, 40 epochs,
one minibatch per exchange), and the synthetic tabular sets of ``benchmarks.vertical_scale`` (10 %
aligned, the whole epoch in one exchange, 5 epochs). Per run: test and validation accuracy of aligned
users and of active-only users (the label holder's users no other party holds, predicted from its
columns alone), the guard's record (``chosen``, ``method_val``, ``local_val`` per population) and wall
time. The ``active_only`` rows are the label holder trained alone: the guard's baseline trains exactly
as it does, so where the guard chooses ``local`` the served test accuracy equals that row's.

Usage::

    python -m benchmarks.vertical_guard --jobs 2 --out benchmarks/results/vertical_guard.json
    python -m benchmarks.vertical_guard --cases synthetic100k --out /tmp/guard_100k.json
"""

from __future__ import annotations

from typing import Any

import torch
from rich.console import Console
from rich.table import Table

from benchmarks.vertical import case_runs_main, method_strategy, run_once
from benchmarks.vertical_scale import SCALE_CASE

CASES: dict[str, dict[str, Any]] = {
    "digits_f0.05": {"dataset": "digits", "fraction": 0.05, "epochs": 40, "steps_per_exchange": 1},
    "digits_f0.1": {"dataset": "digits", "fraction": 0.1, "epochs": 40, "steps_per_exchange": 1},
    "synthetic10k": {"dataset": "synthetic10k", **SCALE_CASE},
    "synthetic100k": {"dataset": "synthetic100k", **SCALE_CASE},
}
"""Settings per case: digits as ``benchmarks.vertical``, synthetic as ``benchmarks.vertical_scale``."""
RUNS = (("active_only", "off"), ("proto", "off"), ("proto", "validation"))
"""(method, guard) per case: the label holder alone, the method before and after the guard."""
POPULATIONS = ("aligned", "active_only")
console = Console()


def guard_run(case: str, method: str, guard: str, seed: int) -> dict[str, Any]:
    """One in-process run of ``method`` with ``guard`` on ``case``; accuracies per population."""
    torch.set_num_threads(1)
    c = CASES[case]
    strategy = method_strategy(method, epochs=c["epochs"], steps_per_exchange=c["steps_per_exchange"],
                               guard=guard, attack=False)
    result = run_once(c["dataset"], c["fraction"], seed, strategy)
    return {"case": case, **c, "method": method, "guard_setting": guard, "seed": seed,
            "test": {p: result["test"][p] for p in POPULATIONS},
            "val": {p: result["val"][p] for p in POPULATIONS},
            "guard": result.get("guard"), "fusion": result["fusion"], "wall_s": result["wall_s"]}


def summary(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per case and population: test accuracy of the label holder alone, the method before (guard off)
    and after (guard on), and the guard's choice."""
    out = []
    for case in dict.fromkeys(r["case"] for r in rows):
        by = {(r["method"], r["guard_setting"]): r for r in rows if r["case"] == case}
        alone, before, after = (by.get(run) for run in RUNS)
        for population in POPULATIONS:
            out.append({"case": case, "population": population,
                        "alone": alone and alone["test"]["aligned"],  # alone: its head serves everyone
                        "before": before and before["test"][population],
                        "after": after and after["test"][population],
                        "chosen": after and after["guard"][population]["chosen"]})
    return out


def table(rows: list[dict[str, Any]]) -> Table:
    """The summary as a table (test accuracy %)."""
    out = Table(title="guard: test accuracy (%) per population")
    for column in ("case", "population", "label holder alone", "method, guard off", "method, guard on",
                   "guard chose"):
        out.add_column(column, justify="right")
    for r in summary(rows):
        out.add_row(r["case"], r["population"], *(f"{100 * r[k]:.1f}" if r[k] is not None else "-"
                                                  for k in ("alone", "before", "after")), str(r["chosen"]))
    return out


def describe(row: dict[str, Any]) -> str:
    """One run's progress line: its case, method, guard setting, test accuracies, guard record, wall time."""
    return (f"{row['case']:14s} {row['method']:12s} guard={row['guard_setting']:10s} test "
            f"{row['test']}  guard {row['guard']}  {row['wall_s']:.0f} s")


def main(argv: list[str] | None = None) -> None:
    """Command line of :func:`benchmarks.vertical.case_runs_main`; the JSON adds :func:`summary`, printed
    as :func:`table` at the end."""
    rows = case_runs_main(argv, description=__doc__.split("\n\n")[0], cases=CASES,
                          default_cases="digits_f0.05,digits_f0.1,synthetic10k", runs=RUNS, run=guard_run,
                          describe=describe, summary=summary)
    console.print(table(rows))


if __name__ == "__main__":
    main()
