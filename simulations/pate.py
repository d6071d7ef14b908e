"""Hydra entry point: ensemble-label distillation (PATE) in Flower's simulation engine.

    python -m simulations.pate
    python -m simulations.pate dataset=mnist5k strategy=gnmax strategy.sigma2=40
    python -m simulations.pate -m strategy.sigma2=2,4,8

Shows live progress (``simulations.progress``: a rich bar on a terminal, a line per phase, query batch
and training update in a log), ends with a summary table and writes
``results.json``, ``privacy_ledger.json`` and the student model into the run directory.
"""

from __future__ import annotations

import dataclasses
import math
import os
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import hydra
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException
from rich.console import Console
from rich.table import Table

from clients.data import dataset_cache_key, load_pate_data
from clients.data_cache import default_cache_dir, has_entry
from protocol.pate import SITE_DATA
from simulations.hydra_errors import check_command_line, unknown_settings
from simulations.pate_config import NoiseScaleError, PateConfig, register_configs
from simulations.pate_server import build_ledger, run_pate_server
from simulations.progress import ProgressReporter

register_configs()

CONF_DIR = Path(__file__).resolve().parents[1] / "conf" / "pate"
"""The Hydra config folder of ``python -m simulations.pate``."""


def run(cfg: PateConfig, console: Console | None = None) -> dict[str, Any]:
    """Run one PATE experiment in Flower's simulation engine; return its results.

    Progress goes to ``console`` (``simulations.progress``): a rich bar on a terminal, plain lines per
    phase, per query batch and from the training nodes otherwise.
    """
    from simulations.app import build_client_app
    from simulations.flower_sim import run_flower_simulation

    if cfg.federation.teacher_nodes < 1:
        raise ValueError(f"federation.teacher_nodes must be >= 1, got {cfg.federation.teacher_nodes}")
    build_ledger(cfg)  # an earlier run's ledger without run.resume is refused here, before Ray starts
    console = console or Console()
    teacher_nodes = min(cfg.federation.teacher_nodes, cfg.data.num_teachers)
    details = {"teachers": f"{cfg.data.num_teachers} teachers x {cfg.teacher.epochs} epochs on "
                           f"{teacher_nodes} teacher node{'s' if teacher_nodes > 1 else ''}"}
    with tempfile.TemporaryDirectory(prefix="privkit-progress-") as folder, ProgressReporter(
            console, max_queries=cfg.strategy.max_queries or None,
            query_batch_size=cfg.strategy.query_batch_size, details=details) as reporter:
        progress_file = Path(folder) / "nodes.jsonl"  # the simulated nodes' training progress
        reporter.follow(progress_file)
        prepare_data(cfg, reporter)
        reporter.phase("startup", f"Flower simulation engine: {teacher_nodes} teacher nodes + 1 student node")
        results = run_flower_simulation(
            lambda grid, _ctx: run_pate_server(grid, cfg, reporter.on_event),
            build_client_app(cfg.run.output_dir, progress_file=progress_file), teacher_nodes + 1,
            cpus_per_node=cfg.federation.cpus_per_node, verbose=cfg.run.verbose)
    console.print(summary_table(results))
    console.print(f"results: {os.path.join(cfg.run.output_dir, 'results.json')}")
    return results


def prepare_data(cfg: PateConfig, reporter: ProgressReporter) -> None:
    """The data phase: build the run's bundled dataset and split into the machine's data cache, once, in this
    process, before any node starts (``clients.data_cache``); the simulated nodes then read it in well under
    a second each instead of each generating it. Nothing to do when the nodes bring their own files."""
    if cfg.data.dataset == SITE_DATA:
        return
    folder = default_cache_dir()
    d = cfg.data
    ready = has_entry(dataset_cache_key(d.dataset, d.seed, d.mnist1d_samples))
    entry = "ready in" if ready else "building it once into"
    expected = ""
    if d.dataset == "mnist1d" and not ready:
        expected = f" (the generator: ≈ {d.mnist1d_samples * 0.0005:.0f} s on a quiet core)"
    reporter.phase("data", f"{d.dataset}: {entry} the data cache {folder}{expected}")
    data, split = load_pate_data(**dataclasses.asdict(d))
    reporter.done(f"{len(data)} samples, {split.num_teachers} teacher shards, "
                  f"{len(split.query_pool)} in the student's pool")


def summary_table(results: dict[str, Any]) -> Table:
    """The end-of-run summary as a rich table."""
    student = results["student"]
    teacher_accs = [t["test_accuracy"] for t in results["teachers"].values()]
    cfg = results["config"]
    table = Table(title="flwr-privkit · PATE run")
    table.add_column("quantity")
    table.add_column("value", justify="right")
    rows = [
        ("dataset", cfg["data"]["dataset"]),
        ("mechanism", results["mechanism"]),
        ("teachers (remaining)", f"{len(teacher_accs)} ({results['teachers_remaining']})"),
        ("mean teacher test accuracy", f"{sum(teacher_accs) / len(teacher_accs):.4f}"),
        ("queries checked / pool", f"{results['queries_checked']} / {results['pool_size']}"),
        ("queries answered", str(results["answered"])),
        ("fused-label accuracy", f"{student['fused_label_accuracy']:.4f}"),
        ("ε data-dependent", _fmt_eps(results["epsilon_data_dependent"])),
        ("ε data-independent", _fmt_eps(results["epsilon_data_independent"])),
        ("δ", str(results["delta"])),
        ("student validation accuracy", f"{student['validation_accuracy']:.4f}"),
        ("student test accuracy", f"{student['test_accuracy']:.4f}"),
        ("wall time (s)", f"{results['wall_s']:.1f}"),
    ]
    for name, value in rows:
        table.add_row(name, value)
    return table


def _fmt_eps(value: float) -> str:
    return f"{value:.4f}" if math.isfinite(value) else "∞"


def _noise_source(key: str) -> str:
    """Where the refused noise setting ``key`` came from: the command line, or the noise group (named)."""
    from hydra.core.hydra_config import HydraConfig

    hydra_cfg = HydraConfig.get()
    if any(o.lstrip("+~").split("=", 1)[0] == key for o in hydra_cfg.overrides.task):
        return f" [{key} was set on the command line]"
    group = hydra_cfg.runtime.choices.get("noise")
    return (f" [{key} comes from the noise group {group!r} (conf/pate/noise/{group}.yaml), written for "
            "its dataset's default teacher count; data.num_teachers does not rescale it]")


@hydra.main(config_path="../conf/pate", config_name="config", version_base="1.3")
def main(cfg: DictConfig) -> None:
    """Hydra's entry: turn the composed config into the typed schema and run.

    A setting out of range stops here, before Ray or any node starts: ``error: <field>=<value>: <rule>``
    on stderr and exit status 2. A run that fails (a refused ledger: 2; too few teachers left, a node's
    error, an exhausted budget: 1) ends with its cause, naming the node where there is one, on one
    ``error:`` line; ``run.verbose=true`` re-raises it with the traceback.
    """
    unknown = unknown_settings(cfg, PateConfig)
    if unknown:  # `+key=value` adds keys the schema does not have: they would be ignored silently
        print(f"error: {unknown}", file=sys.stderr)
        sys.exit(2)
    try:
        config = OmegaConf.to_object(cfg)
    except (ValueError, OmegaConfBaseException) as err:
        cause = err.__cause__ if isinstance(err, OmegaConfBaseException) and err.__cause__ else err
        source = _noise_source(cause.field) if isinstance(cause, NoiseScaleError) else ""
        print(f"error: {str(cause).splitlines()[0]}{source}", file=sys.stderr)
        sys.exit(2)
    try:
        run(config)  # type: ignore[arg-type]
    except (ValueError, RuntimeError) as err:  # refused settings (exit 2), a failed run (exit 1)
        if config.run.verbose:  # type: ignore[attr-defined]
            raise
        print(f"error: {str(err).splitlines()[0]}\n(run.verbose=true shows the traceback)", file=sys.stderr)
        sys.exit(2 if isinstance(err, ValueError) else 1)


def cli(argv: Sequence[str] | None = None) -> None:
    """``python -m simulations.pate [overrides]``: a command line that does not compose (a config-group
    choice that does not exist, a misspelt key, a value of the wrong type) is one ``error:`` line and exit
    status 2 before anything runs (:func:`simulations.hydra_errors.check_command_line`); else :func:`main`
    runs it. ``argv`` (default: ``sys.argv[1:]``) given replaces ``sys.argv``'s arguments for Hydra."""
    check_command_line(CONF_DIR, PateConfig, sys.argv[1:] if argv is None else argv, "run.verbose")
    if argv is not None:
        sys.argv = [sys.argv[0], *argv]
    main()


if __name__ == "__main__":
    cli()
