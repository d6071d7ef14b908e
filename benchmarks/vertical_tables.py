"""Real bundled tables over three parties, through the CSV party path and real PSI (issue 26 §3).

Cases: every table of :data:`clients.vertical.real_tables.TABLES` (breast cancer, Auto MPG, wine; shipped
with scikit-learn and mlxtend, nothing downloaded) at aligned fractions ``f`` ∈ {0.05, 0.1, 0.3}, cut over
three sites by column groups, each site's rows under its own ID column (a hashed shared key), ``f`` of
the training users at all three sites and each other one at one or two (15 % validation, 15 % test users
at every site). Each run writes the seed's party files (the split changes with the seed); every party
reads its ``party{k}.csv`` as a node does (:func:`clients.vertical.handlers.party_data`:
:mod:`clients.vertical.party_csv`, its feature preparation fitted on its own training rows); the aligned
users are found by ECDH PSI (:func:`clients.psi.align`, both roles in this process), the label holder
intersecting with each passive party in turn as :mod:`strategies.alignment` does; training runs over the
in-process link of ``benchmarks.vertical``. The same run over Flower messages
(:func:`strategies.vertical_prototype.run_vertical` with the ClientApp's PSI handlers) gives the same
results at 15-20 times the wall time here (``tests/test_vertical_tables.py`` checks a short run).

Runs per case and seed (:data:`RUNS`: method, guard, tune): the label holder alone (``active_only``),
aligned-only VFL, VFL + head fusion (the baselines with the guard off, as trained alone), and the
prototype method with its guard, with ``tune = off`` and ``tune = auto``. Every setting a run chooses
(fusion, guard, tuned weights) is chosen on validation users only; 40 epochs, the schema's defaults.

Per run: accuracy on validation and test users of every population (``aligned``: all parties' features;
``active_only``: the label holder's columns alone; ``passive_only_k``), ``all``: the label holder's
test population as the split draws it — a share ``f / (f + (1 − f)·h)`` of its users at every site
(served fused) and the rest only at it or with one other site (served from its columns), ``h`` the share
of non-aligned users the label holder holds (1/2 here) — so the weighted mean of the two accuracies on
the same test users; and the per-class recall and predicted counts of the label holder's served
head on its active-only test users, ``collapsed`` when it predicts one class for all of them.

Usage::

    python -m benchmarks.vertical_tables --seeds 0,1,2 --jobs 2 --out benchmarks/results/vertical_tables.json
    python -m benchmarks.vertical_tables --cases wine_f0.1 --seeds 0
"""

from __future__ import annotations

import dataclasses
import os
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from rich.console import Console
from rich.table import Table

from benchmarks.vertical import case_runs_main, method_strategy, run_prepared
from clients.psi import align
from clients.vertical.data import PartyData
from clients.vertical.handlers import party_data
from clients.vertical.parties import make_party
from clients.vertical.party_export import holder_sets
from clients.vertical.real_tables import TABLES, write_table_parties
from protocol.vertical import DatasetConfig, VerticalConfig, VerticalStrategyConfig

FRACTIONS = (0.05, 0.1, 0.3)
N_PARTIES = 3
CASES: dict[str, dict[str, Any]] = {f"{t}_f{f:g}": {"table": t, "fraction": f}
                                    for t in TABLES for f in FRACTIONS}
RUNS = (("active_only", "off", "off"), ("vfl_aligned", "off", "off"), ("vfl_head_fusion", "off", "off"),
        ("proto", "validation", "off"), ("proto", "validation", "auto"))
"""(method, guard, tune) per case and seed."""
POPULATIONS = ("aligned", "active_only", "passive_only_1", "passive_only_2")
HOLDER_SHARE = sum(0 in s for s in holder_sets(N_PARTIES, "one_or_two")) / len(holder_sets(N_PARTIES,
                                                                                            "one_or_two"))
"""Share of the non-aligned users the label holder holds under the split's ``one_or_two`` remainder."""
console = Console(width=180)


def run_name(method: str, tune: str) -> str:
    """A run's name in the tables: the method, ``+tune`` for ``tune = auto``."""
    return method + ("+tune" if tune == "auto" else "")


def served_all(aligned: float | None, active_only: float | None, fraction: float) -> float | None:
    """Accuracy on the label holder's test population (module docstring); ``None`` if a run serves not
    both of its parts."""
    if aligned is None or active_only is None:
        return None
    share = fraction / (fraction + (1 - fraction) * HOLDER_SHARE)
    return share * aligned + (1 - share) * active_only


def psi_aligned_ids(parties: list[PartyData], backend: str = "ecdh") -> list[str]:
    """The training users every party holds, found by PSI: the label holder (party 0) intersects with each
    passive party in turn, its set shrinking to the running intersection (:mod:`strategies.alignment`);
    the IDs in the protocol's canonical order."""
    common = parties[0].ids.tolist()
    for passive in parties[1:]:
        alignment, _ = align(common, passive.ids.tolist(), backend=backend)
        common = [str(i) for i in alignment.ids]
    return common


def run_party_folder(folder: Path, strategy: VerticalStrategyConfig, seed: int) -> dict[str, Any]:
    """Run ``strategy`` on the party CSVs in ``folder`` (module docstring: read as a node reads them,
    aligned by PSI, trained in process); the protocol's results plus ``psi_s`` (the PSI's wall time) and
    ``rows`` (each party's train / val / test row counts)."""
    cfg = VerticalConfig(dataset=DatasetConfig(n_parties=N_PARTIES, data_dir=str(folder)),
                         strategy=dataclasses.replace(strategy, noise_seed=seed), seed=seed)  # as prepare_run
    data = [party_data(cfg, k) for k in range(N_PARTIES)]
    start = time.perf_counter()
    aligned = psi_aligned_ids(data, strategy.psi_backend) if strategy.split_learning else []
    psi_s = time.perf_counter() - start
    result = run_prepared(cfg, {d.name: make_party(d, cfg) for d in data}, aligned)
    rows = {d.name: {"train": len(d.ids), "val": len(d.val_ids), "test": len(d.test_ids)} for d in data}
    return {**result, "psi_s": psi_s, "rows": rows}


def table_run(case: str, method: str, guard: str, tune: str, seed: int) -> dict[str, Any]:
    """One run of ``method`` on ``case`` with ``seed`` (module docstring); its row."""
    torch.set_num_threads(1)
    load = os.getloadavg()
    c = CASES[case]
    strategy = method_strategy(method, guard=guard, tune=tune, attack=False, psi_backend="ecdh")
    with tempfile.TemporaryDirectory(prefix="vertical_tables_") as work:
        write_table_parties(c["table"], Path(work), aligned_fraction=c["fraction"], seed=seed)
        result = run_party_folder(Path(work), strategy, seed)
    head = result["per_class"]["test"]["active_only"]
    predicted = None if head is None else np.asarray(head["confusion"]).sum(axis=0).tolist()
    test = {p: result["test"].get(p) for p in POPULATIONS}
    return {"case": case, **c, "method": method, "run": run_name(method, tune), "guard_setting": guard,
            "tune_setting": tune, "seed": seed, "n_aligned": result["n_aligned"],
            "psi": {"backend": strategy.psi_backend, "wall_s": result["psi_s"]} if strategy.split_learning
            else None, "rows": result["rows"],
            "test": {**test, "all": served_all(test["aligned"], test["active_only"], c["fraction"])},
            "val": {p: result["val"].get(p) for p in POPULATIONS},
            "head_recall": None if head is None else head["recall"], "head_predicted": predicted,
            "head_collapsed": None if predicted is None else sum(n > 0 for n in predicted) == 1,
            "guard": result.get("guard"), "fusion": result["fusion"],
            "tune_chosen": result["tune"]["chosen"] if result.get("tune") else None,
            "round_trips": result["round_trips"], "wall_s": result["wall_s"] + result["psi_s"],
            "loadavg_at_start": load}


def seed_mean_std(values: list[float | None]) -> tuple[float, float] | None:
    """Mean and sample std (0 for one seed) of a metric over seeds; ``None`` if a run has no value."""
    if not values or any(v is None for v in values):
        return None
    return float(np.mean(values)), float(np.std(values, ddof=1)) if len(values) > 1 else 0.0


def summary(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per case and run: mean ± std over seeds of test accuracy on all / aligned / active-only users, the
    mean passive-only accuracy, the head's mean per-class recall and how many seeds' heads collapsed."""
    out = []
    for case in dict.fromkeys(r["case"] for r in rows):
        for name in dict.fromkeys(r["run"] for r in rows if r["case"] == case):
            group = [r for r in rows if r["case"] == case and r["run"] == name]
            passive = [None if r["test"]["passive_only_1"] is None else
                       (r["test"]["passive_only_1"] + r["test"]["passive_only_2"]) / 2 for r in group]
            recalls = [r["head_recall"] for r in group]
            out.append({"case": case, "table": group[0]["table"], "fraction": group[0]["fraction"],
                        "run": name, "seeds": [r["seed"] for r in group],
                        **{p: seed_mean_std([r["test"][p] for r in group])
                           for p in ("all", "aligned", "active_only")},
                        "passive_only": seed_mean_std(passive), "head_recall": _mean_recall(recalls),
                        "head_collapsed": sum(bool(r["head_collapsed"]) for r in group),
                        "wall_s": float(np.mean([r["wall_s"] for r in group]))})
    return out


def _mean_recall(recalls: list[list[float | None] | None]) -> list[float | None] | None:
    """Per class, the mean over seeds of the head's recall (a seed without users of a class left out)."""
    if any(r is None for r in recalls):
        return None
    by_class = [[r[c] for r in recalls if r[c] is not None] for c in range(len(recalls[0]))]
    return [float(np.mean(v)) if v else None for v in by_class]


def _cell(stat: tuple[float, float] | None) -> str:
    return "–" if stat is None else f"{100 * stat[0]:.1f} ± {100 * stat[1]:.1f}"


def table(rows: list[dict[str, Any]]) -> Table:
    """The summary as a table (test accuracy %, mean ± std over seeds)."""
    out = Table(title="real tables, 3 parties, CSV + ECDH PSI: test accuracy (%), mean ± std over seeds")
    for column in ("table", "f", "run", "all", "aligned", "label holder only", "passive only",
                   "head recall per class", "collapsed", "s/run"):
        out.add_column(column, justify="right")
    for r in summary(rows):
        recall = "–" if r["head_recall"] is None else " / ".join("–" if v is None else f"{v:.2f}"
                                                                for v in r["head_recall"])
        out.add_row(r["table"], f"{r['fraction']:g}", r["run"], _cell(r["all"]), _cell(r["aligned"]),
                    _cell(r["active_only"]), _cell(r["passive_only"]), recall,
                    f"{r['head_collapsed']}/{len(r['seeds'])}", f"{r['wall_s']:.0f}")
    return out


def describe(row: dict[str, Any]) -> str:
    """One run's progress line: case, run, seed, test accuracies, the head's predicted counts, wall time."""
    test = " ".join(f"{p}={'–' if v is None else f'{100 * v:.1f}'}" for p, v in row["test"].items())
    return (f"{row['case']:18s} {row['run']:16s} seed {row['seed']} n_aligned {row['n_aligned']}  {test}  "
            f"head predicts {row['head_predicted']}  {row['wall_s']:.0f} s")


def main(argv: list[str] | None = None) -> None:
    """Command line of :func:`benchmarks.vertical.case_runs_main` (every case by default); the JSON adds
    :func:`summary`, printed as :func:`table` at the end."""
    rows = case_runs_main(argv, description=__doc__.split("\n\n")[0], cases=CASES,
                          default_cases=",".join(CASES), runs=RUNS, run=table_run, describe=describe,
                          summary=summary)
    console.print(table(rows))


if __name__ == "__main__":
    main()
