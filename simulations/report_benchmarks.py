"""Readers for ``simulations.report``: checked field access and the benchmark files' rows.

Each reader turns one benchmark file (``benchmarks/pate.py``, ``benchmarks/vertical.py``,
``benchmarks/psi.py``, ``benchmarks/teachers.py``) into flat records, one list per table; a malformed
value raises ``ValueError`` naming the file, the row and the field, and the caller skips that file
with a :class:`ReportWarning`.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

Record = dict[str, Any]
AUXILIARY = frozenset({"privacy_ledger.json", "student_model.json", "summary.json"})
"""Files a run or a sweep writes beside its ``results.json``: not results (``summary.json`` is derived from
the runs, which are read themselves)."""
PATH_SUFFIXES = ("output_dir", "ledger_path", "model_path")
"""Configuration keys that only say where a run wrote: runs differing in them (and in seeds) are repeats."""
PROTECTION_KNOBS = ("dp_clip", "dp_noise", "dp_count_noise", "min_count", "proto_every", "lam_aligned")
"""The vertical strategy's settings that protect the released prototypes (``benchmarks/vertical.py``)."""
ROW_SIGNATURES: tuple[tuple[str, frozenset[str]], ...] = (
    ("psi", frozenset({"n", "variant", "ids_per_s"})),
    ("teachers", frozenset({"num_teachers", "loop_s_per_teacher", "batched_s_per_teacher"})),
    ("vertical", frozenset({"dataset", "aligned_fraction", "method", "accuracy"})),
    ("pate", frozenset({"dataset", "method", "student"})),
)
"""Which benchmark wrote a file: the keys its first row carries (first match wins)."""


class ReportWarning(UserWarning):
    """A results file was skipped (unreadable, unknown or malformed) or a README marker was left alone."""


@dataclass
class Collection:
    """Everything read under one directory, one list of flat records per table."""

    pate: list[Record] = field(default_factory=list)
    vertical: list[Record] = field(default_factory=list)
    protection: list[Record] = field(default_factory=list)
    psi: list[Record] = field(default_factory=list)
    teachers: list[Record] = field(default_factory=list)
    teacher_selection: list[Record] = field(default_factory=list)
    root: str = ""
    """The directory (or file) read, as given."""
    sources: dict[str, list[str]] = field(default_factory=dict)
    """kind → the files (or run directories) its records came from."""
    skipped: list[tuple[str, str]] = field(default_factory=list)
    """(file, reason) of every file skipped with a warning."""

    def add(self, kind: str, source: str, tables: dict[str, list[Record]]) -> None:
        for name, records in tables.items():
            getattr(self, name).extend(records)
        sources = self.sources.setdefault(kind, [])
        if source not in sources:
            sources.append(source)


def skip(collection: Collection, name: str, reason: str) -> None:
    """Record and warn that the file ``name`` is skipped."""
    collection.skipped.append((name, reason))
    warnings.warn(f"skipped {name}: {reason}", ReportWarning, stacklevel=2)


# --------------------------------------------------------------------------------------------------
# Checked field access: a malformed value raises ValueError naming the file, the row and the field
# --------------------------------------------------------------------------------------------------


def number(row: dict[str, Any], key: str, where: str, *, required: bool = False) -> float | None:
    """``row[key]`` as a number (an int stays an int; ``"inf"``/``"nan"`` strings of strict JSON become
    floats), ``None`` when absent.

    Raises
    ------
    ValueError
        If the value is not a number (booleans included), or is absent and ``required``.
    """
    value = row.get(key)
    if value is None:
        if required:
            raise ValueError(f"{where}: {key} is required, got nothing")
        return None
    if isinstance(value, int | float) and not isinstance(value, bool):
        return value
    if isinstance(value, str):
        try:
            return float(value)
        except ValueError:
            pass
    raise ValueError(f"{where}: {key} must be a number, got {value!r}")


def text(row: dict[str, Any], key: str, where: str) -> str:
    """``row[key]``, which must be a non-empty string.

    Raises
    ------
    ValueError
        If it is absent, empty or not a string.
    """
    value = row.get(key)
    if not isinstance(value, str) or not value:
        raise ValueError(f"{where}: {key} must be a non-empty string, got {value!r}")
    return value


def _rows(data: dict[str, Any], key: str, name: str) -> list[dict[str, Any]]:
    rows = data.get(key, [])
    if not isinstance(rows, list) or not all(isinstance(r, dict) for r in rows):
        raise ValueError(f"{name}: {key} must be a list of objects")
    return rows


def _count(value: Any) -> int | None:
    return len(value) if isinstance(value, list) else None


# --------------------------------------------------------------------------------------------------
# Benchmark files
# --------------------------------------------------------------------------------------------------


def benchmark_kind(data: Any) -> str | None:
    """The benchmark that wrote ``data`` (``pate``, ``vertical``, ``psi``, ``teachers``), ``None`` if none."""
    if not isinstance(data, dict):
        return None
    if isinstance(data.get("select"), list) and "rows" not in data:
        return "teachers"
    rows = data.get("rows")
    if isinstance(rows, list) and rows and isinstance(rows[0], dict):
        keys = set(rows[0])
        for kind, needed in ROW_SIGNATURES:
            if needed <= keys:
                return kind
    if isinstance(data.get("protection"), list) and isinstance(rows, list):
        return "vertical"
    return None


def pate_rows(data: dict[str, Any], source: str) -> dict[str, list[Record]]:
    """``benchmarks/pate.py`` rows, one record each."""
    out = []
    for i, row in enumerate(_rows(data, "rows", source)):
        where = f"{source} row {i}"
        if "student" not in row and "accuracy" not in row:
            continue  # a timing row (e.g. the secure-aggregation overhead), not a student
        if row.get("selected") is False:
            continue  # a candidate setting validation did not choose
        out.append(
            {
                "source": source,
                "dataset": text(row, "dataset", where),
                "num_teachers": number(row, "num_teachers", where),
                "method": text(row, "method", where),
                "student": text(row, "student", where),
                "label": f"budget on {row['budget_on']}" if isinstance(row.get("budget_on"), str) else "",
                "budget": number(row, "budget", where),
                "seeds": _count(row.get("seeds")),
                **{key: number(row, key, where) for key in PATE_NUMBERS},
            }
        )
    return {"pate": out}


PATE_NUMBERS = (
    "accuracy",
    "accuracy_std",
    "answered",
    "label_accuracy",
    "epsilon_data_dependent",
    "epsilon_released",
    "epsilon_released_std",
    "epsilon_data_independent",
    "delta",
)
"""The numeric fields of a PATE record, as ``benchmarks/pate.py`` names them."""


def vertical_rows(data: dict[str, Any], source: str) -> dict[str, list[Record]]:
    """``benchmarks/vertical.py``: the method × aligned-fraction rows and the protection sweep."""
    settings = data.get("settings") if isinstance(data.get("settings"), dict) else {}
    seeds = _count(settings.get("seeds"))
    strategy = settings.get("strategy") if isinstance(settings.get("strategy"), dict) else {}
    rows, protection = [], []
    for i, row in enumerate(_rows(data, "rows", source)):
        where = f"{source} row {i}"
        rows.append(
            {
                "source": source,
                "dataset": text(row, "dataset", where),
                "aligned_fraction": number(row, "aligned_fraction", where, required=True),
                "method": text(row, "method", where),
                "label": exchange_label(row, where),
                "seeds": seeds,
                "accuracy": number(row, "accuracy", where, required=True),
                "accuracy_std": number(row, "accuracy_std", where),
                "n_aligned": number(row, "n_aligned", where),
            }
        )
    for i, row in enumerate(_rows(data, "protection", source)):
        where = f"{source} protection row {i}"
        lam = number(row, "lam_aligned", where)
        protection.append(
            protection_record(
                source,
                text(row, "dataset", where),
                number(row, "aligned_fraction", where, required=True),
                text(row, "setting", where),
                row,
                where,
                seeds,
                lam if lam is not None else number(strategy, "lam_aligned", f"{source} settings"),
            )
        )
    return {"vertical": rows, "protection": protection}


def exchange_label(row: dict[str, Any], where: str) -> str:
    """``K=4, 8 round trips/epoch`` for a row of the exchange benchmark (``steps_per_exchange``), with
    ``, stale refresh prototypes`` where the row names a ``stale_refresh`` other than ``off``, else ""."""
    k = number(row, "steps_per_exchange", where)
    if k is None:
        return ""
    trips, epochs = number(row, "round_trips_per_epoch", where), number(row, "epochs", where)
    refresh = text(row, "stale_refresh", where) if "stale_refresh" in row else "off"
    return (
        ("K=whole epoch" if k == 0 else f"K={k:g}")
        + (f", {trips:g} round trips/epoch" if trips else "")
        + (f", {epochs:g} epochs" if epochs else "")
        + (f", stale refresh {refresh}" if refresh != "off" else "")
    )


def protection_record(
    source: str,
    dataset: str,
    fraction: float | None,
    setting: str,
    row: dict[str, Any],
    where: str,
    seeds: int | None,
    lam_aligned: float | None,
) -> Record:
    """One protection setting: accuracy beside the attacks and the label-DP ε (∞ without label-DP).

    The ε is the released prototypes' label-DP ε, or else the ε-label-DP of everything a passive party
    receives (``passive_view_epsilon``, randomised response on the training labels).
    """
    eps = number(row, "label_dp_epsilon", where)
    if eps is None:
        eps = number(row, "passive_view_epsilon", where)
    return {
        "source": source,
        "dataset": dataset,
        "aligned_fraction": fraction,
        "setting": setting,
        "seeds": seeds,
        "accuracy": number(row, "accuracy", where, required=True),
        "accuracy_std": number(row, "accuracy_std", where),
        "attack_exact": number(row, "attack_exact", where),
        "attack_nearest": number(row, "attack_nearest", where),
        "attack_grad_direction": number(row, "attack_grad_direction", where),
        "label_dp_epsilon": math.inf if eps is None else eps,
        "aligned_loss": lam_aligned is None or lam_aligned != 0,
    }


PSI_NUMBERS = ("num_bins", "degree", "wall_s", "cpu_s", "ids_per_s", "ratio_to_floor")


def psi_rows(data: dict[str, Any], source: str) -> dict[str, list[Record]]:
    """``benchmarks/psi.py`` rows (and any file with rows of that shape, e.g. other backends)."""
    where_file = f"{source} header"
    key_bits, weight = number(data, "key_bits", where_file), number(data, "precompute_weight", where_file)
    machine = data.get("machine") if isinstance(data.get("machine"), dict) else {}
    workers = number(machine, "workers", where_file)
    out = []
    for i, row in enumerate(_rows(data, "rows", source)):
        where = f"{source} row {i}"
        n = number(row, "n", where, required=True)
        if n is None or not n > 0:
            raise ValueError(f"{where}: n must be > 0, got {n}")
        out.append(
            {
                "source": source,
                "n": n,
                "variant": text(row, "variant", where),
                "key_bits": key_bits,
                "precompute_weight": weight,
                "workers": workers,
                **{key: number(row, key, where) for key in PSI_NUMBERS},
            }
        )
    return {"psi": out}


TEACHER_NUMBERS = (
    "num_teachers",
    "epochs",
    "loop_s_per_teacher",
    "batched_s_per_teacher",
    "speedup",
    "batched_total_s",
    "mean_teacher_accuracy",
    "plurality_validation_accuracy",
    "load_average_1min",
)
SELECTION_NUMBERS = (
    "num_teachers",
    "epochs",
    "lr",
    "augment_shift",
    "mean_teacher_validation_accuracy",
    "plurality_validation_accuracy",
)


def teacher_rows(data: dict[str, Any], source: str) -> dict[str, list[Record]]:
    """``benchmarks/teachers.py``: speed rows (batched ensemble vs loop) and the selection rows."""
    speed = []
    for i, row in enumerate(_rows(data, "rows", source)):
        where = f"{source} row {i}"
        speed.append(
            {
                "source": source,
                "dataset": text(row, "dataset", where),
                "model": text(row, "model", where),
                **{key: number(row, key, where) for key in TEACHER_NUMBERS},
            }
        )
    chosen = data.get("chosen")
    selection = []
    for i, row in enumerate(_rows(data, "select", source)):
        where = f"{source} select row {i}"
        selection.append(
            {
                "source": source,
                **{key: number(row, key, where) for key in SELECTION_NUMBERS},
                "chosen": row == chosen,
            }
        )
    return {"teachers": speed, "teacher_selection": selection}


BENCHMARK_READERS: dict[str, Callable[[dict[str, Any], str], dict[str, list[Record]]]] = {
    "pate": pate_rows,
    "vertical": vertical_rows,
    "psi": psi_rows,
    "teachers": teacher_rows,
}
