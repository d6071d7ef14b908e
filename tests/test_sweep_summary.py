"""Sweep summaries: grouping by varying settings, seed averaging, files written, refused inputs."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from simulations.sweep_summary import load_run, summarize, write_summary

ROOT = Path(__file__).resolve().parents[1]


def _vertical_run(directory: Path, job: int, fraction: float, seed: int, accuracy: float) -> None:
    (directory / str(job)).mkdir(parents=True)
    config = {"dataset.aligned_fraction": fraction, "seed": seed, "strategy.lam": 0.25,
              "output_dir": str(directory / str(job))}
    results = {"test": {"aligned": accuracy, "active_only": 0.8}, "val": {"aligned": accuracy},
               "attack": {"exact": 1.0, "nearest": 0.5}, "label_dp_epsilon": "inf", "wall_s": 2.0}
    (directory / str(job) / "results.json").write_text(json.dumps({"config": config, "results": results}))


def test_vertical_sweep_is_grouped_by_setting_and_averaged_over_seeds(tmp_path: Path) -> None:
    runs = [(0.05, 0, 0.90), (0.05, 1, 0.94), (0.1, 0, 0.95), (0.1, 1, 0.97), (0.2, 0, 0.99)]
    for job, (fraction, seed, accuracy) in enumerate(runs):
        _vertical_run(tmp_path, job, fraction, seed, accuracy)
    summary = write_summary(tmp_path)
    assert summary["method"] == "vertical" and summary["runs"] == 5
    assert summary["varying"] == ["dataset.aligned_fraction"]  # seed and output_dir are not settings
    rows = {r["dataset.aligned_fraction"]: r for r in summary["rows"]}
    assert rows[0.05]["runs"] == 2 and rows[0.05]["test.aligned"] == pytest.approx(0.92)
    assert rows[0.05]["test.aligned_std"] == pytest.approx(0.02 * 2 ** 0.5)
    assert rows[0.2]["runs"] == 1 and rows[0.2]["test.aligned_std"] == 0.0
    assert rows[0.1]["label_dp_epsilon"] == float("inf")  # strict-JSON "inf" read back
    written = json.loads((tmp_path / "summary.json").read_text())  # strict JSON: inf as "inf"
    assert [r["test.aligned"] for r in written["rows"]] == [r["test.aligned"] for r in summary["rows"]]
    assert written["rows"][0]["label_dp_epsilon"] == "inf"
    assert (tmp_path / "summary.csv").read_text().splitlines()[0].startswith("dataset.aligned_fraction,runs,")
    assert (tmp_path / "summary.png").stat().st_size > 0


def test_pate_layout_and_refused_directories(tmp_path: Path) -> None:
    for job, sigma2 in enumerate((2.0, 4.0)):
        (tmp_path / str(job)).mkdir()
        config = {"strategy": {"sigma2": sigma2, "seed": job}, "run": {"output_dir": str(tmp_path / str(job))}}
        (tmp_path / str(job) / "results.json").write_text(json.dumps({
            "config": config, "student": {"test_accuracy": 0.5 + sigma2 / 10}, "answered": 10,
            "epsilon_data_dependent": 1.0, "epsilon_data_independent": 2.0, "wall_s": 1.0}))
    summary = summarize(tmp_path)
    assert summary["method"] == "pate" and summary["varying"] == ["strategy.sigma2"]
    assert [r["student.test_accuracy"] for r in summary["rows"]] == pytest.approx([0.7, 0.9])
    _vertical_run(tmp_path, 2, 0.1, 0, 0.9)
    with pytest.raises(ValueError, match="mixes methods"):
        summarize(tmp_path)
    with pytest.raises(FileNotFoundError, match="no <job>/results.json"):
        summarize(tmp_path / "empty")
    (tmp_path / "3").mkdir()
    (tmp_path / "3" / "results.json").write_text("{}")
    with pytest.raises(ValueError, match="neither a PATE nor a vertical"):
        summarize(tmp_path)


def test_a_pate_run_written_before_sigma2_was_named_is_read_by_the_new_name(tmp_path: Path) -> None:
    # issue 23 §1: results.json files whose config says strategy.sigma (GNMax's σ, Confident-GNMax's σ2)
    for job, (strategy, accuracy) in enumerate([({"sigma": 2.0, "seed": 0}, 0.6), ({"sigma2": 2.0, "seed": 1}, 0.8),
                                                 ({"sigma2": 4.0, "seed": 0}, 0.9)]):
        (tmp_path / str(job)).mkdir()
        (tmp_path / str(job) / "results.json").write_text(json.dumps({
            "config": {"strategy": strategy}, "student": {"test_accuracy": accuracy}, "answered": 10}))
    assert load_run(tmp_path / "0" / "results.json")[1] == {"strategy.sigma2": 2.0, "strategy.seed": 0}
    summary = summarize(tmp_path)
    assert summary["varying"] == ["strategy.sigma2"] and [r["runs"] for r in summary["rows"]] == [2, 1]
    assert summary["rows"][0]["student.test_accuracy"] == pytest.approx(0.7)


@pytest.mark.slow
def test_hydra_multirun_writes_a_summary(tmp_path: Path) -> None:
    small = ["data.num_teachers=4", "teacher.epochs=5", "student_model.epochs=5", "strategy.max_queries=40",
             "strategy.query_batch_size=40", "strategy=gnmax", "strategy.epsilon_budget=500"]
    proc = subprocess.run([sys.executable, "-m", "simulations.pate", "-m", *small, "strategy.sigma2=1,3",
                           f"hydra.sweep.dir={tmp_path}"], cwd=ROOT, capture_output=True, text=True,
                          timeout=1200, env={**os.environ, "FLWR_TELEMETRY_ENABLED": "0"})
    assert proc.returncode == 0, proc.stderr[-3000:]
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["varying"] == ["strategy.sigma2"] and summary["runs"] == 2
    assert (tmp_path / "summary.png").is_file()
