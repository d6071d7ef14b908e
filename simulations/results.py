"""Writing a run's results file: strict JSON, written atomically."""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any

RESULTS_FILE = "results.json"


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
