"""Peak resident memory of each party, each in its own processes: the vertical runs of
:mod:`benchmarks.vertical_scale` on a real Flower deployment (issue 26 §4, "peak memory per party").

:mod:`benchmarks.vertical_scale` runs both parties and the server in one process, so it can report only
that process's peak. Here every party is a Flower SuperNode of a loopback deployment
(:class:`simulations.deploy_local.LocalDeployment`: SuperLink, one SuperNode per party, ``flwr run``; TLS
and SuperNode authentication on), as across machines: each node reads only its own party file (the
seed's split of ``--dataset`` exported by :mod:`clients.vertical.party_files`, as in
:func:`benchmarks.vertical.prepare_run`), the ECDH PSI runs between the nodes through the SuperLink
(``strategy.alignment = psi``, ``psi_backend = ecdh``), and training and evaluation exchange Flower
messages. The runs and their settings are :data:`benchmarks.vertical_scale.SCALE_RUNS` and
``SCALE_CASE`` (10 % aligned, the whole epoch in one exchange, attack measurement off; none of these
runs draws privacy noise, so the noise seed :func:`benchmarks.vertical.prepare_run` pins has nothing to
pin and is not set), so the accuracies must equal the in-process ones of the same seed
(``matches_in_process``, against ``--reference``).

What is measured, per component (``supernode0`` = the label holder, ``supernode1`` = the passive party,
``superlink`` = the SuperLink with the ServerApp it starts, ``flwr_run`` = the submitting CLI):

- every process of the component's process tree (the SuperNode, its ClientApp launcher and the
  ClientApp process Flower starts for each message) is polled every ``--interval`` seconds
  (``/proc/<pid>/status``: ``VmHWM``, the process's peak resident set, and ``VmRSS``); a process's peak
  is the larger of its last polled ``VmHWM`` and, if it exited normally, the ``VmHWM`` it wrote at
  exit by ``benchmarks/rss_hook/sitecustomize.py`` (so
  the last instants of a short-lived ClientApp are not missed). ``peak_process_mb``: the largest such
  peak, the memory one process of the party needs; ``by_command``: per command (``flwr-clientapp``, the
  SuperNode, ...) the processes seen and their largest peak;
- ``peak_tree_rss_mb``: the largest sum of ``VmRSS`` over the tree's live processes at one poll, what
  the party's machine holds at once (sampled: a spike shorter than the interval can be missed), overall
  and per phase: ``alignment`` (from the run's start to the first message after ``query.vfl_align``,
  i.e. node start-up, discovery and the PSI) and ``training`` (the rest: tuning, training, evaluation,
  saving), the boundary stamped from the SuperNode's log as in :mod:`benchmarks.vertical_deploy`.

Timing is reported but is the deployment's (a fresh ClientApp process per message), not comparable with
the in-process phase times; memory is the point. At 10⁵ users per party on 2 shared cores a message
takes about 40 s (ClientApp start-up, imports, party file and node state read again), so ``proto`` with
``tune = auto`` (about 120 messages) takes over an hour: :mod:`benchmarks.vertical_party_processes` runs
the same ClientApp and ServerApp function with each party in a long-lived process of its own instead.

Usage::

    OMP_NUM_THREADS=1 python -m benchmarks.vertical_party_memory --dataset synthetic100k --seeds 0 \\
        --runs proto,vfl_head_fusion,active_only --out benchmarks/results/vertical_scale_party_memory.json
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import re
import shlex
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from benchmarks.vertical import chosen_names, seed_list
from benchmarks.vertical_scale import POPULATIONS, SCALE_CASE, SCALE_RUNS, scale_strategy, served_accuracies
from benchmarks.vertical_tables import seed_mean_std
from protocol.vertical import VerticalStrategyConfig

HOOK_DIR = Path(__file__).resolve().parent / "rss_hook"
"""Holds the ``sitecustomize`` that records each Python process's peak at exit (``PEAK_RSS_DIR``)."""
ROOT = Path(__file__).resolve().parents[1]
TIMEOUTS = {"timeout_s": 1800.0, "psi_timeout_s": 3600.0}
"""Round-trip bounds raised for 10⁵ users on a shared machine (they only end a stuck run)."""
RECEIVING = re.compile(r"Receiving: (\S+) message")
NOTE = ("Each party is a Flower SuperNode of a loopback deployment (simulations.deploy_local: SuperLink, one "
        "SuperNode per party, flwr run; TLS + node auth), reading only its own party file; ECDH PSI between "
        "the nodes via the SuperLink; the runs of benchmarks.vertical_scale (SCALE_RUNS, SCALE_CASE; no "
        "privacy noise in them). Per component (supernode0 = label holder, supernode1 = passive party, "
        "superlink = SuperLink + ServerApp, flwr_run = CLI): peak_process_mb = the largest peak resident "
        "set of one process of its tree (polled /proc VmHWM, and VmHWM at exit via benchmarks/rss_hook); "
        "peak_tree_rss_mb = the largest sum of VmRSS over its live processes at one poll, overall and per "
        "phase (alignment: start-up, discovery, PSI; training: tuning, training, evaluation, saving). Flower "
        "starts a fresh ClientApp process per message, so a party's peak process is one message's. Times "
        "are the deployment's, not comparable with in-process times; OMP_NUM_THREADS=1, torch 1 thread.")


def party_strategy(name: str, epochs: int) -> VerticalStrategyConfig:
    """The strategy of run ``name`` as :func:`benchmarks.vertical_scale.scale_run` trains it, with the PSI
    between the parties (``alignment = psi``) and :data:`TIMEOUTS`."""
    return scale_strategy(name, epochs, alignment="psi", **TIMEOUTS)


def strategy_tokens(name: str, epochs: int) -> list[str]:
    """``--run-config`` tokens of run ``name`` (:data:`SCALE_RUNS`): the strategy
    :func:`benchmarks.vertical_scale.scale_run` builds, given as its fields that differ from the schema's
    defaults, with the ECDH PSI and :data:`TIMEOUTS` (the runs draw no privacy noise: no noise seed)."""
    strategy = party_strategy(name, epochs)
    default = VerticalStrategyConfig()
    return [f"vertical.strategy.{f.name}={json.dumps(getattr(strategy, f.name))}"
            for f in dataclasses.fields(strategy) if getattr(strategy, f.name) != getattr(default, f.name)]


def run_config(dataset: str, name: str, epochs: int, seed: int, out: Path) -> str:
    """The run's whole ``--run-config`` text."""
    return " ".join([f'method="vertical" vertical.dataset.n_parties=2 vertical.output_dir="{out}"',
                     f'vertical.dataset.name="{dataset}"',
                     f"vertical.dataset.aligned_fraction={SCALE_CASE['fraction']}", f"vertical.seed={seed}",
                     *strategy_tokens(name, epochs)])


def command_kind(argv: list[str]) -> str:
    """A process's command for the report: the first Flower executable of its command line (a Python
    interpreter running it is skipped) and its ``--plugin-type``, if any; else the first word."""
    words = [os.path.basename(a) for a in argv]
    kind = next((w for w in words if w.startswith(("flwr", "flower"))), words[0] if words else "?")
    if "--plugin-type" in argv[:-1]:
        kind += " " + argv[argv.index("--plugin-type") + 1]
    return kind


def descendants(parents: Mapping[int, int], root: int) -> set[int]:
    """``root`` and every process below it in the ``pid → parent pid`` map."""
    children: dict[int, list[int]] = {}
    for pid, ppid in parents.items():
        children.setdefault(ppid, []).append(pid)
    found, todo = set(), [root]
    while todo:
        pid = todo.pop()
        if pid not in found:
            found.add(pid)
            todo.extend(children.get(pid, ()))
    return found


def _status_kb(pid: int) -> dict[str, int]:
    values = {}
    with open(f"/proc/{pid}/status") as handle:
        for line in handle:
            key, _, rest = line.partition(":")
            if key in ("VmHWM", "VmRSS", "PPid"):
                values[key] = int(rest.split()[0])
    return values


class TreeMeter(threading.Thread):
    """Polls the process trees of named root processes (module docstring) until :meth:`stop`."""

    def __init__(self, roots: Mapping[str, int], interval: float) -> None:
        super().__init__(daemon=True)
        self.roots, self.interval = dict(roots), interval
        self.owner: dict[int, str] = {}  # pid → the root whose tree it was seen in
        self.hwm_kb: dict[int, int] = {}
        self.argv: dict[int, list[str]] = {}
        self.samples: list[tuple[float, dict[str, int]]] = []  # (time, root → sum of VmRSS in KiB)
        self._halt = threading.Event()

    def add_root(self, name: str, pid: int) -> None:
        self.roots[name] = pid

    def poll(self) -> None:
        """One poll of every live process (under ``/proc``)."""
        status: dict[int, dict[str, int]] = {}
        for entry in os.scandir("/proc"):
            if entry.name.isdigit():
                try:
                    status[int(entry.name)] = _status_kb(int(entry.name))
                except (OSError, ValueError, IndexError):  # gone meanwhile, or a kernel thread
                    continue
        parents = {pid: s.get("PPid", 0) for pid, s in status.items()}
        sums = {}
        for name, root in list(self.roots.items()):
            tree = descendants(parents, root) & status.keys()
            sums[name] = sum(status[p].get("VmRSS", 0) for p in tree)
            for pid in tree:
                self.owner.setdefault(pid, name)
                self.hwm_kb[pid] = max(self.hwm_kb.get(pid, 0), status[pid].get("VmHWM", 0))
                try:  # read at every poll: a child seen between fork and exec still shows its parent's
                    words = Path(f"/proc/{pid}/cmdline").read_text().split("\0")[:-1]
                    self.argv[pid] = words or self.argv.get(pid, [])
                except OSError:
                    self.argv.setdefault(pid, [])
        self.samples.append((time.perf_counter(), sums))

    def run(self) -> None:
        while not self._halt.is_set():
            self.poll()
            self._halt.wait(self.interval)

    def stop(self) -> None:
        self._halt.set()
        self.join()
        self.poll()


def process_peaks(meter: TreeMeter, hook_dir: Path) -> dict[int, dict[str, Any]]:
    """Per process seen: its component, command and peak (KiB): the polled ``VmHWM`` or, if larger, the
    ``VmHWM`` it wrote at exit (``hook_dir``); a process that exited before any poll is attributed
    through the parent PID its record names."""
    peaks = {pid: {"owner": meter.owner[pid], "argv": meter.argv.get(pid, []), "kb": kb, "source": "poll"}
             for pid, kb in meter.hwm_kb.items()}
    for path in sorted(hook_dir.glob("*.json")):
        entry = json.loads(path.read_text())
        pid, owner = entry["pid"], meter.owner.get(entry["pid"]) or meter.owner.get(entry["ppid"])
        if owner is None:
            continue  # not in a measured tree (e.g. ``flwr supernode register``)
        known = peaks.setdefault(pid, {"owner": owner, "kb": 0, "source": "exit"})
        known["argv"] = entry["argv"]  # the command it ended as (a poll may have seen it before its exec)
        if entry["hwm_kb"] >= known["kb"]:
            known.update(kb=entry["hwm_kb"], source="exit" if known["source"] == "exit" else "exit>=poll")
    return peaks


def component_memory(meter: TreeMeter, peaks: Mapping[int, Mapping[str, Any]],
                     boundary: float | None) -> dict[str, Any]:
    """Per component: ``peak_process_mb``, ``by_command`` and ``peak_tree_rss_mb`` (overall and per phase,
    split at ``boundary``, a ``perf_counter`` time; ``None`` for a phase without a poll)."""
    out: dict[str, Any] = {}
    for name in meter.roots:
        mine = [p for p in peaks.values() if p["owner"] == name]
        by_command: dict[str, dict[str, Any]] = {}
        for p in mine:
            entry = by_command.setdefault(command_kind(p["argv"]), {"processes": 0, "peak_mb": 0.0})
            entry["processes"] += 1
            entry["peak_mb"] = max(entry["peak_mb"], p["kb"] / 1024)

        def tree_peak(keep: Any, root: str = name) -> float | None:
            values = [s[root] for t, s in meter.samples if root in s and keep(t)]
            return max(values) / 1024 if values else None

        out[name] = {"peak_process_mb": max((p["kb"] for p in mine), default=0) / 1024,
                     "by_command": by_command,
                     "peak_tree_rss_mb": {"whole_run": tree_peak(lambda t: True),
                                          "alignment": None if boundary is None else tree_peak(
                                              lambda t: t < boundary),
                                          "training": None if boundary is None else tree_peak(
                                              lambda t: t >= boundary)}}
    return out


def training_start(received: list[tuple[float, str]]) -> float | None:
    """When the first message after the last ``query.vfl_align`` reached the node (``None``: none did)."""
    aligns = [i for i, (_, kind) in enumerate(received) if kind == "query.vfl_align"]
    if not aligns or aligns[-1] + 1 >= len(received):
        return None
    return received[aligns[-1] + 1][0]


def accuracy_check(row: Mapping[str, Any], reference: list[Mapping[str, Any]]) -> dict[str, Any] | None:
    """The in-process row of the same dataset, run and seed in ``reference`` and whether every test and
    validation accuracy equals this run's (``None`` without such a row)."""
    same = [r for r in reference if (r["dataset"], r["run"], r["seed"]) == (row["dataset"], row["run"],
                                                                          row["seed"])]
    if not same:
        return None
    ref = same[0]
    equal = all(ref[split][p] == row[split][p] or (ref[split][p] is not None and row[split][p] is not None
                                                   and abs(ref[split][p] - row[split][p]) < 1e-12)
                for split in ("test", "val") for p in (*POPULATIONS, "all"))
    return {"test": ref["test"], "matches_in_process": equal}


def party_workdir(dataset: str, seed: int, workdir: Path) -> tuple[Path, Path, Path]:
    """The run's folders under ``workdir`` — ``out`` (saved models), ``data`` (the two party files of
    ``dataset`` at ``seed``, exported here) and ``peak_rss`` (the exit hook's records) — created."""
    from clients.vertical.party_files import main as export_party_files

    out, data, hooks = workdir / "out", workdir / "data", workdir / "peak_rss"
    for d in (out, hooks):
        d.mkdir(parents=True, exist_ok=True)
    export_party_files(["--dataset", dataset, "--parties", "2", "--seed", str(seed), "--out", str(data),
                        "--aligned-fraction", str(SCALE_CASE["fraction"])])
    return out, data, hooks


def hook_env(hooks: Path) -> dict[str, str]:
    """The environment of a metered process: the exit hook's folder first on ``PYTHONPATH`` (then the
    repository and the caller's path), its records written to ``hooks``, one torch thread."""
    return {"PEAK_RSS_DIR": str(hooks), "OMP_NUM_THREADS": "1", "PYTHONPATH": os.pathsep.join(
        [str(HOOK_DIR), str(ROOT), *filter(None, [os.environ.get("PYTHONPATH")])])}


def deployed_run(dataset: str, name: str, seed: int, epochs: int, workdir: Path, port: int,
                 interval: float) -> dict[str, Any]:
    """One run of :data:`SCALE_RUNS` ``name`` on a loopback deployment, its processes metered."""
    from simulations.deploy_local import COMPLETED, LocalDeployment, node_configs

    load_start = os.getloadavg()
    out, data, hooks = party_workdir(dataset, seed, workdir)
    received: dict[str, list[tuple[float, str]]] = {}
    t0 = time.perf_counter()
    with LocalDeployment(workdir, port=port) as local:
        local.env.update(hook_env(hooks))
        meter = TreeMeter({"superlink": local.start_superlink().pid}, interval)
        meter.start()
        try:
            configs = node_configs("vertical", parties=2, teacher_nodes=0, num_teachers=0, data_dir=data,
                                   output_dir=out)
            names = [f"supernode{k}" for k in range(len(configs))]
            for node, config in zip(names, configs, strict=True):
                meter.add_root(node, local.start_supernode(node, config).pid)
            local.wait_online(len(configs))
            command = run_config(dataset, name, epochs, seed, out)
            run = local.start_run(command)
            meter.add_root("flwr_run", run.pid)
            seen = dict.fromkeys(names, 0)
            while True:
                done = run.poll() is not None
                now = time.perf_counter()
                for node in names:
                    kinds = RECEIVING.findall(local.log(node))
                    received.setdefault(node, []).extend((now, k) for k in kinds[seen[node]:])
                    seen[node] = len(kinds)
                if done:
                    break
                time.sleep(0.2)
            status = local.finish_run(run, timeout=60)
        finally:
            meter.stop()
        if status != COMPLETED:
            raise RuntimeError(f"the run ended {status}:\n{local.log('flwr_run')[-3000:]}")
    wall_s = time.perf_counter() - t0
    written = json.loads((out / "results.json").read_text())
    results = written["results"]
    boundary = training_start(received["supernode0"])
    memory = component_memory(meter, process_peaks(meter, hooks), boundary)
    return {"dataset": dataset, "run": name, "seed": seed, "epochs": epochs,
            "tune_setting": written.get("config", {}).get("strategy", {}).get("tune"),
            "tune_chosen": (results.get("tune") or {}).get("chosen"),
            "n_aligned": results.get("n_aligned"), "alignment": results.get("alignment"),
            **served_accuracies(results),
            "round_trips": results.get("round_trips"), "messages_received": {
                n: len(r) for n, r in received.items()},
            "wall_s": wall_s, "alignment_s": None if boundary is None else boundary - t0,
            "memory": memory, "party_data_file_mb": {
                f"party{k}": (data / f"party{k}.npz").stat().st_size / 2**20 for k in range(2)},
            "run_config": command, "loadavg": {"start": list(load_start), "end": list(os.getloadavg())}}


def describe(row: Mapping[str, Any]) -> str:
    """One run's progress line: accuracies, per-component peaks, wall time."""
    test = " ".join(f"{p}={'–' if v is None else f'{100 * v:.1f}'}" for p, v in row["test"].items())
    mem = "  ".join(f"{n} {m['peak_process_mb']:.0f}/{m['peak_tree_rss_mb']['whole_run'] or 0:.0f} MB"
                    for n, m in row["memory"].items())
    check = row.get("in_process")
    same = "no reference" if check is None else f"matches in-process: {check['matches_in_process']}"
    return (f"{row['dataset']} {row['run']} seed {row['seed']}  {test}  ({same})  peak process/tree: {mem}  "
            f"wall {row['wall_s']:.0f} s  load {row['loadavg']['start'][0]:.1f}")


def _stats(values: list[float | None]) -> list[float] | None:
    """``[mean, sample std, max]`` over seeds; ``None`` if a value is missing."""
    mean_std = seed_mean_std(values)
    return None if mean_std is None else [*mean_std, max(v for v in values if v is not None)]


def summary(rows: list[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Per dataset and run, over its seeds: per component its ``peak_process_mb`` and ``peak_tree_rss_mb``
    (whole run and per phase) as ``[mean, std, max]``, and whether every seed's accuracies equal the
    in-process ones (``None``: a seed without a reference row)."""
    out = []
    for key in dict.fromkeys((r["dataset"], r["run"]) for r in rows):
        group = [r for r in rows if (r["dataset"], r["run"]) == key]
        checks = [r.get("in_process") for r in group]
        memory = {}
        for c in dict.fromkeys(c for r in group for c in r["memory"]):
            mine = [r["memory"][c] for r in group]
            memory[c] = {"peak_process_mb": _stats([m["peak_process_mb"] for m in mine]),
                         "peak_tree_rss_mb": {phase: _stats([m["peak_tree_rss_mb"][phase] for m in mine])
                                              for phase in ("whole_run", "alignment", "training")}}
        out.append({"dataset": key[0], "run": key[1], "seeds": [r["seed"] for r in group],
                    "matches_in_process": None if None in checks else all(c["matches_in_process"]
                                                                            for c in checks),
                    "memory": memory})
    return out


def add_summary(path: Path) -> None:
    """Rewrite the results file at ``path`` with its :func:`summary` (e.g. after an interrupted run)."""
    result = json.loads(path.read_text())
    result["summary"] = summary(result["rows"])
    path.write_text(json.dumps(result, indent=2))


def metered_parser(description: str) -> argparse.ArgumentParser:
    """The options both per-party memory harnesses take: ``--dataset``, ``--runs``, ``--seeds``,
    ``--epochs``, ``--interval``, ``--reference``, ``--out``."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--dataset", default="synthetic100k")
    parser.add_argument("--runs", default="proto,vfl_head_fusion,active_only")
    parser.add_argument("--seeds", default="0", help="comma-separated seeds")
    parser.add_argument("--epochs", type=int, default=SCALE_CASE["epochs"])
    parser.add_argument("--interval", type=float, default=0.1, help="seconds between polls of /proc")
    parser.add_argument("--reference", type=Path, default=ROOT / "benchmarks/results/vertical_scale_psi.json",
                        help="in-process results whose accuracies these runs must equal")
    parser.add_argument("--out", type=Path, required=True)
    return parser


MeteredRun = Callable[[argparse.Namespace, str, int, int, Path], dict[str, Any]]
"""``run(args, name, seed, index, workdir)``: one metered run's row (``index`` counts the runs)."""


def run_metered(parser: argparse.ArgumentParser, argv: list[str] | None, module: str, note: str,
                run: MeteredRun) -> None:
    """Parse ``argv``, then every seed × run of ``--runs`` with ``run`` in a temporary folder, each row
    checked against ``--reference``; the rows and their summary written to ``--out`` as they come."""
    args = parser.parse_args(argv)
    names, seeds = chosen_names(parser, args.runs, SCALE_RUNS, "runs"), seed_list(parser, args.seeds)
    reference = json.loads(args.reference.read_text())["rows"] if args.reference.is_file() else []
    command = f"python -m {module} " + shlex.join(argv if argv is not None else sys.argv[1:])
    result: dict[str, Any] = {"settings": {"case": SCALE_CASE, "runs": {n: SCALE_RUNS[n] for n in names},
                                           "interval_s": args.interval, "cpus": os.cpu_count(), "note": note,
                                           "command": command}, "rows": []}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        for i, (seed, name) in enumerate((s, n) for s in seeds for n in names):
            row = run(args, name, seed, i, Path(tmp) / f"{name}_{seed}")
            row["in_process"] = accuracy_check(row, reference)
            result["rows"].append(row)
            result["summary"] = summary(result["rows"])
            args.out.write_text(json.dumps(result, indent=2))  # as it goes
            print(describe(row), flush=True)


def main(argv: list[str] | None = None) -> None:
    parser = metered_parser(__doc__.split("\n\n")[0])
    parser.add_argument("--port", type=int, default=9510)
    run_metered(parser, argv, "benchmarks.vertical_party_memory", NOTE,
                lambda args, name, seed, i, workdir: deployed_run(
                    args.dataset, name, seed, args.epochs, workdir, args.port + 10 * i, args.interval))


if __name__ == "__main__":
    main()
