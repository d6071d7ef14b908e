"""Plots of a results report (:mod:`simulations.report`), drawn with matplotlib's Agg canvas.

- ``pate.png``: student test accuracy against ε, one panel per dataset; one line per student (and
  mechanism) through the data-dependent ε of its budgets, the data-independent and the released ε of the
  same students as their own markers, the non-private model and the noiseless-vote student as horizontal
  lines, the Pareto front (best accuracy at any data-dependent ε up to x) marked;
- ``vertical.png``: accuracy against aligned fraction per method (error bars: std over seeds), and the
  protection sweep's attack accuracy against the label-DP ε, one column per dataset;
- ``psi.png``: IDs per second against set size n, log–log, one line per variant and the primitive floor
  as a black line, one panel per results file (files are separate measurement campaigns).

Figures are built without ``pyplot`` (no global state, nothing left open); every function returns the
path written, or ``None`` when it had nothing to draw.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from matplotlib import colormaps
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.ticker import FixedFormatter, FixedLocator, NullFormatter

from simulations.report_tables import METHOD_LABELS, NON_PRIVATE, method_order, missing

if TYPE_CHECKING:
    from matplotlib.axes import Axes

    from simulations.report_benchmarks import Collection, Record

DPI = 130
FINE_TICKS = sorted(m * 2.0**k for m in (1, 1.5) for k in range(-12, 24))
DECADE_TICKS = sorted(m * 10.0**k for m in (1, 2, 5) for k in range(-6, 10))
POWERS_OF_10 = [10.0**k for k in range(-6, 10)]
LINESTYLES = ("-", "--", "-.", ":")
STYLE_NAMES = {"-": "solid", "--": "dashed", "-.": "dash-dot", ":": "dotted"}
EPSILON_KINDS = (
    ("epsilon_data_dependent", "o", "data-dependent ε (budgeted)"),
    ("epsilon_data_independent", "s", "data-independent ε"),
    ("epsilon_released", "^", "released ε (smooth sensitivity, expectation)"),
)


def _finite(value: Any) -> bool:
    return not missing(value) and math.isfinite(value)


def _palette(names: Iterable[Any], cmap_name: str | None = None) -> dict[Any, Any]:
    """A colour per name, stable across the panels of one figure."""
    names = list(dict.fromkeys(names))
    cmap = colormaps[cmap_name or ("tab10" if len(names) <= 10 else "tab20")]
    return {name: cmap(i % cmap.N) for i, name in enumerate(names)}


def nice_ticks(lo: float, hi: float, most: int = 8) -> list[float]:
    """Round tick positions for a log axis spanning ``[lo, hi]``: 1, 1.5, 2, 3, 4, 6, 8, … when at most
    ``most`` of them fall in range, else 1, 2, 5, 10, …, else powers of 10."""
    for base in (FINE_TICKS, DECADE_TICKS, POWERS_OF_10):
        ticks = [t for t in base if lo / 1.25 <= t <= hi * 1.25]
        if len(ticks) <= most:
            return ticks
    return ticks


def _log_ticks(
    ax: Axes, axis: str, values: list[float], *, exact: bool = False, extra: dict[float, str] | None = None
) -> None:
    """Readable ticks on a log axis: the values themselves (``exact``, e.g. the aligned fractions) or round
    numbers over their range; ``extra`` adds labelled positions (e.g. ∞)."""
    ticks = sorted(set(values)) if exact else nice_ticks(min(values), max(values))
    labels = [f"{t:g}" for t in ticks]
    for position, label in (extra or {}).items():
        ticks.append(position)
        labels.append(label)
    target = ax.xaxis if axis == "x" else ax.yaxis
    if not exact and not extra:  # show the round ticks just outside the data too
        (ax.set_xlim if axis == "x" else ax.set_ylim)(min(values) / 1.25, max(values) * 1.25)
    target.set_major_locator(FixedLocator(ticks))
    target.set_major_formatter(FixedFormatter(labels))
    target.set_minor_formatter(NullFormatter())


def _save(fig: Figure, path: Path) -> Path:
    FigureCanvasAgg(fig)
    fig.savefig(path, dpi=DPI)
    return path


def _grid(n: int, columns: int, width: float, height: float) -> tuple[Figure, list[Axes]]:
    """A figure of ``n`` panels, at most ``columns`` a row (room below for a figure legend)."""
    cols = min(n, columns)
    rows = math.ceil(n / cols)
    fig = Figure(figsize=(width * cols, height * rows + 1.2), layout="constrained")
    axes = list(fig.subplots(rows, cols, squeeze=False).flat)
    for ax in axes[n:]:
        ax.set_visible(False)
    return fig, axes[:n]


# --------------------------------------------------------------------------------------------------
# PATE
# --------------------------------------------------------------------------------------------------


def pareto_front(points: list[tuple[float, float]]) -> list[tuple[float, float]]:
    """The points no other point beats: none with ε ≤ and accuracy ≥, one of them strictly; by ε."""
    front: list[tuple[float, float]] = []
    for eps, acc in sorted(points, key=lambda p: (p[0], -p[1])):
        if not front or acc > front[-1][1]:
            front.append((eps, acc))
    return front


def _reference_line(ax: Axes, y: float, text: str, **style: Any) -> None:
    """A horizontal reference line with its value written on it, at the left edge."""
    ax.axhline(y, **style)
    ax.annotate(
        f"{text} {y:.3f}",
        xy=(0.01, y),
        xycoords=("axes fraction", "data"),
        xytext=(0, -2),
        textcoords="offset points",
        va="top",
        fontsize="small",
        color=style.get("color", "black"),
    )


def plot_pate(records: list[Record], path: Path) -> Path | None:
    """Student accuracy against ε, one panel per dataset (see the module docstring)."""
    private = [r for r in records if _finite(r["epsilon_data_dependent"]) and _finite(r["accuracy"])]
    datasets = list(dict.fromkeys(r["dataset"] for r in private))
    if not datasets:
        return None
    several = len({r["source"] for r in records}) > 1
    methods = sorted({r["method"] for r in private}, key=lambda m: (m != "confident_gnmax", m))
    colours = _palette(
        sorted({(r["method"], r["student"]) for r in private}, key=lambda k: (methods.index(k[0]), k[1]))
    )
    styles = {m: LINESTYLES[i % len(LINESTYLES)] for i, m in enumerate(methods)}
    deltas = {r["delta"] for r in private if _finite(r.get("delta"))}
    delta = f" (δ = {deltas.pop():g})" if len(deltas) == 1 else ""
    fig, axes = _grid(len(datasets), 3, 6.4, 4.9)
    handles: dict[str, Any] = {}
    for ax, dataset in zip(axes, datasets, strict=True):
        mine = [r for r in private if r["dataset"] == dataset]
        series: dict[tuple[str, ...], list[Record]] = {}
        for r in mine:
            series.setdefault((r["source"], r["method"], r["student"], r.get("label") or ""), []).append(r)
        xs: list[float] = []
        for (source, method, student, label), members in series.items():
            members.sort(key=lambda r: r["epsilon_data_dependent"])
            colour = colours[method, student]
            name = (
                f"{student} · {method}"
                + (f" · {label}" if label else "")
                + (f" [{source}]" if several else "")
            )
            yerr = [0.0 if missing(r["accuracy_std"]) else r["accuracy_std"] for r in members]
            handles[name] = ax.errorbar(
                [r["epsilon_data_dependent"] for r in members],
                [r["accuracy"] for r in members],
                yerr=yerr,
                color=colour,
                linestyle=styles[method],
                marker="o",
                markersize=7,
                capsize=3,
                linewidth=1.6,
            )
            for r in members:
                spread = [r[key] for key, _, _ in EPSILON_KINDS if _finite(r[key])]
                ax.hlines(r["accuracy"], min(spread), max(spread), color=colour, linewidth=0.8, linestyle=":")
                xs += spread
                for key, marker, _ in EPSILON_KINDS[1:]:
                    if _finite(r[key]):
                        ax.scatter(
                            [r[key]],
                            [r["accuracy"]],
                            marker=marker,
                            s=46,
                            facecolors="white",
                            edgecolors=[colour],
                            linewidths=1.4,
                            zorder=3,
                        )
        front = pareto_front([(r["epsilon_data_dependent"], r["accuracy"]) for r in mine])
        ax.step(
            [p[0] for p in front],
            [p[1] for p in front],
            where="post",
            color="0.45",
            linewidth=5,
            alpha=0.3,
            zorder=1,
            solid_capstyle="round",
        )
        ax.scatter(
            [p[0] for p in front],
            [p[1] for p in front],
            marker="*",
            s=190,
            color="gold",
            edgecolors="0.2",
            linewidths=0.8,
            zorder=4,
        )
        for r in records:
            if r["dataset"] == dataset and _finite(r["accuracy"]) and r["method"] == NON_PRIVATE:
                _reference_line(
                    ax, r["accuracy"], "non-private, all teacher data:", color="black", linewidth=1.3
                )
            elif r["dataset"] == dataset and _finite(r["accuracy"]) and r["method"] == "majority":
                _reference_line(
                    ax,
                    r["accuracy"],
                    "student on noiseless votes (ε = ∞):",
                    color="0.4",
                    linewidth=1.2,
                    linestyle="-.",
                )
        ax.set_xscale("log")
        _log_ticks(ax, "x", xs)
        teachers = {r["num_teachers"] for r in mine if _finite(r["num_teachers"])}
        ax.set_title(f"{dataset}" + (f" ({teachers.pop():g} teachers)" if len(teachers) == 1 else ""))
        ax.set_xlabel(f"privacy loss ε{delta}, log scale")
        ax.set_ylabel("student test accuracy (mean ± std over seeds)")
        ax.grid(True, which="major", alpha=0.3)
    for i, (_, marker, text) in enumerate(EPSILON_KINDS):
        handles[text] = Line2D(
            [],
            [],
            color="0.3",
            marker=marker,
            linestyle="none",
            markersize=7,
            markerfacecolor="0.3" if i == 0 else "white",
        )
    handles["Pareto front (best accuracy at data-dependent ε ≤ x)"] = Line2D(
        [],
        [],
        color="0.45",
        linewidth=5,
        alpha=0.5,
        marker="*",
        markersize=13,
        markerfacecolor="gold",
        markeredgecolor="0.2",
    )
    mechanisms = ", ".join(f"{m}: {STYLE_NAMES[styles[m]]}" for m in methods)
    fig.legend(
        list(handles.values()),
        list(handles),
        loc="outside lower center",
        ncols=3,
        fontsize="small",
        title=f"a line per student and mechanism ({mechanisms}) through its budgets' data-dependent ε; "
        "markers: one model's three ε, joined by a dotted line",
        title_fontsize="small",
    )
    fig.suptitle("PATE: accuracy of the student against its privacy loss")
    return _save(fig, path)


# --------------------------------------------------------------------------------------------------
# Vertical
# --------------------------------------------------------------------------------------------------


def _vertical_accuracy(ax: Axes, records: list[Record], several: bool, colours: dict[str, Any]) -> None:
    curves = [r for r in records if r["method"] != "full_alignment" and _finite(r["aligned_fraction"])]
    series: dict[tuple[str, str, str], list[Record]] = {}
    for r in curves:
        series.setdefault((r["method"], r.get("label") or "", r["source"]), []).append(r)
    order = method_order(m for m, _, _ in series)
    for (method, label, source), members in sorted(
        series.items(), key=lambda s: (order.index(s[0][0]), s[0])
    ):
        members.sort(key=lambda r: r["aligned_fraction"])
        name = (
            METHOD_LABELS.get(method, method)
            + (f" ({label})" if label else "")
            + (f" [{source}]" if several else "")
        )
        ax.errorbar(
            [r["aligned_fraction"] for r in members],
            [100 * r["accuracy"] for r in members],
            yerr=[0.0 if missing(r["accuracy_std"]) else 100 * r["accuracy_std"] for r in members],
            color=colours[method],
            marker="o",
            capsize=3,
            linewidth=2.2 if method == "proto" else 1.4,
            label=name,
        )
    for r in records:
        if r["method"] == "full_alignment":
            ax.axhline(
                100 * r["accuracy"],
                color="black",
                linestyle="--",
                linewidth=1.2,
                label=f"full alignment, f = 1 ({100 * r['accuracy']:.1f} %)",
            )
    ax.set_xscale("log")
    _log_ticks(ax, "x", [r["aligned_fraction"] for r in curves] or [1.0], exact=True)
    ax.set_xlabel("aligned fraction f (share of training users at every party), log scale")
    ax.set_ylabel("test accuracy, aligned users (%)")
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize="small", loc="lower right")


def _vertical_attacks(ax: Axes, records: list[Record], fractions: dict[float, Any]) -> None:
    finite = [r["label_dp_epsilon"] for r in records if _finite(r["label_dp_epsilon"])]
    infinity = (max(finite) if finite else 1.0) * 6
    series: dict[tuple[float, str, bool, str], list[Record]] = {}
    for r in records:
        for attack in ("attack_exact", "attack_nearest", "attack_grad_direction"):
            if _finite(r.get(attack)):
                series.setdefault((r["aligned_fraction"], attack, r["aligned_loss"], r["source"]), []).append(
                    r
                )
    for (fraction, attack, aligned_loss, _), members in series.items():
        colour = fractions[fraction]
        marker = {"attack_exact": "o", "attack_nearest": "^", "attack_grad_direction": "s"}[attack]
        style = {
            "color": colour,
            "marker": marker,
            "markersize": 7,
            "markeredgecolor": colour,
            "markerfacecolor": colour if aligned_loss else "white",
            "linestyle": "-" if aligned_loss else ":",
        }
        dp = sorted(
            (r for r in members if _finite(r["label_dp_epsilon"])), key=lambda r: r["label_dp_epsilon"]
        )
        ax.plot([r["label_dp_epsilon"] for r in dp], [100 * r[attack] for r in dp], linewidth=1.4, **style)
        no_dp = [r for r in members if not _finite(r["label_dp_epsilon"])]
        ax.plot([infinity] * len(no_dp), [100 * r[attack] for r in no_dp], **{**style, "linestyle": "none"})
    ax.axvline(math.sqrt(infinity * (max(finite) if finite else 1.0)), color="0.6", linewidth=0.8)
    ax.set_xscale("log")
    _log_ticks(ax, "x", finite or [1.0], extra={infinity: "∞\n(no label-DP)"})
    ax.set_ylim(-3, 103)
    ax.set_xlabel("label-DP ε (released prototypes, or all a passive party receives), log scale")
    ax.set_ylabel("label-inference attack accuracy (%)")
    ax.grid(True, alpha=0.3)
    handles = [Line2D([], [], color=c, linewidth=2, label=f"f = {f:g}") for f, c in fractions.items()]
    handles += [
        Line2D([], [], color="0.3", marker="o", linestyle="none", label="exact (least squares) attack"),
        Line2D([], [], color="0.3", marker="^", linestyle="none", label="nearest-prototype attack"),
        Line2D(
            [],
            [],
            color="0.3",
            marker="s",
            linestyle="none",
            label="gradient direction attack (Li et al. 2022)",
        ),
        Line2D([], [], color="0.3", marker="o", linestyle="-", label="with the aligned prototype loss"),
        Line2D([], [], color="0.3", marker="o", markerfacecolor="white", linestyle=":", label="without it"),
    ]
    ax.legend(handles=handles, fontsize="small", loc="center left")


def plot_vertical(rows: list[Record], protection: list[Record], path: Path) -> Path | None:
    """Accuracy against aligned fraction (top) and attacks against ε (bottom), a column per dataset.

    Labelled rows (one setting at one fraction, e.g. the exchange benchmark's K) are tables, not curves.
    """
    rows = [r for r in rows if not r.get("label")]
    datasets = list(dict.fromkeys(r["dataset"] for r in [*rows, *protection]))
    if not datasets:
        return None
    several = len({r["source"] for r in rows}) > 1
    colours = _palette(method_order(r["method"] for r in rows))
    fractions = _palette(sorted({r["aligned_fraction"] for r in protection}), "Dark2")
    panels = [
        (name, kind)
        for kind, records in (("accuracy", rows), ("attacks", protection))
        if records
        for name in datasets
    ]
    fig, axes = _grid(len(panels), len(datasets), 6.6, 4.9)
    for ax, (dataset, kind) in zip(axes, panels, strict=True):
        if kind == "accuracy":
            mine = [r for r in rows if r["dataset"] == dataset]
            _vertical_accuracy(ax, mine, several, colours)
            ax.set_title(f"{dataset}: accuracy against aligned fraction")
        else:
            mine = [r for r in protection if r["dataset"] == dataset]
            _vertical_attacks(ax, mine, fractions)
            ax.set_title(f"{dataset}: protection sweep (label-inference attacks)")
        if not mine:
            ax.set_visible(False)
    fig.suptitle("Vertical prototype exchange")
    return _save(fig, path)


# --------------------------------------------------------------------------------------------------
# PSI
# --------------------------------------------------------------------------------------------------


PSI_MARKERS = ("o", "s", "D", "v", "P", "X", "<", ">", "h", "*")
SETUP_KEYS = ("key_bits", "precompute_weight", "workers")


def psi_series(records: list[Record]) -> list[list[Record]]:
    """The lines of the PSI plot: one per variant and file; files that declare the same setup (key size,
    precompute weight, workers) share their lines unless two of them measured the same n."""
    groups: dict[tuple[Any, ...], list[Record]] = {}
    for r in records:
        setup = tuple(r[k] for k in SETUP_KEYS)
        declared = all(_finite(v) for v in setup)
        groups.setdefault((*(setup if declared else (r["source"],)), r["variant"]), []).append(r)
    out = []
    for members in groups.values():
        ns = [r["n"] for r in members]
        if len(set(ns)) == len(ns):
            out.append(sorted(members, key=lambda r: r["n"]))
            continue
        for source in dict.fromkeys(r["source"] for r in members):
            out.append(sorted((r for r in members if r["source"] == source), key=lambda r: r["n"]))
    return out


def plot_psi(records: list[Record], path: Path) -> Path | None:
    """IDs per second against n, log–log, on one axes: colour = variant, marker = results file, a line per
    variant and setup (:func:`psi_series`), the primitive floors in black."""
    records = [r for r in records if _finite(r["ids_per_s"]) and r["ids_per_s"] > 0]
    sources = list(dict.fromkeys(r["source"] for r in records))
    if not sources:
        return None
    colours = _palette(sorted({r["variant"] for r in records if not r["variant"].startswith("floor")}))
    floors = sorted({r["variant"] for r in records if r["variant"].startswith("floor")})
    markers = {source: PSI_MARKERS[i % len(PSI_MARKERS)] for i, source in enumerate(sources)}
    fig = Figure(figsize=(11, 7.2), layout="constrained")
    ax = fig.subplots()
    variant_handles: dict[str, Line2D] = {}
    for points in psi_series(records):
        variant = points[0]["variant"]
        if variant in floors:
            style = {
                "color": "black",
                "linestyle": LINESTYLES[1 + floors.index(variant) % 3],
                "linewidth": 2.0,
            }
            label = f"primitive floor ({variant})"
        else:
            style = {"color": colours[variant], "linestyle": "-", "linewidth": 1.5}
            label = variant
        ax.plot([r["n"] for r in points], [r["ids_per_s"] for r in points], **style)
        for r in points:
            ax.plot(
                [r["n"]],
                [r["ids_per_s"]],
                marker=markers[r["source"]],
                markersize=7,
                color=style["color"],
                markerfacecolor="white" if variant in floors else style["color"],
                linestyle="none",
            )
        variant_handles.setdefault(label, Line2D([], [], **style))
    ax.set_xscale("log")
    ax.set_yscale("log")
    _log_ticks(ax, "x", [r["n"] for r in records], exact=True)
    _log_ticks(ax, "y", [r["ids_per_s"] for r in records])
    ax.set_xlabel("set size n (IDs per party), log scale")
    ax.set_ylabel("throughput (IDs aligned per second, wall clock), log scale")
    ax.grid(True, which="major", alpha=0.3)
    ordered = sorted(variant_handles, key=lambda k: (not k.startswith("primitive"), k))
    first = ax.legend(
        [variant_handles[k] for k in ordered],
        ordered,
        loc="upper left",
        bbox_to_anchor=(1.01, 1),
        fontsize="small",
        title="variant (colour)",
        title_fontsize="small",
    )
    ax.add_artist(first)
    file_handles = []
    for source in sources:
        head = next(r for r in records if r["source"] == source)
        facts = [
            f"{head['key_bits']:g}-bit keys" if _finite(head["key_bits"]) else "",
            f"precompute weight {head['precompute_weight']:g}" if _finite(head["precompute_weight"]) else "",
        ]
        detail = ", ".join(f for f in facts if f)
        file_handles.append(
            Line2D(
                [],
                [],
                color="0.3",
                marker=markers[source],
                linestyle="none",
                label=source + (f"\n({detail})" if detail else ""),
            )
        )
    ax.legend(
        handles=file_handles,
        loc="lower left",
        bbox_to_anchor=(1.01, 0),
        fontsize="small",
        title="results file (marker)",
        title_fontsize="small",
    )
    ax.set_title(
        "a line joins one variant's sizes in one file, or in files of one declared setup (key size, "
        "precompute weight, workers);\n-precompute: the data-independent phase only, -online: the rest",
        fontsize="small",
    )
    fig.suptitle("PSI: IDs aligned per second against set size")
    return _save(fig, path)


def plot_all(collection: Collection, out: Path) -> dict[str, Path]:
    """Every plot with something to draw: ``{"pate": out/pate.png, ...}``."""
    drawn = {
        "pate": plot_pate(collection.pate, out / "pate.png"),
        "vertical": plot_vertical(collection.vertical, collection.protection, out / "vertical.png"),
        "psi": plot_psi(collection.psi, out / "psi.png"),
    }
    return {kind: path for kind, path in drawn.items() if path is not None}
