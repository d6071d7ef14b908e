"""Benchmark: accuracy against privacy for ensemble-label distillation, side by side in one run.

Per dataset (the same split, teachers, seeds and ε budgets for every method and student):

- ``non_private_all_data``: one model trained on the union of all teacher shards (the reference the
  targets are ratios of);
- ``majority``: a supervised student on noiseless plurality votes for the whole pool (ε = ∞);
- ``gnmax`` and ``confident_gnmax``: the query stream stops at the ε budget (data-dependent,
  δ = 1e-5); the noise setting is chosen per budget on the student's *validation* split (mean over
  seeds, supervised student), then every student (``supervised``, ``self_training``, ``fixmatch``)
  trains on the labels that setting bought. Rows carry the data-independent ε and the
  smooth-sensitivity release of the data-dependent ε (Papernot et al. 2018, Section 4.3) beside it.

The pipeline calls the same functions the Flower ClientApps and the strategy call (batched teacher
ensemble, vote histograms, fusion, ledger, student training) in one process, so that teachers are
trained once per dataset and seed and shared by every method; the Flower message path itself is
covered by the end-to-end tests. Accuracy is the mean over seeds (``accuracy_std`` beside it).

    python -m benchmarks.pate --out benchmarks/results/pate.json            # the full regime
    python -m benchmarks.pate --quick --datasets digits --out /tmp/pate.json  # a smoke run
    python -m benchmarks.pate --datasets mnist1d --teacher-method fixmatch --query-selection uncertainty \
        --budgets 0.5,1,2 --cache /tmp/pate_cache --out /tmp/pate_fm.json
    python -m benchmarks.pate --secagg --quick --seeds 0,1,2 --out benchmarks/results/pate_secagg.json
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import os
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

from benchmarks import pate_secagg
from clients.data import load_pate_data
from clients.pate.query_selection import choose_queries
from clients.pate.student import STUDENT_SEED_OFFSET, train_student
from clients.pate.teacher import train_teacher
from clients.pate.teacher_ensemble import train_ensemble
from clients.pate.teacher_fixmatch import train_fixmatch_ensemble
from clients.training import accuracy
from protocol.pate import DataSpec, ModelSpec, StudentSettings, TeacherSettings, asks_in_pool_order
from simulations.pate_config import compose_config
from strategies.accounting import PrivacyLedger, PrivacyWarning
from strategies.fusion import make_mechanism

DELTA = 1e-5
STUDENTS = ("supervised", "self_training", "fixmatch")
WIDE_STUDENTS = {"fixmatch_wide": "convbase1d_wide"}  # FixMatch with a wider student encoder (64 channels)


@dataclass(frozen=True)
class DatasetPlan:
    """One dataset's split, models, student settings and budgets."""

    data: DataSpec
    teacher: ModelSpec
    student: ModelSpec
    student_settings: StudentSettings
    budgets: tuple[float, ...]
    baseline_epochs: int
    teacher_training: TeacherSettings = field(default_factory=TeacherSettings)
    query_selection: str = "random"


# The best FixMatch teachers of benchmarks/results/teachers_semi.json (50 MNIST-1D teachers, validation):
# 4 000 pool samples each, threshold 0.8, mu 3, 150 epochs.
FIXMATCH_TEACHERS = TeacherSettings(method="fixmatch", pool_per_teacher=4000, pseudo_label_threshold=0.8,
                                    pseudo_label_epochs=150, pseudo_label_mu=3)
QUERY_SELECTIONS = ("random", "uncertainty")


BUDGETS = {"mnist1d": (1.0, 2.0, 4.0), "mnist5k": (1.0, 2.0, 4.0), "digits": (8.0,)}
MAJORITY_EPOCHS = 20  # the majority student labels the whole pool: fewer passes give as many steps
TARGET_BUDGET = {"mnist1d": 2.0, "mnist5k": 2.0, "digits": 8.0}  # self-training (slow) runs at this one only
BASELINE_EPOCHS = {"mnist1d": 30, "mnist5k": 60, "digits": 100}


def plans(quick: bool) -> dict[str, DatasetPlan]:
    """The regimes of the benchmark: exactly what ``python -m simulations.pate dataset=<name>`` runs.

    ``quick`` shrinks them to a smoke run of a few minutes (50 MNIST-1D teachers, 20 epochs).
    """
    out = {}
    for name, budgets in BUDGETS.items():
        cfg = compose_config(f"dataset={name}")
        data, teacher, student = cfg.data, cfg.teacher, cfg.student_model
        settings_, baseline = cfg.student, BASELINE_EPOCHS[name]
        if quick:
            if name == "mnist1d":
                data = replace(data, num_teachers=50, mnist1d_samples=20_000, teacher_samples=12_000)
            teacher, student = replace(teacher, epochs=20), replace(student, epochs=20)
            settings_ = replace(settings_, fixmatch_epochs=3, fixmatch_warmup_epochs=20)
            baseline = 5
        out[name] = DatasetPlan(data, teacher, student, settings_, budgets, baseline)
    return out


def settings(num_teachers: int) -> list[dict[str, Any]]:
    """Noise settings scaled to the ensemble size (fractions of the number of teachers).

    ``(0.8, 0.6, 0.16)`` is the paper's MNIST setting (T = 200, σ1 = 150, σ2 = 40 for 250 teachers;
    Papernot et al. 2018, Table 2).
    """
    n = num_teachers
    rows: list[dict[str, Any]] = [{"mechanism": "gnmax", "sigma2": round(f * n, 2)} for f in (0.1, 0.2, 0.4)]
    rows += [{"mechanism": "confident_gnmax", "threshold": round(t * n, 2), "sigma1": round(s1 * n, 2),
              "sigma2": round(s2 * n, 2)}
             for t, s1, s2 in ((0.8, 0.6, 0.16), (0.7, 0.5, 0.16), (0.8, 0.4, 0.12), (0.7, 0.25, 0.1))]
    return rows


NextBatch = Callable[[np.ndarray, np.ndarray, np.ndarray], np.ndarray]


def label_stream(
    votes: np.ndarray, setting: dict[str, Any], budget: float, *, seed: int, batch: int = 128,
    next_batch: NextBatch | None = None,
) -> tuple[np.ndarray, np.ndarray, dict[str, float]]:
    """Fuse ``votes`` batch by batch, charging a fresh ledger, until the pool or the budget ends.

    The batches follow pool order, or ``next_batch(asked, answered_positions, answered_labels)``'s
    choice of pool positions (never one asked before). Returns the answered positions, their labels and
    the privacy bill (data-dependent, data-independent and, for Confident-GNMax, the smooth-sensitivity
    release).
    """
    params = {k: v for k, v in setting.items() if k != "mechanism"}
    mechanism = make_mechanism(setting["mechanism"], **params)
    ledger = PrivacyLedger.for_mechanism(mechanism, None, delta=DELTA, epsilon_budget=budget)
    rng = np.random.default_rng(seed)
    positions: list[np.ndarray] = [np.zeros(0, dtype=np.int64)]
    labels: list[np.ndarray] = [np.zeros(0, dtype=np.int64)]
    asked = np.zeros(0, dtype=np.int64)
    while len(asked) < len(votes):
        if next_batch is None:
            chosen = np.arange(len(asked), min(len(asked) + batch, len(votes)))
        else:
            chosen = next_batch(asked, np.concatenate(positions), np.concatenate(labels))[:batch]
        fused = mechanism.fuse(votes[chosen], rng)
        charge = ledger.charge(votes[chosen], fused.answered)
        keep = fused.answered[:charge.n_accepted]
        asked = np.concatenate([asked, chosen[:charge.n_accepted]])
        positions.append(chosen[:charge.n_accepted][keep])
        labels.append(fused.labels[:charge.n_accepted][keep])
        if charge.exhausted:
            break
    eps = ledger.epsilon()
    bill = {"epsilon_data_dependent": eps["data_dependent"],
            "epsilon_data_independent": eps["data_independent"],
            "epsilon_released": math.nan, "epsilon_released_std": math.nan,
            "queries_checked": ledger.queries_checked}
    if ledger.queries_checked:
        try:
            release = ledger.release(np.random.default_rng(seed + 1))
        except ValueError as err:  # the smooth-sensitivity conditions fail at this setting
            print(f"  no smooth-sensitivity release for {setting}: {err}", flush=True)
            release = None
        if release is not None:
            bill.update(epsilon_released=release["epsilon_released"],
                        epsilon_released_std=release["epsilon_released_std"])
    return np.concatenate(positions), np.concatenate(labels), bill


def uncertainty_batches(run: SeedRun, plan: DatasetPlan, seed: int, batch: int = 128) -> NextBatch:
    """The student chooses as the Flower student does (``choose_queries`` by margin, the top ``batch``)
    once the student's ``selection_warmup`` were asked in pool order and enough of them were answered
    (``asks_in_pool_order``, the Flower strategy's rule).
    """
    pool_x = run.data.x[run.split.query_pool]
    n_classes = run.data.n_classes

    def next_batch(asked: np.ndarray, positions: np.ndarray, labels: np.ndarray) -> np.ndarray:
        if asks_in_pool_order(asked, len(positions), plan.student_settings.selection_warmup, n_classes):
            unasked = np.setdiff1d(np.arange(len(pool_x)), asked)
            return unasked[:batch]
        return choose_queries(pool_x, asked, positions, labels, n_classes, batch, plan.student,
                              plan.student_settings, seed=seed)

    return next_batch


@dataclass
class SeedRun:
    """What one seed of one dataset shares across methods: the data, the teachers' votes, baselines."""

    data: Any
    split: Any
    votes: np.ndarray
    teacher_accuracy: float
    plurality_accuracy: float
    teacher_s: float


def prepare_seed(
    name: str, plan: DatasetPlan, seed: int, cache: Path | None = None
) -> tuple[SeedRun, dict[str, Any]]:
    """Train the teachers (one batched ensemble) and the non-private baseline for one seed.

    With ``cache``, the pool's vote histograms, teacher statistics and baseline row are kept in
    ``cache/<dataset>_seed<seed>_<plan digest>.npz`` and reused by later runs of the same plan.
    """
    data, split = load_pate_data(**{**plan.data.__dict__, "seed": seed})
    key: tuple[Any, ...] = (plan.data, plan.teacher, plan.baseline_epochs)
    if plan.teacher_training.method != "supervised":  # supervised teachers keep their earlier cache files
        key += (plan.teacher_training,)
    digest = hashlib.sha256(repr(key).encode()).hexdigest()[:12]
    cached = cache / f"{name}_seed{seed}_{digest}.npz" if cache is not None else None
    if cached is not None and cached.exists():
        stored = np.load(cached, allow_pickle=False)
        stats = json.loads(str(stored["stats"]))
        print(f"[{name} seed {seed}] teachers and baseline from {cached}", flush=True)
        return SeedRun(data, split, stored["votes"], stats["teacher_accuracy"], stats["plurality_accuracy"],
                       stats["teacher_s"]), stats["baseline"]
    t0 = time.perf_counter()
    shards = split.teacher_shards
    pool_x, pool_y = data.x[split.query_pool], data.y[split.query_pool]
    if plan.teacher_training.method == "fixmatch":
        ensemble = train_fixmatch_ensemble(data.x, data.y, shards, list(range(len(shards))), data.n_classes,
                                           plan.teacher, plan.teacher_training, pool_x, data_seed=seed)
    elif plan.teacher_training.method == "supervised":
        ensemble = train_ensemble(data.x, data.y, shards, list(range(len(shards))), data.n_classes,
                                  plan.teacher, data_seed=seed)
    else:
        raise ValueError(f"benchmark teacher method must be supervised or fixmatch, got "
                         f"{plan.teacher_training.method!r}")
    votes = ensemble.vote_histogram(pool_x, data.n_classes)
    teacher_s = time.perf_counter() - t0
    teacher_acc = float(np.mean(ensemble.accuracies(data.x[split.test], data.y[split.test])))
    plurality = float(np.mean(votes.argmax(1) == pool_y))
    print(f"[{name} seed {seed}] {len(shards)} teachers in {teacher_s:.0f} s: mean test accuracy "
          f"{teacher_acc:.3f}, plurality on pool {plurality:.3f}", flush=True)
    t0 = time.perf_counter()
    union = np.concatenate(split.teacher_shards)
    baseline = train_teacher(data.x[union], data.y[union], data.n_classes,
                             replace(plan.teacher, epochs=plan.baseline_epochs, batch_size=128), seed=seed)
    row = {"method": "non_private_all_data", "student": "supervised",
           "accuracy": accuracy(baseline, data.x[split.test], data.y[split.test]),
           "validation_accuracy": accuracy(baseline, data.x[split.validation], data.y[split.validation]),
           "answered": len(union), "wall_s": time.perf_counter() - t0}
    print(f"[{name} seed {seed}] non-private on {len(union)}: test {row['accuracy']:.4f}", flush=True)
    if cached is not None:
        cached.parent.mkdir(parents=True, exist_ok=True)
        stats = {"teacher_accuracy": teacher_acc, "plurality_accuracy": plurality, "teacher_s": teacher_s,
                 "baseline": row}
        tmp = cached.with_suffix(".tmp.npz")
        np.savez(tmp, votes=votes, stats=json.dumps(stats))
        os.replace(tmp, cached)
    return SeedRun(data, split, votes, teacher_acc, plurality, teacher_s), row


def student_row(run: SeedRun, plan: DatasetPlan, positions: np.ndarray, labels: np.ndarray, student: str,
                seed: int) -> dict[str, Any]:
    """Train one student on ``labels`` at pool ``positions``; its accuracies and label quality."""
    data, split = run.data, run.split
    pool = split.query_pool
    unlabeled = np.setdiff1d(np.arange(len(pool)), positions)
    t0 = time.perf_counter()
    spec, method = plan.student, student
    if student in WIDE_STUDENTS:
        spec, method = replace(plan.student, encoder=WIDE_STUDENTS[student]), "fixmatch"
    model, n_pseudo = train_student(data.x[pool[positions]], labels, data.x[pool[unlabeled]], data.n_classes,
                                    spec, seed=seed + STUDENT_SEED_OFFSET, method=method,
                                    settings=replace(plan.student_settings, method=method))
    return {"accuracy": accuracy(model, data.x[split.test], data.y[split.test]),
            "validation_accuracy": accuracy(model, data.x[split.validation], data.y[split.validation]),
            "label_accuracy": float(np.mean(data.y[pool[positions]] == labels)) if len(labels) else math.nan,
            "answered": len(labels), "pseudo_labelled": n_pseudo, "wall_s": time.perf_counter() - t0}


def _mean_std(values: list[float]) -> tuple[float, float]:
    arr = np.asarray([v for v in values if v is not None and math.isfinite(v)], dtype=float)
    if arr.size == 0:
        return math.nan, math.nan
    return float(arr.mean()), float(arr.std())


def aggregate(name: str, plan: DatasetPlan, key: dict[str, Any], per_seed: list[dict[str, Any]],
              runs: list[SeedRun]) -> dict[str, Any]:
    """One table row: the mean (and std) over seeds of ``per_seed``, with the dataset's teacher stats."""
    row: dict[str, Any] = {"dataset": name, **key, "num_teachers": plan.data.num_teachers, "delta": DELTA,
                           "teacher_method": plan.teacher_training.method,
                           "query_selection": plan.query_selection, "seeds": [r["seed"] for r in per_seed]}
    row.update(seed_stats(per_seed))
    row["teacher_accuracy"] = float(np.mean([r.teacher_accuracy for r in runs]))
    row["plurality_accuracy"] = float(np.mean([r.plurality_accuracy for r in runs]))
    row["per_seed"] = per_seed
    return row


SEED_STATS = ("accuracy", "validation_accuracy", "label_accuracy", "answered", "epsilon_data_dependent",
              "epsilon_data_independent", "epsilon_released", "epsilon_released_std", "wall_s")
ROW_KEY = ("dataset", "method", "student", "budget", "teacher_method", "query_selection")
"""What makes two result rows the same setting, whatever the settings each seed chose on validation."""


def seed_stats(per_seed: list[dict[str, Any]]) -> dict[str, float]:
    """The mean over seeds of every :data:`SEED_STATS` a seed reports, and ``accuracy_std`` (a value read
    back from a results file may be ``"inf"`` / ``"nan"``: :func:`_json_safe` writes them so)."""
    out: dict[str, float] = {}
    for stat in SEED_STATS:
        values = [float(v) if isinstance(v, str) else v for v in (r.get(stat) for r in per_seed)]
        if all(v is None for v in values):
            continue
        mean, std = _mean_std(values)
        out[stat] = mean
        if stat == "accuracy":
            out["accuracy_std"] = std
    return out


def combine_seeds(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Rows of the same setting (:data:`ROW_KEY`) from runs of different seeds as one row over all their
    seeds (``--combine-seeds``): the per-seed results pooled and averaged again; each seed's chosen
    ``setting`` kept in ``setting_per_seed``; teacher and plurality accuracy averaged per seed."""
    groups: dict[tuple[Any, ...], list[dict[str, Any]]] = {}
    for r in rows:
        groups.setdefault(tuple(r.get(k) for k in ROW_KEY), []).append(r)
    out = []
    for group in groups.values():
        per_seed = [p for r in group for p in r["per_seed"]]
        seeds = [s for r in group for s in r["seeds"]]
        if len(set(seeds)) != len(seeds):
            key = {k: group[0].get(k) for k in ROW_KEY}
            raise ValueError(f"seeds {seeds} repeat for {key}")
        weights = [len(r["seeds"]) for r in group]
        dropped = (*SEED_STATS, "accuracy_std", "setting", "sigma2", "selection", "per_seed")
        row = {k: v for k, v in group[0].items() if k not in dropped}
        row.update(seeds=seeds, **seed_stats(per_seed), per_seed=per_seed,
                   setting_per_seed=[r.get("setting") for r in group for _ in r["seeds"]])
        for stat in ("teacher_accuracy", "plurality_accuracy"):
            row[stat] = float(np.average([r[stat] for r in group], weights=weights))
        out.append(row)
    return out


def run_dataset(
    name: str, plan: DatasetPlan, seeds: list[int], students: tuple[str, ...], *, cache: Path | None = None,
    on_rows: Callable[[list[dict[str, Any]]], None] | None = None,
    mechanisms: tuple[str, ...] = ("gnmax", "confident_gnmax"), references: bool = True,
) -> list[dict[str, Any]]:
    """All rows of one dataset; ``on_rows`` sees the rows so far after each one (to save as it goes).

    ``references=False`` skips the non-private and majority rows (for runs that add students only).
    """
    runs, baselines = [], []
    for seed in seeds:
        run, base = prepare_seed(name, plan, seed, cache)
        runs.append(run)
        baselines.append({**base, "seed": seed})
    no_privacy = {"sigma2": None, "epsilon_data_dependent": math.inf, "epsilon_data_independent": math.inf}
    rows = [aggregate(name, plan, {"method": "non_private_all_data", "student": "supervised", **no_privacy},
                      baselines, runs)]
    majority = []
    for seed, run in zip(seeds, runs, strict=True):
        if not references:
            rows = []
            break
        all_pos = np.arange(len(run.votes))
        row = student_row(run, replace(plan, student=replace(plan.student, epochs=MAJORITY_EPOCHS)), all_pos,
                          run.votes.argmax(1), "supervised", seed)
        majority.append({**row, "seed": seed})
    if references:
        rows.append(aggregate(name, plan, {"method": "majority", "student": "supervised", **no_privacy},
                              majority, runs))
    for budget in plan.budgets:
        for mechanism in mechanisms:
            chosen = students if mechanism == "confident_gnmax" else ("supervised",)
            if budget != TARGET_BUDGET[name]:
                chosen = tuple(s for s in chosen if s != "self_training")
            rows += budget_rows(name, plan, seeds, runs, budget, mechanism, chosen)
            if on_rows is not None:
                on_rows(rows)
    return rows


def budget_rows(name: str, plan: DatasetPlan, seeds: list[int], runs: list[SeedRun], budget: float,
                mechanism: str, students: tuple[str, ...]) -> list[dict[str, Any]]:
    """Choose ``mechanism``'s noise setting on validation at ``budget``; then train every student there."""
    candidates = [s for s in settings(plan.data.num_teachers) if s["mechanism"] == mechanism]
    streams: dict[int, list[tuple[np.ndarray, np.ndarray, dict[str, float]]]] = {}
    scores = []
    for i, setting in enumerate(candidates):
        streams[i] = [label_stream(run.votes, setting, budget, seed=seed,
                                   next_batch=uncertainty_batches(run, plan, seed)
                                   if plan.query_selection == "uncertainty" else None)
                      for seed, run in zip(seeds, runs, strict=True)]
        vals = []
        for seed, run, (pos, lab, _) in zip(seeds, runs, streams[i], strict=True):
            vals.append(student_row(run, plan, pos, lab, "supervised", seed)["validation_accuracy"]
                        if len(pos) else 0.0)
        scores.append(float(np.mean(vals)))
        print(f"[{name}] ε ≤ {budget:g} {setting}: answered {[len(p) for p, _, _ in streams[i]]}, "
              f"supervised validation {scores[-1]:.4f}", flush=True)
    best = int(np.argmax(scores))
    rows = []
    for student in students:
        per_seed = []
        for seed, run, (pos, lab, bill) in zip(seeds, runs, streams[best], strict=True):
            result = student_row(run, plan, pos, lab, student, seed) if len(pos) else {
                "accuracy": None, "validation_accuracy": None, "answered": 0}
            per_seed.append({**result, **bill, "seed": seed})
        setting = candidates[best]
        row = aggregate(name, plan, {"method": mechanism, "student": student, "sigma2": setting["sigma2"],
                                     "budget": budget, "setting": setting, "selected": True}, per_seed, runs)
        row["selection"] = {"candidates": candidates, "validation_accuracy": scores}
        print(f"[{name}] {mechanism} ε ≤ {budget:g} {student}: test {row.get('accuracy', math.nan):.4f} "
              f"± {row.get('accuracy_std', math.nan):.4f}, answered {row.get('answered', 0):.0f}, ε_dd "
              f"{row['epsilon_data_dependent']:.3f}, released {row.get('epsilon_released', math.nan):.3f}",
              flush=True)
        rows.append(row)
    return rows


def print_table(rows: list[dict[str, Any]]) -> None:
    head = (f"{'dataset':<8} {'method':<21} {'student':<13} {'budget':>6} {'acc':>13} {'ratio':>6} "
            f"{'eps_dd':>7} {'eps_rel':>7} {'eps_di':>7} {'answered':>8} {'lbl_acc':>7} {'teach':>6}")
    print(head)
    print("-" * len(head))
    reference = {r["dataset"]: r["accuracy"] for r in rows if r["method"] == "non_private_all_data"}

    def fmt(value: Any, spec: str = ".3f") -> str:
        missing = value is None or (isinstance(value, float) and math.isnan(value))
        return "-" if missing else value if isinstance(value, str) else format(value, spec)

    for r in rows:
        acc = r.get("accuracy")
        ratio = acc / reference[r["dataset"]] if acc is not None and r["dataset"] in reference else None
        acc_text = f"{fmt(acc)}±{fmt(r.get('accuracy_std'))}"
        print(f"{r['dataset']:<8} {r['method']:<21} {r['student']:<13} {fmt(r.get('budget'), 'g'):>6} "
              f"{acc_text:>13} {fmt(ratio):>6} {fmt(r.get('epsilon_data_dependent')):>7} "
              f"{fmt(r.get('epsilon_released')):>7} {fmt(r.get('epsilon_data_independent')):>7} "
              f"{fmt(r.get('answered'), '.0f'):>8} {fmt(r.get('label_accuracy')):>7} "
              f"{fmt(r.get('teacher_accuracy')):>6}")


def _json_safe(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_json_safe(v) for v in value]
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    return value


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="smaller regimes and fewer epochs (minutes)")
    parser.add_argument("--out", default="pate_benchmark.json", help="JSON file to write")
    parser.add_argument("--seeds", default="0,1,2", help="comma-separated seeds (accuracy is their mean)")
    parser.add_argument("--datasets", default="mnist1d,mnist5k,digits")
    parser.add_argument("--students", default=",".join(STUDENTS))
    parser.add_argument("--threads", type=int, default=2, help="torch threads")
    parser.add_argument("--budgets", help="comma-separated ε budgets instead of each dataset's")
    parser.add_argument("--mechanisms", default="gnmax,confident_gnmax")
    parser.add_argument("--no-references", action="store_true",
                        help="skip the non-private and majority rows (adding students to an earlier run)")
    parser.add_argument("--teacher-method", choices=("supervised", "fixmatch"), default="supervised",
                        help="fixmatch: teachers also learn from the student's pool (FIXMATCH_TEACHERS)")
    parser.add_argument("--query-selection", choices=QUERY_SELECTIONS, default="random",
                        help="uncertainty: the student picks its next questions (uncertainty_batches)")
    parser.add_argument("--cache", type=Path, help="keep/reuse teachers' votes and baselines in this folder")
    parser.add_argument("--prepare-only", action="store_true",
                        help="only train the teachers and baselines of --seeds into --cache")
    parser.add_argument("--secagg", action="store_true",
                        help="noise at the server vs at the teachers under secure aggregation vs local "
                             "randomised response, and secure aggregation's time per batch (pate_secagg)")
    parser.add_argument("--merge", nargs="+", type=Path,
                        help="merge the rows of these result files into --out (no run)")
    parser.add_argument("--combine-seeds", action="store_true",
                        help="with --merge: rows of the same setting from runs of other seeds become one row "
                             "over all their seeds (combine_seeds)")
    args = parser.parse_args(argv)
    if args.merge:
        parts = [json.loads(p.read_text()) for p in args.merge]
        rows = [r for p in parts for r in p["rows"]]
        seeds = sorted({s for p in parts for s in p["seeds"]}) if args.combine_seeds else parts[0]["seeds"]
        rows = combine_seeds(rows) if args.combine_seeds else rows
        merged = {"delta": DELTA, "seeds": seeds, "quick": parts[0]["quick"],
                  "merged_from": [str(p) for p in args.merge],
                  "total_wall_s": sum(p["total_wall_s"] for p in parts), "rows": rows}
        Path(args.out).write_text(json.dumps(merged, indent=2))
        print_table(rows)
        return 0
    warnings.simplefilter("ignore", PrivacyWarning)
    torch.set_num_threads(args.threads)
    teacher_training = FIXMATCH_TEACHERS if args.teacher_method == "fixmatch" else TeacherSettings()
    all_plans = {name: replace(plan, teacher_training=teacher_training, query_selection=args.query_selection)
                 for name, plan in plans(args.quick).items()}
    seeds = [int(s) for s in args.seeds.split(",")]
    students = tuple(args.students.split(","))
    rows: list[dict[str, Any]] = []
    t0 = time.perf_counter()
    out = Path(args.out)
    def save(so_far: list[dict[str, Any]]) -> None:
        payload = {"delta": DELTA, "seeds": seeds, "quick": args.quick,
                   "total_wall_s": round(time.perf_counter() - t0, 1), "rows": so_far}
        out.write_text(json.dumps(_json_safe(payload), indent=2))

    if args.secagg:  # its own rows, same schema: accuracy and ε per mode, then the timing rows
        for part in (lambda: pate_secagg.accuracy_rows(seeds, args.quick), pate_secagg.timing_rows):
            rows += part()
            save(rows)
        pate_secagg.print_table(rows)
        print(f"wrote {out}")
        return 0
    for name in args.datasets.split(","):
        if args.prepare_only:
            for seed in seeds:
                prepare_seed(name, all_plans[name], seed, args.cache)
            continue
        done = list(rows)
        plan = all_plans[name]
        if args.budgets:
            plan = replace(plan, budgets=tuple(float(b) for b in args.budgets.split(",")))
        rows += run_dataset(name, plan, seeds, students, cache=args.cache,
                            on_rows=lambda r, done=done: save(done + r),  # saved as it goes
                            mechanisms=tuple(args.mechanisms.split(",")), references=not args.no_references)
        save(rows)
    if args.prepare_only:
        return 0
    print_table(rows)
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
