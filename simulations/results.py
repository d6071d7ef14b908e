"""Writing a run's results file: strict JSON, written atomically."""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any

from protocol.codec import to_flat
from protocol.vertical import VerticalConfig

RESULTS_FILE = "results.json"
BUNDLED_DATASET_KEYS = ("dataset.name", "dataset.aligned_fraction", "dataset.validation_fraction",
                        "dataset.test_fraction")
"""Vertical settings that pick and cut a bundled dataset: they do not apply to a run on party files."""


def json_safe(value: Any) -> Any:
    """Strict-JSON form of ``value``: non-finite floats as strings (``"inf"``), numpy scalars as Python."""
    if isinstance(value, dict):
        return {str(k): json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [json_safe(v) for v in value]
    if hasattr(value, "item") and not isinstance(value, str | bytes):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    return value


def write_results(out_dir: str | Path, payload: dict[str, Any]) -> Path:
    """Write ``payload`` to ``<out_dir>/results.json`` (temp file + rename); return the path."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    tmp = out / f".{RESULTS_FILE}.tmp"
    tmp.write_text(json.dumps(json_safe(payload), indent=2))
    os.replace(tmp, out / RESULTS_FILE)
    return out / RESULTS_FILE


def vertical_run_record(cfg: VerticalConfig, results: dict[str, Any]) -> dict[str, Any]:
    """The ``results.json`` payload of a vertical run: its flat configuration and its results.

    A run whose parties read their own files records the folder, digests and row counts in
    ``results["data"]``; the configuration then leaves out the bundled dataset's name and fractions
    (:data:`BUNDLED_DATASET_KEYS`), which did not apply.
    """
    config = to_flat(cfg)
    parties = results.get("data", {}).get("parties", {})
    if any(p.get("file") for p in parties.values()):
        config = {k: v for k, v in config.items() if k not in BUNDLED_DATASET_KEYS}
    return {"config": config, "results": results}
