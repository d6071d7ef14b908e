"""Wall time per epoch of the vertical prototype method on a loopback deployment and in simulation.

The job: digits, 2 parties, aligned fraction 0.1 (126 aligned users, 4 minibatches of 32), the
prototype method, ECDH PSI alignment, ``EPOCHS`` epochs, for ``strategy.steps_per_exchange`` K = 1 and
K = 0 (the whole epoch in one exchange). The deployment (:mod:`simulations.deploy_local`: SuperLink +
one SuperNode per party + ``flwr run``, TLS and SuperNode authentication) is timed at the SuperNodes:
the benchmark polls their logs every 0.1 s and stamps each ``Receiving: <type> message`` line. With two
parties every training round trip is one message to one party, so epoch ``e`` runs from the
``e · R``-th to the ``(e + 1) · R``-th message after the alignment (``query.vfl_align``), R being the
run's ``round_trips_per_epoch``. In simulation the epochs are timed by the strategy's ``on_epoch``
callback (the time between the ends of consecutive epochs).

Right before each deployment row the run measures Flower's floor on the same machine and load: a trivial
ClientApp's ``query.describe`` round trip (:func:`benchmarks.deploy_latency.describe_round_trips`,
``--repeats`` per node on 3 SuperNodes). The row records its median (``floor_median_s``), the load then,
and ``ratio_to_round_trips_x_floor``: the epoch over R round trips of the floor (the target: ≤ 1.5).

    python -m benchmarks.vertical_deploy --out benchmarks/results/vertical_deploy.json
"""

from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

EPOCHS = 2
KS = (1, 0)
RECEIVING = re.compile(r"Receiving: (\S+) message")


def _overrides(k: int) -> dict[str, Any]:
    """The job's strategy settings; ``tune`` off (:data:`benchmarks.vertical.UNTUNED`): the epochs timed are
    the run's, without tuning trials."""
    from benchmarks.vertical import UNTUNED

    return {"epochs": EPOCHS, "steps_per_exchange": k, "alignment": "psi", "psi_backend": "ecdh", **UNTUNED}


def _row(epoch_s: list[float], results: dict[str, Any], wall_s: float) -> dict[str, Any]:
    per_epoch = statistics.mean(epoch_s)
    trips = float(results["round_trips_per_epoch"])
    return {"epoch_s": epoch_s, "epoch_mean_s": per_epoch, "round_trips_per_epoch": trips,
            "s_per_round_trip": per_epoch / trips, "round_trips": results["round_trips"],
            "test_accuracy": results["test"]["aligned"], "n_aligned": results["n_aligned"],
            "alignment": results["alignment"]["method"] + "/" + str(results["alignment"].get("backend", "")),
            "wall_s": wall_s}


def with_floor(row: dict[str, Any], floor: dict[str, Any], load: float) -> dict[str, Any]:
    """A deployment ``row`` with the same run's ``floor`` (measured at 1-min load ``load``): its median, and
    the epoch over the epoch's round trips × that median."""
    median = float(floor["median_s"])
    return {**row, "floor": floor, "floor_median_s": median, "floor_load_average_1min": load,
            "ratio_to_round_trips_x_floor": row["epoch_mean_s"] / (row["round_trips_per_epoch"] * median)}


def simulation(k: int, workdir: Path) -> dict[str, Any]:
    """The job on Flower's simulation engine (one simulated SuperNode per party)."""
    from protocol.vertical import VerticalConfig, VerticalStrategyConfig
    from simulations.app import build_client_app
    from simulations.flower_sim import run_flower_simulation
    from strategies.vertical_flower import run_vertical

    cfg = VerticalConfig(strategy=VerticalStrategyConfig(**_overrides(k)), output_dir=str(workdir))
    marks: list[float] = []
    t0 = time.perf_counter()
    results = run_flower_simulation(
        lambda grid, _ctx: run_vertical(grid, cfg, on_epoch=lambda _e, _m: marks.append(time.perf_counter())),
        build_client_app(output_dir=str(workdir)), cfg.dataset.n_parties, verbose=False)
    return _row([b - a for a, b in zip(marks, marks[1:], strict=False)], results, time.perf_counter() - t0)


def deployment(k: int, workdir: Path, port: int) -> dict[str, Any]:
    """The job on a loopback deployment (TLS + node auth); epochs timed by the SuperNodes' message logs."""
    from clients.vertical.party_files import main as export_party_files
    from simulations.deploy_local import COMPLETED, LocalDeployment, node_configs, run_settings

    out, data = workdir / "out", workdir / "data"
    out.mkdir(parents=True, exist_ok=True)
    export_party_files(["--parties", "2", "--out", str(data)])
    extra = " ".join(f"vertical.strategy.{key}={json.dumps(value)}" for key, value in _overrides(k).items())
    settings = f"{run_settings('vertical', out, parties=2, teacher_nodes=0, num_teachers=0)} {extra}"
    received: list[tuple[float, str]] = []
    t0 = time.perf_counter()
    with LocalDeployment(workdir, port=port) as local:
        local.start_superlink()
        configs = node_configs("vertical", parties=2, teacher_nodes=0, num_teachers=0, data_dir=data,
                               output_dir=out)
        names = [f"supernode{i}" for i in range(len(configs))]
        for name, config in zip(names, configs, strict=True):
            local.start_supernode(name, config)
        local.wait_online(len(configs))
        run = local.start_run(settings)
        seen = dict.fromkeys(names, 0)
        while run.poll() is None:
            now = time.perf_counter()
            for name in names:
                lines = RECEIVING.findall(local.log(name))
                received.extend((now, kind) for kind in lines[seen[name]:])
                seen[name] = len(lines)
            time.sleep(0.1)
        status = local.finish_run(run, timeout=60)
        if status != COMPLETED:
            raise RuntimeError(f"the run ended {status}:\n{local.log('flwr_run')[-3000:]}")
    wall_s = time.perf_counter() - t0
    results = json.loads((out / "results.json").read_text())["results"]
    start = max(i for i, (_, kind) in enumerate(received) if kind == "query.vfl_align") + 1
    trips = int(results["round_trips_per_epoch"])
    bounds = [received[start + e * trips][0] for e in range(EPOCHS + 1)]
    row = _row([b - a for a, b in zip(bounds, bounds[1:], strict=False)], results, wall_s)
    row["alignment_s"] = bounds[0] - received[0][0]
    return row


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/vertical_deploy.json"))
    parser.add_argument("--port", type=int, default=9410)
    parser.add_argument("--repeats", type=int, default=3,
                        help="floor round trips per node, measured before each deployment row (default 3)")
    args = parser.parse_args(argv)
    from benchmarks.deploy_latency import TRIVIAL_CLIENTAPP, describe_round_trips

    results: dict[str, Any] = {"job": {"dataset": "digits", "n_parties": 2, "aligned_fraction": 0.1,
                                       "strategy": "proto", "epochs": EPOCHS, "alignment": "psi",
                                       "psi_backend": "ecdh", "steps_per_exchange": list(KS)},
                               "load_average_1min_at_start": os.getloadavg()[0], "rows": []}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        for i, k in enumerate(KS):
            for engine in ("simulation", "deployment"):
                work = Path(tmp) / f"{engine}_k{k}"
                if engine == "simulation":
                    row = simulation(k, work)
                else:
                    load = os.getloadavg()[0]
                    floor = describe_round_trips(Path(tmp) / f"floor_k{k}", args.port + 10 * i + 5,
                                                 TRIVIAL_CLIENTAPP, args.repeats)
                    print(f"     floor K={k}: round trip median {floor['median_s']:.2f} s "
                          f"(min {floor['min_s']:.2f}, max {floor['max_s']:.2f}), load {load:.2f}",
                          flush=True)
                    row = with_floor(deployment(k, work, args.port + 10 * i), floor, load)
                results["rows"].append({"engine": engine, "steps_per_exchange": k, **row,
                                        "load_average_1min": os.getloadavg()[0]})
                args.out.write_text(json.dumps(results, indent=2))  # as it goes
                print(f"{engine:>10} K={k}: {row['epoch_mean_s']:.2f} s/epoch, "
                      f"{row['round_trips_per_epoch']:.0f} round trips/epoch, "
                      f"{row['s_per_round_trip']:.2f} s/round trip, wall {row['wall_s']:.0f} s", flush=True)
    results["load_average_1min_at_end"] = os.getloadavg()[0]
    args.out.write_text(json.dumps(results, indent=2))
    print(f"{'engine':>10} {'K':>3} {'s/epoch':>9} {'trips/epoch':>12} {'s/trip':>8} {'test acc':>9} "
          f"{'floor s':>8} {'/(R·floor)':>10} {'load':>5}")
    for r in results["rows"]:
        floor = (f"{r['floor_median_s']:>8.2f} {r['ratio_to_round_trips_x_floor']:>10.2f}" if "floor" in r
                 else f"{'-':>8} {'-':>10}")
        print(f"{r['engine']:>10} {r['steps_per_exchange']:>3} {r['epoch_mean_s']:>9.2f} "
              f"{r['round_trips_per_epoch']:>12.0f} {r['s_per_round_trip']:>8.2f} {r['test_accuracy']:>9.4f} "
              f"{floor} {r['load_average_1min']:>5.2f}")


if __name__ == "__main__":
    main()
