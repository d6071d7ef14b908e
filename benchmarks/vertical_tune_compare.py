"""Two ``benchmarks.vertical_tune`` result files side by side: ``tune = auto`` before and after a change of
its schedule (issue 26 §1: the last halving rung at full length, VFL + head fusion kept to it).

Both files must hold the same cases and seeds. The output keeps every row of both (``rows_before``,
``rows_after``) and a ``summary`` per case and run — the ``tune = off`` runs and the baselines from the
``after`` file (checked equal to ``before`` on accuracy: the change touches ``tune = auto`` only), the
``auto`` run from each — with the mean and standard deviation over seeds of the test and validation
accuracy per population, of their mean over the populations (``all``: every population is evaluated on
the same test users, so each counts once; a population a run serves none of counts 0, as the tuning
score counts it), the round trips per phase and the wall time; for ``auto`` also the chosen trial per
seed and, after the change, whether the released run was at least the full-length VFL + head fusion
trial per population on validation.

Usage::

    python -m benchmarks.vertical_tune_compare BEFORE.json AFTER.json --out OUT.json --note "..."
"""

from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path
from typing import Any

POPULATIONS = ("aligned", "active_only", "passive_only_1")


def _stats(values: list[float]) -> dict[str, float]:
    return {"mean": statistics.fmean(values), "sd": statistics.stdev(values) if len(values) > 1 else 0.0}


def _accuracy(row: dict[str, Any], split: str) -> dict[str, float]:
    acc = {p: row[split][p] or 0.0 for p in POPULATIONS}
    return {**acc, "all": sum(acc.values()) / len(acc)}


def summarise(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """Mean ± sd over seeds of one case and run's rows (see the module docstring)."""
    out: dict[str, Any] = {"seeds": [r["seed"] for r in rows]}
    for split in ("test", "val"):
        per_seed = [_accuracy(r, split) for r in rows]
        out[split] = {key: _stats([a[key] for a in per_seed]) for key in per_seed[0]}
    phases = sorted({phase for r in rows for phase in r["round_trips"]})
    out["round_trips"] = {phase: _stats([float(r["round_trips"].get(phase, 0)) for r in rows])
                          for phase in phases}
    out["wall_s"] = _stats([r["wall_s"] for r in rows])
    if rows[0]["tune"]:
        out["chosen"] = [r["tune"]["chosen"] for r in rows]
        if "released" in rows[0]["tune"]:
            out["at_least_vfl_head_fusion_on_val"] = [
                {p: v["at_least"] for p, v in r["tune"]["versus_vfl_head_fusion"].items()} for r in rows]
    return out


def compare(before: list[dict[str, Any]], after: list[dict[str, Any]]) -> dict[str, Any]:
    """The summary per case and run (``<method> tune=<off|auto>``, ``auto`` once per file).

    Raises
    ------
    ValueError
        If the files differ in cases and seeds, or a ``tune = off`` run's accuracies differ between them.
    """
    def key(r: dict[str, Any]) -> tuple[str, str, str, int]:
        return r["case"], r["method"], r["tune_setting"], r["seed"]

    old, new = {key(r): r for r in before}, {key(r): r for r in after}
    if set(old) != set(new):
        raise ValueError(f"before and after hold different runs: {sorted(set(old) ^ set(new))}")
    for k, r in new.items():
        if k[2] == "off" and (r["test"], r["val"]) != (old[k]["test"], old[k]["val"]):
            raise ValueError(f"the tune=off run {k} changed: {old[k]['test']} -> {r['test']}")
    summary: dict[str, dict[str, Any]] = {}
    for case, method, tune in sorted({k[:3] for k in new}):
        sources = {"": new} if tune == "off" else {" (before)": old, " (after)": new}
        for label, rows in sources.items():
            chosen = [rows[k] for k in sorted(rows) if k[:3] == (case, method, tune)]
            summary.setdefault(case, {})[f"{method} tune={tune}{label}"] = summarise(chosen)
    return summary


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("before", type=Path)
    parser.add_argument("after", type=Path)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--note", default="", help="the regime: commits, command, machine load")
    args = parser.parse_args(argv)
    before, after = (json.loads(p.read_text())["rows"] for p in (args.before, args.after))
    args.out.write_text(json.dumps({"note": args.note, "summary": compare(before, after),
                                    "rows_before": before, "rows_after": after}, indent=2) + "\n")


if __name__ == "__main__":
    main()
