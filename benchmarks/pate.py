"""Benchmark: accuracy against privacy for ensemble-label distillation, side by side in one run.

Per dataset (same split, same teachers, same seeds and the same ε budgets for every method):

- ``non_private_all_data``: one model trained on the union of all teacher shards (upper bound);
- ``majority``: student on noiseless plurality votes for the whole pool (ε = ∞);
- ``gnmax`` and ``confident_gnmax`` at several noise settings: the query stream stops at the ε budget
  (data-dependent, δ = 1e-5), the student trains on the answered queries (plus confident
  self-training on its unanswered samples, which costs no privacy).

The pipeline calls the same functions the Flower ClientApps and strategy call (teacher training,
vote histograms, fusion, ledger, student training), in one process, so that teachers are trained
once per dataset and shared by every method; the Flower message path itself is covered by the
end-to-end tests. Settings are *selected* on the student's validation split; test accuracy is
reported for every row, and ``selected`` marks the validation choice per method.

    python -m benchmarks.pate --quick --out pate.json
"""

from __future__ import annotations

import argparse
import json
import math
import time
import warnings
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from clients.data import load_pate_data
from clients.student import train_student
from clients.teacher import train_teacher, vote_histogram
from clients.training import accuracy
from protocol.pate import DataSpec, ModelSpec
from strategies.accounting import PrivacyLedger, PrivacyWarning
from strategies.fusion import make_mechanism

DELTA = 1e-5


@dataclass(frozen=True)
class DatasetPlan:
    """One dataset's split and models."""

    data: DataSpec
    teacher: ModelSpec
    student: ModelSpec


def plans(quick: bool) -> dict[str, DatasetPlan]:
    """The datasets of the benchmark; ``quick`` shrinks MNIST-1D and the epochs."""
    epochs = 60 if quick else 100
    mlp = ModelSpec(encoder="mlp", epochs=epochs)
    return {
        "digits": DatasetPlan(DataSpec(dataset="digits", num_teachers=20), mlp, mlp),
        "mnist5k": DatasetPlan(DataSpec(dataset="mnist5k", num_teachers=25), mlp, mlp),
        "mnist1d": DatasetPlan(
            DataSpec(dataset="mnist1d", num_teachers=20, mnist1d_samples=8000 if quick else 20000),
            ModelSpec(encoder="cnn1d", epochs=epochs), ModelSpec(encoder="cnn1d", epochs=epochs)),
    }


def settings(num_teachers: int) -> list[dict[str, Any]]:
    """Noise settings scaled to the ensemble size (fractions of the number of teachers)."""
    n = num_teachers
    rows: list[dict[str, Any]] = [{"mechanism": "gnmax", "sigma": round(f * n, 2)}
                                  for f in (0.05, 0.1, 0.2, 0.4)]
    rows += [{"mechanism": "confident_gnmax", "threshold": round(t * n, 2), "sigma1": round(s1 * n, 2),
              "sigma": round(s2 * n, 2)}
             for t, s1, s2 in ((0.8, 0.6, 0.16), (0.7, 0.5, 0.2), (0.6, 0.1, 0.05), (0.7, 0.1, 0.1),
                               (0.7, 0.25, 0.1))]
    return rows


def label_stream(
    votes: np.ndarray, setting: dict[str, Any], budget: float, *, seed: int, batch: int = 128
) -> tuple[np.ndarray, np.ndarray, dict[str, float]]:
    """Fuse ``votes`` batch by batch, charging a fresh ledger, until the pool or the budget ends."""
    params = {k: v for k, v in setting.items() if k != "mechanism"}
    mechanism = make_mechanism(setting["mechanism"], **params)
    ledger = PrivacyLedger.for_mechanism(mechanism, None, delta=DELTA, epsilon_budget=budget)
    rng = np.random.default_rng(seed)
    positions, labels = [], []
    for start in range(0, len(votes), batch):
        fused = mechanism.fuse(votes[start:start + batch], rng)
        charge = ledger.charge(votes[start:start + batch], fused.answered)
        keep = fused.answered[:charge.n_accepted]
        positions.append(start + np.flatnonzero(keep))
        labels.append(fused.labels[:charge.n_accepted][keep])
        if charge.exhausted:
            break
    eps = ledger.epsilon()
    return np.concatenate(positions), np.concatenate(labels), {
        "epsilon_data_dependent": eps["data_dependent"], "epsilon_data_independent": eps["data_independent"]}


def run_dataset(
    name: str, plan: DatasetPlan, budgets: list[float], seed: int, confidence: float | None
) -> list[dict[str, Any]]:
    """All rows of one dataset."""
    data, split = load_pate_data(**{**plan.data.__dict__, "seed": seed})
    pool_x, pool_y = data.x[split.query_pool], data.y[split.query_pool]
    val = (data.x[split.validation], data.y[split.validation])
    test = (data.x[split.test], data.y[split.test])
    rows: list[dict[str, Any]] = []

    def row(method: str, model: Any, t0: float, **extra: Any) -> dict[str, Any]:
        out = {"dataset": name, "method": method, "sigma": None, "accuracy": accuracy(model, *test),
               "validation_accuracy": accuracy(model, *val), "epsilon_data_dependent": math.inf,
               "epsilon_data_independent": math.inf, "delta": DELTA, "answered": 0,
               "wall_s": round(time.perf_counter() - t0, 2)}
        out.update(extra)
        return out

    t0 = time.perf_counter()
    all_teacher = np.concatenate(split.teacher_shards)
    baseline = train_teacher(data.x[all_teacher], data.y[all_teacher], data.n_classes, plan.teacher,
                             seed=seed)
    rows.append(row("non_private_all_data", baseline, t0, answered=len(all_teacher)))

    t0 = time.perf_counter()
    teachers = [train_teacher(data.x[s], data.y[s], data.n_classes, plan.teacher, seed=seed * 100_003 + i)
                for i, s in enumerate(split.teacher_shards)]
    votes = vote_histogram(teachers, pool_x, data.n_classes)
    teacher_s = time.perf_counter() - t0
    teacher_acc = float(np.mean([accuracy(t, *test) for t in teachers]))
    print(f"[{name}] {len(teachers)} teachers, mean test accuracy {teacher_acc:.3f}, "
          f"plurality accuracy on pool {np.mean(votes.argmax(1) == pool_y):.3f} ({teacher_s:.0f} s)")

    t0 = time.perf_counter()
    all_pos = np.arange(len(pool_y))
    student, _ = train_student(pool_x, votes.argmax(1), pool_x[:0], data.n_classes, plan.student, seed=seed)
    rows.append(row("majority", student, t0 - teacher_s, answered=len(all_pos),
                    label_accuracy=float(np.mean(votes.argmax(1) == pool_y)),
                    mean_teacher_accuracy=teacher_acc))

    for budget in budgets:
        for setting in settings(plan.data.num_teachers):
            t0 = time.perf_counter()
            pos, labels, eps = label_stream(votes, setting, budget, seed=seed)
            if len(pos) == 0:  # the budget does not cover a single answer: no student to train
                rows.append({"dataset": name, "method": setting["mechanism"], "sigma": setting["sigma"],
                             "accuracy": None, "validation_accuracy": None, "delta": DELTA, "answered": 0,
                             "wall_s": 0.0, "setting": setting, "budget": budget, **eps})
                continue
            unlabeled = np.setdiff1d(all_pos, pos)
            student, n_pseudo = train_student(pool_x[pos], labels, pool_x[unlabeled], data.n_classes,
                                              plan.student, seed=seed, self_training_confidence=confidence)
            rows.append(row(setting["mechanism"], student, t0 - teacher_s, sigma=setting["sigma"],
                            answered=len(pos), label_accuracy=float(np.mean(labels == pool_y[pos])),
                            pseudo_labelled=n_pseudo, setting=setting, budget=budget, **eps))
        for method in ("gnmax", "confident_gnmax"):
            candidates = [r for r in rows if r["method"] == method and r.get("budget") == budget]
            best = max(candidates, key=lambda r: r["validation_accuracy"] or 0.0)
            for r in candidates:
                r["selected"] = r is best
    return rows


def print_table(rows: list[dict[str, Any]]) -> None:
    head = (f"{'dataset':<8} {'method':<21} {'budget':>6} {'sigma':>6} {'acc':>6} {'val':>6} {'eps_dd':>7} "
            f"{'eps_di':>8} {'answered':>8} {'lbl_acc':>7} {'wall_s':>7} sel")
    print(head)
    print("-" * len(head))
    for r in rows:
        sigma = "" if r["sigma"] is None else f"{r['sigma']:g}"
        lbl = f"{r['label_accuracy']:.3f}" if "label_accuracy" in r else ""
        budget = f"{r['budget']:g}" if "budget" in r else ""
        acc, val = (f"{r[k]:.3f}" if r[k] is not None else "-" for k in ("accuracy", "validation_accuracy"))
        print(f"{r['dataset']:<8} {r['method']:<21} {budget:>6} {sigma:>6} {acc:>6} "
              f"{val:>6} {r['epsilon_data_dependent']:>7.3f} "
              f"{r['epsilon_data_independent']:>8.3f} {r['answered']:>8} {lbl:>7} {r['wall_s']:>7.1f} "
              f"{'*' if r.get('selected') else ''}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="smaller MNIST-1D and fewer epochs (minutes)")
    parser.add_argument("--out", default="pate_benchmark.json", help="JSON file to write")
    parser.add_argument("--budgets", default="2,8,20",
                        help="comma-separated ε budgets (data-dependent, δ = 1e-5); every private method "
                             "runs at each")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--datasets", default="mnist1d,mnist5k,digits")
    parser.add_argument("--self-training", type=float, default=0.9,
                        help="student self-training confidence (0 disables)")
    args = parser.parse_args(argv)
    warnings.simplefilter("ignore", PrivacyWarning)
    torch.set_num_threads(1)  # tiny models: one thread each is fastest on 2 shared cores
    all_plans = plans(args.quick)
    budgets = [float(b) for b in args.budgets.split(",")]
    rows: list[dict[str, Any]] = []
    t0 = time.perf_counter()
    for name in args.datasets.split(","):
        rows += run_dataset(name, all_plans[name], budgets, args.seed, args.self_training or None)
    print_table(rows)
    payload = {"budgets_epsilon": budgets, "delta": DELTA, "seed": args.seed, "quick": args.quick,
               "total_wall_s": round(time.perf_counter() - t0, 1),
               "rows": [{k: (str(v) if isinstance(v, float) and not math.isfinite(v) else v)
                         for k, v in r.items()} for r in rows]}
    with open(args.out, "w", encoding="utf-8") as handle:
        json.dump(payload, handle, indent=2)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
