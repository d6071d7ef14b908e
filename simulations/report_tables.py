"""Markdown tables and CSV files of a results report (:mod:`simulations.report`).

The CSV files hold the numbers exactly as read (full precision, ``inf``/``nan`` spelt out, an empty cell
for a value the file did not have); the markdown tables round them for reading, with ``–`` for a value
that is absent or not a number.
"""

from __future__ import annotations

import csv
import math
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from simulations.report_benchmarks import Collection, Record

MISSING = "–"
METHOD_LABELS = {
    "active_only": "active party only",
    "vfl_aligned": "aligned-only VFL",
    "vfl_head_fusion": "VFL + local head, fused",
    "proto": "prototype exchange",
    "full_alignment": "full alignment",
}
"""Row labels of the vertical tables, in their order (``benchmarks/vertical.py`` method names)."""
HIGHLIGHTED = "proto"
"""The vertical method the project proposes: its row is set in bold."""


def missing(value: Any) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value))


def fmt(value: float | None, spec: str = ".3f", infinite: str = "inf") -> str:
    """``value`` formatted by ``spec``; ``–`` when absent or NaN, ``infinite`` for ±∞."""
    if missing(value):
        return MISSING
    assert value is not None
    if math.isinf(value):
        return infinite if value > 0 else f"-{infinite}"
    return format(value, spec)


def mean_std(mean: float | None, std: float | None, spec: str = ".3f", scale: float = 1.0) -> str:
    """``mean ± std`` (``mean`` alone when there is no spread, e.g. one seed)."""
    if missing(mean):
        return MISSING
    assert mean is not None
    if missing(std):
        return fmt(scale * mean, spec)
    assert std is not None
    return f"{fmt(scale * mean, spec)} ± {fmt(scale * std, spec)}"


def markdown_table(header: list[str], rows: Iterable[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)


def _several_sources(records: list[Record]) -> bool:
    return len({r["source"] for r in records}) > 1


def write_csv(path: Path, records: list[Record], columns: list[str]) -> Path:
    """One row per record, the given columns in order (``None`` as an empty cell)."""
    with path.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=columns, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(records)
    return path


# --------------------------------------------------------------------------------------------------
# PATE
# --------------------------------------------------------------------------------------------------

PATE_COLUMNS = [
    "source",
    "dataset",
    "num_teachers",
    "method",
    "student",
    "label",
    "budget",
    "seeds",
    "accuracy",
    "accuracy_std",
    "accuracy_vs_non_private",
    "answered",
    "label_accuracy",
    "epsilon_data_dependent",
    "epsilon_released",
    "epsilon_released_std",
    "epsilon_data_independent",
    "delta",
]
NON_PRIVATE = "non_private_all_data"
"""The PATE benchmark's reference row: one model on the union of the teacher shards."""


def with_ratios(records: list[Record]) -> list[Record]:
    """The records with ``accuracy_vs_non_private``: accuracy over the non-private row's of the same
    source and dataset (``None`` without such a row)."""
    reference = {(r["source"], r["dataset"]): r["accuracy"] for r in records if r["method"] == NON_PRIVATE}
    out = []
    for r in records:
        ref = reference.get((r["source"], r["dataset"]))
        usable = not missing(r["accuracy"]) and not missing(ref) and ref
        out.append({**r, "accuracy_vs_non_private": r["accuracy"] / ref if usable else None})
    return out


def pate_markdown(records: list[Record]) -> str:
    """The PATE benchmark table: one row per dataset, method, student and budget."""
    records = with_ratios(records)
    seeds = {r.get("seeds") for r in records}
    one_count = len(seeds) == 1 and None not in seeds
    accuracy_head = (
        f"test accuracy (mean ± std, {seeds.pop()} seeds)" if one_count else "test accuracy (mean ± std)"
    )
    header = [
        "dataset",
        "method",
        "student",
        "ε budget",
        accuracy_head,
        "× non-private",
        "answered",
        "label acc.",
        "ε data-dep.",
        "ε released (± std)",
        "ε data-indep.",
    ]
    sources, labels = _several_sources(records), any(r.get("label") for r in records)
    if labels:
        header.insert(3, "setting")
    if not one_count:
        header.insert(5 if labels else 4, "seeds")
    if sources:
        header.insert(0, "source")
    rows = []
    for r in records:
        dataset = r["dataset"] if missing(r["num_teachers"]) else f"{r['dataset']} ({r['num_teachers']:g})"
        released = (
            mean_std(r["epsilon_released"], r["epsilon_released_std"], ".2f")
            if not missing(r["epsilon_released"]) and math.isfinite(r["epsilon_released"])
            else MISSING
        )
        row = [
            dataset,
            r["method"],
            r["student"],
            fmt(r["budget"], "g"),
            mean_std(r["accuracy"], r["accuracy_std"]),
            fmt(r["accuracy_vs_non_private"]),
            fmt(r["answered"], ".0f"),
            fmt(r["label_accuracy"]),
            fmt(r["epsilon_data_dependent"], ".2f"),
            released,
            fmt(r["epsilon_data_independent"], ".2f"),
        ]
        if labels:
            row.insert(3, r.get("label") or MISSING)
        if not one_count:
            row.insert(5 if labels else 4, MISSING if r.get("seeds") is None else str(r["seeds"]))
        if sources:
            row.insert(0, r["source"])
        rows.append(row)
    return markdown_table(header, rows)


# --------------------------------------------------------------------------------------------------
# Vertical
# --------------------------------------------------------------------------------------------------

VERTICAL_COLUMNS = [
    "source",
    "dataset",
    "method",
    "label",
    "aligned_fraction",
    "seeds",
    "accuracy",
    "accuracy_std",
    "n_aligned",
]
PROTECTION_COLUMNS = [
    "source",
    "dataset",
    "aligned_fraction",
    "setting",
    "label",
    "aligned_loss",
    "seeds",
    "accuracy",
    "accuracy_std",
    "attack_exact",
    "attack_nearest",
    "attack_grad_direction",
    "label_dp_epsilon",
]


def method_order(methods: Iterable[str]) -> list[str]:
    """Known methods in :data:`METHOD_LABELS` order, then the others alphabetically."""
    known = list(METHOD_LABELS)
    return sorted(set(methods), key=lambda m: (known.index(m) if m in known else len(known), m))


def _method_key(record: Record) -> str:
    return f"{record['method']} ({record['label']})" if record.get("label") else record["method"]


def vertical_markdown(records: list[Record]) -> str:
    """Test accuracy (%) of aligned users, method × aligned fraction, one table per source and dataset."""
    tables = []
    several = _several_sources(records)
    for source, dataset in dict.fromkeys((r["source"], r["dataset"]) for r in records):
        group = [r for r in records if r["source"] == source and r["dataset"] == dataset]
        fractions = sorted({r["aligned_fraction"] for r in group if not missing(r["aligned_fraction"])})
        cells = {(_method_key(r), r["aligned_fraction"]): r for r in group}
        methods = {_method_key(r): r["method"] for r in group}
        rows = []
        for key in sorted(methods, key=lambda k: (method_order(methods.values()).index(methods[k]), k)):
            label = METHOD_LABELS.get(methods[key], methods[key]) + key[len(methods[key]) :]
            row = [label] + [
                mean_std(cells[key, f]["accuracy"], cells[key, f]["accuracy_std"], ".1f", 100)
                if (key, f) in cells
                else ""
                for f in fractions
            ]
            if methods[key] == HIGHLIGHTED:
                row = [f"**{c}**" if c else c for c in row]
            rows.append(row)
        title = f"{dataset} ({source})" if several else dataset
        tables.append(markdown_table([title, *(f"f={f:g}" for f in fractions)], rows))
    return "\n\n".join(tables)


def protection_markdown(records: list[Record]) -> str:
    """The protection sweep: accuracy beside both label-inference attacks and the label-DP ε."""
    header = [
        "dataset",
        "f",
        "setting",
        "accuracy %",
        "attack exact %",
        "attack nearest %",
        "attack gradient direction %",
        "label-DP ε",
    ]
    several = _several_sources(records)
    if several:
        header.insert(0, "source")
    rows = []
    for r in records:
        setting = f"{r['setting']} ({r['label']})" if r.get("label") else r["setting"]
        row = [
            r["dataset"],
            fmt(r["aligned_fraction"], "g"),
            setting,
            mean_std(r["accuracy"], r["accuracy_std"], ".1f", 100),
            fmt(None if missing(r["attack_exact"]) else 100 * r["attack_exact"], ".1f"),
            fmt(None if missing(r["attack_nearest"]) else 100 * r["attack_nearest"], ".1f"),
            fmt(None if missing(r.get("attack_grad_direction")) else 100 * r["attack_grad_direction"], ".1f"),
            fmt(r["label_dp_epsilon"], ".3g", "∞"),
        ]
        rows.append([r["source"], *row] if several else row)
    return markdown_table(header, rows)


# --------------------------------------------------------------------------------------------------
# PSI and teachers
# --------------------------------------------------------------------------------------------------

PSI_COLUMNS = [
    "source",
    "n",
    "variant",
    "num_bins",
    "degree",
    "wall_s",
    "cpu_s",
    "ids_per_s",
    "ratio_to_floor",
    "key_bits",
    "precompute_weight",
    "workers",
]
TEACHER_COLUMNS = [
    "source",
    "dataset",
    "num_teachers",
    "model",
    "epochs",
    "loop_s_per_teacher",
    "batched_s_per_teacher",
    "speedup",
    "batched_total_s",
    "mean_teacher_accuracy",
    "plurality_validation_accuracy",
    "load_average_1min",
]
SELECTION_COLUMNS = [
    "source",
    "num_teachers",
    "epochs",
    "lr",
    "augment_shift",
    "mean_teacher_validation_accuracy",
    "plurality_validation_accuracy",
    "chosen",
]


def psi_markdown(records: list[Record]) -> str:
    """PSI throughput per file, set size and variant, with the CPU time over the primitive floor's."""
    header = ["source", "n", "variant", "bins", "degree", "wall s", "CPU s", "IDs/s", "CPU / floor CPU"]
    rows = [
        [
            r["source"],
            fmt(r["n"], ".0f"),
            r["variant"],
            fmt(r["num_bins"], ".0f"),
            fmt(r["degree"], ".0f"),
            fmt(r["wall_s"], ".2f"),
            fmt(r["cpu_s"], ".2f"),
            fmt(r["ids_per_s"], ".2f"),
            fmt(r["ratio_to_floor"], ".3f"),
        ]
        for r in records
    ]
    return markdown_table(header, rows)


def teachers_markdown(speed: list[Record], selection: list[Record]) -> str:
    """The batched ensemble against the one-by-one loop; the teacher settings scored on validation."""
    parts = []
    if speed:
        header = [
            "source",
            "dataset",
            "teachers",
            "model",
            "epochs",
            "loop s/teacher",
            "batched s/teacher",
            "speedup",
            "batched total s",
            "mean teacher test acc.",
            "plurality val. acc.",
            "1-min load",
        ]
        parts.append(
            markdown_table(
                header,
                [
                    [
                        r["source"],
                        r["dataset"],
                        fmt(r["num_teachers"], ".0f"),
                        r["model"],
                        fmt(r["epochs"], ".0f"),
                        fmt(r["loop_s_per_teacher"], ".3f"),
                        fmt(r["batched_s_per_teacher"], ".3f"),
                        fmt(r["speedup"], ".1f"),
                        fmt(r["batched_total_s"], ".1f"),
                        fmt(r["mean_teacher_accuracy"]),
                        fmt(r["plurality_validation_accuracy"]),
                        fmt(r["load_average_1min"], ".2f"),
                    ]
                    for r in speed
                ],
            )
        )
    if selection:
        header = [
            "source",
            "teachers",
            "epochs",
            "lr",
            "shift",
            "mean teacher val. acc.",
            "plurality val. acc.",
            "chosen",
        ]
        parts.append(
            markdown_table(
                header,
                [
                    [
                        r["source"],
                        fmt(r["num_teachers"], ".0f"),
                        fmt(r["epochs"], ".0f"),
                        fmt(r["lr"], "g"),
                        fmt(r["augment_shift"], ".0f"),
                        fmt(r["mean_teacher_validation_accuracy"]),
                        fmt(r["plurality_validation_accuracy"]),
                        "yes" if r["chosen"] else "",
                    ]
                    for r in selection
                ],
            )
        )
    return "\n\n".join(parts)


# --------------------------------------------------------------------------------------------------
# Files
# --------------------------------------------------------------------------------------------------

SECTIONS: tuple[tuple[str, str, str], ...] = (
    ("pate", "PATE: student accuracy against ε", "pate"),
    ("vertical", "Vertical prototype exchange: accuracy against aligned fraction", "vertical"),
    ("protection", "Vertical prototype exchange: protection of the released prototypes", "vertical"),
    ("psi", "PSI throughput", "psi"),
    ("teachers", "Batched teacher ensemble against the one-by-one loop", "teachers"),
    ("teacher_selection", "Teacher settings scored on validation", "teachers"),
)
"""(table, heading, kind) of each section of ``report.md``, in order."""
CSV_COLUMNS = {
    "pate": PATE_COLUMNS,
    "vertical": VERTICAL_COLUMNS,
    "protection": PROTECTION_COLUMNS,
    "psi": PSI_COLUMNS,
    "teachers": TEACHER_COLUMNS,
    "teacher_selection": SELECTION_COLUMNS,
}


def table_markdown(collection: Collection) -> dict[str, Callable[[], str]]:
    """Each table's markdown, computed on demand."""
    return {
        "pate": lambda: pate_markdown(collection.pate),
        "vertical": lambda: vertical_markdown(collection.vertical),
        "protection": lambda: protection_markdown(collection.protection),
        "psi": lambda: psi_markdown(collection.psi),
        "teachers": lambda: teachers_markdown(collection.teachers, []),
        "teacher_selection": lambda: teachers_markdown([], collection.teacher_selection),
    }


def write_tables(collection: Collection, out: Path, plots: dict[str, Path]) -> list[Path]:
    """Write a CSV per non-empty table and ``report.md`` (every table, its plot and its CSV) into ``out``."""
    written = []
    markdown = table_markdown(collection)
    lines = [
        "# flwr-privkit results",
        "",
        f"Generated by `python -m simulations.report {collection.root}`; every number is read from the "
        "files below (CSV: full precision; tables: rounded).",
        "",
    ]
    for kind, sources in collection.sources.items():
        lines.append(f"- {kind}: " + ", ".join(f"`{s}`" for s in sources))
    for name, reason in collection.skipped:
        lines.append(f"- skipped `{name}`: {reason}")
    shown_plots: set[str] = set()
    for table, heading, kind in SECTIONS:
        records = getattr(collection, table)
        if not records:
            continue
        path = write_csv(
            out / f"{table}.csv", with_ratios(records) if table == "pate" else records, CSV_COLUMNS[table]
        )
        written.append(path)
        lines += ["", f"## {heading}", ""]
        if kind in plots and kind not in shown_plots:
            shown_plots.add(kind)
            lines += [f"![{heading}]({plots[kind].name})", ""]
        lines += [markdown[table](), "", f"CSV: [{path.name}]({path.name})"]
    report = out / "report.md"
    report.write_text("\n".join(lines) + "\n")
    return [report, *written]


README_PLOT_TEXT = {
    "pate": "PATE: student test accuracy against ε, per dataset",
    "vertical": "Vertical: accuracy against aligned fraction; attacks against label-DP ε",
    "psi": "PSI: IDs per second against set size, per variant, with the primitive floor",
}


def readme_sections(collection: Collection, plots: dict[str, Path]) -> dict[str, str]:
    """The body of each README marker section: the kind's table(s) and its plot (PSI: the plot only)."""
    tables = {
        "pate": pate_markdown(collection.pate) if collection.pate else "",
        "vertical": vertical_markdown(collection.vertical) if collection.vertical else "",
        "psi": "",
    }
    out = {}
    for kind, table in tables.items():
        parts = [table] if table else []
        if kind in plots:
            parts.append(f"![{README_PLOT_TEXT[kind]}]({plots[kind].as_posix()})")
        if parts:
            sources = ", ".join(collection.sources.get(kind, []))
            note = (
                f"<!-- generated by python -m simulations.report from {sources}: regenerate, do not edit -->"
            )
            out[kind] = "\n".join([note, "\n\n".join(parts)])
    return out
