"""The loopback deployment launcher: node configurations, certificates, and (slow) real deployments."""

from __future__ import annotations

import ipaddress
import json
from pathlib import Path

import pytest
from cryptography import x509

from protocol.pate import node_role
from simulations.deploy_local import deploy, make_certificates, node_configs


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


def test_vertical_node_configs_name_each_party_and_its_file(tmp_path: Path) -> None:
    configs = [_parse(c) for c in node_configs("vertical", parties=3, teacher_nodes=0, num_teachers=0,
                                               data_dir=tmp_path)]
    assert configs == [{"party": str(k), "data-file": str(tmp_path / f"party{k}.npz")} for k in range(3)]


def test_certificates_chain_to_the_ca_and_name_the_loopback_address(tmp_path: Path) -> None:
    paths = make_certificates(tmp_path)
    ca = x509.load_pem_x509_certificate(paths["ca"].read_bytes())
    server = x509.load_pem_x509_certificate(paths["cert"].read_bytes())
    server.verify_directly_issued_by(ca)
    names = server.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert ipaddress.ip_address("127.0.0.1") in names.get_values_for_type(x509.IPAddress)
    assert oct(paths["key"].stat().st_mode & 0o777) == "0o600"


@pytest.mark.slow
def test_vertical_method_runs_on_a_tls_deployment(tmp_path: Path) -> None:
    # a SuperLink and two SuperNodes, each node reading its own party file; PSI + 1 epoch (≈ 7 min)
    code = deploy("vertical", tmp_path, run_config="vertical.strategy.epochs=1", port=9350, timeout=1500)
    assert code == 0, (tmp_path / "logs" / "superlink.log").read_text()[-3000:]
    results = json.loads((tmp_path / "out" / "results.json").read_text())["results"]
    assert results["alignment"]["method"] == "psi" and results["alignment"]["key_bits"] == 2048
    assert results["test"]["aligned"] > 0.3  # 10 classes; one epoch
    assert (tmp_path / "out" / "active.pt").is_file() and (tmp_path / "out" / "passive1.pt").is_file()
