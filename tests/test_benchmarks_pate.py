"""The PATE benchmark script runs and writes the documented JSON rows (slow: trains real teachers)."""

from __future__ import annotations

import json

import pytest

from benchmarks import pate


@pytest.mark.slow
def test_quick_benchmark_writes_documented_rows(tmp_path):
    out = tmp_path / "pate.json"
    assert pate.main(["--quick", "--datasets", "digits", "--seeds", "0", "--budgets", "8", "--out", str(out)]) == 0
    rows = json.loads(out.read_text())["rows"]
    keys = {"dataset", "method", "sigma2", "accuracy", "epsilon_data_dependent", "epsilon_data_independent",
            "delta", "answered", "wall_s"}
    assert all(keys <= set(r) for r in rows)
    methods = {r["method"] for r in rows}
    assert methods == {"non_private_all_data", "majority", "gnmax", "confident_gnmax"}
    private = [r for r in rows if r["method"] in ("gnmax", "confident_gnmax")]
    assert all(float(r["epsilon_data_dependent"]) <= 8.0 for r in private)
    # one validation-chosen setting per method, shared by its students
    assert {(r["method"], r["student"]) for r in private} == {
        ("gnmax", "supervised"), ("confident_gnmax", "supervised"), ("confident_gnmax", "self_training"),
        ("confident_gnmax", "fixmatch")}
    assert len({str(r["setting"]) for r in private if r["method"] == "confident_gnmax"}) == 1
