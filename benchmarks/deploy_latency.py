"""Per-round latency of one small PATE job in Flower's simulation engine and in a loopback deployment,
beside Flower's own floor; with ``--regime default``, the project's default PATE regime end to end in both.

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

``--regime default`` runs what ``python -m simulations.pate`` runs (MNIST-1D, 250 teachers on 2 teacher
nodes, the FixMatch student; ``--student`` picks another student, ``--quick`` scales the data and epochs
down to prove the code path) on *site files*: the bundled split exported once
(:func:`clients.pate.site_files.export_bundled`), each node reading only its own file. First on a
loopback deployment (each SuperNode gets its file's ``--node-config``, the student also ``output-dir``),
then in Flower's simulation engine on the same files (a ClientApp mod hands simulated node ``k`` the
``--node-config`` of SuperNode ``k``: :func:`site_node_configs`). Each part records its wall time, the
phases (:func:`phase_seconds`: from the strategy's progress events in simulation, from the ServerApp's
``PATE phase:`` log lines as they arrive in deployment), the query rounds and the run's outcome; the
JSON (``benchmarks/results/deploy_regime.json``) is written after each part and ends with the
deployment/simulation ratios (:func:`comparison`; the target is a wall time within 1.5 x).

    OMP_NUM_THREADS=1 python -m benchmarks.deploy_latency --regime default
"""

from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from flwr.app import Context, Message
from flwr.clientapp.typing import ClientAppCallable, Mod
from flwr.common.config import parse_config_args

from protocol.pate import STUDENT_METHODS
from simulations.deploy_local import TASK_POLL_ENV, TASK_POLL_S
from simulations.pate_server import PHASE_LOG_PREFIX

JOB = ("strategy.query_batch_size=40", "strategy.max_queries=240", "strategy.epsilon_budget=100.0")
"""On top of the digits smoke setting with 20 teachers on 2 teacher nodes."""
LATENCY_JOB = ("dataset=digits", "data.num_teachers=20", "federation.teacher_nodes=2", *JOB)
"""The latency job's Hydra overrides of ``conf/pate``."""


def latency_job(pipelined: bool) -> tuple[str, ...]:
    """:data:`LATENCY_JOB` with the query phase pipelined or sequential (``--sequential``)."""
    return (*LATENCY_JOB, f"federation.pipeline_queries={str(pipelined).lower()}")
QUICK = ("data.mnist1d_samples=10000", "data.teacher_samples=6000", "teacher.epochs=5",
         "student_model.epochs=20")
"""``--quick``: the default regime scaled down (still 250 teachers on 2 nodes, 24 signals each, 5 epochs;
pool 2 000) to prove the code path in minutes."""
PHASES = (("startup", "teacher training"), ("teachers", "querying"), ("queries", "student training"),
          ("student", "done"))
"""Each part of a run and the progress phase that ends it; ``finish`` (results, shutdown) runs to the end."""
TARGET_RATIO = 1.5
"""Issue 27: the default regime end to end in deployment within this many times its simulation wall time."""


@dataclass
class Timeline:
    """What one run of a PATE job recorded, on :func:`time.perf_counter`'s clock.

    ``start``: before anything starts (the SuperLink, or Ray); ``run_start``: the run is launched (``flwr
    run``, or the simulation); ``end``: every process has stopped; ``charges``: one mark per charged query
    batch; ``phases``: ``(progress phase, when it was first seen)``; ``out``: the run's output folder.
    """

    start: float
    run_start: float
    end: float = 0.0
    charges: list[float] = field(default_factory=list)
    phases: list[tuple[str, float]] = field(default_factory=list)
    out: Path = Path()


def _summary(marks: list[float], wall_s: float) -> dict[str, Any]:
    rounds = [b - a for a, b in zip(marks, marks[1:], strict=False)]
    return {"charges": len(marks), "round_s": rounds, "round_mean_s": statistics.mean(rounds),
            "round_min_s": min(rounds), "round_max_s": max(rounds), "wall_s": wall_s}


def regime_overrides(student: str | None = None, quick: bool = False) -> tuple[str, ...]:
    """Hydra overrides of the default regime: none (the README's command), :data:`QUICK` with ``quick``,
    and ``student.method`` if ``student`` is given."""
    return (*(QUICK if quick else ()), *((f"student.method={student}",) if student else ()))


def phase_seconds(phases: Sequence[tuple[str, float]], start: float, end: float) -> dict[str, float | None]:
    """Seconds of each part of a run (:data:`PHASES`, then ``finish``) between ``start``, the first time
    each progress phase was seen, and ``end``; None for a part whose boundary was not seen.

    ``startup``: Ray, or the SuperLink, the SuperNodes and ``flwr run``, then ``describe``; ``teachers``:
    teacher training and the student's data preparation; ``queries``: the query rounds; ``student``: the
    privacy bill and the student's training; ``finish``: the results and the shutdown.
    """
    first: dict[str, float] = {}
    for name, seen in phases:
        first.setdefault(name, seen)
    bounds = [start, *(first.get(phase) for _, phase in PHASES), end]
    names = [*(part for part, _ in PHASES), "finish"]
    return {f"{name}_s": None if a is None or b is None else b - a
            for name, a, b in zip(names, bounds[:-1], bounds[1:], strict=True)}


def comparison(deployment: dict[str, Any], simulation: dict[str, Any]) -> dict[str, Any]:
    """Deployment / simulation: the wall times (the target: within :data:`TARGET_RATIO`), the times from
    the run's launch, each phase (None where either lacks it) and the mean query round."""

    def ratio(a: float | None, b: float | None) -> float | None:
        return None if a is None or b is None or b <= 0 else a / b

    wall = ratio(deployment["wall_s"], simulation["wall_s"])
    return {"wall_ratio": wall, "target_ratio": TARGET_RATIO,
            "within_target": wall is not None and wall <= TARGET_RATIO,
            "run_ratio": ratio(deployment["run_s"], simulation["run_s"]),
            "phase_ratios": {k: ratio(v, simulation["phases_s"].get(k))
                             for k, v in deployment["phases_s"].items()},
            "round_mean_ratio": ratio(deployment.get("round_mean_s"), simulation.get("round_mean_s"))}


def logged_phases(text: str) -> list[str]:
    """The progress phases a ServerApp's log names (:data:`simulations.pate_server.PHASE_LOG_PREFIX`), in
    order."""
    return re.findall(rf"{re.escape(PHASE_LOG_PREFIX)}([a-z]+(?: [a-z]+)*)", text)


def site_node_configs(configs: Sequence[str]) -> Mod:
    """A ClientApp mod that gives simulated node ``partition-id`` k the ``--node-config`` text
    ``configs[k]`` (role, teachers, data-file, as a deployment's SuperNode k gets it), so that a simulation
    runs on the same site files as the deployment."""
    parsed = [parse_config_args([text]) for text in configs]

    def with_site_config(message: Message, context: Context, call_next: ClientAppCallable) -> Message:
        context.node_config.update(parsed[int(context.node_config["partition-id"])])
        return call_next(message, context)

    return with_site_config


def simulate(overrides: Sequence[str], workdir: Path, sites: Sequence[str] = ()) -> Timeline:
    """The PATE job of ``overrides`` in Flower's simulation engine (Ray actors, in-memory messages), on the
    bundled data, or on the site files whose ``--node-config`` texts ``sites`` holds."""
    from simulations.app import build_client_app
    from simulations.flower_sim import run_flower_simulation
    from simulations.pate_config import compose_config
    from simulations.pate_server import run_pate_server
    from strategies.ensemble_distillation import ProgressEvent

    cfg = compose_config(*overrides, f"run.output_dir={workdir}")
    timeline = Timeline(start=time.perf_counter(), run_start=time.perf_counter(), out=workdir)

    def on_progress(event: ProgressEvent) -> None:
        now = time.perf_counter()
        timeline.phases.append((event.phase, now))
        if event.phase == "queries":
            timeline.charges.append(now)

    mods = [site_node_configs(sites)] if sites else []
    run_flower_simulation(lambda grid, _ctx: run_pate_server(grid, cfg, on_progress),
                          build_client_app(str(workdir), mods=mods), cfg.federation.teacher_nodes + 1,
                          cpus_per_node=cfg.federation.cpus_per_node)
    timeline.end = time.perf_counter()
    return timeline


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


def deploy(overrides: Sequence[str], workdir: Path, port: int, sites: Sequence[str] = ()) -> Timeline:
    """The PATE job of ``overrides`` on a loopback deployment (SuperLink + SuperNodes + ``flwr run``, TLS
    and node auth), on the bundled data or on the site files whose ``--node-config`` texts ``sites`` holds
    (the student's also gets ``output-dir``). Charges are seen by polling the ledger file, phases by
    reading the ServerApp's log lines as they arrive, both every 0.1 s (a log line arrives through
    ``flwr run --stream``, which Flower's SuperLink serves every 0.5 s: a phase is seen up to ≈ 1 s late).

    Raises
    ------
    RuntimeError
        If the run does not complete (the end of its log in the message).
    """
    from simulations.deploy_local import COMPLETED, LocalDeployment, node_configs
    from simulations.pate_config import compose_config, run_config_overrides

    out = workdir / "out"
    ledger = out / "privacy_ledger.json"
    cfg = compose_config(*overrides, f"run.output_dir={out}")
    settings = f'method="pate" {run_config_overrides(*overrides, f"run.output_dir={out}")}'
    if sites:
        configs = [*sites[:-1], f"{sites[-1]} output-dir='{out}'"]
    else:
        configs = node_configs("pate", parties=0, teacher_nodes=cfg.federation.teacher_nodes,
                               num_teachers=cfg.data.num_teachers, data_dir=workdir, output_dir=out)
    timeline = Timeline(start=time.perf_counter(), run_start=0.0, out=out)
    with LocalDeployment(workdir, port=port) as local:
        local.start_superlink()
        for k, config in enumerate(configs):
            local.start_supernode(f"supernode{k}", config)
        local.wait_online(len(configs))
        timeline.run_start = time.perf_counter()
        run = local.start_run(settings)
        log_file, seen, logged = local.logs / "flwr_run.log", 0, 0
        while run.poll() is None:
            now = time.perf_counter()
            try:
                count = len(json.loads(ledger.read_text())["history"])
            except (FileNotFoundError, ValueError, KeyError):
                count = seen
            if count > seen:
                timeline.charges.extend([now] * (count - seen))
                seen = count
            text = log_file.read_text(errors="replace")
            phases = logged_phases(text[:text.rfind("\n") + 1])  # complete lines only
            timeline.phases.extend((phase, now) for phase in phases[logged:])
            logged = len(phases)
            time.sleep(0.1)
        status = local.finish_run(run, timeout=60)
        if status != COMPLETED:
            raise RuntimeError(f"the run ended {status}:\n{local.log('flwr_run')[-3000:]}")
    timeline.end = time.perf_counter()
    return timeline


def run_facts(out: Path) -> dict[str, Any]:
    """What a run's ``results.json`` says of its outcome: queries, ε, teachers left, the student."""
    report = json.loads((out / "results.json").read_text())
    student = report["student"]
    return {key: report[key] for key in ("queries_checked", "answered", "epsilon_data_dependent",
                                         "teachers_remaining", "wall_s")} | {
        "student_method": report["config"]["student"]["method"],
        "student_test_accuracy": student.get("test_accuracy"),
        "student_validation_accuracy": student.get("validation_accuracy")}


def regime_part(timeline: Timeline) -> dict[str, Any]:
    """One part of ``--regime default``: wall time, the time from the run's launch, the phases, the query
    rounds (if there were two charges or more) and the run's outcome (``strategy_wall_s``: the strategy's
    own clock, from ``describe`` to the student's reply)."""
    part: dict[str, Any] = {"wall_s": timeline.end - timeline.start,
                            "run_s": timeline.end - timeline.run_start,
                            "phases_s": phase_seconds(timeline.phases, timeline.start, timeline.end)}
    if len(timeline.charges) >= 2:
        part.update({k: v for k, v in _summary(timeline.charges, 0.0).items() if k != "wall_s"})
    else:
        part["charges"] = len(timeline.charges)
    facts = run_facts(timeline.out)
    part["strategy_wall_s"] = facts.pop("wall_s")
    return part | {"run": facts}


def _write(path: Path, results: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(results, indent=2))


def latency(out: Path, port: int, repeats: int, pipelined: bool = True) -> None:
    """The default mode: the floor, ``describe``, and the small job's rounds in deployment and simulation."""
    job = latency_job(pipelined)
    results: dict[str, Any] = {"job": list(job)}
    with tempfile.TemporaryDirectory() as tmp:
        results["load_average_1min_at_start"] = os.getloadavg()[0]  # the cores may be shared
        results["superexec_task_poll_s"] = float(os.environ.get(TASK_POLL_ENV, TASK_POLL_S))
        results["floor"] = describe_round_trips(Path(tmp) / "floor", port, TRIVIAL_CLIENTAPP, repeats)
        _write(out, results)
        results["describe"] = describe_round_trips(Path(tmp) / "describe", port + 10, PROJECT_CLIENTAPP,
                                                   repeats)
        results["describe"]["ratio_to_floor"] = results["describe"]["median_s"] / results["floor"]["median_s"]
        _write(out, results)
        deployed = deploy(job, Path(tmp) / "deployment", port + 20)
        results["deployment"] = _summary(deployed.charges, deployed.end - deployed.start)
        results["deployment"]["run_s"] = deployed.end - deployed.run_start
        # pipelined, a round is one round trip (every teacher node's votes with the student's next
        # queries); sequential, two (the student's queries, then the votes)
        floor = results["floor"]["median_s"]
        results["deployment"]["ratio_to_floor"] = results["deployment"]["round_mean_s"] / floor
        results["deployment"]["ratio_to_two_floors"] = results["deployment"]["round_mean_s"] / (2 * floor)
        _write(out, results)
        simulated = simulate(job, Path(tmp) / "simulation")
        results["simulation"] = _summary(simulated.charges, simulated.end - simulated.start)
        results["load_average_1min_at_end"] = os.getloadavg()[0]
    _write(out, results)
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


def regime(out: Path, port: int, student: str | None, quick: bool) -> None:
    """``--regime default``: the default PATE regime on site files, in deployment, then in simulation."""
    from clients.pate.site_files import export_bundled
    from simulations.pate_config import compose_config

    overrides = regime_overrides(student, quick)
    cfg = compose_config(*overrides)
    results: dict[str, Any] = {
        "regime": "default (python -m simulations.pate)" + (" scaled down by --quick" if quick else ""),
        "overrides": list(overrides), "quick": quick, "student": cfg.student.method,
        "dataset": cfg.data.dataset, "num_teachers": cfg.data.num_teachers,
        "teacher_nodes": cfg.federation.teacher_nodes,
        "data": "site files (export_bundled, npz): each node reads only its own file, in both parts; the "
                "simulated nodes get the SuperNodes' --node-config through a ClientApp mod",
        "omp_num_threads": os.environ.get("OMP_NUM_THREADS"),
        "superexec_task_poll_s": float(os.environ.get(TASK_POLL_ENV, TASK_POLL_S)),
        "load_average_1min_at_start": os.getloadavg()[0]}
    with tempfile.TemporaryDirectory() as tmp:
        started = time.perf_counter()
        sites = export_bundled(cfg.data, cfg.federation.teacher_nodes, Path(tmp) / "sites")
        results["export_s"] = time.perf_counter() - started
        _write(out, results)
        for name, run in (("deployment", lambda: deploy(overrides, Path(tmp) / "deployment", port, sites)),
                          ("simulation", lambda: simulate(overrides, Path(tmp) / "simulation", sites))):
            load = os.getloadavg()[0]
            results[name] = regime_part(run()) | {"load_average_1min_at_start": load,
                                                  "load_average_1min_at_end": os.getloadavg()[0]}
            _write(out, results)
    results["comparison"] = comparison(results["deployment"], results["simulation"])
    results["load_average_1min_at_end"] = os.getloadavg()[0]
    _write(out, results)
    for name in ("deployment", "simulation"):
        r = results[name]
        phases = ", ".join(f"{k.removesuffix('_s')} {v:.0f} s" for k, v in r["phases_s"].items()
                           if v is not None)
        rounds = f"; {r['charges'] - 1} rounds of {r['round_mean_s']:.2f} s" if "round_mean_s" in r else ""
        print(f"{name:>10}: wall {r['wall_s']:.0f} s ({phases}){rounds}; student test accuracy "
              f"{r['run']['student_test_accuracy']}")
    c = results["comparison"]
    print(f"deployment / simulation: wall {c['wall_ratio']:.2f} x (target <= {TARGET_RATIO} x: "
          f"{'met' if c['within_target'] else 'missed'})")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--regime", choices=("latency", "default"), default="latency",
                        help="latency (default): the floor, describe and a small job's rounds; default: the "
                             "default PATE regime end to end on site files, deployment vs simulation")
    parser.add_argument("--out", type=Path, default=None,
                        help="the JSON (default benchmarks/results/deploy_latency.json; with --regime "
                             "default benchmarks/results/deploy_regime.json)")
    parser.add_argument("--port", type=int, default=9390)
    parser.add_argument("--repeats", type=int, default=3, help="describe round trips per node (default 3)")
    parser.add_argument("--student", choices=STUDENT_METHODS, default=None,
                        help="--regime default: the student's method (default: the regime's, fixmatch)")
    parser.add_argument("--quick", action="store_true",
                        help="--regime default: scaled down (QUICK) to prove the code path in minutes")
    parser.add_argument("--sequential", action="store_true",
                        help="latency: ask the student only after each charge (federation.pipeline_queries="
                             "false)")
    args = parser.parse_args(argv)
    if args.regime == "latency":
        if args.student is not None or args.quick:
            parser.error("--student and --quick apply to --regime default only")
        latency(args.out or Path("benchmarks/results/deploy_latency.json"), args.port, args.repeats,
                pipelined=not args.sequential)
    elif args.sequential:
        parser.error("--sequential applies to --regime latency only")
    else:
        regime(args.out or Path("benchmarks/results/deploy_regime.json"), args.port, args.student, args.quick)


if __name__ == "__main__":
    main()
