"""A real Flower deployment on one machine: a SuperLink, one SuperNode per party, ``flwr run``, with TLS.

It rehearses the multi-machine setup with Flower's Deployment Engine (not the simulation engine): every
component is its own process and talks over the network stack, exactly as across machines, so what works
here works with the SuperLink on a server and each SuperNode at its own site (swap ``127.0.0.1`` for the
SuperLink's address and hand each site its own certificate and data file).

- TLS is on by default: a throw-away CA and a SuperLink certificate for ``127.0.0.1``/``localhost`` are
  generated in ``WORKDIR/certificates`` (``--insecure`` turns TLS off, loopback only).
- ``--method vertical``: one SuperNode per party, ``node_config`` ``party=k data-file=...`` with the party
  files of a bundled split written by :mod:`clients.vertical_files` (each node reads only its own file).
- ``--method pate`` (the digits smoke setting): ``--teacher-nodes`` SuperNodes with
  ``role=teacher teachers=a-b`` (contiguous groups) and one ``role=student`` SuperNode.

Usage::

    python -m simulations.deploy_local --method vertical --run-config "vertical.strategy.epochs=2"
    python -m simulations.deploy_local --method pate --teacher-nodes 2

The run's results land in ``WORKDIR/out`` (``results.json``; saved models). Latency per round trip is
about 6 s in deployment (SuperNodes poll; every message runs in a fresh ClientApp process), so keep
epochs low when rehearsing the vertical method: it makes two round trips per aligned minibatch.
"""

from __future__ import annotations

import argparse
import datetime
import ipaddress
import os
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path

from clients.vertical_files import DATA_FILE_NODE_CONFIG_KEY
from clients.vertical_files import main as export_party_files
from simulations.pate_config import run_config_overrides

ROOT = Path(__file__).resolve().parents[1]
CONNECTION = "local-deployment"


def make_certificates(directory: Path) -> dict[str, Path]:
    """A self-signed CA and a SuperLink certificate (SAN ``127.0.0.1``, ``localhost``) signed by it."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    directory.mkdir(parents=True, exist_ok=True)
    now = datetime.datetime.now(datetime.UTC)

    def build(subject: str, issuer: x509.Name | None, key: ec.EllipticCurvePrivateKey,
              signer: ec.EllipticCurvePrivateKey, ca: bool) -> x509.Certificate:
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)])
        builder = (x509.CertificateBuilder().subject_name(name).issuer_name(issuer or name)
                   .public_key(key.public_key()).serial_number(x509.random_serial_number())
                   .not_valid_before(now - datetime.timedelta(minutes=5))
                   .not_valid_after(now + datetime.timedelta(days=30))
                   .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True))
        if not ca:
            builder = builder.add_extension(x509.SubjectAlternativeName(
                [x509.IPAddress(ipaddress.ip_address("127.0.0.1")), x509.DNSName("localhost")]),
                critical=False)
        return builder.sign(signer, hashes.SHA256())

    ca_key, server_key = ec.generate_private_key(ec.SECP384R1()), ec.generate_private_key(ec.SECP384R1())
    ca_cert = build("flwr-privkit local CA", None, ca_key, ca_key, ca=True)
    server_cert = build("127.0.0.1", ca_cert.subject, server_key, ca_key, ca=False)
    paths = {"ca": directory / "ca.crt", "cert": directory / "server.pem", "key": directory / "server.key"}
    paths["ca"].write_bytes(ca_cert.public_bytes(serialization.Encoding.PEM))
    paths["cert"].write_bytes(server_cert.public_bytes(serialization.Encoding.PEM))
    paths["key"].write_bytes(server_key.private_bytes(serialization.Encoding.PEM,
                                                      serialization.PrivateFormat.PKCS8,
                                                      serialization.NoEncryption()))
    paths["key"].chmod(0o600)
    return paths


def node_configs(method: str, *, parties: int, teacher_nodes: int, num_teachers: int,
                 data_dir: Path) -> list[str]:
    """One ``--node-config`` string per SuperNode."""
    if method == "vertical":
        return [f"party={k} {DATA_FILE_NODE_CONFIG_KEY}='{data_dir / f'party{k}.npz'}'"
                for k in range(parties)]
    if not 1 <= teacher_nodes <= num_teachers:
        raise ValueError(f"need 1 <= teacher nodes <= {num_teachers} teachers, got {teacher_nodes}")
    bounds = [round(i * num_teachers / teacher_nodes) for i in range(teacher_nodes + 1)]
    teachers = [f"role='teacher' teachers='{a}-{b - 1}'" for a, b in zip(bounds, bounds[1:], strict=False)]
    return [*teachers, "role='student'"]


def _wait_for_port(port: int, process: subprocess.Popen, timeout: float) -> None:
    import socket

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"the SuperLink exited with code {process.returncode} before listening")
        with socket.socket() as sock:
            if sock.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.5)
    raise TimeoutError(f"the SuperLink did not listen on port {port} within {timeout:.0f} s")


def deploy(method: str, workdir: Path, *, run_config: str = "", parties: int = 2, teacher_nodes: int = 2,
           num_teachers: int = 20, tls: bool = True, port: int = 9300, timeout: float = 3600.0) -> int:
    """Start the SuperLink and SuperNodes, ``flwr run`` the app against them, stop everything.

    Returns ``flwr run``'s exit code; component logs are in ``WORKDIR/logs``.
    """
    workdir = workdir.resolve()
    logs, home, out = workdir / "logs", workdir / "flwr_home", workdir / "out"
    for d in (logs, home, out):
        d.mkdir(parents=True, exist_ok=True)
    bin_dir = Path(sys.executable).parent
    env = {**os.environ, "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}", "FLWR_HOME": str(home),
           "FLWR_TELEMETRY_ENABLED": "0", "FLWR_DISABLE_RUNTIME_DEPENDENCY_INSTALLATION": "1"}
    if tls:
        certs = make_certificates(workdir / "certificates")
        link_security = ["--ssl-ca-certfile", str(certs["ca"]), "--ssl-certfile", str(certs["cert"]),
                         "--ssl-keyfile", str(certs["key"])]
        node_security = ["--root-certificates", str(certs["ca"])]
        connection_security = f'root-certificates = "{certs["ca"]}"'
    else:
        link_security, node_security, connection_security = ["--insecure"], ["--insecure"], "insecure = true"
    (home / "config.toml").write_text(f'[superlink]\ndefault = "{CONNECTION}"\n\n[superlink.{CONNECTION}]\n'
                                      f'address = "127.0.0.1:{port}"\n{connection_security}\n')
    if method == "vertical":
        export_party_files(["--parties", str(parties), "--out", str(workdir / "data")])
        settings = f'method="vertical" vertical.dataset.n_parties={parties} vertical.output_dir="{out}"'
    else:
        digits = run_config_overrides("dataset=digits", f"data.num_teachers={num_teachers}")  # a rehearsal
        settings = (f'method="pate" {digits} pate.federation.teacher_nodes={teacher_nodes} '
                    f'pate.run.output_dir="{out}"')
    processes: list[subprocess.Popen] = []

    def start(name: str, command: list[str]) -> subprocess.Popen:
        handle = (logs / f"{name}.log").open("w")
        process = subprocess.Popen(command, cwd=workdir, env=env, stdout=handle, stderr=subprocess.STDOUT,
                                   start_new_session=True)
        processes.append(process)
        return process

    try:
        link = start("superlink", ["flower-superlink", *link_security, "--port", str(port),
                                   "--disable-runtime-dependency-installation"])
        _wait_for_port(port, link, timeout=60)
        configs = node_configs(method, parties=parties, teacher_nodes=teacher_nodes,
                               num_teachers=num_teachers, data_dir=workdir / "data")
        for k, node_config in enumerate(configs):
            start(f"supernode{k}", ["flower-supernode", *node_security, "--superlink", f"127.0.0.1:{port}",
                                    "--port", str(port + 1 + k), "--node-config", node_config])
        command = ["flwr", "run", str(ROOT), CONNECTION, "--stream", "--run-config",
                   f"{settings} {run_config}".strip()]
        print("$", shlex.join(command), flush=True)
        return subprocess.run(command, env=env, timeout=timeout).returncode
    finally:
        for process in processes:
            if process.poll() is None:
                os.killpg(process.pid, signal.SIGTERM)
        for process in processes:
            try:
                process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--method", choices=("vertical", "pate"), default="vertical")
    parser.add_argument("--workdir", type=Path, default=Path("runs/deploy"))
    parser.add_argument("--run-config", default="", help="extra run_config overrides, e.g. "
                                                         "'vertical.strategy.epochs=2'")
    parser.add_argument("--parties", type=int, default=2, help="vertical: SuperNodes (one per party)")
    parser.add_argument("--teacher-nodes", type=int, default=2, help="pate: teacher SuperNodes")
    parser.add_argument("--num-teachers", type=int, default=20, help="pate: teachers in all")
    parser.add_argument("--insecure", action="store_true", help="no TLS (loopback only)")
    parser.add_argument("--port", type=int, default=9300, help="SuperLink port; SuperNodes use the next ones")
    parser.add_argument("--timeout", type=float, default=3600.0, help="seconds before the run is abandoned")
    args = parser.parse_args(argv)
    code = deploy(args.method, args.workdir, run_config=args.run_config, parties=args.parties,
                  teacher_nodes=args.teacher_nodes, num_teachers=args.num_teachers, tls=not args.insecure,
                  port=args.port, timeout=args.timeout)
    sys.exit(code)


if __name__ == "__main__":
    main()
