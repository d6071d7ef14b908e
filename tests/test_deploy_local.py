"""The loopback deployment launcher: node configurations, credentials, node authentication, and (slow)
real deployments."""

from __future__ import annotations

import ipaddress
import json
import os
import time
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from protocol.pate import node_role
from simulations.deploy_credentials import make_certificates, make_node_key, write_owner_only
from simulations.deploy_local import (
    LocalDeployment,
    deploy,
    node_configs,
    run_settings,
    split_pate_run_config,
)


def _parse(node_config: str) -> dict[str, str]:
    return {k: v.strip("'") for k, v in (item.split("=", 1) for item in node_config.split())}


def test_pate_node_configs_cover_every_teacher_once() -> None:
    configs = [_parse(c) for c in node_configs("pate", parties=0, teacher_nodes=3, num_teachers=20,
                                               data_dir=Path("."))]
    assert configs[-1] == {"role": "student"}
    hosted = [node_role(c, 20)[1] for c in configs[:-1]]
    assert sorted(t for group in hosted for t in group) == list(range(20))
    with pytest.raises(ValueError, match="teacher nodes"):
        node_configs("pate", parties=0, teacher_nodes=21, num_teachers=20, data_dir=Path("."))


def test_pate_run_config_keys_are_composed_with_the_rehearsal_and_its_noise_checked() -> None:
    # digits' noise group is written for 20 teachers: 6 need their own noise (issue 24 §4)
    overrides, rest = split_pate_run_config('pate.strategy.threshold=4.8 pate.strategy.sigma1=3.6 '
                                            'pate.strategy.sigma2=0.96 other.key="a b"')
    assert overrides == ["strategy.threshold=4.8", "strategy.sigma1=3.6", "strategy.sigma2=0.96"]
    assert rest == 'other.key="a b"'
    settings = run_settings("pate", Path("out"), parties=0, teacher_nodes=2, num_teachers=6,
                            pate_overrides=overrides)
    assert "pate.strategy.threshold=4.8 " in settings and "pate.data.num_teachers=6 " in settings
    with pytest.raises(ValueError, match=r"^strategy.sigma1=12.0 does not fit data.num_teachers=6: "):
        run_settings("pate", Path("out"), parties=0, teacher_nodes=2, num_teachers=6)
    overrides, _ = split_pate_run_config("pate.strategy.sigma=0.96")  # the earlier name of sigma2
    with pytest.raises(ValueError, match=r"^strategy.sigma was renamed: set strategy.sigma2 \(the answer noise "
                                         r"σ2 of GNMax / Confident-GNMax\); got 0.96$"):
        run_settings("pate", Path("out"), parties=0, teacher_nodes=2, num_teachers=6, pate_overrides=overrides)


def test_vertical_node_configs_name_each_party_and_its_file(tmp_path: Path) -> None:
    configs = [_parse(c) for c in node_configs("vertical", parties=3, teacher_nodes=0, num_teachers=0,
                                               data_dir=tmp_path)]
    assert configs == [{"party": str(k), "data-file": str(tmp_path / f"party{k}.npz")} for k in range(3)]


def test_certificates_chain_to_the_ca_and_name_every_superlink_host(tmp_path: Path) -> None:
    paths = make_certificates(tmp_path, ["10.0.0.5", "superlink.example.org", "::1"])
    ca = x509.load_pem_x509_certificate(paths["ca"].read_bytes())
    server = x509.load_pem_x509_certificate(paths["cert"].read_bytes())
    server.verify_directly_issued_by(ca)
    names = server.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert names.get_values_for_type(x509.IPAddress) == [ipaddress.ip_address("10.0.0.5"),
                                                         ipaddress.ip_address("::1")]
    assert names.get_values_for_type(x509.DNSName) == ["superlink.example.org"]
    assert ca.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    assert not server.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    assert oct(paths["key"].stat().st_mode & 0o777) == "0o600"
    with pytest.raises(ValueError, match="'https://x:1'"):
        make_certificates(tmp_path, ["https://x:1"])


def test_node_keys_are_openssh_p384_and_owner_only_from_creation(tmp_path: Path) -> None:
    old = os.umask(0)  # a file created with the default mode would now be world-readable
    try:
        (tmp_path / "site-a").write_bytes(b"stale")
        (tmp_path / "site-a").chmod(0o644)
        private, public = make_node_key(tmp_path, "site-a")
    finally:
        os.umask(old)
    assert oct(private.stat().st_mode & 0o777) == "0o600"
    key = serialization.load_ssh_private_key(private.read_bytes(), None)
    assert isinstance(key, ec.EllipticCurvePrivateKey) and key.curve.name == "secp384r1"
    pub = serialization.load_ssh_public_key(public.read_bytes())
    assert pub.public_numbers() == key.public_key().public_numbers()
    with pytest.raises(ValueError, match="'../x'"):
        make_node_key(tmp_path, "../x")


def test_write_owner_only_never_chmods(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def no_chmod(*args: object, **kwargs: object) -> None:
        raise AssertionError("permissions must be set at creation, not by chmod")

    monkeypatch.setattr(os, "chmod", no_chmod)
    monkeypatch.setattr(Path, "chmod", no_chmod)
    path = write_owner_only(tmp_path / "k", b"secret")
    assert path.read_bytes() == b"secret" and oct(path.stat().st_mode & 0o777) == "0o600"


def test_superlink_refuses_a_supernode_whose_key_was_not_registered(tmp_path: Path) -> None:
    # real processes: a SuperLink with TLS and --enable-supernode-auth, one registered SuperNode, one not
    t0 = time.monotonic()
    with LocalDeployment(tmp_path, port=9340) as deployment:
        deployment.start_superlink()
        good = deployment.start_supernode("registered", "role='student'")
        stranger = deployment.start_supernode("stranger", "role='student'", register=False)
        assert stranger.wait(timeout=120) != 0
        refusal = deployment.log("stranger")
        assert "[code: 2004] Failed to activate SuperNode" in refusal, refusal[-2000:]
        assert good.poll() is None, deployment.log("registered")[-2000:]
        online = [n for n in deployment.registered_nodes() if n["status"] == "online"]
        assert len(online) == 1
        # the same key, once registered, is let in: the refusal was about registration only
        deployment.register(tmp_path / "keys" / "stranger.pub")
        again = deployment.start_supernode("stranger-registered", "role='student'",
                                           private_key=tmp_path / "keys" / "stranger")
        deadline = time.monotonic() + 60
        while len([n for n in deployment.registered_nodes() if n["status"] == "online"]) < 2:
            assert again.poll() is None and time.monotonic() < deadline, deployment.log("stranger-registered")
            time.sleep(1)
    print(f"wall time {time.monotonic() - t0:.1f} s")


@pytest.mark.slow
def test_vertical_method_runs_on_an_authenticated_tls_deployment(tmp_path: Path) -> None:
    # a SuperLink and two SuperNodes, each node reading its own party file; PSI + 1 epoch (≈ 7 min)
    t0 = time.monotonic()
    code = deploy("vertical", tmp_path, run_config='vertical.strategy.epochs=1 vertical.strategy.tune="off"',
                  port=9350, timeout=1500)
    print(f"wall time {time.monotonic() - t0:.0f} s")
    assert code == 0, (tmp_path / "logs" / "superlink.log").read_text()[-3000:]
    results = json.loads((tmp_path / "out" / "results.json").read_text())["results"]
    assert results["alignment"]["method"] == "psi" and results["alignment"]["key_bits"] == 2048
    assert results["test"]["aligned"] > 0.3  # 10 classes; one epoch
    assert (tmp_path / "out" / "active.pt").is_file() and (tmp_path / "out" / "passive1.pt").is_file()
