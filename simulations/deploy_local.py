"""A real Flower deployment on one machine: a SuperLink, one SuperNode per party, ``flwr run``.

It rehearses the multi-machine setup with Flower's Deployment Engine (not the simulation engine): every
component is its own process and talks over the network stack, exactly as across machines, so what works
here works with the SuperLink on a server and each SuperNode at its own site (swap ``127.0.0.1`` for the
SuperLink's address and hand each site its own key and data file).

- TLS and SuperNode authentication are on by default (:mod:`simulations.deploy_credentials`): a
  throw-away CA and a SuperLink certificate for ``127.0.0.1``/``localhost`` in ``WORKDIR/certificates``,
  one EC key pair per SuperNode in ``WORKDIR/keys``; the SuperLink runs with ``--enable-supernode-auth``,
  every node's public key is registered (``flwr supernode register``) before the node starts with its
  private key (``--auth-supernode-private-key``). ``--insecure`` turns both off (loopback experiments
  only).
- ``--method vertical``: one SuperNode per party, ``node_config`` ``party=k data-file=...`` with the party
  files of a bundled split written by :mod:`clients.vertical.party_files`, or with ``--data-dir DIR`` the
  files ``DIR/party{k}.csv`` (:mod:`clients.vertical.party_csv`) or ``.npz`` (each node reads only its own
  file), all of them: ``--parties`` defaults to their number and is refused if it disagrees.
- ``--method pate`` (the digits smoke setting): ``--teacher-nodes`` SuperNodes with
  ``role=teacher teachers=a-b`` (contiguous groups) and one ``role=student`` SuperNode. ``pate.*`` keys of
  ``--run-config`` are composed into the run's config, so they are validated with it: digits' noise group
  is written for 20 teachers, and a ``--num-teachers`` it does not fit (fewer than 13) is refused unless
  the noise is set for it, e.g. ``--num-teachers 6 --run-config "pate.strategy.threshold=4.8
  pate.strategy.sigma1=3.6 pate.strategy.sigma2=0.96"`` (issue 24 §4; the error names the values).

Usage::

    python -m simulations.deploy_local --method vertical --run-config "vertical.strategy.epochs=2"
    python -m simulations.deploy_local --method pate --teacher-nodes 2

The run's results land in ``WORKDIR/out`` (``results.json``; saved models), component logs in
``WORKDIR/logs``. Latency per round trip is about 6 s in deployment (the ServerApp and the SuperNodes
poll every 3 s; every message runs in a fresh ClientApp process), so keep epochs low when rehearsing
the vertical method: it makes two round trips per aligned minibatch.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import time
import traceback
from collections.abc import Sequence
from pathlib import Path
from typing import IO

from clients.vertical.party_files import DATA_FILE_NODE_CONFIG_KEY, check_party_count, party_files
from clients.vertical.party_files import main as export_party_files
from simulations.deploy_credentials import make_certificates, make_node_key
from simulations.pate_config import run_config_overrides

ROOT = Path(__file__).resolve().parents[1]
CONNECTION = "local-deployment"
COMPLETED = "finished:completed"
"""A run's status at the SuperLink once its ServerApp returned normally."""
TASK_POLL_ENV, TASK_POLL_S = "FLWR_SUPEREXEC_TASK_POLL_INTERVAL", "0.1"
"""The SuperExec's task poll (Flower's default 1 s; 0.01-60 s), unless the environment sets it."""
APP_FILES = ("pyproject.toml", ".gitignore", "protocol", "clients", "strategies", "simulations", "conf")
"""What ``flwr run`` packs into the app (FAB) when the launcher stages a copy of it."""


def node_configs(method: str, *, parties: int, teacher_nodes: int, num_teachers: int,
                 data_dir: Path, output_dir: Path | None = None) -> list[str]:
    """One ``--node-config`` string per SuperNode (``output_dir``: where the student or the parties save)."""
    own = f" output-dir='{output_dir}'" if output_dir is not None else ""
    if method == "vertical":
        return [f"party={k} {DATA_FILE_NODE_CONFIG_KEY}='{party_path(data_dir, k)}'{own}"
                for k in range(parties)]
    if not 1 <= teacher_nodes <= num_teachers:
        raise ValueError(f"need 1 <= teacher nodes <= {num_teachers} teachers, got {teacher_nodes}")
    bounds = [round(i * num_teachers / teacher_nodes) for i in range(teacher_nodes + 1)]
    teachers = [f"role='teacher' teachers='{a}-{b - 1}'" for a, b in zip(bounds, bounds[1:], strict=False)]
    student = "role='student'" + own
    return [*teachers, student]


def vertical_parties(parties: int | None, data_dir: Path | None) -> int:
    """How many vertical parties to start: every party file of ``data_dir`` (``--parties``, if given, must
    agree), else ``parties`` or 2 for an exported bundled split.

    Raises
    ------
    ValueError
        If ``data_dir`` holds no party files, a gap or a doubled party, or another number than ``parties``.
    """
    if data_dir is None:
        return 2 if parties is None else parties
    count = len(party_files(data_dir)) if parties is None else parties
    return len(check_party_count(data_dir, count, "--parties"))


def party_path(data_dir: Path, k: int) -> Path:
    """Party ``k``'s file in ``data_dir``: ``party{k}.csv`` if there is one (read with the settings in
    ``party{k}.json`` beside it, :mod:`clients.vertical.party_csv`), else ``party{k}.npz``."""
    csv_file = data_dir / f"party{k}.csv"
    return csv_file if csv_file.is_file() else data_dir / f"party{k}.npz"


def stage_app(directory: Path, clientapp: str, *, serverapp: str | None = None,
              extra_files: Sequence[str] = ()) -> Path:
    """Copy the app into ``directory`` with ``clientapp`` (``module:attribute``) as its ClientApp and,
    if given, ``serverapp`` as its ServerApp; ``extra_files`` (paths under the project root, e.g. a
    benchmark's apps) are copied beside :data:`APP_FILES`."""
    if directory.exists():
        shutil.rmtree(directory)
    directory.mkdir(parents=True)
    for name in (*APP_FILES, *extra_files):
        source, target = ROOT / name, directory / name
        if source.is_dir():
            shutil.copytree(source, target, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, target)
    pyproject = directory / "pyproject.toml"
    text = pyproject.read_text()
    swaps = {"clientapp": clientapp, "serverapp": serverapp}
    for key, target in ((k, v) for k, v in swaps.items() if v is not None):
        match = re.search(rf'^{key} = "[^"]*"$', text, flags=re.MULTILINE)
        if match is None:
            raise RuntimeError(f"{ROOT / 'pyproject.toml'} declares no {key}: cannot swap it")
        text = text.replace(match.group(0), f'{key} = "{target}"')
    pyproject.write_text(text)
    return directory


class LocalDeployment:
    """The processes of one loopback deployment: start them, register nodes, run the app, stop them.

    Use as a context manager: leaving it stops every process it started (SIGTERM to each process
    group, SIGKILL after 20 s). ``tls=False`` is ``--insecure`` (no TLS, no node authentication).
    """

    def __init__(self, workdir: Path, *, tls: bool = True, port: int = 9300) -> None:
        self.workdir = workdir.resolve()
        self.tls, self.port = tls, port
        self.logs, self.home = self.workdir / "logs", self.workdir / "flwr_home"
        for d in (self.logs, self.home):
            d.mkdir(parents=True, exist_ok=True)
        bin_dir = Path(sys.executable).parent
        self.env = {**os.environ, "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}",
                    "FLWR_HOME": str(self.home), "FLWR_TELEMETRY_ENABLED": "0",
                    "FLWR_DISABLE_RUNTIME_DEPENDENCY_INSTALLATION": "1",
                    # the SuperExec looks for a new task every 1 s by default; a message waits up to that
                    TASK_POLL_ENV: os.environ.get(TASK_POLL_ENV, TASK_POLL_S)}
        self.processes: dict[str, subprocess.Popen] = {}
        self.node_ids: dict[str, int] = {}  # SuperNode name -> the node ID its registration got
        self._handles: list[IO[bytes]] = []
        self._supernodes = 0  # SuperNodes started: the next one's Runtime API port is port + 1 + this
        if tls:
            self.certs = make_certificates(self.workdir / "certificates")
            connection_security = f'root-certificates = "{self.certs["ca"]}"'
        else:
            connection_security = "insecure = true"
        (self.home / "config.toml").write_text(
            f'[superlink]\ndefault = "{CONNECTION}"\n\n[superlink.{CONNECTION}]\n'
            f'address = "127.0.0.1:{port}"\n{connection_security}\n')

    def __enter__(self) -> LocalDeployment:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def start(self, name: str, command: list[str], cwd: Path | None = None) -> subprocess.Popen:
        """Start ``command`` in its own session, output to ``logs/<name>.log``."""
        handle = (self.logs / f"{name}.log").open("wb")
        self._handles.append(handle)
        process = subprocess.Popen(command, cwd=cwd or self.workdir, env=self.env, stdout=handle,
                                   stderr=subprocess.STDOUT, start_new_session=True)
        self.processes[name] = process
        return process

    def log(self, name: str) -> str:
        """The output so far of process ``name``."""
        return (self.logs / f"{name}.log").read_text(errors="replace")

    def start_superlink(self, timeout: float = 60.0) -> subprocess.Popen:
        """Start ``flower-superlink`` (TLS and ``--enable-supernode-auth`` unless insecure); wait for it."""
        if self.tls:
            security = ["--ssl-ca-certfile", str(self.certs["ca"]), "--ssl-certfile", str(self.certs["cert"]),
                        "--ssl-keyfile", str(self.certs["key"]), "--enable-supernode-auth"]
        else:
            security = ["--insecure"]
        link = self.start("superlink", ["flower-superlink", *security, "--port", str(self.port),
                                        "--disable-runtime-dependency-installation"])
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if link.poll() is not None:
                raise RuntimeError(f"the SuperLink exited with code {link.returncode} before listening:\n"
                                   f"{self.log('superlink')[-2000:]}")
            with socket.socket() as sock:
                if sock.connect_ex(("127.0.0.1", self.port)) == 0:
                    return link
            time.sleep(0.5)
        raise TimeoutError(f"the SuperLink did not listen on port {self.port} within {timeout:.0f} s")

    def new_key(self, name: str) -> tuple[Path, Path]:
        """A fresh key pair for SuperNode ``name`` in ``keys/`` (private key owner-only)."""
        return make_node_key(self.workdir / "keys", name)

    def register(self, public_key: Path) -> int:
        """``flwr supernode register`` the key at the SuperLink; return the node ID it assigned."""
        command = ["flwr", "supernode", "register", str(public_key), CONNECTION, "--format", "json"]
        done = subprocess.run(command, env=self.env, capture_output=True, text=True, timeout=120)
        try:
            return int(json.loads(done.stdout[done.stdout.index("{"):])["node-id"])
        except (IndexError, KeyError, ValueError) as err:
            raise RuntimeError(f"registering {public_key} failed (exit {done.returncode}): "
                               f"{done.stdout[-1000:]}{done.stderr[-1000:]}") from err

    def registered_nodes(self) -> list[dict[str, object]]:
        """``flwr supernode list``: the SuperNodes the SuperLink knows, with their status."""
        command = ["flwr", "supernode", "list", CONNECTION, "--format", "json"]
        done = subprocess.run(command, env=self.env, capture_output=True, text=True, timeout=120)
        try:
            return list(json.loads(done.stdout)["nodes"])
        except (KeyError, ValueError) as err:
            raise RuntimeError(f"flwr supernode list failed (exit {done.returncode}): "
                               f"{done.stdout[-1000:]}{done.stderr[-1000:]}") from err

    def wait_online(self, count: int, timeout: float = 120.0) -> None:
        """Block until ``count`` SuperNodes are online at the SuperLink (the ServerApp sees only those)."""
        deadline = time.monotonic() + timeout
        while True:
            online = sum(node["status"] == "online" for node in self.registered_nodes())
            if online >= count:
                return
            if time.monotonic() > deadline:
                raise TimeoutError(f"only {online} of {count} SuperNodes came online within {timeout:.0f} s")
            time.sleep(1.0)

    def start_supernode(self, name: str, node_config: str, *, register: bool = True,
                        private_key: Path | None = None) -> subprocess.Popen:
        """Start SuperNode ``name``; with authentication, make its key pair and register it first.

        ``register=False`` starts it with a key the SuperLink has never seen (it must be refused);
        ``private_key`` reuses an existing key instead of making one.
        """
        command = ["flower-supernode", "--superlink", f"127.0.0.1:{self.port}",
                   "--port", str(self.port + 1 + self._supernodes), "--node-config", node_config]
        self._supernodes += 1
        if self.tls:
            command += ["--root-certificates", str(self.certs["ca"])]
            if private_key is None:
                private_key, public_key = self.new_key(name)
                if register:
                    self.node_ids[name] = self.register(public_key)
            command += ["--auth-supernode-private-key", str(private_key)]
        else:
            command += ["--insecure"]
        return self.start(name, command)

    def start_run(self, run_config: str, *, app: Path = ROOT) -> subprocess.Popen:
        """``flwr run APP --stream`` in the background (output in ``logs/flwr_run.log``)."""
        command = ["flwr", "run", str(app), CONNECTION, "--stream", "--run-config", run_config]
        print("$", shlex.join(command), flush=True)
        return self.start("flwr_run", command, cwd=self.workdir)

    def finish_run(self, run: subprocess.Popen, timeout: float) -> str:
        """Wait for ``flwr run`` and return the run's final status at the SuperLink (``flwr ls``).

        ``"finished:completed"`` is success; ``"finished:failed"`` means the ServerApp raised (``flwr run
        --stream`` itself exits 0 then). If ``flwr run`` failed before starting a run (e.g. a malformed
        ``--run-config``), ``"not started: exit <code>"``.
        """
        code = run.wait(timeout=timeout)
        match = re.search(r"Successfully started run (\d+)", self.log("flwr_run"))
        if match is None:
            return f"not started: exit {code}"
        command = ["flwr", "ls", CONNECTION, "--run-id", match.group(1), "--format", "json"]
        done = subprocess.run(command, env=self.env, capture_output=True, text=True, timeout=120)
        try:
            return str(json.loads(done.stdout)["runs"][0]["status"])
        except (IndexError, KeyError, ValueError) as err:
            raise RuntimeError(f"flwr ls failed (exit {done.returncode}): "
                               f"{done.stdout[-1000:]}{done.stderr[-1000:]}") from err

    def kill(self, name: str, sig: signal.Signals = signal.SIGKILL) -> int:
        """Send ``sig`` to process ``name`` by its PID (its children are not signalled); return the PID."""
        pid = self.processes[name].pid
        os.kill(pid, sig)
        return pid

    def stop(self) -> None:
        """Stop every started process group (SIGTERM, then SIGKILL after 20 s)."""
        for process in self.processes.values():
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGTERM)
        for process in self.processes.values():
            try:
                process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait()
            with contextlib.suppress(ProcessLookupError):  # ClientApps a killed SuperNode left behind
                os.killpg(process.pid, signal.SIGKILL)
        for handle in self._handles:
            handle.close()


def run_settings(method: str, out: Path, *, parties: int, teacher_nodes: int, num_teachers: int,
                 pate_overrides: Sequence[str] = ()) -> str:
    """The ``--run-config`` text of a run of ``method`` writing to ``out``.

    PATE: the digits smoke setting plus ``pate_overrides`` (Hydra syntax, e.g.
    ``"strategy.max_queries=240"``), each key once (``flwr run`` refuses a key given twice).
    """
    if method == "vertical":
        return f'method="vertical" vertical.dataset.n_parties={parties} vertical.output_dir="{out}"'
    pate = run_config_overrides("dataset=digits", f"data.num_teachers={num_teachers}",  # a rehearsal
                                f"federation.teacher_nodes={teacher_nodes}", f"run.output_dir={out}",
                                *pate_overrides)
    return f'method="pate" {pate}'


def split_pate_run_config(run_config: str) -> tuple[list[str], str]:
    """``(Hydra overrides, the rest)``: the ``pate.*`` keys of a ``--run-config`` text as Hydra overrides
    of the composed PATE config (``pate.strategy.sigma2=2`` → ``strategy.sigma2=2``), so that they are
    validated together with the rehearsal's own settings (e.g. the noise against ``--num-teachers``)."""
    overrides, rest = [], []
    for token in shlex.split(run_config, posix=False):  # quotes kept: flwr run needs them on strings
        if token.startswith("pate."):
            overrides.append(token.removeprefix("pate."))
        else:
            rest.append(token)
    return overrides, " ".join(rest)


def deploy(method: str, workdir: Path, *, run_config: str = "", parties: int = 2, teacher_nodes: int = 2,
           num_teachers: int = 20, tls: bool = True, port: int = 9300, timeout: float = 3600.0,
           data_dir: Path | None = None) -> int:
    """Start the SuperLink and SuperNodes, ``flwr run`` the app against them, stop everything.

    Vertical parties read ``data_dir/party{k}.{csv,npz}`` if ``data_dir`` is given (``parties`` must be
    their number: :func:`vertical_parties`), else a bundled digits split exported to ``WORKDIR/data``.

    Returns 0 if the run completed, else 1 (the run's status is printed); component logs are in
    ``WORKDIR/logs``.
    """
    workdir = workdir.resolve()
    out = workdir / "out"
    out.mkdir(parents=True, exist_ok=True)
    if method == "vertical" and data_dir is None:
        export_party_files(["--parties", str(parties), "--out", str(workdir / "data")])
    elif method == "vertical":  # a folder of party files is used whole
        check_party_count(data_dir, parties, "--parties")
    data_dir = workdir / "data" if data_dir is None else data_dir.resolve()
    pate_overrides, run_config = split_pate_run_config(run_config) if method == "pate" else ((), run_config)
    settings = run_settings(method, out, parties=parties, teacher_nodes=teacher_nodes,
                            num_teachers=num_teachers, pate_overrides=pate_overrides)
    with LocalDeployment(workdir, tls=tls, port=port) as deployment:
        deployment.start_superlink()
        configs = node_configs(method, parties=parties, teacher_nodes=teacher_nodes,
                               num_teachers=num_teachers, data_dir=data_dir, output_dir=out)
        for k, node_config in enumerate(configs):
            deployment.start_supernode(f"supernode{k}", node_config)
        deployment.wait_online(len(configs))
        run = deployment.start_run(f"{settings} {run_config}".strip())
        try:
            status = deployment.finish_run(run, timeout)
        finally:
            print(deployment.log("flwr_run")[-4000:], flush=True)
        print(f"run status: {status}", flush=True)
        return 0 if status == COMPLETED else 1


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--method", choices=("vertical", "pate"), default="vertical")
    parser.add_argument("--workdir", type=Path, default=Path("runs/deploy"))
    parser.add_argument("--run-config", default="", help="extra run_config overrides, e.g. "
                                                         "'vertical.strategy.epochs=2'")
    parser.add_argument("--parties", type=int, default=None,
                        help="vertical: SuperNodes (one per party); default: every party file of --data-dir, "
                             "else 2")
    parser.add_argument("--teacher-nodes", type=int, default=2, help="pate: teacher SuperNodes")
    parser.add_argument("--num-teachers", type=int, default=20, help="pate: teachers in all")
    parser.add_argument("--insecure", action="store_true",
                        help="no TLS and no SuperNode authentication (loopback experiments only)")
    parser.add_argument("--port", type=int, default=9300, help="SuperLink port; SuperNodes use the next ones")
    parser.add_argument("--timeout", type=float, default=3600.0, help="seconds before the run is abandoned")
    parser.add_argument("--data-dir", type=Path, default=None,
                        help="vertical: read party{k}.csv or .npz here instead of exporting a bundled split")
    parser.add_argument("--verbose", action="store_true", help="print the traceback of an error")
    args = parser.parse_args(argv)
    try:
        args.parties = vertical_parties(args.parties, args.data_dir) if args.method == "vertical" else 2
        check_arguments(args.method, parties=args.parties, teacher_nodes=args.teacher_nodes,
                        num_teachers=args.num_teachers, port=args.port, timeout=args.timeout)
        try:
            args.workdir.mkdir(parents=True, exist_ok=True)
        except OSError as err:
            raise OSError(f"cannot create --workdir {args.workdir}: {err.strerror or err}") from None
        code = deploy(args.method, args.workdir, run_config=args.run_config, parties=args.parties,
                      teacher_nodes=args.teacher_nodes, num_teachers=args.num_teachers, tls=not args.insecure,
                      port=args.port, timeout=args.timeout, data_dir=args.data_dir)
    except (ValueError, OSError) as err:
        if args.verbose:
            traceback.print_exc()
        print(f"error: {err}", file=sys.stderr)
        sys.exit(2)
    sys.exit(code)


def check_arguments(method: str, *, parties: int, teacher_nodes: int, num_teachers: int, port: int,
                    timeout: float) -> None:
    """Refuse settings no deployment can run, before anything starts.

    Raises
    ------
    ValueError
        Naming the flag and its value: fewer than 2 vertical parties, teacher nodes outside
        ``[1, --num-teachers]``, a port outside ``[1, 65535]`` or a timeout that is not a positive number.
    """
    if method == "vertical" and parties < 2:
        raise ValueError(f"--parties {parties}: a vertical run needs >= 2 parties")
    if method == "pate" and num_teachers < 1:
        raise ValueError(f"--num-teachers {num_teachers}: must be >= 1")
    if method == "pate" and not 1 <= teacher_nodes <= num_teachers:
        raise ValueError(f"--teacher-nodes {teacher_nodes}: must be in [1, --num-teachers {num_teachers}]")
    if not 1 <= port <= 65535:
        raise ValueError(f"--port {port}: must be in [1, 65535]")
    if not 0 < timeout < float("inf"):
        raise ValueError(f"--timeout {timeout}: must be a positive number of seconds")


if __name__ == "__main__":
    main()
