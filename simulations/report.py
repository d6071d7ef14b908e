"""Report of flwr-privkit results: tables, CSVs and plots from every results JSON under a directory.

::

    python -m simulations.report benchmarks/results --out docs/report --readme README.md
    python -m simulations.report runs/pate-sweep/2026-11-30_21-00-00     # a sweep, or one run directory

Under ``DIR`` (recursively) it reads

- single runs and sweeps: every ``results.json`` of ``python -m simulations.pate`` / ``simulations.vertical``
  (the layouts of :func:`simulations.sweep_summary.load_run`); runs that differ only in their seeds are
  averaged (mean ± sample std over the seeds);
- benchmark files, recognised by their rows and not by their names: PATE rows (``benchmarks/pate.py``),
  vertical rows and protection sweep (``benchmarks/vertical.py``), PSI rows (``benchmarks/psi.py``: any file
  whose rows carry ``n``, ``variant`` and ``ids_per_s``, such as ``psi_ecdh.json``) and the teachers'
  speed or selection rows (``benchmarks/teachers.py``);

and writes into ``OUT`` (default ``DIR/report``) ``report.md`` (a table per kind), a CSV per table and the
plots ``pate.png``, ``vertical.png`` and ``psi.png`` (:mod:`simulations.report_tables`,
:mod:`simulations.report_plots`). With ``--readme FILE`` it rewrites the marker sections
``<!-- report:KIND:begin -->`` … ``<!-- report:KIND:end -->`` of ``FILE`` (KIND: pate, vertical, psi) and
nothing else. A file it cannot read or does not recognise is skipped with a :class:`ReportWarning` that
names it; the files a run writes beside its results (ledger, model description, sweep summary) are
passed over silently.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from protocol.vertical import VerticalStrategyConfig
from simulations.report_benchmarks import (
    AUXILIARY,
    BENCHMARK_READERS,
    PATH_SUFFIXES,
    PROTECTION_KNOBS,
    Collection,
    Record,
    ReportWarning,
    benchmark_kind,
    number,
    protection_record,
    skip,
    text,
)
from simulations.sweep_summary import SEED_KEYS, load_run

# --------------------------------------------------------------------------------------------------
# Single runs and sweeps
# --------------------------------------------------------------------------------------------------


@dataclass
class Run:
    """One ``results.json``: its directory, method and flat configuration and metrics."""

    directory: Path
    method: str
    config: dict[str, Any]
    metrics: dict[str, Any]

    def setting(self) -> str:
        """The configuration without seeds and output paths: runs with equal settings are repeats."""
        kept = {k: v for k, v in self.config.items() if k not in SEED_KEYS and not k.endswith(PATH_SUFFIXES)}
        return json.dumps(kept, sort_keys=True, default=str)


def pate_run_record(run: Run, where: str) -> Record:
    """A PATE run as a record of the benchmark's shape (one seed)."""
    c, m = run.config, run.metrics
    mechanism = text(c, "strategy.mechanism", where)
    return {
        "dataset": text(c, "data.dataset", where),
        "num_teachers": number(c, "data.num_teachers", where),
        "method": mechanism,
        "student": text(c, "student.method", where),
        "budget": None if mechanism == "majority" else number(c, "strategy.epsilon_budget", where),
        "accuracy": number(m, "student.test_accuracy", where, required=True),
        "answered": number(m, "answered", where),
        "label_accuracy": number(m, "student.fused_label_accuracy", where),
        "epsilon_data_dependent": number(m, "epsilon_data_dependent", where),
        "epsilon_released": number(m, "epsilon_released", where),
        "epsilon_released_std": number(m, "epsilon_released_std", where),
        "epsilon_data_independent": number(m, "epsilon_data_independent", where),
        "delta": number(m, "delta", where) or number(c, "strategy.delta", where),
    }


def vertical_method(config: dict[str, Any]) -> str:
    """The benchmark's method name for a vertical run's switches (``benchmarks/vertical.py`` METHODS)."""
    split, head, prototypes = (
        config.get(f"strategy.{k}", True) is not False for k in ("split_learning", "local_head", "prototypes")
    )
    if prototypes:
        return "proto"
    if not split:
        return "active_only"
    if not head:
        return "full_alignment" if config.get("dataset.aligned_fraction") == 1 else "vfl_aligned"
    return "vfl_head_fusion"


def protection_setting(config: dict[str, Any]) -> str:
    """The protection knobs a vertical run changed from the defaults, e.g. ``dp_noise=4, min_count=3``."""
    defaults = VerticalStrategyConfig()
    changed = [
        f"{k}={config[f'strategy.{k}']:g}"
        for k in PROTECTION_KNOBS
        if isinstance(config.get(f"strategy.{k}"), int | float)
        and config[f"strategy.{k}"] != getattr(defaults, k)
    ]
    return ", ".join(changed) or "none"


def vertical_run_records(run: Run, where: str) -> tuple[Record | None, Record | None]:
    """A vertical run as a method row (if its prototypes are unprotected) and a protection row (if it
    measured the attacks)."""
    c, m = run.config, run.metrics
    dataset, fraction = text(c, "dataset.name", where), number(c, "dataset.aligned_fraction", where)
    setting = protection_setting(c)
    row = None
    if setting == "none":
        row = {
            "dataset": dataset,
            "aligned_fraction": fraction,
            "method": vertical_method(c),
            "accuracy": number(m, "test.aligned", where, required=True),
            "n_aligned": number(m, "n_aligned", where),
        }
    protection = None
    if "attack.exact" in m:
        values = {
            "accuracy": m.get("test.aligned"),
            "attack_exact": m.get("attack.exact"),
            "attack_nearest": m.get("attack.nearest"),
            "label_dp_epsilon": m.get("label_dp_epsilon"),
        }
        protection = protection_record(
            "", dataset, fraction, setting, values, where, None, number(c, "strategy.lam_aligned", where)
        )
    return row, protection


def average(records: list[Record], source: str) -> Record:
    """The mean of the runs' numeric fields, the sample std of their accuracy, the number of seeds."""
    out: Record = {**records[0], "source": source}
    for key, value in records[0].items():
        if isinstance(value, float) or value is None:
            present = [r[key] for r in records if r.get(key) is not None]
            out[key] = float(np.mean(present)) if present else None
    accuracies = [r["accuracy"] for r in records]
    out["accuracy_std"] = float(np.std(accuracies, ddof=1)) if len(records) > 1 else None
    out["seeds"] = len(records)
    return out


SHOWN_KEYS = {
    "pate": (
        "data.dataset",
        "data.num_teachers",
        "strategy.mechanism",
        "student.method",
        "strategy.epsilon_budget",
    ),
    "vertical": (
        "dataset.name",
        "dataset.aligned_fraction",
        "strategy.split_learning",
        "strategy.local_head",
        "strategy.prototypes",
        *(f"strategy.{k}" for k in PROTECTION_KNOBS),
    ),
}
"""Configuration keys a table already shows as columns (or as the method or protection setting)."""


def varying_keys(runs: list[Run]) -> list[str]:
    """The configuration keys, seeds and output paths aside, whose values differ across ``runs``."""
    keys = sorted({k for r in runs for k in r.config})
    return [
        k
        for k in keys
        if k not in SEED_KEYS
        and not k.endswith(PATH_SUFFIXES)
        and len({json.dumps(r.config.get(k), sort_keys=True, default=str) for r in runs}) > 1
    ]


def run_tables(runs: list[Run], root: Path, collection: Collection) -> None:
    """Group the runs by setting (seeds averaged) and add them to ``collection`` as pate/vertical records.

    Each record's ``label`` names the settings that tell it from the other runs of its method and are
    not columns of its table (e.g. ``strategy.sigma2=4.0`` in a σ2 sweep).
    """
    groups: dict[tuple[str, str], list[Run]] = {}
    for run in runs:
        groups.setdefault((run.method, run.setting()), []).append(run)
    varying = {method: varying_keys([r for r in runs if r.method == method]) for method in SHOWN_KEYS}
    for (method, _), members in groups.items():
        common = Path(os.path.commonpath([r.directory for r in members]))
        source = str(common.relative_to(root)) if common.is_relative_to(root) else str(common)
        wheres = [str(r.directory / "results.json") for r in members]
        label = ", ".join(
            f"{k}={members[0].config.get(k)}" for k in varying[method] if k not in SHOWN_KEYS[method]
        )
        if method == "pate":
            records = [pate_run_record(r, w) for r, w in zip(members, wheres, strict=True)]
            collection.add("pate", source, {"pate": [{**average(records, source), "label": label}]})
            continue
        pairs = [vertical_run_records(r, w) for r, w in zip(members, wheres, strict=True)]
        tables: dict[str, list[Record]] = {"vertical": [], "protection": []}
        for index, name in enumerate(tables):
            found = [p[index] for p in pairs if p[index] is not None]
            if found:
                tables[name].append({**average(found, source), "label": label})
        collection.add("vertical", source, tables)


# --------------------------------------------------------------------------------------------------
# Reading a directory
# --------------------------------------------------------------------------------------------------


def collect(root: str | Path) -> Collection:
    """Read every results JSON under ``root`` (a directory, or one file); warn about what is skipped."""
    root = Path(root)
    base = root if root.is_dir() else root.parent
    paths = (
        [root]
        if root.is_file()
        else sorted(
            p
            for p in root.rglob("*.json")
            if not any(part.startswith(".") for part in p.relative_to(root).parts)
        )
    )
    collection = Collection(root=str(root))
    runs: list[Run] = []
    for path in paths:
        name = str(path.relative_to(base))
        if path.name in AUXILIARY:
            continue
        try:
            data = json.loads(path.read_text())
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
            skip(collection, name, f"not a readable JSON file ({err})")
            continue
        try:
            if isinstance(data, dict) and "config" in data:
                method, config, metrics = load_run(path)
                run = Run(path.parent, method, config, metrics)
                # check the fields now, so that a malformed run is skipped alone
                if method == "pate":
                    pate_run_record(run, name)
                else:
                    vertical_run_records(run, name)
                runs.append(run)
                continue
            kind = benchmark_kind(data)
            if kind is None:
                skip(
                    collection,
                    name,
                    "not a results file this report knows (neither a run's results.json "
                    "nor PATE, vertical, PSI or teachers benchmark rows)",
                )
                continue
            collection.add(kind, name, BENCHMARK_READERS[kind](data, name))
        except (ValueError, TypeError, AttributeError, KeyError) as err:
            skip(collection, name, f"malformed: {err}")
    run_tables(runs, base, collection)
    return collection


# --------------------------------------------------------------------------------------------------
# README marker sections, command line
# --------------------------------------------------------------------------------------------------

MARKER = re.compile(
    r"(<!-- report:(?P<kind>[\w-]+):begin -->\n).*?(<!-- report:(?P=kind):end -->)", re.DOTALL
)


def rewrite_readme(path: Path, sections: dict[str, str]) -> list[str]:
    """Replace the body of each ``<!-- report:KIND:begin -->`` … ``end`` section of ``path`` by
    ``sections[KIND]``; returns the kinds rewritten. Text outside the markers is left as it is; a marker
    without new content keeps its old body (with a warning)."""
    original = path.read_text()
    done: list[str] = []

    def replace(match: re.Match[str]) -> str:
        kind = match["kind"]
        if kind not in sections:
            warnings.warn(
                f"{path}: no {kind} results under the report's directory; section kept",
                ReportWarning,
                stacklevel=2,
            )
            return match[0]
        done.append(kind)
        return f"{match[1]}{sections[kind].rstrip()}\n{match[3]}"

    updated = MARKER.sub(replace, original)
    for kind in re.findall(r"<!-- report:([\w-]+):begin -->", original):
        if kind not in done and kind in sections:
            warnings.warn(
                f"{path}: report:{kind}:begin has no matching end marker; section kept",
                ReportWarning,
                stacklevel=2,
            )
    if updated != original:
        path.write_text(updated)
    return done


def write_report(
    root: str | Path,
    out: str | Path | None = None,
    readme: str | Path | None = None,
    collection: Collection | None = None,
) -> dict[str, Any]:
    """Read ``root`` (or take its ``collection`` already read), write the tables, CSVs and plots into
    ``out``, rewrite ``readme``'s marker sections.

    Returns the collection and the paths written.
    """
    from simulations import report_plots, report_tables

    root = Path(root)
    out = Path(out) if out is not None else (root if root.is_dir() else root.parent) / "report"
    collection = collection if collection is not None else collect(root)
    out.mkdir(parents=True, exist_ok=True)
    plots = report_plots.plot_all(collection, out)
    written = report_tables.write_tables(collection, out, plots)
    rewritten: list[str] = []
    if readme is not None:
        readme = Path(readme)
        sections = report_tables.readme_sections(
            collection, {k: Path(os.path.relpath(p, readme.parent)) for k, p in plots.items()}
        )
        rewritten = rewrite_readme(readme, sections)
    return {"collection": collection, "written": [*written, *plots.values()], "readme_sections": rewritten}


def main(argv: list[str] | None = None) -> int:
    """``python -m simulations.report DIR [--out OUT] [--readme FILE] [--verbose]``; returns 0.

    A bad input — DIR or ``--readme`` missing, DIR a results file that is unreadable, malformed or of no
    kind this report knows, a folder without a single readable results file, an ``--out`` it cannot
    write — ends with one ``error:`` line naming it and exit status 2 (``--verbose``: the traceback).
    Files skipped beside readable results are ``warning:`` lines, as before.
    """
    parser = argparse.ArgumentParser(description="tables, CSVs and plots of every results JSON under DIR")
    parser.add_argument(
        "dir", type=Path, help="a benchmark results folder, a sweep, a run directory or a file"
    )
    parser.add_argument("--out", type=Path, help="output folder (default: DIR/report)")
    parser.add_argument(
        "--readme", type=Path, help="rewrite this file's <!-- report:KIND:begin/end --> sections"
    )
    parser.add_argument("--verbose", action="store_true", help="show the traceback of an error")
    args = parser.parse_args(argv)
    try:
        result, caught = report(args.dir, args.out, args.readme)
    except (ValueError, OSError) as err:
        if args.verbose:
            raise
        print(f"error: {(str(err).strip().splitlines() or [type(err).__name__])[0]}", file=sys.stderr)
        raise SystemExit(2) from None
    for warning in caught:
        print(f"warning: {warning}", file=sys.stderr)
    collection: Collection = result["collection"]
    for kind, sources in collection.sources.items():
        print(f"{kind}: {', '.join(sources)}")
    for path in result["written"]:
        print(f"wrote {path}")
    if args.readme is not None:
        print(f"{args.readme}: rewrote sections {', '.join(result['readme_sections']) or '(none)'}")
    return 0


def report(root: Path, out: Path | None, readme: Path | None) -> tuple[dict[str, Any], list[str]]:
    """:func:`write_report` of the command line, with the warnings it gave; nothing is written unless
    ``root`` holds at least one readable results file.

    Raises
    ------
    ValueError
        If ``root`` or ``readme`` does not exist, ``root`` holds no readable results (naming the first
        file skipped and why), or the report cannot be written.
    """
    if not root.exists():
        raise ValueError(f"DIR must exist, got {root}")
    if readme is not None and not readme.is_file():
        raise ValueError(f"--readme must be an existing file, got {readme}")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", ReportWarning)
        collection = collect(root)
        if not collection.sources:
            if not collection.skipped:
                raise ValueError(f"no results under {root}: no run's results.json and no benchmark JSON")
            name, reason = collection.skipped[0]
            if root.is_file():
                raise ValueError(f"{root}: {reason}")
            more = f" (and {len(collection.skipped) - 1} more skipped)" if len(collection.skipped) > 1 else ""
            raise ValueError(f"no results under {root}: {name}: {reason}{more}")
        try:
            result = write_report(root, out, readme, collection)
        except OSError as err:
            raise ValueError(f"cannot write the report (--out {out or 'DIR/report'}): {err}") from err
    return result, [str(w.message) for w in caught]


if __name__ == "__main__":
    raise SystemExit(main())
