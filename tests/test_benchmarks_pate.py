"""The PATE benchmark script runs and writes the documented JSON rows (slow: trains real teachers), and
combines the rows of per-seed runs."""

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


def test_combine_seeds_pools_the_runs_of_other_seeds_into_one_row() -> None:
    def row(seed: int, accuracy: float, answered: float, setting: dict) -> dict:
        return {"dataset": "mnist1d", "method": "confident_gnmax", "student": "fixmatch", "budget": 2.0,
                "teacher_method": "supervised", "query_selection": "random", "setting": setting,
                "sigma2": setting["sigma2"], "seeds": [seed], "accuracy": accuracy, "accuracy_std": 0.0,
                "answered": answered, "teacher_accuracy": 0.7 + seed / 100, "plurality_accuracy": 0.9,
                "per_seed": [{"seed": seed, "accuracy": accuracy, "answered": answered}]}

    rows = pate.combine_seeds([row(0, 0.90, 300.0, {"sigma2": 40.0}), row(1, 0.92, 290.0, {"sigma2": 30.0})])
    assert len(rows) == 1
    combined = rows[0]
    assert combined["seeds"] == [0, 1] and combined["setting_per_seed"] == [{"sigma2": 40.0}, {"sigma2": 30.0}]
    assert combined["accuracy"] == pytest.approx(0.91) and combined["accuracy_std"] == pytest.approx(0.01)
    assert combined["answered"] == pytest.approx(295.0)
    assert combined["teacher_accuracy"] == pytest.approx(0.705)
    assert "sigma2" not in combined and "setting" not in combined
    with pytest.raises(ValueError, match=r"seeds \[0, 0\] repeat"):
        pate.combine_seeds([row(0, 0.9, 300.0, {"sigma2": 40.0}), row(0, 0.9, 300.0, {"sigma2": 40.0})])
