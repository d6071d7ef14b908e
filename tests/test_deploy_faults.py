"""Faults survived on real processes: a loopback deployment (TLS, SuperNode authentication), then a node
killed by PID or replying malformed content. Each test starts its own SuperLink and SuperNodes (slow)."""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import pytest

from clients.vertical.party_files import main as export_party_files
from simulations.deploy_local import COMPLETED, LocalDeployment, node_configs, run_settings, stage_app
from strategies.accounting import PrivacyLedger

PATE_RUN = ("strategy.query_batch_size=40", "strategy.max_queries=240", "strategy.epsilon_budget=100.0",
            "federation.timeout_s=300.0")  # 6 batches of 40 queries (a rehearsal, not a privacy claim)


def _wait_for(condition, what: str, run, timeout: float, deployment: LocalDeployment) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if run.poll() is not None:
            pytest.fail(f"the run ended (exit {run.returncode}) before {what}:\n"
                        f"{deployment.log('flwr_run')[-3000:]}")
        if time.monotonic() > deadline:
            pytest.fail(f"no {what} within {timeout:.0f} s:\n{deployment.log('flwr_run')[-3000:]}")
        time.sleep(0.5)


def _ledger_entries(path: Path) -> int:
    try:
        return len(json.loads(path.read_text())["history"])
    except (FileNotFoundError, ValueError, KeyError):
        return 0


@pytest.mark.slow
def test_pate_run_completes_without_a_teacher_node_killed_mid_run(tmp_path: Path) -> None:
    # 20 teachers on 3 nodes (0-6, 7-12, 13-19) + the student; node 2 is SIGKILLed after the first charge
    t0 = time.monotonic()
    out = tmp_path / "out"
    with LocalDeployment(tmp_path, port=9360) as deployment:
        deployment.start_superlink()
        configs = node_configs("pate", parties=0, teacher_nodes=3, num_teachers=20, data_dir=tmp_path,
                               output_dir=out)
        for k, config in enumerate(configs):
            deployment.start_supernode(f"supernode{k}", config)
        deployment.wait_online(len(configs))
        run = deployment.start_run(run_settings("pate", out, parties=0, teacher_nodes=3, num_teachers=20,
                                                pate_overrides=PATE_RUN))
        ledger_path = out / "privacy_ledger.json"
        _wait_for(lambda: _ledger_entries(ledger_path) >= 1, "a charged batch", run, 900, deployment)
        deployment.kill("supernode2")
        killed_after = _ledger_entries(ledger_path)
        status = deployment.finish_run(run, timeout=900)
        log = deployment.log("flwr_run")
    print(f"wall time {time.monotonic() - t0:.0f} s")
    assert status == COMPLETED, log[-3000:]
    report = json.loads((out / "results.json").read_text())
    assert report["teachers_remaining"] == 13
    (reason,) = report["dropped_nodes"].values()
    assert "voting" in reason
    assert "leaves the ensemble" in log
    ledger = PrivacyLedger.load(ledger_path)
    history = ledger.history
    n_teachers = [int(e["n_teachers"]) for e in history]
    # every batch charged before the kill counted all 20 votes; every batch after it exactly 13;
    # the batch in flight at the kill counted whichever set of nodes answered it
    assert n_teachers[:killed_after] == [20] * killed_after
    assert n_teachers[-1] == 13 and set(n_teachers) == {20, 13}
    assert n_teachers == sorted(n_teachers, reverse=True)
    # the stored histograms: each row sums to the votes of its own batch's voters
    votes = ledger.votes
    assert votes is not None
    per_row = np.repeat(n_teachers, [int(e["n_accepted"]) for e in history])
    np.testing.assert_array_equal(votes.sum(axis=1), per_row)
    assert report["queries_checked"] == int(sum(e["n_accepted"] for e in history)) == len(votes)
    assert report["student"]["test_accuracy"] > 0.5


@pytest.mark.slow
def test_malformed_vote_replies_are_rejected_with_a_logged_reason_and_the_run_goes_on(tmp_path: Path) -> None:
    # one honest node with teachers 0-15 and four nodes, one teacher each, replying malformed histograms
    t0 = time.monotonic()
    out = tmp_path / "out"
    expected = {"shape": "expected 10 class columns, got 9", "dtype": "counts must be non-negative integers",
                "nan": "counts must be non-negative integers", "missing": "no ArrayRecord 'votes'"}
    app = stage_app(tmp_path / "app", "simulations.fault_app:client_app")
    with LocalDeployment(tmp_path, port=9370) as deployment:
        deployment.start_superlink()
        deployment.start_supernode("honest", "role='teacher' teachers='0-15'")
        for t, kind in enumerate(expected, start=16):
            deployment.start_supernode(kind, f"role='teacher' teachers='{t}' fault='query.votes:{kind}'")
        deployment.start_supernode("student", f"role='student' output-dir='{out}'")
        deployment.wait_online(6)
        run = deployment.start_run(run_settings("pate", out, parties=0, teacher_nodes=5, num_teachers=20,
                                                pate_overrides=PATE_RUN), app=app)
        status = deployment.finish_run(run, timeout=900)
        log = deployment.log("flwr_run")
        node_ids = dict(deployment.node_ids)
    print(f"wall time {time.monotonic() - t0:.0f} s")
    assert status == COMPLETED, log[-3000:]
    report = json.loads((out / "results.json").read_text())
    assert report["teachers_remaining"] == 16
    dropped = report["dropped_nodes"]
    assert set(dropped) == {str(node_ids[kind]) for kind in expected}
    for kind, reason in expected.items():
        node = node_ids[kind]
        assert dropped[str(node)].startswith("malformed vote histogram: ") and reason in dropped[str(node)]
        assert f"teacher node {node} (teachers [{16 + list(expected).index(kind)}]) leaves the ensemble: " \
               f"malformed vote histogram" in log
    history = PrivacyLedger.load(out / "privacy_ledger.json").history
    assert [int(e["n_teachers"]) for e in history] == [16] * len(history)  # no bad vote was ever counted
    assert report["queries_checked"] == 240 or any(e["exhausted"] for e in history)
    assert report["student"]["test_accuracy"] > 0.5


@pytest.mark.slow
def test_vertical_party_killed_mid_epoch_ends_the_run_in_time_naming_the_party(tmp_path: Path) -> None:
    # ECDH PSI (fast), then split learning in minibatches of 16; passive1 is SIGKILLed mid-epoch
    t0 = time.monotonic()
    out = tmp_path / "out"
    timeout_s = 60.0
    export_party_files(["--parties", "2", "--out", str(tmp_path / "data")])
    with LocalDeployment(tmp_path, port=9380) as deployment:
        deployment.start_superlink()
        for k, config in enumerate(node_configs("vertical", parties=2, teacher_nodes=0, num_teachers=0,
                                                data_dir=tmp_path / "data")):
            deployment.start_supernode(f"party{k}", config)
        deployment.wait_online(2)
        settings = run_settings("vertical", out, parties=2, teacher_nodes=0, num_teachers=0)
        run = deployment.start_run(f'{settings} vertical.strategy.psi_backend="ecdh" vertical.strategy.tune="off" '
                                   f"vertical.strategy.epochs=3 vertical.strategy.aligned_batch_size=16 "
                                   f"vertical.strategy.timeout_s={timeout_s}")
        _wait_for(lambda: deployment.log("party1").count("Receiving: train.vfl_") >= 3,
                  "split-learning steps at passive1", run, 900, deployment)
        deployment.kill("party1")
        killed_at = time.monotonic()
        run.wait(timeout=600)
        ended_after = time.monotonic() - killed_at
        status = deployment.finish_run(run, timeout=5)
        log = deployment.log("flwr_run")
        passive_node = deployment.node_ids["party1"]
    print(f"wall time {time.monotonic() - t0:.0f} s; the run ended {ended_after:.0f} s after the kill")
    assert status == "finished:failed", log[-3000:]
    assert f"party passive1 (node {passive_node}) did not reply" in log, log[-3000:]
    # the configured timeout, plus the ServerApp's 3 s polling and its shutdown
    assert ended_after < timeout_s + 30
    assert not (out / "results.json").exists()
    assert not list(out.glob("*.pt")) and not list(out.glob("*.tmp"))  # nothing saved, nothing half-written


@pytest.mark.slow
def test_malformed_query_reply_from_the_student_stops_the_run_before_any_charge(tmp_path: Path) -> None:
    # the student's query batch comes back with NaN samples and float positions: nothing to fall back on
    t0 = time.monotonic()
    out = tmp_path / "out"
    app = stage_app(tmp_path / "app", "simulations.fault_app:client_app")
    with LocalDeployment(tmp_path, port=9385) as deployment:
        deployment.start_superlink()
        deployment.start_supernode("teachers", "role='teacher' teachers='0-19'")
        deployment.start_supernode("student", f"role='student' output-dir='{out}' fault='query.queries:nan'")
        deployment.wait_online(2)
        run = deployment.start_run(run_settings("pate", out, parties=0, teacher_nodes=1, num_teachers=20,
                                                pate_overrides=PATE_RUN), app=app)
        status = deployment.finish_run(run, timeout=900)
        log = deployment.log("flwr_run")
        student = deployment.node_ids["student"]
    print(f"wall time {time.monotonic() - t0:.0f} s")
    assert status == "finished:failed", log[-3000:]
    assert (f"node {student} (student): malformed query reply: positions must be integers, got dtype float64"
            in log), log[-3000:]
    ledger = out / "privacy_ledger.json"
    assert not ledger.exists() or PrivacyLedger.load(ledger).queries_checked == 0  # no budget spent
    assert not (out / "results.json").exists()
