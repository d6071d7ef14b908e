"""Per-round latency of one small PATE job in Flower's simulation engine and in a loopback deployment,
beside Flower's own floor.

The floor: a trivial ClientApp's round trip (:mod:`benchmarks.latency_apps`: it answers ``query.describe``
at once and imports only Flower), one node at a time, timed by a probe ServerApp; the project's own
``query.describe`` is timed the same way on the same kind of deployment, so its ratio to the floor is what
the project adds per message.

The job: the digits smoke setting, 20 teachers on 2 teacher nodes plus the student, 6 query rounds of
40 queries (``max_queries=240``, a budget large enough never to stop it). A *round* is one query batch:
the ``query.votes`` round trip to every teacher node, fusion and the ledger charge; pipelined
(``federation.pipeline_queries``, :mod:`strategies.pate_queries`), the student's ``query.queries`` for the
next batch rides in the same round trip, so a round is one round trip (the longer of the two), not two. It
is timed between consecutive charges: in simulation by the strategy's progress events, in deployment by
polling the ledger file (which is rewritten at every charge) every 0.1 s. ``ratio_to_floor`` compares a
round with one floor round trip (what a pipelined round is made of, plus the teachers' votes);
``ratio_to_two_floors`` with two (a sequential round's two round trips). The deployment runs with TLS and
SuperNode authentication (:mod:`simulations.deploy_local`).

    python -m benchmarks.deploy_latency --out benchmarks/results/deploy_latency.json  # ≈ 10 min
    python -m benchmarks.deploy_latency --sequential --out /tmp/sequential.json  # the same, unpipelined
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from simulations.deploy_local import TASK_POLL_ENV, TASK_POLL_S

JOB = ("strategy.query_batch_size=40", "strategy.max_queries=240", "strategy.epsilon_budget=100.0")
"""On top of the digits smoke setting with 20 teachers on 2 teacher nodes (plus ``pipeline_queries``)."""


def job(pipelined: bool) -> tuple[str, ...]:
    """:data:`JOB` with the query phase pipelined or sequential (``--sequential``)."""
    return (*JOB, f"federation.pipeline_queries={str(pipelined).lower()}")


def _summary(marks: list[float], wall_s: float) -> dict[str, Any]:
    rounds = [b - a for a, b in zip(marks, marks[1:], strict=False)]
    return {"charges": len(marks), "round_s": rounds, "round_mean_s": statistics.mean(rounds),
            "round_min_s": min(rounds), "round_max_s": max(rounds), "wall_s": wall_s}


def simulation(workdir: Path, overrides: tuple[str, ...]) -> dict[str, Any]:
    """The job in Flower's simulation engine (Ray actors, in-memory messages)."""
    from simulations.app import build_client_app
    from simulations.flower_sim import run_flower_simulation
    from simulations.pate_config import compose_config
    from simulations.pate_server import run_pate_server
    from strategies.ensemble_distillation import ProgressEvent

    cfg = compose_config("dataset=digits", "data.num_teachers=20", "federation.teacher_nodes=2", *overrides,
                         f"run.output_dir={workdir}")
    marks: list[float] = []

    def on_progress(event: ProgressEvent) -> None:
        if event.phase == "queries":
            marks.append(time.perf_counter())

    t0 = time.perf_counter()
    run_flower_simulation(lambda grid, _ctx: run_pate_server(grid, cfg, on_progress),
                          build_client_app(str(workdir)), cfg.federation.teacher_nodes + 1,
                          cpus_per_node=cfg.federation.cpus_per_node)
    return _summary(marks, time.perf_counter() - t0)


PROBE_APPS = ("benchmarks/__init__.py", "benchmarks/latency_apps.py")
PROBE_SERVERAPP = "benchmarks.latency_apps:probe_server_app"
TRIVIAL_CLIENTAPP = "benchmarks.latency_apps:trivial_client_app"
PROJECT_CLIENTAPP = "simulations.app:client_app"


def describe_round_trips(workdir: Path, port: int, clientapp: str, repeats: int) -> dict[str, Any]:
    """``query.describe`` round trips, one node at a time, to 3 SuperNodes running ``clientapp``."""
    from benchmarks.latency_apps import PROBE_OUT_ENV, PROBE_SPEC_ENV
    from simulations.deploy_local import COMPLETED, LocalDeployment, node_configs, run_settings, stage_app

    app = stage_app(workdir / "app", clientapp, serverapp=PROBE_SERVERAPP, extra_files=PROBE_APPS)
    out = workdir / "probe.json"
    with LocalDeployment(workdir, port=port) as local:
        local.env[PROBE_OUT_ENV] = str(out)
        local.env[PROBE_SPEC_ENV] = json.dumps({"nodes": 3, "repeats": repeats,
                                                "data": {"dataset": "digits", "num_teachers": 20}})
        local.start_superlink()
        configs = node_configs("pate", parties=0, teacher_nodes=2, num_teachers=20, data_dir=workdir,
                               output_dir=workdir / "out")
        for k, config in enumerate(configs):
            local.start_supernode(f"supernode{k}", config)
        local.wait_online(len(configs))
        run = local.start_run(run_settings("pate", workdir / "out", parties=0, teacher_nodes=2,
                                           num_teachers=20), app=app)
        status = local.finish_run(run, timeout=600)
        if status != COMPLETED:
            raise RuntimeError(f"the probe ended {status}:\n{local.log('flwr_run')[-3000:]}")
    rows = json.loads(out.read_text())
    failed = [r for r in rows if r["error"] is not None]
    if failed:
        raise RuntimeError(f"{len(failed)} of {len(rows)} describe round trips failed, e.g. {failed[0]}")
    seconds = [float(r["seconds"]) for r in rows]
    return {"clientapp": clientapp, "round_trip_s": seconds, "median_s": statistics.median(seconds),
            "mean_s": statistics.mean(seconds), "min_s": min(seconds), "max_s": max(seconds)}


def deployment(workdir: Path, port: int, overrides: tuple[str, ...]) -> dict[str, Any]:
    """The job on a loopback deployment (SuperLink + 3 SuperNodes + ``flwr run``, TLS and node auth)."""
    from simulations.deploy_local import COMPLETED, LocalDeployment, node_configs, run_settings

    out = workdir / "out"
    ledger = out / "privacy_ledger.json"
    settings = run_settings("pate", out, parties=0, teacher_nodes=2, num_teachers=20,
                            pate_overrides=overrides)
    marks: list[float] = []
    t0 = time.perf_counter()
    with LocalDeployment(workdir, port=port) as local:
        local.start_superlink()
        configs = node_configs("pate", parties=0, teacher_nodes=2, num_teachers=20, data_dir=workdir,
                               output_dir=out)
        for k, config in enumerate(configs):
            local.start_supernode(f"supernode{k}", config)
        local.wait_online(len(configs))
        started = time.perf_counter()
        run = local.start_run(settings)
        seen = 0
        while run.poll() is None:
            try:
                count = len(json.loads(ledger.read_text())["history"])
            except (FileNotFoundError, ValueError, KeyError):
                count = seen
            if count > seen:
                marks.extend([time.perf_counter()] * (count - seen))
                seen = count
            time.sleep(0.1)
        status = local.finish_run(run, timeout=60)
        if status != COMPLETED:
            raise RuntimeError(f"the run ended {status}:\n{local.log('flwr_run')[-3000:]}")
    result = _summary(marks, time.perf_counter() - t0)
    result["run_s"] = time.perf_counter() - started
    return result


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/deploy_latency.json"))
    parser.add_argument("--port", type=int, default=9390)
    parser.add_argument("--repeats", type=int, default=3, help="describe round trips per node (default 3)")
    parser.add_argument("--sequential", action="store_true",
                        help="ask the student only after each charge (federation.pipeline_queries=false)")
    args = parser.parse_args(argv)
    overrides = job(pipelined=not args.sequential)
    results: dict[str, Any] = {"job": ["dataset=digits", "data.num_teachers=20", "federation.teacher_nodes=2",
                                       *overrides]}
    with tempfile.TemporaryDirectory() as tmp:
        results["load_average_1min_at_start"] = os.getloadavg()[0]  # the cores may be shared
        results["superexec_task_poll_s"] = float(os.environ.get(TASK_POLL_ENV, TASK_POLL_S))
        results["floor"] = describe_round_trips(Path(tmp) / "floor", args.port, TRIVIAL_CLIENTAPP,
                                                args.repeats)
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(results, indent=2))
        results["describe"] = describe_round_trips(Path(tmp) / "describe", args.port + 10, PROJECT_CLIENTAPP,
                                                   args.repeats)
        results["describe"]["ratio_to_floor"] = results["describe"]["median_s"] / results["floor"]["median_s"]
        args.out.write_text(json.dumps(results, indent=2))
        results["deployment"] = deployment(Path(tmp) / "deployment", args.port + 20, overrides)
        # pipelined, a round is one round trip (every teacher node's votes with the student's next
        # queries); sequential, two (the student's queries, then the votes)
        floor = results["floor"]["median_s"]
        results["deployment"]["ratio_to_floor"] = results["deployment"]["round_mean_s"] / floor
        results["deployment"]["ratio_to_two_floors"] = results["deployment"]["round_mean_s"] / (2 * floor)
        args.out.write_text(json.dumps(results, indent=2))
        results["simulation"] = simulation(Path(tmp) / "simulation", overrides)
        results["load_average_1min_at_end"] = os.getloadavg()[0]
    args.out.write_text(json.dumps(results, indent=2))
    for name in ("floor", "describe"):
        r = results[name]
        print(f"{name:>10}: round trip median {r['median_s']:.2f} s (min {r['min_s']:.2f}, "
              f"max {r['max_s']:.2f})"
              + (f", {r['ratio_to_floor']:.2f} x the floor" if "ratio_to_floor" in r else ""))
    for name in ("simulation", "deployment"):
        r = results[name]
        print(f"{name:>10}: round {r['round_mean_s']:.2f} s (min {r['round_min_s']:.2f}, max "
              f"{r['round_max_s']:.2f}) over {r['charges'] - 1} rounds; wall {r['wall_s']:.0f} s"
              + (f"; {r['ratio_to_floor']:.2f} x one floor round trip ({r['ratio_to_two_floors']:.2f} x two)"
                 if name == "deployment" else ""))


if __name__ == "__main__":
    main()
