"""The per-party memory benchmark's non-timing logic: its run configuration (the in-process runs' settings,
every key one the app declares), process-tree attribution, the exit hook, phases and the accuracy check."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tomllib
from pathlib import Path

from benchmarks.vertical_party_memory import (
    HOOK_DIR,
    ROOT,
    TreeMeter,
    accuracy_check,
    command_kind,
    component_memory,
    descendants,
    process_peaks,
    run_config,
    strategy_tokens,
    summary,
    training_start,
)


def _declared_keys() -> set[str]:
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["flwr"]["app"]["config"]

    def flat(tree: dict, prefix: str = "") -> set[str]:
        return {k for key, value in tree.items() for k in
                (flat(value, f"{prefix}{key}.") if isinstance(value, dict) else {f"{prefix}{key}"})}

    return flat(config)


def test_run_config_carries_the_in_process_settings_with_declared_keys_only(tmp_path: Path) -> None:
    proto = dict(t.split("=", 1) for t in strategy_tokens("proto", 5))
    fusion = dict(t.split("=", 1) for t in strategy_tokens("vfl_head_fusion", 5))
    assert "vertical.strategy.tune" not in proto  # the schema default, resolved to auto as for a user
    assert fusion["vertical.strategy.tune"] == '"off"' and fusion["vertical.strategy.guard"] == '"off"'
    for tokens in (proto, fusion):
        assert tokens["vertical.strategy.psi_backend"] == '"ecdh"' and tokens["vertical.strategy.attack"] == "false"
        assert tokens["vertical.strategy.steps_per_exchange"] == "0" and tokens["vertical.strategy.epochs"] == "5"
    words = run_config("synthetic100k", "active_only", 5, 2, tmp_path).split(" ")
    keys = {w.split("=", 1)[0] for w in words}
    assert keys <= _declared_keys()  # flwr run refuses an undeclared key ("Invalid run configuration")
    assert 'vertical.dataset.name="synthetic100k"' in words and "vertical.seed=2" in words


def test_descendants_and_command_kinds() -> None:
    parents = {10: 1, 11: 10, 12: 11, 13: 10, 20: 1, 21: 20}
    assert descendants(parents, 10) == {10, 11, 12, 13} and descendants(parents, 21) == {21}
    assert command_kind(["/venv/bin/python", "/venv/bin/flwr-clientapp", "--token", "x"]) == "flwr-clientapp"
    assert command_kind(["/venv/bin/flower-superexec", "--plugin-type", "clientapp"]) == \
        "flower-superexec clientapp"
    assert command_kind(["sleep", "1"]) == "sleep"


def test_exit_hook_records_a_process_peak(tmp_path: Path) -> None:
    env = {**os.environ, "PEAK_RSS_DIR": str(tmp_path), "PYTHONPATH": str(HOOK_DIR)}
    child = subprocess.run([sys.executable, "-c", "b = bytearray(64 * 2**20); b[::4096] = b'x' * len(b[::4096])"],
                           env=env, check=True)
    assert child.returncode == 0
    (entry,) = [json.loads(p.read_text()) for p in tmp_path.glob("*.json")]
    assert entry["ppid"] == os.getpid() and entry["hwm_kb"] >= 64 * 1024  # the 64 MiB it touched
    subprocess.run([sys.executable, "-c", "pass"], env={**os.environ, "PYTHONPATH": str(HOOK_DIR)}, check=True)
    assert len(list(tmp_path.glob("*.json"))) == 1  # without PEAK_RSS_DIR the hook does nothing


def test_peaks_take_the_larger_of_poll_and_exit_record_and_split_at_the_phase_boundary(tmp_path: Path) -> None:
    meter = TreeMeter({"supernode0": 100, "superlink": 200}, interval=1.0)
    meter.owner = {100: "supernode0", 101: "supernode0", 200: "superlink"}
    meter.hwm_kb = {100: 50 * 1024, 101: 300 * 1024, 200: 80 * 1024}
    meter.argv = {100: ["flower-supernode"], 101: ["python", "flwr-clientapp"], 200: ["flower-superlink"]}
    meter.samples = [(1.0, {"supernode0": 200 * 1024, "superlink": 80 * 1024}),
                     (2.0, {"supernode0": 350 * 1024, "superlink": 80 * 1024})]
    records = [{"pid": 101, "ppid": 100, "argv": ["flwr-clientapp"], "hwm_kb": 400 * 1024},  # above poll
               {"pid": 102, "ppid": 100, "argv": ["flwr-clientapp"], "hwm_kb": 120 * 1024},  # never polled
               {"pid": 999, "ppid": 1, "argv": ["flwr"], "hwm_kb": 900 * 1024}]  # outside the trees
    for r in records:
        (tmp_path / f"{r['pid']}.json").write_text(json.dumps(r))
    peaks = process_peaks(meter, tmp_path)
    assert peaks[101]["kb"] == 400 * 1024 and peaks[102]["owner"] == "supernode0" and 999 not in peaks
    memory = component_memory(meter, peaks, boundary=1.5)
    node = memory["supernode0"]
    assert node["peak_process_mb"] == 400 and node["by_command"]["flwr-clientapp"] == {"processes": 2,
                                                                                      "peak_mb": 400}
    assert node["peak_tree_rss_mb"] == {"whole_run": 350, "alignment": 200, "training": 350}
    assert memory["superlink"]["peak_process_mb"] == 80


def test_training_starts_with_the_message_after_the_last_alignment() -> None:
    received = [(1.0, "query.vfl_describe"), (2.0, "query.psi_x"), (3.0, "query.vfl_align"), (4.0, "train")]
    assert training_start(received) == 4.0 and training_start(received[:3]) is None


def test_accuracy_check_against_the_in_process_row() -> None:
    acc = {"aligned": 0.8, "active_only": 0.7, "passive_only_1": None, "all": 0.72}
    row = {"dataset": "d", "run": "proto", "seed": 0, "test": acc, "val": acc}
    assert accuracy_check(row, [dict(row)])["matches_in_process"] is True
    other = {**row, "test": {**acc, "aligned": 0.81}}
    assert accuracy_check(row, [other])["matches_in_process"] is False
    assert accuracy_check(row, [{**row, "seed": 1}]) is None


def test_summary_over_seeds_per_run_and_component() -> None:
    def row(seed: int, mb: float, same: bool | None) -> dict:
        tree = {"whole_run": mb, "alignment": mb / 2, "training": mb}
        return {"dataset": "d", "run": "proto", "seed": seed,
                "memory": {"supernode0": {"peak_process_mb": mb, "peak_tree_rss_mb": tree}},
                "in_process": None if same is None else {"matches_in_process": same}}

    (entry,) = summary([row(0, 100.0, True), row(1, 300.0, True)])
    assert entry["seeds"] == [0, 1] and entry["matches_in_process"] is True
    mean, std, peak = entry["memory"]["supernode0"]["peak_process_mb"]
    assert (mean, peak) == (200.0, 300.0) and abs(std - 141.42) < 0.01
    assert entry["memory"]["supernode0"]["peak_tree_rss_mb"]["alignment"][0] == 100.0
    assert summary([row(0, 1.0, True), row(1, 1.0, False)])[0]["matches_in_process"] is False
    assert summary([row(0, 1.0, None)])[0]["matches_in_process"] is None
