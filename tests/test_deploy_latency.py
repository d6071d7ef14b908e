"""The pure parts of ``benchmarks.deploy_latency``: the jobs' settings, phases, ratios, the site-file mod."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
from flwr.app import Context, Message, RecordDict

from benchmarks.deploy_latency import (
    JOB,
    LATENCY_JOB,
    QUICK,
    comparison,
    logged_phases,
    phase_seconds,
    regime_overrides,
    site_node_configs,
)
from simulations.deploy_local import run_settings
from simulations.pate_config import compose_config, run_config_overrides
from simulations.pate_server import log_progress
from strategies.ensemble_distillation import ProgressEvent
from tests.fake_grid import task_identity


def test_the_latency_job_runs_the_settings_it_always_ran():
    out = Path("/tmp/out")
    before = run_settings("pate", out, parties=0, teacher_nodes=2, num_teachers=20, pate_overrides=JOB)
    assert f'method="pate" {run_config_overrides(*LATENCY_JOB, f"run.output_dir={out}")}' == before


def test_the_regime_is_the_readme_command_unless_scaled_down_or_given_another_student():
    assert regime_overrides() == ()
    default = compose_config(*regime_overrides())
    assert (default.data.dataset, default.data.num_teachers, default.federation.teacher_nodes,
            default.student.method) == ("mnist1d", 250, 2, "fixmatch")
    quick = compose_config(*regime_overrides("supervised", quick=True))
    assert regime_overrides("supervised", quick=True) == (*QUICK, "student.method=supervised")
    assert (quick.data.num_teachers, quick.student.method, quick.teacher.epochs) == (250, "supervised", 5)


def test_phase_seconds_splits_a_run_at_the_first_sighting_of_each_phase():
    phases = [("teacher training", 12.0), ("querying", 40.0), ("queries", 41.0), ("querying", 45.0),
              ("student training", 50.0), ("done", 90.0)]
    assert phase_seconds(phases, 10.0, 95.0) == {"startup_s": 2.0, "teachers_s": 28.0, "queries_s": 10.0,
                                                 "student_s": 40.0, "finish_s": 5.0}
    # a phase never seen leaves both parts it bounds unknown, not zero
    assert phase_seconds([("teacher training", 12.0), ("done", 90.0)], 10.0, 95.0) == {
        "startup_s": 2.0, "teachers_s": None, "queries_s": None, "student_s": None, "finish_s": 5.0}


def test_comparison_divides_deployment_by_simulation_and_checks_the_target():
    phases = {"startup_s": 30.0, "teachers_s": 200.0, "queries_s": None, "student_s": 500.0, "finish_s": 1.0}
    deployment = {"wall_s": 900.0, "run_s": 850.0, "phases_s": phases, "round_mean_s": 10.0}
    simulation = {"wall_s": 720.0, "run_s": 720.0, "round_mean_s": 0.5,
                  "phases_s": {**phases, "startup_s": 10.0, "finish_s": 0.0}}
    result = comparison(deployment, simulation)
    assert result["wall_ratio"] == pytest.approx(1.25) and result["within_target"]
    assert result["run_ratio"] == pytest.approx(850 / 720) and result["round_mean_ratio"] == pytest.approx(20.0)
    assert result["phase_ratios"] == {"startup_s": 3.0, "teachers_s": 1.0, "queries_s": None, "student_s": 1.0,
                                      "finish_s": None}
    assert not comparison({**deployment, "wall_s": 1100.0}, simulation)["within_target"]
    assert comparison({"wall_s": 9.0, "run_s": 9.0, "phases_s": {}}, {"wall_s": 6.0, "run_s": 6.0,
                                                                     "phases_s": {}})["round_mean_ratio"] is None


def test_the_phases_the_server_app_logs_are_read_back_from_its_log():
    records: list[str] = []
    handler = logging.Handler()
    handler.emit = lambda record: records.append(f"INFO :      {record.getMessage()}")  # type: ignore[method-assign]
    logger = logging.getLogger("flwr")
    logger.addHandler(handler)
    try:
        for phase in ("teacher training", "querying", "queries", "student training", "done"):
            log_progress(ProgressEvent(phase, 128, 40, 2000, 0.25))
    finally:
        logger.removeHandler(handler)
    text = "\n".join(records)
    assert "PATE queries: 128 checked, 40 answered, 2000 in the pool, data-dependent ε 0.25" in text
    assert logged_phases(text) == ["teacher training", "querying", "student training", "done"]


def test_the_site_mod_gives_each_simulated_node_its_supernodes_node_config():
    mod = site_node_configs(["role='teacher' teachers='0-124' data-file='/s/teacher0.npz'",
                             "role='teacher' teachers='125-249' data-file='/s/teacher1.npz'",
                             "role='student' data-file='/s/student.npz'"])
    seen: list[dict] = []

    def handler(message: Message, context: Context) -> Message:
        seen.append(dict(context.node_config))
        return message

    for partition in (2, 1):
        context = Context(run_id=1, node_id=7, node_config={"partition-id": partition, "num-partitions": 3},
                          state=RecordDict(), run_config={})
        with task_identity():
            mod(Message(RecordDict(), dst_node_id=7, message_type="query.describe"), context, handler)
    assert seen[0] == {"partition-id": 2, "num-partitions": 3, "role": "student",
                       "data-file": "/s/student.npz"}
    assert seen[1]["teachers"] == "125-249" and seen[1]["data-file"] == "/s/teacher1.npz"
