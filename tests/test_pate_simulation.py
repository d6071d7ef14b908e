"""End to end through Flower's simulation engine (Ray): the Hydra entry point and ``flwr run``."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from clients.pate.student_model import predict
from simulations.pate_config import run_config_overrides

ROOT = Path(__file__).resolve().parents[1]
SMALL = ["dataset=digits", "data.num_teachers=6", "teacher.epochs=15", "student_model.epochs=15", "strategy.max_queries=80",
         "strategy.query_batch_size=40", "strategy=gnmax", "strategy.sigma2=2.0", "strategy.epsilon_budget=500"]


def stop_processes_with_env(marker: str) -> None:
    """SIGTERM every process whose environment holds ``marker`` (the SuperLink ``flwr run`` leaves running)."""
    for proc_dir in Path("/proc").iterdir():
        if not proc_dir.name.isdigit() or int(proc_dir.name) == os.getpid():
            continue
        try:
            environ = (proc_dir / "environ").read_bytes().split(b"\0")
        except OSError:
            continue
        if marker.encode() in environ:
            with contextlib.suppress(ProcessLookupError):
                os.kill(int(proc_dir.name), signal.SIGTERM)


def test_hydra_entry_point_runs_a_real_flower_simulation(tmp_path):
    # Execute
    proc = subprocess.run(
        [sys.executable, "-m", "simulations.pate", *SMALL, f"hydra.run.dir={tmp_path}"],
        cwd=ROOT, capture_output=True, text=True, timeout=600,
        env={**os.environ, "FLWR_TELEMETRY_ENABLED": "0"})
    # Assert
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "student test accuracy" in proc.stdout
    results = json.loads((tmp_path / "results.json").read_text())
    assert results["config"]["strategy"]["mechanism"] == "gnmax"
    assert results["queries_checked"] == results["answered"] == 80
    assert len(results["teachers"]) == 6 and results["teachers_remaining"] == 6
    assert 0 < results["epsilon_data_dependent"] <= results["epsilon_data_independent"]
    assert results["student"]["test_accuracy"] > 0.3  # 10 classes: chance is 0.1
    ledger = json.loads((tmp_path / "privacy_ledger.json").read_text())
    assert ledger["queries_answered"] == 80
    labels = predict(tmp_path / "student_model.json", np.zeros((3, 8, 8), dtype=np.float32))
    assert labels.shape == (3,)


def flwr_run(tmp_path: Path, run_config: str) -> subprocess.CompletedProcess:
    """``flwr run .`` against a local simulation federation of 3 nodes; stops the SuperLink it spawns."""
    home = tmp_path / "flwr_home"
    home.mkdir()
    (home / "config.toml").write_text(
        '[superlink]\ndefault = "local"\n\n[superlink.local]\naddress = ":local:"\n'
        'options.num-supernodes = 3\n')
    bin_dir = Path(sys.executable).parent
    env = {**os.environ, "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}", "FLWR_HOME": str(home),
           "FLWR_TELEMETRY_ENABLED": "0", "FLWR_DISABLE_RUNTIME_DEPENDENCY_INSTALLATION": "1"}
    try:
        return subprocess.run([str(bin_dir / "flwr"), "run", ".", "--stream", "--run-config", run_config],
                              cwd=ROOT, capture_output=True, text=True, timeout=1200, env=env)
    finally:
        stop_processes_with_env(f"FLWR_HOME={home}")


@pytest.mark.slow
def test_flwr_run_executes_the_pate_app(tmp_path):
    overrides = run_config_overrides(*SMALL) + f' pate.run.output_dir="{tmp_path}/out"'
    proc = flwr_run(tmp_path, overrides)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    results = json.loads((tmp_path / "out" / "results.json").read_text())
    assert results["answered"] == 80


@pytest.mark.slow
def test_flwr_run_executes_the_vertical_app_with_paillier_alignment(tmp_path):
    # 3 nodes: the vertical method with 3 parties (active + 2 passive), 2048-bit PSI.
    proc = flwr_run(tmp_path, f'method="vertical" vertical.dataset.n_parties=3 vertical.strategy.epochs=3 '
                              f'vertical.strategy.tune="off" '
                              f'vertical.output_dir="{tmp_path}/vfl"')
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    results = json.loads((tmp_path / "vfl" / "results.json").read_text())
    assert results["results"]["alignment"]["method"] == "psi"
