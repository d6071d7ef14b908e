"""Summary of a Hydra sweep: one table, ``summary.json``, ``summary.csv`` and a plot across its runs.

Every run of ``python -m simulations.pate -m ...`` / ``python -m simulations.vertical -m ...`` writes its
own ``results.json`` into ``<sweep dir>/<job number>/``. This module reads them back, keeps the
configuration keys that vary across the runs, averages the runs that differ only in their seeds
(mean ± sample std) and reports each method's headline metrics. It runs by itself at the end of a
multirun (the :class:`SweepSummary` Hydra callback in ``conf/*/config.yaml``) or on any sweep directory::

    python -m simulations.sweep_summary runs/pate-sweep/2026-11-30_21-00-00
"""

from __future__ import annotations

import argparse
import csv
import json
import math
from pathlib import Path
from typing import Any

import numpy as np
from hydra.experimental.callback import Callback
from rich.console import Console
from rich.table import Table

from simulations.results import json_safe
from strategies.vote_release import RENAMED_PARAMS

SEED_KEYS = ("seed", "data.seed", "strategy.seed")
"""Configuration keys that only pick a seed: runs differing in them are repetitions, averaged."""
METRICS = {
    "pate": ("student.test_accuracy", "student.fused_label_accuracy", "answered",
             "epsilon_data_dependent", "epsilon_data_independent", "wall_s"),
    "vertical": ("test.aligned", "test.active_only", "val.aligned", "attack.exact", "attack.nearest",
                 "label_dp_epsilon", "wall_s"),
}
"""Headline metrics per method, the first one plotted."""
console = Console()


def flatten(tree: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """``{"a": {"b": 1}}`` → ``{"a.b": 1}`` (lists are kept as values)."""
    out: dict[str, Any] = {}
    for key, value in tree.items():
        if isinstance(value, dict):
            out.update(flatten(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


def load_run(path: Path) -> tuple[str, dict[str, Any], dict[str, Any]]:
    """``(method, flat config, flat metrics)`` of one ``results.json`` (PATE or vertical layout).

    A PATE run's settings by their earlier names (``strategy.sigma``, written before it was renamed
    ``strategy.sigma2``: :data:`strategies.vote_release.RENAMED_PARAMS`) are read by the current ones.

    Raises
    ------
    ValueError
        If the file is neither layout.
    """
    data = json.loads(path.read_text())
    if "results" in data and "test" in data["results"]:
        return "vertical", flatten(data["config"]), flatten(data["results"])
    if "student" in data and "config" in data:
        config = flatten(data["config"])
        for old, (new, _) in RENAMED_PARAMS.items():
            if f"strategy.{old}" in config and f"strategy.{new}" not in config:
                config[f"strategy.{new}"] = config.pop(f"strategy.{old}")
        return "pate", config, flatten({k: v for k, v in data.items() if k != "config"})
    raise ValueError(f"{path} is neither a PATE nor a vertical results file")


def _number(value: Any) -> float:
    """A metric as a float (``"inf"`` strings of strict JSON included); NaN when absent."""
    try:
        return float(value)
    except (TypeError, ValueError):
        return math.nan


def summarize(sweep_dir: str | Path) -> dict[str, Any]:
    """Group the sweep's runs by their non-seed varying settings; mean ± std of each headline metric.

    Raises
    ------
    FileNotFoundError
        If the directory holds no ``results.json``.
    ValueError
        If it mixes methods.
    """
    sweep_dir = Path(sweep_dir)
    paths = sorted(sweep_dir.glob("*/results.json"), key=lambda p: (len(p.parent.name), p.parent.name))
    if not paths:
        raise FileNotFoundError(f"no <job>/results.json under {sweep_dir}")
    runs = [load_run(p) for p in paths]
    methods = {method for method, _, _ in runs}
    if len(methods) != 1:
        raise ValueError(f"{sweep_dir} mixes methods {sorted(methods)}")
    method = methods.pop()
    keys = sorted({k for _, config, _ in runs for k in config})
    varying = [k for k in keys if len({json.dumps(c.get(k), sort_keys=True) for _, c, _ in runs}) > 1
               and k not in SEED_KEYS and not k.endswith("output_dir")]
    groups: dict[tuple[str, ...], list[dict[str, Any]]] = {}
    settings: dict[tuple[str, ...], dict[str, Any]] = {}
    for _, config, metrics in runs:
        key = tuple(json.dumps(config.get(k), sort_keys=True) for k in varying)
        groups.setdefault(key, []).append(metrics)
        settings[key] = {k: config.get(k) for k in varying}
    rows = []
    for key, members in groups.items():
        row: dict[str, Any] = {**settings[key], "runs": len(members)}
        for name in METRICS[method]:
            values = np.array([_number(m.get(name)) for m in members])
            present = values[~np.isnan(values)]
            row[name] = float(present.mean()) if len(present) else None
            spread = len(present) > 1 and bool(np.isfinite(present).all())
            row[f"{name}_std"] = float(present.std(ddof=1)) if spread else 0.0
        rows.append(row)
    return {"method": method, "sweep_dir": str(sweep_dir), "varying": varying, "runs": len(runs),
            "metrics": list(METRICS[method]), "rows": rows}


def table(summary: dict[str, Any]) -> Table:
    """The summary as a rich table: varying settings, run count, metric mean ± std."""
    out = Table(title=f"{summary['method']} sweep: {summary['runs']} runs in {summary['sweep_dir']}")
    for column in (*summary["varying"], "runs", *summary["metrics"]):
        out.add_column(column, justify="right")
    for row in summary["rows"]:
        cells = [str(row[k]) for k in summary["varying"]] + [str(row["runs"])]
        for name in summary["metrics"]:
            value = row[name]
            cells.append("-" if value is None else f"{value:.4g} ± {row[f'{name}_std']:.2g}"
                         if row["runs"] > 1 else f"{value:.4g}")
        out.add_row(*cells)
    return out


def plot(summary: dict[str, Any], path: Path) -> Path | None:
    """The first metric against the first numeric varying setting (one line per other setting), or per
    group as bars when no setting is numeric; ``None`` when the sweep varies nothing."""
    if not summary["rows"] or not summary["varying"]:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    metric = summary["metrics"][0]
    rows = [r for r in summary["rows"] if r[metric] is not None]
    numeric = [k for k in summary["varying"]
               if all(isinstance(r[k], int | float) and not isinstance(r[k], bool) for r in rows)]
    fig, ax = plt.subplots(figsize=(6, 4))
    if numeric:
        x_key = numeric[0]
        others = [k for k in summary["varying"] if k != x_key]
        lines: dict[str, list[dict[str, Any]]] = {}
        for r in rows:
            lines.setdefault(", ".join(f"{k}={r[k]}" for k in others) or metric, []).append(r)
        for label, members in lines.items():
            members.sort(key=lambda r: r[x_key])
            ax.errorbar([r[x_key] for r in members], [r[metric] for r in members],
                        yerr=[r[f"{metric}_std"] for r in members], marker="o", capsize=3, label=label)
        ax.set_xlabel(x_key)
        ax.legend(fontsize="small")
    else:
        labels = [", ".join(f"{k}={r[k]}" for k in summary["varying"]) for r in rows]
        ax.bar(range(len(rows)), [r[metric] for r in rows], yerr=[r[f"{metric}_std"] for r in rows])
        ax.set_xticks(range(len(rows)), labels, rotation=30, ha="right", fontsize="small")
    ax.set_ylabel(metric)
    ax.set_title(f"{summary['method']} sweep ({summary['runs']} runs)")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def write_summary(sweep_dir: str | Path) -> dict[str, Any]:
    """Summarize ``sweep_dir``, print the table, write ``summary.json``, ``summary.csv``, ``summary.png``."""
    summary = summarize(sweep_dir)
    out = Path(sweep_dir)
    (out / "summary.json").write_text(json.dumps(json_safe(summary), indent=2))
    columns = [*summary["varying"], "runs", *(c for m in summary["metrics"] for c in (m, f"{m}_std"))]
    with (out / "summary.csv").open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=columns, extrasaction="ignore")
        writer.writeheader()
        writer.writerows({k: json.dumps(v) if isinstance(v, list | dict) else v for k, v in r.items()}
                         for r in summary["rows"])
    plot(summary, out / "summary.png")
    console.print(table(summary))
    return summary


class SweepSummary(Callback):
    """Hydra callback: summarize the sweep directory when a multirun ends."""

    def on_multirun_end(self, config: Any, **kwargs: Any) -> None:
        sweep_dir = Path(str(config.hydra.sweep.dir))
        try:
            write_summary(sweep_dir)
        except (FileNotFoundError, ValueError) as err:  # e.g. every job failed: say so, do not mask it
            console.print(f"[yellow]no sweep summary for {sweep_dir}: {err}[/yellow]")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="summarize a Hydra sweep of flwr-privkit runs")
    parser.add_argument("sweep_dir", type=Path)
    write_summary(parser.parse_args(argv).sweep_dir)


if __name__ == "__main__":
    main()
