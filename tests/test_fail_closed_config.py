"""Settings that would make a run useless are refused when the config is built, before any ε is spent."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from simulations.pate_config import compose_config
from simulations.pate_server import build_ledger

ROOT = Path(__file__).resolve().parents[1]

# (hydra override, the error text naming the field, the value and the rule)
BAD_SETTINGS = [
    ("teacher.epochs=0", "ModelSpec.epochs=0: must be an integer >= 1"),
    ("teacher.batch_size=0", "ModelSpec.batch_size=0: must be an integer >= 1"),
    ("teacher.lr=-0.1", "ModelSpec.lr=-0.1: must be a finite number > 0"),
    ("teacher.lr=nan", "ModelSpec.lr=nan: must be a finite number > 0"),
    ("student_model.weight_decay=-1", "ModelSpec.weight_decay=-1"),
    ("data.query_fraction=1.5", "DataSpec.query_fraction=1.5: must be in (0, 1)"),
    ("data.validation_fraction=0", "DataSpec.validation_fraction=0"),
    ("data.query_fraction=0.5 data.validation_fraction=0.3 data.test_fraction=0.3",
     "must be < 1 to leave data for the teachers"),
    ("data.num_teachers=0", "DataSpec.num_teachers=0"),
    ("data.seed=-1", "DataSpec.seed=-1: must be an integer >= 0"),
    ("data.dataset=digits data.teacher_samples=0 data.num_teachers=2000", "data.num_teachers=2000: the"),
    ("data.dataset=digits data.teacher_samples=100000", "data.teacher_samples=100000: must be <="),
    ("data.mnist1d_samples=10", "DataSpec.mnist1d_samples=10"),
    ("student.self_training_confidence=1.5", "StudentSettings.self_training_confidence=1.5: must be in [0, 1]"),
    ("student.fixmatch_mu=0", "StudentSettings.fixmatch_mu=0: must be an integer >= 1"),
    ("student.fixmatch_lr=inf", "StudentSettings.fixmatch_lr=inf"),
]


def _message(overrides: str) -> str:
    with pytest.raises(Exception) as caught:
        compose_config(*overrides.split())
    err = caught.value
    while err.__cause__ is not None:  # OmegaConf wraps the dataclass's ValueError
        err = err.__cause__
    assert isinstance(err, ValueError), repr(err)
    return str(err)


@pytest.mark.parametrize(("overrides", "expected"), BAD_SETTINGS, ids=[o for o, _ in BAD_SETTINGS])
def test_a_bad_setting_is_refused_naming_field_value_and_rule(overrides: str, expected: str) -> None:
    assert expected in _message(overrides)


def test_the_default_settings_pass() -> None:
    config = compose_config()
    assert config.data.num_teachers >= 1 and config.teacher.epochs >= 1


def test_the_command_stops_with_exit_2_and_one_line_before_ray_starts(tmp_path: Path) -> None:
    env = {**os.environ, "FLWR_TELEMETRY_ENABLED": "0"}
    proc = subprocess.run(
        [sys.executable, "-m", "simulations.pate", "teacher.epochs=0", f"run.output_dir={tmp_path}/run"],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=300,
    )
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.strip().splitlines()[-1] == "error: ModelSpec.epochs=0: must be an integer >= 1"
    assert "Traceback" not in proc.stderr and "ray" not in proc.stderr.lower()
    assert not (tmp_path / "run").exists()  # nothing written, no ledger, no ε


def test_an_unknown_top_level_setting_is_refused_not_ignored(tmp_path: Path) -> None:
    env = {**os.environ, "FLWR_TELEMETRY_ENABLED": "0"}
    proc = subprocess.run(
        [sys.executable, "-m", "simulations.pate", "+foo=1", f"run.output_dir={tmp_path}/run"],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=300,
    )
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.strip().splitlines()[-1] == (
        "error: unknown setting(s) foo; the top-level settings are data, teacher, teacher_training, student_model, "
        "student, strategy, federation, run")
    assert not (tmp_path / "run").exists()


def test_an_earlier_runs_ledger_is_refused_unless_the_run_resumes(tmp_path: Path) -> None:
    config = compose_config(f"run.output_dir={tmp_path}", "strategy.mechanism=gnmax")
    ledger = build_ledger(config)
    ledger.charge(np.array([[250.0] + [0.0] * 9]), labels=np.array([0]), query_ids=np.array([0]))
    with pytest.raises(ValueError, match=r"run.resume=False: the ledger .* already holds 1 charged queries"):
        build_ledger(config)
    resumed = build_ledger(compose_config(f"run.output_dir={tmp_path}", "strategy.mechanism=gnmax",
                                          "run.resume=true"))
    assert resumed.queries_checked == 1 and resumed.paid_labels()[1].tolist() == [0]


def test_the_command_refuses_an_earlier_runs_ledger_before_ray_starts(tmp_path: Path) -> None:
    ledger = build_ledger(compose_config(f"run.output_dir={tmp_path}", "strategy.mechanism=gnmax"))
    ledger.charge(np.array([[250.0] + [0.0] * 9]), labels=np.array([0]), query_ids=np.array([0]))
    env = {**os.environ, "FLWR_TELEMETRY_ENABLED": "0"}
    proc = subprocess.run(
        [sys.executable, "-m", "simulations.pate", "strategy.mechanism=gnmax", f"run.output_dir={tmp_path}"],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=300,
    )
    assert proc.returncode == 2, proc.stderr
    first = proc.stderr.strip().splitlines()[-2]
    assert first.startswith("error: run.resume=False: the ledger") and "1 charged queries" in first
    assert "Traceback" not in proc.stderr and "ray" not in proc.stderr.lower()


@pytest.mark.parametrize(("overrides", "expected"), [
    ((), 11),  # digits: 20 teachers, a majority is 11
    (("data.num_teachers=7", "strategy.threshold=5", "strategy.sigma1=4", "strategy.sigma2=1"), 4),
    (("strategy.min_teachers=1",), 1),
])
def test_min_teachers_defaults_to_a_majority_of_the_teachers(tmp_path: Path, overrides: tuple, expected: int) -> None:
    from simulations.pate_server import build_strategy

    config = compose_config(f"run.output_dir={tmp_path}", "dataset=digits", *overrides)
    assert build_strategy(config).min_teachers == expected
