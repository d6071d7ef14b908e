"""Batched PATE teachers against the one-teacher-at-a-time loop; teacher settings chosen on validation.

``python -m benchmarks.teachers --out FILE.json`` trains the first ``K`` of 250 MNIST-1D teachers
(240 samples each, the MNIST-1D paper's ConvBase, random shift) as one batched ensemble
(``clients.pate.teacher_ensemble.train_ensemble``) and, side by side in the same process and with the
same torch thread setting, a subsample of the same teachers with the reference loop
(``train_teacher_alone``); it prints a table and writes one JSON row per setting.

``--dataset mnist5k`` instead times the 2-D CNN (``cnn`` encoder) on MNIST-5k at 50 teachers (60 samples
each): a short run of ``--timing-epochs`` epochs with the ``vmap`` path and one with the path
``train_ensemble`` chooses (the grouped convolutions of ``clients.pate.grouped_cnn``), each beside the
loop, then the full ``CNN2D`` epochs for the accuracies; the rows are appended to ``--out`` if it exists.

``--select`` instead trains a subset of the teachers for each learning rate x shift and scores the
teachers after 60 / 100 / 200 epochs (one run per pair: the learning rate is constant, so the
teachers after epoch ``e`` are those of an ``e``-epoch run) on the VALIDATION split, which no teacher
trains on: mean teacher accuracy and plurality-vote accuracy. ``--select --dataset mnist5k`` does the
same for the 2-D CNN on the split ``python -m simulations.pate dataset=mnist5k`` and ``benchmarks.pate``
use (seed 0: 50 teachers x 64 samples, validation 300), over epochs 40 / 100 / 200, lr 1e-3 / 3e-3 and
shift 2 / 3 (``--select-lrs`` / ``--select-shifts`` run part of the grid); its rows are appended to
``--out``'s ``select_mnist5k`` and the best of them all is ``chosen_mnist5k``.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import time
from collections.abc import Callable
from contextlib import nullcontext
from pathlib import Path
from typing import NamedTuple, TypeVar
from unittest import mock

import numpy as np
import torch

from clients.data import load_pate_data
from clients.encoders import build_classifier
from clients.pate import grouped_cnn
from clients.pate.teacher_ensemble import TeacherEnsemble, teacher_seed, train_ensemble, train_teacher_alone
from protocol.pate import DataSpec, ModelSpec
from simulations.pate_config import compose_config

MNIST1D = DataSpec(dataset="mnist1d", seed=0, num_teachers=250, partition="iid", dirichlet_alpha=0.5,
                   query_fraction=0.2, validation_fraction=0.02, test_fraction=0.1, mnist1d_samples=100_000,
                   teacher_samples=60_000)
MNIST5K = DataSpec(dataset="mnist5k", seed=0, num_teachers=50, partition="iid", query_fraction=0.2,
                   validation_fraction=0.1, test_fraction=0.1)
CONVBASE = ModelSpec(encoder="convbase1d", feature_dim=64, epochs=100, batch_size=32, lr=3e-3,
                     weight_decay=1e-4, augment_shift=6)
CNN2D = ModelSpec(encoder="cnn", feature_dim=64, epochs=40, batch_size=32, lr=1e-3, weight_decay=1e-4,
                  augment_shift=2)
SELECT_EPOCHS = (60, 100, 200)
SELECT_LRS = (1e-3, 3e-3)
SELECT_SHIFTS = (3, 6)
SELECT_GRID_5K = ((40, 100, 200), (1e-3, 3e-3), (2, 3))
"""The mnist5k selection grid: epochs scored, learning rates, shifts."""



class Column(NamedTuple):
    """One column of a printed table: its ``header``, the row's ``key``, the ``width`` spec (alignment and
    width, e.g. ``">9"``) of header and value, and the value's ``precision`` spec (e.g. ``".1f"``)."""

    header: str
    key: str
    width: str
    precision: str = ""


SPEED_COLUMNS = (
    Column("model", "model", "<11"),
    Column("K", "num_teachers", ">5"),
    Column("loop s/t", "loop_s_per_teacher", ">10", ".2f"),
    Column("batch s/t", "batched_s_per_teacher", ">11", ".3f"),
    Column("speedup", "speedup", ">9", ".1f"),
    Column("total s", "batched_total_s", ">9", ".0f"),
    Column("acc", "mean_teacher_accuracy", ">7", ".3f"),
)
"""The MNIST-1D speed rows' table: seconds per teacher, loop against batched."""
PATH_COLUMNS = (
    Column("path", "batched_path", "<16"),
    Column("epochs", "epochs", ">7"),
    Column("loop s/t-ep", "loop_s_per_teacher_epoch", ">12", ".3f"),
    Column("batch s/t-ep", "batched_s_per_teacher_epoch", ">13", ".4f"),
    Column("speedup", "speedup", ">9", ".1f"),
    Column("acc", "mean_teacher_accuracy", ">7", ".3f"),
    Column("load", "load_average_1min", ">6", ".1f"),
)
"""The MNIST-5k rows' table: seconds per teacher-epoch by batched path, and the load average."""


def print_table(rows: list[dict[str, object]], columns: tuple[Column, ...]) -> None:
    """Print ``rows`` as a plain-text table: a header line, then one line per row."""
    print("".join(f"{c.header:{c.width}}" for c in columns))
    for r in rows:
        print("".join(f"{r[c.key]:{c.width}{c.precision}}" for c in columns))


def load_cached(spec: DataSpec, cache_dir: Path) -> dict[str, np.ndarray]:
    """The run's data and split, cached as ``.npz`` (MNIST-1D generation takes ~25 s)."""
    key = "_".join(str(v) for v in dataclasses.asdict(spec).values())
    path = cache_dir / f"pate_{key}_pool.npz"  # "_pool": caches that hold the student's query pool too
    if path.exists():
        with np.load(path) as f:
            return dict(f)
    data, split = load_pate_data(**dataclasses.asdict(spec))
    arrays = {"x": data.x, "y": data.y, "shards": np.stack(split.teacher_shards)
              if len({len(s) for s in split.teacher_shards}) == 1 else np.array([], dtype=np.int64),
              "validation": split.validation, "test": split.test, "query_pool": split.query_pool}
    if arrays["shards"].size == 0:
        raise ValueError(f"benchmark data {spec.dataset!r} needs equal-size shards to cache them")
    cache_dir.mkdir(parents=True, exist_ok=True)
    np.savez(path, **arrays)
    return arrays


def plurality_accuracy(ensemble: TeacherEnsemble, x: np.ndarray, y: np.ndarray, n_classes: int) -> float:
    """Accuracy of the ensemble's noiseless plurality vote (ties to the lowest class)."""
    return float(np.mean(ensemble.vote_histogram(x, n_classes).argmax(axis=1) == y))


def speed_row(d: dict[str, np.ndarray], spec: ModelSpec, model_name: str, dataset: str, num_teachers: int,
              loop_teachers: int, chunk: int, *, force_vmap: bool = False) -> dict[str, object]:
    """Time batched training of ``num_teachers`` and the loop on the first ``loop_teachers`` of them.

    ``force_vmap`` trains the batch under ``vmap`` even where ``train_ensemble`` would choose the grouped
    2-D path (``clients.pate.grouped_cnn.supports`` patched to refuse), to time the two side by side.
    """
    x, y = d["x"], d["y"]
    n_classes = int(y.max()) + 1
    shards = list(d["shards"][:num_teachers])
    ids = list(range(num_teachers))
    grouped = not force_vmap and grouped_cnn.supports(
        build_classifier(tuple(x.shape[1:]), n_classes, kind=spec.encoder, feature_dim=spec.feature_dim,
                         hidden=spec.hidden), x.ndim - 1)
    load_start = os.getloadavg()[0]
    start = time.perf_counter()
    with mock.patch.object(grouped_cnn, "supports", return_value=False) if force_vmap else nullcontext():
        ensemble = train_ensemble(x, y, shards, ids, n_classes, spec, data_seed=0, chunk=chunk)
    batched = time.perf_counter() - start
    start = time.perf_counter()
    alone = [train_teacher_alone(x[shards[t]], y[shards[t]], n_classes, spec, seed=teacher_seed(0, t))
             for t in range(loop_teachers)]
    loop = (time.perf_counter() - start) / loop_teachers
    # the batched teachers equal the loop's: report the largest logit difference as a check
    probe = torch.from_numpy(x[d["validation"][:256]])
    with torch.no_grad():
        gap = max(float((ensemble.teacher(t)(probe) - alone[t](probe)).abs().max())
                  for t in range(loop_teachers))
    test, val = d["test"], d["validation"]
    test_acc = ensemble.accuracies(x[test], y[test])
    val_acc = ensemble.accuracies(x[val], y[val])
    return {
        "dataset": dataset, "num_teachers": num_teachers, "model": model_name,
        "shard_size": int(len(shards[0])), "epochs": spec.epochs, "lr": spec.lr,
        "batch_size": spec.batch_size,
        "augment_shift": spec.augment_shift, "chunk": chunk, "torch_threads": torch.get_num_threads(),
        "loop_s_per_teacher": loop, "batched_s_per_teacher": batched / num_teachers,
        "speedup": loop / (batched / num_teachers), "loop_teachers_timed": loop_teachers,
        "batched_path": "grouped_conv2d" if grouped else "vmap",
        "loop_s_per_teacher_epoch": loop / max(spec.epochs, 1),
        "batched_s_per_teacher_epoch": batched / num_teachers / max(spec.epochs, 1),
        "batched_total_s": batched, "max_logit_gap_batched_vs_loop": gap,
        "mean_teacher_accuracy": float(np.mean(test_acc)), "std_teacher_accuracy": float(np.std(test_acc)),
        "mean_teacher_validation_accuracy": float(np.mean(val_acc)),
        "plurality_validation_accuracy": plurality_accuracy(ensemble, x[val], y[val], n_classes),
        "load_average_1min": os.getloadavg()[0], "load_average_1min_start": load_start,
    }


def select_rows(d: dict[str, np.ndarray], base: ModelSpec, num_teachers: int, chunk: int,
                epochs: tuple[int, ...] = SELECT_EPOCHS, lrs: tuple[float, ...] = SELECT_LRS,
                shifts: tuple[int, ...] = SELECT_SHIFTS,
                on_row: Callable[[list[dict]], None] | None = None) -> list[dict]:
    """Score every (epochs, lr, shift) of the grid on the validation split; ``on_row(rows so far)``, if
    given, after each row (to save as it goes)."""
    x, y = d["x"], d["y"]
    n_classes = int(y.max()) + 1
    val = d["validation"]
    shards, ids = list(d["shards"][:num_teachers]), list(range(num_teachers))
    rows: list[dict] = []
    for lr in lrs:
        for shift in shifts:
            spec = dataclasses.replace(base, epochs=max(epochs), lr=lr, augment_shift=shift)

            start = time.perf_counter()

            def score(epoch: int, ens: TeacherEnsemble, lr: float = lr, shift: int = shift,
                      start: float = start) -> None:
                if epoch in epochs:
                    acc = ens.accuracies(x[val], y[val])
                    rows.append({"epochs": epoch, "lr": lr, "augment_shift": shift,
                                 "num_teachers": num_teachers, "wall_s": time.perf_counter() - start,
                                 "load_average_1min": os.getloadavg()[0],
                                 "mean_teacher_validation_accuracy": float(np.mean(acc)),
                                 "plurality_validation_accuracy": plurality_accuracy(ens, x[val], y[val],
                                                                                     n_classes)})
                    print(json.dumps(rows[-1]), flush=True)
                    if on_row is not None:
                        on_row(rows)

            train_ensemble(x, y, shards, ids, n_classes, spec, data_seed=0, chunk=chunk, on_epoch=score)
    return rows


def mnist5k_rows(args: argparse.Namespace) -> None:
    """The 2-D CNN at 50 MNIST-5k teachers: vmap and grouped paths beside the loop, appended to ``--out``."""
    d = load_cached(MNIST5K, args.cache)
    short = dataclasses.replace(CNN2D, epochs=args.timing_epochs)
    runs = [(short, True), (short, False), (CNN2D, False)]
    rows = []
    for spec, force_vmap in runs:
        rows.append(speed_row(d, spec, "cnn", "mnist5k", MNIST5K.num_teachers, args.loop_teachers, args.chunk,
                              force_vmap=force_vmap))
        if spec.epochs != CNN2D.epochs:
            rows[-1]["note"] = (f"timing row: {spec.epochs} epochs instead of CNN2D's {CNN2D.epochs}; its "
                                "accuracies are those of under-trained teachers")
        print(json.dumps(rows[-1]), flush=True)
    result = json.loads(args.out.read_text()) if args.out.exists() else {"rows": []}
    result["rows"] = [*result["rows"], *rows]
    print_table(rows, PATH_COLUMNS)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")


def best_select_row(rows: list[dict]) -> dict:
    """The grid point of highest plurality validation accuracy (ties: higher mean teacher accuracy)."""
    return max(rows, key=lambda r: (r["plurality_validation_accuracy"],
                                    r["mean_teacher_validation_accuracy"]))


T = TypeVar("T")


def _parsed(text: str | None, cast: Callable[[str], T], default: tuple[T, ...]) -> tuple[T, ...]:
    """The comma-separated option ``text`` cast item by item, or ``default`` when it is absent or empty."""
    return tuple(cast(item) for item in text.split(",")) if text else default


def mnist5k_select(args: argparse.Namespace) -> None:
    """``--select --dataset mnist5k``: the grid (or the part ``--select-lrs`` / ``--select-shifts`` name)
    on the benchmark's own mnist5k split, appended to ``--out``'s ``select_mnist5k``."""
    spec = compose_config("dataset=mnist5k").data
    d = load_cached(spec, args.cache)
    grid_epochs, grid_lrs, grid_shifts = SELECT_GRID_5K
    epochs = _parsed(args.select_epochs, int, grid_epochs)
    lrs = _parsed(args.select_lrs, float, grid_lrs)
    shifts = _parsed(args.select_shifts, int, grid_shifts)
    earlier = json.loads(args.out.read_text()) if args.out.exists() else {}
    extra = {"dataset": "mnist5k", "shard_size": int(len(d["shards"][0])),
             "validation_size": int(len(d["validation"])), "torch_threads": args.threads}

    def save(rows: list[dict]) -> None:
        result = dict(earlier)
        result["select_mnist5k"] = [*earlier.get("select_mnist5k", []), *({**r, **extra} for r in rows)]
        result["chosen_mnist5k"] = best_select_row(result["select_mnist5k"])
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(result, indent=2) + "\n")

    select_rows(d, CNN2D, spec.num_teachers, args.chunk, epochs, lrs, shifts, on_row=save)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--select", action="store_true", help="choose epochs x lr x shift on validation")
    parser.add_argument("--counts", default="50,250", help="teacher counts of the MNIST-1D speed rows")
    parser.add_argument("--epochs", type=int, default=CONVBASE.epochs)
    parser.add_argument("--lr", type=float, default=CONVBASE.lr)
    parser.add_argument("--shift", type=int, default=CONVBASE.augment_shift)
    parser.add_argument("--loop-teachers", type=int, default=3)
    parser.add_argument("--select-teachers", type=int, default=50)
    parser.add_argument("--select-epochs", help="epoch counts scored in --select mode (one run to the "
                        "largest; default 60,100,200 for mnist1d, 40,100,200 for mnist5k)")
    parser.add_argument("--select-lrs", help="mnist5k --select: these learning rates only (comma-separated)")
    parser.add_argument("--select-shifts", help="mnist5k --select: these shifts only (comma-separated)")
    parser.add_argument("--chunk", type=int, default=250)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--mnist5k", action="store_true", help="add the 2-D cnn row (mnist5k, 50 teachers)")
    parser.add_argument("--dataset", choices=("mnist1d", "mnist5k"), default="mnist1d",
                        help="mnist5k: only the 2-D cnn rows (vmap vs grouped vs loop), appended to --out")
    parser.add_argument("--timing-epochs", type=int, default=3,
                        help="epochs of the mnist5k vmap-vs-grouped timing rows (accuracy rows: CNN2D's)")
    parser.add_argument("--cache", type=Path,
                        default=Path(os.environ.get("TMPDIR", "/tmp")) / "privkit_bench")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    if args.dataset == "mnist5k":
        mnist5k_select(args) if args.select else mnist5k_rows(args)
        return
    d = load_cached(MNIST1D, args.cache)
    base = dataclasses.replace(CONVBASE, epochs=args.epochs, lr=args.lr, augment_shift=args.shift)
    if args.select:
        epochs = _parsed(args.select_epochs, int, SELECT_EPOCHS)
        rows = select_rows(d, base, args.select_teachers, args.chunk, epochs)
        result: dict[str, object] = {"select": rows, "chosen": best_select_row(rows),
                                     "torch_threads": args.threads}
    else:
        rows = []
        for k in (int(c) for c in args.counts.split(",")):
            rows.append(speed_row(d, base, "convbase1d", "mnist1d", k, args.loop_teachers, args.chunk))
            print(json.dumps(rows[-1]), flush=True)
        if args.mnist5k:
            rows.append(speed_row(load_cached(MNIST5K, args.cache), CNN2D, "cnn", "mnist5k", 50,
                                  args.loop_teachers, args.chunk))
            print(json.dumps(rows[-1]), flush=True)
        result = {"rows": rows}
        print_table(rows, SPEED_COLUMNS)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
