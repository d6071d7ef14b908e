"""Vertical rounds at 10⁴ and 10⁵ users per party (issue 12 item 4, issue 26 §4): time per phase, memory,
accuracy per population, with the aligned set found by ECDH PSI inside every run.

Seeded synthetic tabular data (``clients.vertical.data.synthetic_tabular``: 10 classes, 32 columns, 16
per party), 2 parties, 10 % of the training users aligned, the whole epoch in one exchange
(``steps_per_exchange = 0``), over the in-process link of ``benchmarks.vertical``.

Alignment (``--psi``): ``ecdh`` (the default) runs the real ECDH PSI of ``benchmarks.vertical_tables``
(:func:`benchmarks.vertical_tables.psi_aligned_ids`: :func:`clients.psi.align`, both roles in this
process, one core) on the parties' training IDs inside each run that uses an alignment, and trains on
its output; the run checks that output equals the true intersection of the parties' IDs
(``psi.equals_true_intersection``, a mismatch is an error). ``direct`` takes the true intersection
itself (the older result, ``benchmarks/results/vertical_scale.json``). The ``active_only`` baseline uses
no alignment: no PSI.

Runs per dataset and seed (:data:`SCALE_RUNS`: method, guard, tune): ``active_only`` and
``vfl_head_fusion`` as trained alone (guard and tuning off), ``proto`` as a user meets it (the schema's
default ``guard = validation`` and ``tune``, which resolves to ``auto``: successive halving over
``strategies.vertical_tune``'s grid on validation users, then the winner trained for ``epochs``), and
``proto_untuned`` (guard on, ``tune = off``). The attack measurement is off in every run (it is no part
of training and its logs would dominate a passive party's state).

Per run (every number below is measured in the run's own fresh process, ``--jobs`` runs side by side):

- time per phase, wall seconds: ``setup_s`` (data generation, split, party construction),
  ``psi_s`` (the PSI), ``align_s`` (the parties adopting the aligned set), ``tuning_s`` (all the tuning
  trials and the reset restoring the winner; ``None`` without tuning), ``epoch_s`` (each epoch of the
  released run, the first included; ``None`` with tuning: the released model is the winner's last-rung
  trial, trained inside ``tuning_s``), ``evaluation_s`` (fusion choice, guard, validation and test
  predictions); ``loadavg`` (``/proc/loadavg``'s three values at the run's start and end);
- memory: ``peak_rss_mb`` — the peak resident memory of the process holding **both** parties and the
  server (``getrusage`` ``ru_maxrss``), recorded after setup, after the PSI and at the end (the peak is
  monotone, so each step's rise is what that phase added to it); per party, what is attributable in one
  process: ``party_data_mb`` (its feature arrays: train, validation, test) and ``party_state_mb`` (what a
  Flower node keeps in ``context.state`` after the run: models, optimiser, logs). A per-party *peak*
  (e.g. the PSI's transient memory of each role, or each party's training activations) cannot be
  separated inside one process and is not reported;
- accuracy on the test users (held by every party) per population the run serves: ``aligned`` (all
  parties' features, fused), ``active_only`` (the label holder's own columns: users only it holds),
  ``passive_only_1`` (users only the passive party holds, nearest prototype; ``None`` if not served) and
  ``all``: the label holder's test population as the split draws it — a share ``f / (f + (1 − f)/2)``
  of its users aligned, the rest only at it — the weighted mean of ``aligned`` and ``active_only``
  (as ``benchmarks.vertical_tables.served_all``); validation accuracies alike.

Usage::

    python -m benchmarks.vertical_scale --datasets synthetic100k,synthetic10k --seeds 0,1,2 --epochs 5 \\
        --out benchmarks/results/vertical_scale_psi.json
    python -m benchmarks.vertical_scale --datasets synthetic10k --psi direct --out /tmp/scale_direct.json
"""

from __future__ import annotations

import argparse
import os
import resource
import time
from collections.abc import Mapping
from typing import Any

import numpy as np
import torch

from benchmarks.vertical import chosen_names, method_strategy, prepare_run, run_prepared, runs_main, seed_list
from benchmarks.vertical_tables import psi_aligned_ids, seed_mean_std
from protocol.vertical import TUNE_DEFAULT, VerticalStrategyConfig

SCALE_RUNS: dict[str, tuple[str, str, str]] = {
    "active_only": ("active_only", "off", "off"),
    "vfl_head_fusion": ("vfl_head_fusion", "off", "off"),
    "proto": ("proto", "validation", TUNE_DEFAULT),
    "proto_untuned": ("proto", "validation", "off"),
}
"""Run name → (method, ``strategy.guard``, ``strategy.tune``); ``TUNE_DEFAULT`` resolves to ``auto``."""
SCALE_CASE: dict[str, Any] = {"fraction": 0.1, "epochs": 5, "steps_per_exchange": 0}
"""The runs' settings: 10 % aligned, the whole epoch in one exchange, 5 epochs (``--epochs``)."""
ALIGNMENTS = ("ecdh", "direct")
POPULATIONS = ("aligned", "active_only", "passive_only_1")
NOTE = ("Per run, in its own process (both parties and the server in it). psi_s: wall seconds of the ECDH "
        "PSI (clients.psi.align, both roles in this process, one core) on the parties' training IDs; the "
        "run trains on its output, checked equal to the true intersection (psi.equals_true_intersection). "
        "tuning_s: all tune=auto trials plus the reset restoring the winner. epoch_s: each epoch of the "
        "released run (None with tune=auto: the released model is the winner's last-rung trial, trained "
        "within tuning_s). peak_rss_mb: the process's peak resident memory (both parties + server) after "
        "setup, after the PSI, at the end. party_data_mb / party_state_mb: per party, its feature arrays "
        "and its node state after the run (models, optimiser, logs); a per-party peak cannot be separated "
        "in one process and is not reported. Accuracy on the test users per population: aligned (all "
        "parties' features), active_only (the label holder's columns: users only it holds), passive_only_1 "
        "(nearest prototype at the passive party), all = weighted mean of aligned and active_only with the "
        "label holder's aligned share f/(f+(1-f)/2). Baselines run with guard and tune off (as trained "
        "alone); proto with the schema defaults (guard=validation, tune resolved to auto); attack "
        "measurement off everywhere. loadavg: /proc/loadavg at the run's start and end.")


def _peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


class PhaseClock:
    """Wraps an in-process party; records when each operation it handles ends (``ends[op]``: the last
    one), which splits a run into its phases (align, tuning resets, training, evaluation)."""

    def __init__(self, party: Any, ends: dict[str, float]) -> None:
        self.party = party
        self.ends = ends

    def handle(self, op: str, payload: dict[str, Any]) -> dict[str, Any]:
        reply = self.party.handle(op, payload)
        self.ends[op] = time.perf_counter()
        return reply


def aligned_ids(parties: dict[str, Any], true_ids: list[str], psi: str) -> tuple[list[str], dict[str, Any]]:
    """The aligned IDs the run trains on and the alignment record: with ``psi = "ecdh"`` the PSI's output
    (canonical order), after checking it equals ``true_ids`` (the split's intersection); with
    ``"direct"``, ``true_ids`` themselves."""
    if psi == "direct":
        return true_ids, {"backend": "direct", "wall_s": 0.0}
    start = time.perf_counter()
    found = psi_aligned_ids([p.data for p in parties.values()], backend=psi)
    wall_s = time.perf_counter() - start
    equal = len(found) == len(set(found)) and set(found) == set(true_ids)
    if not equal:
        raise RuntimeError(f"the {psi} PSI found {len(found)} IDs, not the {len(true_ids)} of the true "
                           "intersection")
    return found, {"backend": psi, "wall_s": wall_s, "n_found": len(found),
                   "equals_true_intersection": equal}


def served_all(aligned: float | None, active_only: float | None, fraction: float) -> float | None:
    """Accuracy on the label holder's test population (module docstring; 2 parties: it holds half of the
    users not aligned); ``None`` if a run serves not both parts."""
    if aligned is None or active_only is None:
        return None
    share = fraction / (fraction + (1 - fraction) / 2)
    return share * aligned + (1 - share) * active_only


def scale_strategy(name: str, epochs: int, **settings: Any) -> VerticalStrategyConfig:
    """The strategy of run ``name`` (:data:`SCALE_RUNS`) at :data:`SCALE_CASE`: its method, guard and
    tune, ``epochs``, no attack measurement, the ECDH PSI backend, and ``settings`` over them."""
    method, guard, tune = SCALE_RUNS[name]
    return method_strategy(method, epochs=epochs, steps_per_exchange=SCALE_CASE["steps_per_exchange"],
                           guard=guard, tune=tune, attack=False, psi_backend="ecdh", **settings)


def served_accuracies(results: Mapping[str, Any]) -> dict[str, dict[str, float | None]]:
    """``test`` and ``val`` of a run's results: the accuracy per population of :data:`POPULATIONS` and
    ``all`` (:func:`served_all` at :data:`SCALE_CASE`'s fraction)."""
    out = {}
    for split in ("test", "val"):
        acc = {p: results[split].get(p) for p in POPULATIONS}
        out[split] = {**acc, "all": served_all(acc["aligned"], acc["active_only"], SCALE_CASE["fraction"])}
    return out


def scale_run(dataset: str, name: str, seed: int, epochs: int, psi: str = "ecdh") -> dict[str, Any]:
    """One in-process run of :data:`SCALE_RUNS` ``name`` on ``dataset``: its accuracies per population,
    its phase times and memory (module docstring)."""
    torch.set_num_threads(1)
    load_start = os.getloadavg()
    method, guard, _ = SCALE_RUNS[name]
    strategy = scale_strategy(name, epochs)
    start = time.perf_counter()
    cfg, parties, true_ids = prepare_run(dataset, SCALE_CASE["fraction"], seed, strategy)
    setup_s = time.perf_counter() - start
    rss = {"after_setup": _peak_rss_mb()}
    alignment: dict[str, Any] | None = None
    ids: list[str] = []
    if cfg.strategy.split_learning:
        ids, alignment = aligned_ids(parties, true_ids, psi)
    rss["after_psi"] = _peak_rss_mb()
    ends: dict[str, float] = {}
    stamps: list[float] = []
    run_start = time.perf_counter()
    result = run_prepared(cfg, {n: PhaseClock(p, ends) for n, p in parties.items()}, ids,
                          on_epoch=lambda *_: stamps.append(time.perf_counter()))
    run_end = run_start + result["wall_s"]
    rss["end"] = _peak_rss_mb()
    tuned = result.get("tune") is not None  # then the released model is the winner's last-rung trial,
    # trained inside the tuning phase: its epochs are not timed apart (``epoch_s`` None)
    epoch_s = None if tuned else np.diff([ends["align"], *stamps]).tolist()
    users = {n: len(p.data.ids) for n, p in parties.items()}
    return {
        "dataset": dataset, "run": name, "method": method, "guard_setting": guard,
        "tune_setting": cfg.strategy.tune, "seed": seed, "epochs": epochs, "users_per_party": users,
        "n_aligned": result["n_aligned"], "psi": alignment, **served_accuracies(result),
        "guard": result.get("guard"), "fusion": result["fusion"],
        "tune_chosen": result["tune"]["chosen"] if tuned else None,
        "setup_s": setup_s, "psi_s": alignment["wall_s"] if alignment else None,
        "align_s": ends["align"] - run_start, "tuning_s": ends["reset"] - ends["align"] if tuned else None,
        "epoch_s": epoch_s, "epoch_s_mean": None if epoch_s is None else float(np.mean(epoch_s)),
        "epoch_s_per_1000_users": None if epoch_s is None else 1000 * float(np.mean(epoch_s)) / max(
            users.values()),
        "evaluation_s": run_end - stamps[-1], "run_wall_s": result["wall_s"],
        "round_trips": result["round_trips"], "peak_rss_mb": rss,
        "party_state_mb": {n: len(p.state_bytes()) / 2**20 for n, p in parties.items()},
        "party_data_mb": {n: sum(a.nbytes for a in (p.data.x, p.data.val_x, p.data.test_x)) / 2**20
                          for n, p in parties.items()},
        "loadavg": {"start": list(load_start), "end": list(os.getloadavg())},
    }


def summary(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per dataset and run: mean ± std over seeds of the test accuracy per population, the PSI, tuning
    and epoch seconds and the end-of-run peak RSS."""
    out = []
    for dataset in dict.fromkeys(r["dataset"] for r in rows):
        for name in dict.fromkeys(r["run"] for r in rows if r["dataset"] == dataset):
            group = [r for r in rows if r["dataset"] == dataset and r["run"] == name]
            out.append({"dataset": dataset, "run": name, "seeds": [r["seed"] for r in group],
                        "test": {p: seed_mean_std([r["test"][p] for r in group])
                                 for p in (*POPULATIONS, "all")},
                        **{key: seed_mean_std([r[key] for r in group])
                           for key in ("psi_s", "tuning_s", "epoch_s_mean", "setup_s", "evaluation_s")},
                        "peak_rss_mb": seed_mean_std([r["peak_rss_mb"]["end"] for r in group])})
    return out


def add_options(parser: argparse.ArgumentParser) -> None:
    """``--datasets``, ``--runs``, ``--epochs``, ``--seeds``, ``--psi``."""
    parser.add_argument("--datasets", default="synthetic100k,synthetic10k")
    parser.add_argument("--runs", default=",".join(SCALE_RUNS))
    parser.add_argument("--epochs", type=int, default=SCALE_CASE["epochs"])
    parser.add_argument("--seeds", default="0", help="comma-separated seeds")
    parser.add_argument("--psi", choices=ALIGNMENTS, default="ecdh",
                        help="ecdh: real ECDH PSI in every run; direct: the true intersection, no PSI")


def tasks(parser: argparse.ArgumentParser, args: argparse.Namespace) -> list[tuple[Any, ...]]:
    """:func:`scale_run`'s arguments: per dataset, per seed, every chosen run."""
    names = chosen_names(parser, args.runs, SCALE_RUNS, "runs")
    seeds = seed_list(parser, args.seeds)
    return [(d, n, s, args.epochs, args.psi) for d in args.datasets.split(",") for s in seeds for n in names]


def _pct(value: float | None) -> str:
    return "–" if value is None else f"{100 * value:.1f}"


def describe(row: dict[str, Any]) -> str:
    """One run's progress line: dataset, run, seed, test accuracy per population, phase times, peak RSS."""
    test = " ".join(f"{p}={_pct(v)}" for p, v in row["test"].items())
    psi = "–" if row["psi_s"] is None else f"{row['psi_s']:.0f}"
    tuning = "–" if row["tuning_s"] is None else f"{row['tuning_s']:.0f}"
    epochs = "–" if row["epoch_s_mean"] is None else f"{row['epoch_s_mean']:.1f}"
    return (f"{row['dataset']:14s} {row['run']:16s} seed {row['seed']}  {test}  psi {psi} s  tuning {tuning} "
            f"s  {epochs} s/epoch  peak {row['peak_rss_mb']['end']:.0f} MB  "
            f"load {row['loadavg']['start'][0]:.1f}")


def main(argv: list[str] | None = None) -> None:
    """Command line of :func:`benchmarks.vertical.runs_main` with :func:`add_options`: ``--datasets``,
    ``--runs``, ``--epochs``, ``--seeds``, ``--psi``, ``--jobs``, ``--out FILE.json``; a fresh process per
    run; the JSON adds :func:`summary` and ``settings`` (:data:`NOTE`)."""
    runs_main(argv, description=__doc__.split("\n\n")[0], add_options=add_options, tasks=tasks,
              run=scale_run, describe=describe, summary=summary, one_run_per_process=True,
              settings={"case": SCALE_CASE, "runs": SCALE_RUNS, "torch_threads": 1, "note": NOTE})


if __name__ == "__main__":
    main()
