"""Benchmark of the vertical prototype exchange against its baselines (issue 5, §4).

For every dataset (digits halves, MNIST-5k halves) and aligned fraction, over several seeds, it runs

- ``active_only``: the active party alone, encoder + head on all its labelled rows;
- ``vfl_aligned``: split learning on the aligned users only;
- ``vfl_head_fusion``: split learning + the active party's local head on all its labelled rows, logits
  fused at inference (no prototypes);
- ``proto``: the prototype method in its best form (split learning + local head + fusion + both
  prototype pulls; settings chosen on the *validation* split, see ``conf/vertical/strategy/proto.yaml``);
- ``full_alignment``: split learning with every training user aligned (aligned fraction 1);

every method with ``fusion_selection = validation``: the active party picks among a few candidate
fusions of its predictors on its validation users (``protocol.vertical.fusion_candidates``);

then a protection sweep (clipping + Gaussian noise + minimum class counts on the released prototypes)
reporting accuracy next to both label-inference attacks and the label-DP ε.

Every method has the same seeds, epochs and optimiser. Accuracy is on the test users (held by every
party, predicted with all parties' features); nothing is tuned on them. The runs use the same party and
protocol code as the Flower app, over an in-process link (``strategies.vertical_prototype.InProcessLink``)
with the aligned set computed directly from the parties' ID lists (the PSI phase is benchmarked
separately: it changes nothing in what the parties learn).

Usage::

    python -m benchmarks.vertical --quick --out /tmp/vertical_quick.json
    python -m benchmarks.vertical --out results/vertical.json
    python -m benchmarks.vertical --exchange --out results/vertical_exchange.json
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import multiprocessing
import time
import warnings
from collections.abc import Callable, Iterable, Mapping, Sequence
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import torch
from rich.console import Console
from rich.table import Table

from clients.vertical.data import make_vertical_split
from clients.vertical.parties import make_party
from protocol.privacy_noise import PrivacyWarning
from protocol.vertical import DatasetConfig, ModelConfig, VerticalConfig, VerticalStrategyConfig
from simulations.results import json_safe
from strategies.vertical_prototype import ATTACK_KEYS, InProcessLink, VerticalPrototype

METHODS: dict[str, dict[str, Any]] = {
    "active_only": {"split_learning": False, "prototypes": False},
    "vfl_aligned": {"local_head": False, "prototypes": False},
    "vfl_head_fusion": {"prototypes": False},
    "proto": {},
    "full_alignment": {"local_head": False, "prototypes": False},
}
GRAD_CLIP = 0.01
"""Clip norm of the returned gradient rows in the ``gn_z*`` settings: about the median row norm of the
unprotected digits run's gradients (0.005–0.017 at the logged epochs; seed 0, f = 0.1, 40 epochs)."""
DCOR_WEIGHTS = (0.1, 0.3, 1, 3)
"""Weights ``strategy.dcor_weight`` of the ``dcor_w*`` settings (distance-correlation decorrelation of the
passive embeddings from the labels, Sun et al. 2022)."""
PROTECTION: dict[str, dict[str, Any]] = {
    "none": {},
    "min_count_5": {"min_count": 5},
    "every_4_epochs": {"proto_every": 4},
    **{f"dp_z{z}": {"dp_clip": 1.0, "dp_noise": float(z), "dp_count_noise": float(z), "min_count": 3}
       for z in (1, 4, 16, 64)},
    **{f"dp_z{z}_no_aligned_loss": {"dp_clip": 1.0, "dp_noise": float(z), "dp_count_noise": float(z),
                                    "min_count": 3, "lam_aligned": 0.0} for z in (1, 4, 16, 64)},
    **{f"rr_eps{e:g}": {"label_rr_epsilon": float(e), "lam_aligned": 0.0} for e in (0.25, 1, 2, 4, 8)},
    **{f"gn_z{z:g}": {"grad_clip": GRAD_CLIP, "grad_noise": float(z)} for z in (0.5, 1, 4)},
    **{f"dp_z{z}_gn_z1": {"dp_clip": 1.0, "dp_noise": float(z), "dp_count_noise": float(z), "min_count": 3,
                          "grad_clip": GRAD_CLIP, "grad_noise": 1.0} for z in (4, 16)},
    "no_prototypes": {"prototypes": False},
    **{f"gn_z{z:g}_no_prototypes": {"grad_clip": GRAD_CLIP, "grad_noise": float(z), "prototypes": False}
       for z in (1, 4)},
    **{f"dcor_w{w:g}": {"dcor_weight": float(w)} for w in DCOR_WEIGHTS},
    **{f"dcor_w{w:g}_gn_z1": {"dcor_weight": float(w), "grad_clip": GRAD_CLIP, "grad_noise": 1.0}
       for w in DCOR_WEIGHTS},
    **{f"dcor_w{w:g}_dp_z16_gn_z1": {"dcor_weight": float(w), "dp_clip": 1.0, "dp_noise": 16.0,
                                     "dp_count_noise": 16.0, "min_count": 3, "grad_clip": GRAD_CLIP,
                                     "grad_noise": 1.0} for w in DCOR_WEIGHTS},
    **{f"dcor_w{w:g}_no_prototypes": {"dcor_weight": float(w), "prototypes": False} for w in DCOR_WEIGHTS},
    **{f"dcor_w{w:g}_gn_z1_no_prototypes": {"dcor_weight": float(w), "grad_clip": GRAD_CLIP,
                                            "grad_noise": 1.0, "prototypes": False} for w in DCOR_WEIGHTS},
}
"""Protected settings. With noised prototypes the aligned nearest-prototype loss pulls the passive
features towards noise, so every DP level also runs without it (``_no_aligned_loss``); pick between
the two on validation accuracy (both are reported). ``rr_eps*`` train on randomised-response labels of
the aligned users (``clients.vertical.label_protection``): ε-label-DP for everything a passive party receives,
the split-learning gradients included, which the prototype noise alone does not cover; they run without
the aligned nearest-prototype loss, whose labels would be the responses (on digits, seeds 0–2 at ε = 1,
it collapsed two of three runs to chance; without it: 0.85 / 0.91 / 0.88). ``gn_z*`` clip every gradient
row returned to a passive party to :data:`GRAD_CLIP` and add ``N(0, (z·GRAD_CLIP)²)``
(``clients.vertical.gradient_protection``: label-DP per released batch, ``grad_batch_epsilon``);
``dp_z*_gn_z*`` also noise the prototypes; ``*no_prototypes`` release none (the ``vfl_head_fusion``
baseline: no prototype channel, so no prototype attack). ``dcor_w*`` add :data:`DCOR_WEIGHTS` × the
distance correlation of the passive embeddings with the labels to the label holder's objective
(``clients.vertical.embedding_protection``, against the forward-embedding attack; no ε), alone and
with the gradient noise, prototype noise and no-prototype settings above."""
PROTO_BY_DATASET: dict[str, dict[str, Any]] = {"digits": {}, "mnist5k": {}}
"""The prototype method's weights per dataset on top of the schema defaults (empty: the defaults).
The defaults were chosen on the *validation* users of digits (seeds 0–3, aligned fractions 0.05 and
0.1) over λ_aligned ∈ {0.3, 1} × λ_impute ∈ {0, 1} × prototype fusion ∈ {0.5, 1} × pull form ∈
{distance, cross-entropy} × λ_passive ∈ {0.25, 0.5}; on MNIST-5k (CNN encoders, seeds 0–1) they also
had the best validation accuracy of the three settings tried there."""
console = Console()


MODEL_BY_DATASET: dict[str, dict[str, Any]] = {
    "mnist5k": {"encoder": "cnn"},
}
"""Encoders per dataset, the same for every method: small CNNs for image halves (issue 5, §2), the
schema's MLP for digits' 8 × 4 halves."""


UNTUNED = {"tune": "off"}
"""The benchmarks' ``strategy.tune`` unless a run gives one: the committed results were trained with the
configured weights (the schema's default tunes first); ``benchmarks.vertical_tune`` and
``benchmarks.vertical_tables`` set it per run."""


def method_strategy(method: str, **settings: Any) -> VerticalStrategyConfig:
    """The strategy of ``method`` (its switches in :data:`METHODS`) over the schema's defaults,
    :data:`UNTUNED` and ``settings`` (the one way every vertical benchmark builds a method's settings)."""
    return dataclasses.replace(VerticalStrategyConfig(**{**UNTUNED, **settings}), **METHODS[method])


def prepare_run(
    dataset: str, fraction: float, seed: int, strategy: VerticalStrategyConfig
) -> tuple[VerticalConfig, dict[str, Any], list[str]]:
    """The configuration, the in-process parties and the aligned IDs (canonical order) of one run.

    A benchmark must be reproducible, so the label holder's privacy noise is pinned (``noise_seed``, unless
    ``strategy`` sets one) to the run's ``seed``: the same draws the recorded results were made with.
    Outside a benchmark it is secret (:mod:`protocol.privacy_noise`).
    """
    if strategy.noise_seed is None:
        strategy = dataclasses.replace(strategy, noise_seed=seed)
    cfg = VerticalConfig(dataset=DatasetConfig(name=dataset, aligned_fraction=fraction),
                         model=ModelConfig(**MODEL_BY_DATASET.get(dataset, {})), strategy=strategy,
                         seed=seed)  # validated here
    split = make_vertical_split(dataset, n_parties=cfg.dataset.n_parties, aligned_fraction=fraction,
                                seed=seed)
    parties = {p.name: make_party(p, cfg) for p in split.parties}
    return cfg, parties, split.aligned_ids.tolist()  # sorted: every party's training IDs intersected


def run_prepared(
    cfg: VerticalConfig, parties: dict[str, Any], aligned_ids: list[str],
    on_epoch: Callable[[int, dict[str, float | None]], None] | None = None,
) -> dict[str, Any]:
    """Run :func:`prepare_run`'s output over an in-process link; returns the protocol's results dict."""
    with warnings.catch_warnings():  # the noise seed is pinned on purpose: no PrivacyWarning per run
        warnings.simplefilter("ignore", PrivacyWarning)
        return VerticalPrototype(cfg, on_epoch=on_epoch).run(InProcessLink(parties), lambda link: {
            name: {"aligned_ids": aligned_ids} for name in link.parties})


def run_once(dataset: str, fraction: float, seed: int, strategy: VerticalStrategyConfig) -> dict[str, Any]:
    """One in-process run (:func:`prepare_run`, then :func:`run_prepared`); the protocol's results dict."""
    return run_prepared(*prepare_run(dataset, fraction, seed, strategy))


def _mean(values: list[float | None]) -> float | None:
    """Mean over seeds of a metric, ``None`` if a run has it not (e.g. no active-only predictor)."""
    return None if any(v is None for v in values) else float(np.mean(values))


def aggregate(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """Mean / std over seeds of test and validation accuracy, attack accuracies, ε and wall time."""
    test = np.array([r["test"]["aligned"] for r in runs])
    attack = [r.get("attack") for r in runs]
    out: dict[str, Any] = {
        "accuracy": float(test.mean()),
        "accuracy_std": float(test.std(ddof=1)) if len(runs) > 1 else 0.0,
        "val_accuracy": float(np.mean([r["val"]["aligned"] for r in runs])),
        "active_only_accuracy": _mean([r["test"].get("active_only") for r in runs]),
        **{f"attack_{key}": float(np.mean([a[key] for a in attack])) if all(a and key in a for a in attack)
           else None for key in ATTACK_KEYS},  # None: not measured (no attack, or no prototype release)
        "wall_s": float(np.mean([r["wall_s"] for r in runs])),
        "steps_per_exchange": runs[0]["steps_per_exchange"],
        "round_trips_per_epoch": float(np.mean([r["round_trips_per_epoch"] for r in runs])),
        "n_aligned": _mean([r["n_aligned"] for r in runs]),  # None: a baseline without alignment
        "fusions": [r.get("fusion") for r in runs],  # per seed: (top, head, prototype) weights used
    }
    passive_only = _mean([r["test"].get("passive_only_1") for r in runs])
    if passive_only is not None:
        out["passive_only_accuracy"] = passive_only
    eps = runs[0]["label_dp_epsilon"]
    out["label_dp_epsilon"] = None if math.isinf(eps) else float(eps)
    grad = runs[0]["grad_batch_epsilon"]
    out["grad_batch_epsilon"] = None if math.isinf(grad) else float(grad)
    view = runs[0]["passive_view_epsilon"]
    out["passive_view_epsilon"] = None if math.isinf(view) else float(view)
    return out


def _run_task(task: tuple[str, float, int, VerticalStrategyConfig]) -> dict[str, Any]:
    torch.set_num_threads(1)  # tiny models: extra intra-op threads only contend on shared cores
    return run_once(*task)


def proto_strategy(base: VerticalStrategyConfig, dataset: str) -> VerticalStrategyConfig:
    """The prototype method's settings for ``dataset`` (:data:`PROTO_BY_DATASET` over ``base``)."""
    return dataclasses.replace(base, **PROTO_BY_DATASET.get(dataset, {}))


def benchmark(datasets: list[str], fractions: list[float], seeds: list[int], base: VerticalStrategyConfig,
              protection_fractions: list[float], jobs: int = 1,
              methods: tuple[str, ...] = tuple(METHODS),
              settings: tuple[str, ...] = tuple(PROTECTION), raw_out: Path | None = None) -> dict[str, Any]:
    """All methods on all datasets and fractions, then the protection sweep (``jobs`` runs in parallel).

    ``raw_out``: also write every run's own results there (before aggregating, so nothing is lost).
    """
    groups: list[tuple[dict[str, Any], list[tuple[str, float, int, VerticalStrategyConfig]]]] = []
    for dataset in datasets:
        proto = proto_strategy(base, dataset)
        for method, switches in METHODS.items():
            if method not in methods:
                continue
            strategy = dataclasses.replace(proto, **switches, attack=method == "proto")
            for fraction in ([1.0] if method == "full_alignment" else fractions):
                groups.append(({"dataset": dataset, "aligned_fraction": fraction, "method": method},
                               [(dataset, fraction, s, strategy) for s in seeds]))
        for fraction in protection_fractions:
            for setting, knobs in PROTECTION.items():
                if setting not in settings:
                    continue
                strategy = dataclasses.replace(proto, **knobs, attack=True)
                head = {"dataset": dataset, "aligned_fraction": fraction, "setting": setting, **knobs}
                groups.append((head, [(dataset, fraction, s, strategy) for s in seeds]))
    tasks = [task for _, group in groups for task in group]
    if jobs > 1:
        with ProcessPoolExecutor(jobs, mp_context=multiprocessing.get_context("spawn")) as pool:
            runs = list(pool.map(_run_task, tasks))
    else:
        runs = [_run_task(task) for task in tasks]
    if raw_out is not None:
        raw_out.parent.mkdir(parents=True, exist_ok=True)
        raw_out.write_text(json.dumps(json_safe([
            {"dataset": d, "aligned_fraction": f, "seed": seed, "strategy": dataclasses.asdict(st),
             "result": r} for (d, f, seed, st), r in zip(tasks, runs, strict=True)])))
    results = iter(runs)
    out: dict[str, list[dict[str, Any]]] = {"rows": [], "protection": []}
    for head, group in groups:
        row = {**head, **aggregate([next(results) for _ in group])}
        out["protection" if "setting" in head else "rows"].append(row)
        console.print(_describe(row))
    return out


EXCHANGES = (1, 4, 16, 0)
"""Minibatches per exchange of the ``--exchange`` comparison (0: the whole epoch in one exchange)."""


def exchange_benchmark(datasets: list[str], fraction: float, seeds: list[int], base: VerticalStrategyConfig,
                       exchanges: tuple[int, ...], jobs: int, out: Path | None) -> dict[str, Any]:
    """The prototype method with ``steps_per_exchange`` ∈ ``exchanges`` side by side (rows as in
    :func:`benchmark` plus ``steps_per_exchange`` and ``round_trips_per_epoch``); the JSON is rewritten
    after every row."""
    result: dict[str, Any] = {"rows": [], "protection": []}
    for dataset in datasets:
        for k in exchanges:
            strategy = dataclasses.replace(proto_strategy(base, dataset), steps_per_exchange=k)
            row = benchmark([dataset], [fraction], seeds, strategy, [], jobs, methods=("proto",),
                            settings=())["rows"][0]
            result["rows"].append(row)
            if out is not None:
                out.parent.mkdir(parents=True, exist_ok=True)
                out.write_text(json.dumps(result, indent=2))
    return result


def chosen_names(parser: argparse.ArgumentParser, text: str, allowed: Iterable[str], what: str) -> list[str]:
    """The names of the comma-separated ``text``, in order; ``parser.error`` naming the unknown ones (as
    ``what``, e.g. ``"cases"``) and ``allowed`` if any is not in ``allowed``."""
    names, options = text.split(","), list(allowed)
    unknown = set(names) - set(options)
    if unknown:
        parser.error(f"unknown {what} {sorted(unknown)}; choose from {options}")
    return names


def seed_list(parser: argparse.ArgumentParser, text: str) -> list[int]:
    """The seeds of the comma-separated ``text`` (``--seeds``); ``parser.error`` naming a non-integer."""
    try:
        return [int(s) for s in text.split(",")]
    except ValueError:
        parser.error(f"--seeds {text!r}: comma-separated integers expected")


def runs_main(argv: list[str] | None, *, description: str,
              add_options: Callable[[argparse.ArgumentParser], None],
              tasks: Callable[[argparse.ArgumentParser, argparse.Namespace], list[tuple[Any, ...]]],
              run: Callable[..., dict[str, Any]], describe: Callable[[dict[str, Any]], str],
              summary: Callable[[list[dict[str, Any]]], list[dict[str, Any]]] | None = None,
              one_run_per_process: bool = False, settings: dict[str, Any] | None = None
              ) -> list[dict[str, Any]]:
    """The command line of a benchmark of independent runs (:func:`case_runs_main`,
    ``benchmarks.vertical_scale``): the options ``add_options`` adds, then ``--jobs`` and ``--out FILE.json``
    (rewritten after every run).

    ``tasks(parser, args)`` turns the parsed options into the runs' arguments (``parser.error`` on a bad
    choice); each run is ``run(*task)`` in a spawned process (with ``one_run_per_process``, a fresh process
    per run, so that e.g. each peak RSS is that run's own); each row is printed with ``describe`` as it
    arrives. The JSON holds ``rows``, with ``summary`` ``summary(rows)``, and with ``settings`` those settings
    (what the benchmark states about its runs). Returns the rows in task order.
    """
    parser = argparse.ArgumentParser(description=description)
    add_options(parser)
    parser.add_argument("--jobs", type=int, default=1, help="runs in parallel (processes: one run each)"
                        if one_run_per_process else "runs in parallel (processes)")
    parser.add_argument("--out", type=Path, help="JSON, rewritten after every run")
    args = parser.parse_args(argv)
    chosen = tasks(parser, args)
    rows: list[dict[str, Any]] = []
    with ProcessPoolExecutor(args.jobs, mp_context=multiprocessing.get_context("spawn"),
                             max_tasks_per_child=1 if one_run_per_process else None) as pool:
        for row in pool.map(run, *zip(*chosen, strict=True)):
            rows.append(row)
            console.print(describe(row))
            if args.out:
                record: dict[str, Any] = {"rows": rows}
                if summary is not None:
                    record["summary"] = summary(rows)
                if settings is not None:
                    record["settings"] = settings
                args.out.parent.mkdir(parents=True, exist_ok=True)
                args.out.write_text(json.dumps(json_safe(record), indent=2))
    return rows


def case_runs_main(argv: list[str] | None, *, description: str, cases: Mapping[str, Any], default_cases: str,
                   runs: Sequence[tuple[str, ...]], run: Callable[..., dict[str, Any]],
                   describe: Callable[[dict[str, Any]], str],
                   summary: Callable[[list[dict[str, Any]]], list[dict[str, Any]]] | None = None,
                   ) -> list[dict[str, Any]]:
    """The command line of a per-case benchmark (``benchmarks.vertical_guard``, ``benchmarks.vertical_tune``,
    ``benchmarks.vertical_tables``): :func:`runs_main` with ``--cases``, ``--seed`` (or ``--seeds``, a
    comma-separated list).

    Every run of ``runs`` on every chosen case of ``cases`` is ``run(case, *that_run, seed)`` for every seed;
    ``describe`` and ``summary`` as in :func:`runs_main`. Returns the rows in task order (case, run, seed).
    """
    def add_options(parser: argparse.ArgumentParser) -> None:
        parser.add_argument("--cases", default=default_cases)
        parser.add_argument("--seed", type=int, default=0)
        parser.add_argument("--seeds",
                            help="comma-separated seeds, every run once per seed (overrides --seed)")

    def tasks(parser: argparse.ArgumentParser, args: argparse.Namespace) -> list[tuple[Any, ...]]:
        names = chosen_names(parser, args.cases, cases, "cases")
        seeds = seed_list(parser, args.seeds) if args.seeds else [args.seed]
        return [(case, *settings, seed) for case in names for settings in runs for seed in seeds]

    return runs_main(argv, description=description, add_options=add_options, tasks=tasks, run=run,
                     describe=describe, summary=summary)


def _describe(row: dict[str, Any]) -> str:
    what = row.get("method") or f"protection {row['setting']}"
    attack = "" if row["attack_exact"] is None else (f"  attack exact {row['attack_exact']:.3f} "
                                                     f"nearest {row['attack_nearest']:.3f}")
    if row.get("attack_grad_direction") is not None and row["attack_exact"] is None:
        attack = "  no prototype attack"
    if row.get("attack_grad_direction") is not None:
        attack += (f" grad norm AUC {row['attack_grad_norm']:.3f} direction "
                   f"{row['attack_grad_direction']:.3f} (chance {row['attack_grad_direction_chance']:.3f})")
    if row.get("attack_fwd_cluster") is not None:
        attack += (f" fwd cluster {row['attack_fwd_cluster']:.3f} (untrained "
                   f"{row['attack_fwd_cluster_untrained']:.3f}) best {row['attack_fwd_cluster_best']:.3f} "
                   f"(chance {row['attack_fwd_cluster_best_chance']:.3f})")
    return (f"{row['dataset']:8s} f={row['aligned_fraction']:<5g} {what:24s} test {row['accuracy']:.4f} "
            f"± {row['accuracy_std']:.4f}  val {row['val_accuracy']:.4f}{attack}  "
            f"K={row['steps_per_exchange']} {row['round_trips_per_epoch']:.1f} round trips/epoch  "
            f"{row['wall_s']:.1f} s/run")


def tables(result: dict[str, Any]) -> list[Table]:
    """Accuracy by method × fraction per dataset, and the protection trade-off."""
    out = []
    for dataset in sorted({r["dataset"] for r in result["rows"]}):
        rows = [r for r in result["rows"] if r["dataset"] == dataset]
        fractions = sorted({r["aligned_fraction"] for r in rows if r["method"] != "full_alignment"})
        table = Table(title=f"{dataset}: test accuracy (%) of aligned users, mean ± std over seeds")
        table.add_column("method")
        for f in fractions:
            table.add_column(f"f={f:g}", justify="right")
        full = next((r for r in rows if r["method"] == "full_alignment"), None)
        for method in METHODS:
            if method == "full_alignment":
                if full:
                    table.add_row(method, *[_cell(full)] * len(fractions))
                continue
            cells = {r["aligned_fraction"]: r for r in rows if r["method"] == method}
            table.add_row(method, *[_cell(cells[f]) if f in cells else "-" for f in fractions])
        out.append(table)
    if result["protection"]:
        table = Table(title="prototype protection: accuracy vs label-inference attacks")
        for column in ("dataset", "f", "setting", "accuracy %", "attack exact %", "attack nearest %",
                       "grad norm AUC", "grad direction % (chance)", "fwd cluster % (untrained)",
                       "fwd best-map % (chance)", "prototype ε (δ=1e-5)", "grad batch ε", "view ε"):
            table.add_column(column, justify="right")
        for r in result["protection"]:
            eps = "∞" if r["label_dp_epsilon"] is None else f"{r['label_dp_epsilon']:.3g}"
            view = "∞" if r["passive_view_epsilon"] is None else f"{r['passive_view_epsilon']:.3g}"
            grad = "∞" if r.get("grad_batch_epsilon") is None else f"{r['grad_batch_epsilon']:.3g}"
            table.add_row(r["dataset"], f"{r['aligned_fraction']:g}", r["setting"], _cell(r),
                          _pct(r["attack_exact"]), _pct(r["attack_nearest"]),
                          f"{r['attack_grad_norm']:.3f}", f"{100 * r['attack_grad_direction']:.1f} "
                          f"({100 * r['attack_grad_direction_chance']:.0f})", _fwd(r, "", "untrained"),
                          _fwd(r, "best", "best_chance"), eps, grad, view)
        out.append(table)
    return out


def exchange_table(result: dict[str, Any]) -> Table:
    """Accuracy and round trips per epoch by minibatches per exchange (``--exchange``)."""
    table = Table(title="prototype method: minibatches per exchange (K; 0 = whole epoch)")
    for column in ("dataset", "f", "K", "round trips / epoch", "accuracy %", "val accuracy %", "s/run"):
        table.add_column(column, justify="right")
    for r in result["rows"]:
        table.add_row(r["dataset"], f"{r['aligned_fraction']:g}", str(r["steps_per_exchange"]),
                      f"{r['round_trips_per_epoch']:.2f}", _cell(r), f"{100 * r['val_accuracy']:.1f}",
                      f"{r['wall_s']:.1f}")
    return table


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{100 * value:.1f}"


def _fwd(row: dict[str, Any], key: str, beside: str) -> str:
    """``attack_fwd_cluster[_key]`` with ``attack_fwd_cluster_<beside>`` in brackets, in % (``-``: not
    measured, as in results older than the forward-embedding attack)."""
    value = row.get("attack_fwd_cluster" + (f"_{key}" if key else ""))
    if value is None:
        return "-"
    return f"{100 * value:.1f} ({100 * row[f'attack_fwd_cluster_{beside}']:.0f})"


def _cell(row: dict[str, Any]) -> str:
    return f"{100 * row['accuracy']:.1f} ± {100 * row['accuracy_std']:.1f}"


def strategy_overrides(pairs: list[str]) -> dict[str, Any]:
    """``KEY=VALUE`` strings as strategy settings, each value cast to its schema field's type.

    Raises
    ------
    ValueError
        If a pair has no ``=``, names no strategy setting, or its value does not parse as the field's type.
    """
    defaults = VerticalStrategyConfig()
    fields = {f.name: int if getattr(defaults, f.name) is None else type(getattr(defaults, f.name))
              for f in dataclasses.fields(VerticalStrategyConfig)}  # None: the optional noise_seed
    out: dict[str, Any] = {}
    for pair in pairs:
        key, sep, text = pair.partition("=")
        if not sep or key not in fields:
            raise ValueError(f"--strategy takes KEY=VALUE with KEY a strategy setting, got {pair!r}")
        kind = fields[key]
        if kind is bool:
            if text not in ("true", "false"):
                raise ValueError(f"--strategy {key} must be true or false, got {text!r}")
            out[key] = text == "true"
            continue
        try:
            out[key] = kind(text)
        except ValueError:
            raise ValueError(f"--strategy {key} must be a {kind.__name__}, got {text!r}") from None
    return out


def main(argv: list[str] | None = None) -> None:
    """Command line: ``--quick`` (digits, 2 fractions, 1 seed, 15 epochs) and ``--out FILE.json``."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="digits only, f in {0.05, 0.1}, 1 seed")
    parser.add_argument("--out", type=Path, help="write the JSON results here")
    parser.add_argument("--raw", type=Path, help="also write every single run's results here")
    parser.add_argument("--datasets", default="digits,mnist5k")
    parser.add_argument("--fractions", default="0.02,0.05,0.1,0.2,0.5")
    parser.add_argument("--protection-fractions", default="0.05,0.1")
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--settings", default=",".join(PROTECTION),
                        help="comma-separated settings of the protection sweep")
    parser.add_argument("--methods", default=",".join(METHODS),
                        help="comma-separated methods of the main table ('' for the protection sweep only)")
    parser.add_argument("--jobs", type=int, default=1, help="runs in parallel (processes)")
    parser.add_argument("--exchange", action="store_true",
                        help="only the prototype method at f = 0.1 with steps_per_exchange in --exchanges")
    parser.add_argument("--exchanges", default=",".join(map(str, EXCHANGES)),
                        help="minibatches per exchange for --exchange (0: the whole epoch)")
    parser.add_argument("--epochs", type=int, default=VerticalStrategyConfig.epochs, help="epochs per run")
    parser.add_argument("--strategy", action="append", default=[], metavar="KEY=VALUE",
                        help="a strategy setting over the defaults (repeatable), "
                             "e.g. stale_refresh=prototypes")
    args = parser.parse_args(argv)
    try:
        overrides = strategy_overrides(args.strategy)
        base = VerticalStrategyConfig(**{"epochs": args.epochs, **UNTUNED, **overrides})
        base.validate()
    except (TypeError, ValueError) as err:
        parser.error(str(err))
    datasets = args.datasets.split(",")
    fractions = [float(f) for f in args.fractions.split(",")]
    protection_fractions = [float(f) for f in args.protection_fractions.split(",") if f]
    seeds = list(range(args.seeds))
    if args.quick:
        datasets, fractions, protection_fractions, seeds = ["digits"], [0.05, 0.1], [0.1], [0]
        base = dataclasses.replace(base, epochs=15)
    start = time.perf_counter()
    methods = tuple(m for m in args.methods.split(",") if m)
    settings = tuple(x for x in args.settings.split(",") if x)
    unknown = (set(methods) - set(METHODS)) | (set(settings) - set(PROTECTION))
    if unknown:
        parser.error(f"unknown methods or settings {sorted(unknown)}; choose from {list(METHODS)} and "
                     f"{list(PROTECTION)}")
    if args.exchange:
        exchanges = tuple(int(k) for k in args.exchanges.split(","))
        result = exchange_benchmark(datasets, 0.1, seeds, base, exchanges, args.jobs, args.out)
    else:
        result = benchmark(datasets, fractions, seeds, base, protection_fractions, args.jobs, methods,
                           settings, raw_out=args.raw)
    result["settings"] = {"seeds": seeds, "strategy": dataclasses.asdict(base), "proto": PROTO_BY_DATASET,
                          "noise_seed": "each run's seed (pinned for reproducibility: benchmarks only)",
                          "model": {"default": dataclasses.asdict(ModelConfig()), **MODEL_BY_DATASET},
                          "total_wall_s": time.perf_counter() - start}
    for table in [exchange_table(result)] if args.exchange else tables(result):
        console.print(table)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(result, indent=2))
        console.print(f"results written to {args.out}")


if __name__ == "__main__":
    main()
