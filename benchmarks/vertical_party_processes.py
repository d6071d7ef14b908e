"""Peak resident memory of each party with every party and the server in an OS process of its own, linked by
pipes carrying Flower's serialised messages (issue 26 §4, "peak memory per party").

The fallback of :mod:`benchmarks.vertical_party_memory` for runs too long for a loopback deployment on a
shared machine: there Flower starts a fresh ClientApp process per message (start-up, imports, party file
and node state read again: about 40 s per message on 2 busy cores), and ``proto`` with ``tune = auto``
sends about 120 messages at 10⁵ users per party. Here the same code runs without the SuperLink:

- each party is a process (``multiprocessing`` *spawn*: a fresh interpreter, nothing inherited) running
  the project's Flower ClientApp (:func:`simulations.app.build_client_app`) on its ``node_config``
  (``party``, ``data-file``: its own party file, exported as in :mod:`benchmarks.vertical_party_memory`;
  ``output-dir``) and a ``Context`` whose ``state`` lives as long as the process, as a SuperNode keeps
  it for a run (the simulation engine's nodes likewise);
- the server is a process running the ServerApp's function :func:`strategies.vertical_flower.run_vertical`
  over :class:`PipeGrid`, which sends each Flower ``Message`` as its protobuf bytes
  (``flwr.common.serde.message_to_proto``, what the deployment's gRPC carries) over a pipe to the
  party's process and reads the reply alike: discovery, the ECDH PSI (each role in its party's process),
  tuning, training, evaluation and saving are the deployment's messages, only the transport differs.
  The messages of one call go out together and the parties compute concurrently, as with Flower.

Memory is metered as in :mod:`benchmarks.vertical_party_memory` (:class:`TreeMeter` polls of each
process tree, ``VmHWM`` written at exit by ``benchmarks/rss_hook``), per component ``party0`` (label
holder), ``party1`` (passive party) and ``server``, the phase boundary being the first message the server
sends after ``query.vfl_align``. The benchmark's own process (the orchestrator) holds no party and is not
metered.

Usage::

    OMP_NUM_THREADS=1 python -m benchmarks.vertical_party_processes --dataset synthetic100k --seeds 0 \\
        --runs proto,vfl_head_fusion,active_only --out benchmarks/results/vertical_scale_party_processes.json
"""

from __future__ import annotations

import json
import multiprocessing
import os
import time
from collections.abc import Iterable
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

# the heavy imports (torch, the benchmarks) are inside the functions: a spawned party or server process
# imports this module, and should hold what a Flower node or ServerApp holds, not the orchestrator's modules
FIRST_NODE = 1000
"""Node ID of party 0 (party ``k`` is ``FIRST_NODE + k``)."""
NOTE = ("Each party and the server in an OS process of its own (multiprocessing spawn), linked by pipes "
        "carrying Flower's protobuf-serialised messages: parties run the project's ClientApp on their own "
        "party file with a Context kept for the run (as a SuperNode keeps its state), the server runs "
        "strategies.vertical_flower.run_vertical (discovery, ECDH PSI between the party processes, tuning, "
        "training, evaluation, saving). The runs of benchmarks.vertical_scale (SCALE_RUNS, SCALE_CASE). Per "
        "component (party0 = label holder, party1 = passive party, server): peak_process_mb = the largest "
        "peak resident set of one process of its tree (polled /proc VmHWM, and VmHWM at exit via "
        "benchmarks/rss_hook); peak_tree_rss_mb = the largest sum of VmRSS over its live processes at one "
        "poll, overall and per phase (alignment: start-up, discovery, PSI; training: tuning, training, "
        "evaluation, saving). OMP_NUM_THREADS=1, torch 1 thread.")


def _set_task_identity() -> None:
    """What a ServerApp or ClientApp process has set before Flower ``Message`` objects can be made."""
    from flwr.supercore.task_identity import TaskIdentity

    TaskIdentity.run_id, TaskIdentity.task_id, TaskIdentity.node_id = 1, 1, 0


def _to_bytes(message: Any) -> bytes:
    from flwr.common.serde import message_to_proto

    return message_to_proto(message).SerializeToString()


def _from_bytes(data: bytes) -> Any:
    from flwr.common.serde import message_from_proto
    from flwr.proto.message_pb2 import Message as ProtoMessage

    return message_from_proto(ProtoMessage.FromString(data))


def party_main(conn: Connection, node_id: int, node_config: dict[str, Any]) -> None:
    """A party's process: answer each message with the ClientApp until the pipe closes (an empty message).

    A handler that raises becomes an error reply with code 2, as Flower makes it."""
    import torch
    from flwr.app import Context, Error, Message, RecordDict

    from simulations.app import build_client_app

    torch.set_num_threads(1)
    _set_task_identity()
    app = build_client_app()
    context = Context(run_id=1, node_id=node_id, node_config=node_config, state=RecordDict(), run_config={})
    while data := conn.recv_bytes():
        message = _from_bytes(data)
        try:
            reply = app(message, context)
        except Exception as err:  # noqa: BLE001 - Flower turns any handler error into an error reply
            reply = Message(Error(code=2, reason=f"{type(err).__name__}: {err}"), reply_to=message)
        conn.send_bytes(_to_bytes(reply))


class PipeGrid:
    """The Grid of :func:`strategies.vertical_flower.run_vertical` over pipes to the party processes:
    ``get_node_ids`` and ``send_and_receive`` (all messages out, then every reply back). ``sent`` records
    ``(perf_counter time, message type)`` of every message sent."""

    def __init__(self, conns: dict[int, Connection]) -> None:
        self.conns = conns
        self.sent: list[tuple[float, str]] = []

    def get_node_ids(self) -> list[int]:
        return list(self.conns)

    def send_and_receive(self, messages: Iterable[Any], *, timeout: float | None = None) -> list[Any]:
        out = list(messages)
        for message in out:
            self.sent.append((time.perf_counter(), message.metadata.message_type))
            self.conns[message.metadata.dst_node_id].send_bytes(_to_bytes(message))
        replies = []
        for message in out:
            conn = self.conns[message.metadata.dst_node_id]
            if conn.poll(timeout):
                replies.append(_from_bytes(conn.recv_bytes()))
        return replies


def run_config(dataset: str, name: str, seed: int, epochs: int, out: str) -> Any:
    """The ``VerticalConfig`` of run ``name`` (:data:`SCALE_RUNS`), as
    :func:`benchmarks.vertical_scale.scale_run` builds it, with the PSI between the parties
    (``alignment = psi``, ``psi_backend = ecdh``), :data:`TIMEOUTS` and the models saved under ``out``."""
    from benchmarks.vertical import MODEL_BY_DATASET
    from benchmarks.vertical_party_memory import party_strategy
    from benchmarks.vertical_scale import SCALE_CASE
    from protocol.vertical import DatasetConfig, ModelConfig, VerticalConfig

    return VerticalConfig(dataset=DatasetConfig(name=dataset, aligned_fraction=SCALE_CASE["fraction"]),
                          model=ModelConfig(**MODEL_BY_DATASET.get(dataset, {})),
                          strategy=party_strategy(name, epochs), seed=seed, output_dir=out)


def server_main(conns: dict[int, Connection], report: Connection, cfg: Any) -> None:
    """The server's process (imports what a ServerApp does, not the benchmarks): ``cfg``'s run over
    :class:`PipeGrid`; sends back ``("ok", results, messages sent)`` or ``("error", traceback)``, then
    closes the parties' pipes."""
    import traceback

    try:
        from strategies.vertical_flower import run_vertical

        _set_task_identity()
        grid = PipeGrid(conns)
        results = run_vertical(grid, cfg)  # type: ignore[arg-type]
        report.send(("ok", json.loads(json.dumps(results, default=str)), grid.sent))
    except Exception:  # noqa: BLE001 - reported to the orchestrator, which raises it
        report.send(("error", traceback.format_exc()))
    finally:
        for conn in conns.values():
            conn.send_bytes(b"")


def process_run(dataset: str, name: str, seed: int, epochs: int, workdir: Path,
                interval: float) -> dict[str, Any]:
    """One run in separate processes (module docstring), metered."""
    from benchmarks.vertical_party_memory import (
        TreeMeter,
        component_memory,
        hook_env,
        party_workdir,
        process_peaks,
        training_start,
    )
    from benchmarks.vertical_scale import served_accuracies

    load_start = os.getloadavg()
    out, data, hooks = party_workdir(dataset, seed, workdir)
    child_env = hook_env(hooks)  # the spawned children's
    saved_env = {key: os.environ.get(key) for key in child_env}
    os.environ.update(child_env)
    spawn = multiprocessing.get_context("spawn")
    t0 = time.perf_counter()
    server_ends, parties = {}, []
    for k in range(2):
        mine, theirs = spawn.Pipe()
        server_ends[FIRST_NODE + k] = mine
        config = {"party": k, "data-file": str(data / f"party{k}.npz"), "output-dir": str(out)}
        # not daemonic: the ECDH PSI starts worker processes
        parties.append(spawn.Process(target=party_main, args=(theirs, FIRST_NODE + k, config)))
    report_recv, report_send = spawn.Pipe(duplex=False)
    cfg = run_config(dataset, name, seed, epochs, str(out))
    server = spawn.Process(target=server_main, args=(server_ends, report_send, cfg))
    for process in (*parties, server):
        process.start()
    meter = TreeMeter({"party0": parties[0].pid, "party1": parties[1].pid, "server": server.pid}, interval)
    meter.start()
    try:
        outcome = report_recv.recv()
        for process in (server, *parties):
            process.join(timeout=120)
    finally:
        meter.stop()
        for key, value in saved_env.items():
            if value is None:
                os.environ.pop(key)
            else:
                os.environ[key] = value
        for process in (server, *parties):
            if process.is_alive():
                process.kill()
    if outcome[0] != "ok":
        raise RuntimeError(f"the run failed:\n{outcome[1]}")
    _, results, sent = outcome
    wall_s = time.perf_counter() - t0
    boundary = training_start(sent)  # the server's first message after the last alignment
    return {"dataset": dataset, "run": name, "seed": seed, "epochs": epochs,
            "tune_setting": cfg.strategy.tune,
            "tune_chosen": (results.get("tune") or {}).get("chosen"), "n_aligned": results.get("n_aligned"),
            "alignment": results.get("alignment"), **served_accuracies(results),
            "round_trips": results.get("round_trips"), "messages_sent": len(sent), "wall_s": wall_s,
            "alignment_s": None if boundary is None else boundary - t0,
            "memory": component_memory(meter, process_peaks(meter, hooks), boundary),
            "party_data_file_mb": {f"party{k}": (data / f"party{k}.npz").stat().st_size / 2**20
                                   for k in range(2)},
            "loadavg": {"start": list(load_start), "end": list(os.getloadavg())}}


def main(argv: list[str] | None = None) -> None:
    from benchmarks.vertical_party_memory import metered_parser, run_metered

    run_metered(metered_parser(__doc__.split("\n\n")[0]), argv, "benchmarks.vertical_party_processes", NOTE,
                lambda args, name, seed, i, workdir: process_run(
                    args.dataset, name, seed, args.epochs, workdir, args.interval))


if __name__ == "__main__":
    main()
