"""Supervised against pseudo-labelling PATE teachers on MNIST-1D, scored on the VALIDATION split.

``python -m benchmarks.teachers_semi --out benchmarks/results/teachers_semi.json`` trains the first ``K``
of the default regime's 250 MNIST-1D teachers (240 samples each; ``simulations.pate_config``'s
MNIST1D_REGIME and ConvBase teacher) supervised, once, then continues them with pseudo-labels of the
student's unlabelled pool (``clients.pate.teacher_pseudo_label``, Lee 2013; the semi-supervised teachers
of Malek et al. 2021) for every ``--settings`` entry, and a control (weight 0: the same extra epochs,
fresh Adam, on the shard alone) when asked for. Each row: mean teacher validation
accuracy, plurality-vote validation accuracy, confident pseudo-labels per teacher and training time
(the pseudo-label rows' time is that of steps 2-3 only; add the supervised row's for the whole).
No setting is chosen on the test split, which is not scored.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import time
from pathlib import Path

import numpy as np
import torch

from benchmarks.teachers import MNIST1D, load_cached, plurality_accuracy
from clients.pate.teacher_ensemble import TeacherEnsemble, train_ensemble
from clients.pate.teacher_fixmatch import continue_with_fixmatch
from clients.pate.teacher_pseudo_label import continue_with_pseudo_labels
from protocol.pate import TeacherSettings
from simulations.pate_config import CONVBASE_1D, MNIST1D_REGIME


def score(ensemble: TeacherEnsemble, d: dict[str, np.ndarray], n_classes: int) -> dict[str, float]:
    """Mean teacher and plurality accuracy on the validation split."""
    x, y, val = d["x"], d["y"], d["validation"]
    acc = ensemble.accuracies(x[val], y[val])
    return {"mean_teacher_validation_accuracy": float(np.mean(acc)),
            "std_teacher_validation_accuracy": float(np.std(acc)),
            "plurality_validation_accuracy": plurality_accuracy(ensemble, x[val], y[val], n_classes)}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--teachers", type=int, default=25)
    parser.add_argument("--settings", default="0.8/1000/1/1,0.8/4000/1/1,0.95/1000/1/1,0.95/4000/1/1",
                        help="comma-separated tau/pool_per_teacher/mu/weight[/method] (pool 0: the whole "
                             "pool; weight 0: the control, the same extra epochs on the shard alone; method "
                             "pseudo_label (default) or fixmatch)")
    parser.add_argument("--pl-epochs", type=int, default=TeacherSettings.pseudo_label_epochs)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--cache", type=Path,
                        default=Path(os.environ.get("TMPDIR", "/tmp")) / "privkit_bench")
    args = parser.parse_args(argv)
    if dataclasses.asdict(MNIST1D) != dataclasses.asdict(MNIST1D_REGIME):
        raise SystemExit("benchmarks.teachers.MNIST1D no longer equals the default regime's data")
    torch.set_num_threads(args.threads)
    d = load_cached(MNIST1D, args.cache)
    x, y = d["x"], d["y"]
    n_classes = int(y.max()) + 1
    shards, ids = list(d["shards"][:args.teachers]), list(range(args.teachers))
    pool_x = x[d["query_pool"]]
    spec = CONVBASE_1D
    common = {"dataset": "mnist1d", "num_teachers": args.teachers, "shard_size": int(len(shards[0])),
              "pool_size": len(pool_x), "epochs": spec.epochs, "lr": spec.lr,
              "augment_shift": spec.augment_shift, "torch_threads": args.threads}
    start = time.perf_counter()
    supervised = train_ensemble(x, y, shards, ids, n_classes, spec, data_seed=MNIST1D.seed)
    rows = [{**common, "method": "supervised", "train_s": time.perf_counter() - start,
             **score(supervised, d, n_classes), "load_average_1min": os.getloadavg()[0]}]
    print(json.dumps(rows[-1]), flush=True)
    for item in args.settings.split(","):
        tau, per_teacher, mu, weight, *method = item.split("/")
        settings = TeacherSettings(method=method[0] if method else "pseudo_label",
                                   pool_per_teacher=int(per_teacher),
                                   pseudo_label_threshold=float(tau), pseudo_label_epochs=args.pl_epochs,
                                   pseudo_label_mu=int(mu), pseudo_label_weight=float(weight))
        start = time.perf_counter()
        if settings.method == "fixmatch":
            ensemble = continue_with_fixmatch(supervised, x, y, shards, ids, n_classes, spec, settings,
                                              pool_x, data_seed=MNIST1D.seed)[0]
            extra = {}
        else:
            ensemble, labels = continue_with_pseudo_labels(supervised, x, y, shards, ids, n_classes, spec,
                                                           settings, pool_x, data_seed=MNIST1D.seed)
            truth = y[d["query_pool"]][labels.pool_index]  # measurement only: no teacher saw these labels
            right = (labels.labels == truth)[labels.confident]
            extra = {"mean_confident_pseudo_labels": float(np.mean(labels.counts())),
                     "confident_pseudo_label_accuracy": float(right.mean())}
        elapsed = time.perf_counter() - start
        rows.append({**common, **dataclasses.asdict(settings),
                     "method": settings.method if settings.pseudo_label_weight else "control",
                     "train_s": elapsed, **score(ensemble, d, n_classes), **extra,
                     "load_average_1min": os.getloadavg()[0]})
        print(json.dumps(rows[-1]), flush=True)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"rows": rows}, indent=2) + "\n")
    print(f"{'method':<13}{'tau':>6}{'pool':>6}{'mu':>4}{'conf':>7}{'pl acc':>8}{'teacher':>9}{'plural':>8}"
          f"{'s':>7}")
    for r in rows:
        print(f"{r['method']:<13}{r.get('pseudo_label_threshold', float('nan')):>6.2f}"
              f"{r.get('pool_per_teacher', 0):>6}{r.get('pseudo_label_mu', 0):>4}"
              f"{r.get('mean_confident_pseudo_labels', 0):>7.0f}"
              f"{r.get('confident_pseudo_label_accuracy', float('nan')):>8.3f}"
              f"{r['mean_teacher_validation_accuracy']:>9.3f}{r['plurality_validation_accuracy']:>8.3f}"
              f"{r['train_s']:>7.0f}")


if __name__ == "__main__":
    main()
