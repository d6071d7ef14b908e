"""requirements.lock (the environment setup-env.sh and CI install) stays in step with pyproject.toml."""

from __future__ import annotations

import re
import sys
import tomllib
from importlib import metadata
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "scripts"))
from lock_digest import pyproject_digest  # noqa: E402

LOCK = ROOT / "requirements.lock"
PIN = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*)==(\S+) \\$", re.MULTILINE)


def _pins() -> dict[str, Version]:
    return {canonicalize_name(name): Version(version) for name, version in PIN.findall(LOCK.read_text())}


def _declared() -> list[Requirement]:
    data = tomllib.loads((ROOT / "pyproject.toml").read_text())
    project = data["project"]
    requirements = project["dependencies"] + project["optional-dependencies"]["dev"]
    requirements += data["build-system"]["requires"]
    return [Requirement(r.split("#")[0].strip()) for r in requirements]


def test_lock_records_the_digest_of_pyprojects_dependency_lists() -> None:
    first = LOCK.read_text().splitlines()[0]
    assert first == f"# pyproject-dependencies-sha256: {pyproject_digest()}", (
        "pyproject.toml's dependencies changed since requirements.lock was made: run bash scripts/lock.sh")


@pytest.mark.parametrize("requirement", _declared(), ids=str)
def test_every_declared_dependency_is_pinned_inside_its_range(requirement: Requirement) -> None:
    pins = _pins()
    name = canonicalize_name(requirement.name)
    assert name in pins, f"{requirement.name} is not in requirements.lock"
    assert requirement.specifier.contains(pins[name], prereleases=True), (
        f"requirements.lock pins {requirement.name}=={pins[name]}, outside pyproject's {requirement.specifier}")


def test_every_pin_has_a_hash_and_torch_is_the_cpu_wheel() -> None:
    blocks = re.split(r"\n(?=[A-Za-z0-9])", LOCK.read_text().split("\n", 3)[3])
    for block in blocks:
        assert "--hash=sha256:" in block, f"no hash for {block.splitlines()[0]}"
    assert _pins()["torch"] == Version("2.13.0+cpu")
    assert not any(name.startswith("nvidia-") for name in _pins()), "a CUDA package entered the lock"


def test_the_running_environment_is_the_locked_one() -> None:
    # the suite runs in the .venv that setup-env.sh built from the lock: any drift shows here
    if Path(sys.prefix).resolve() != (ROOT / ".venv").resolve():
        pytest.skip(f"not running in the project's .venv ({sys.prefix})")
    drift = {name: (str(pin), metadata.version(name)) for name, pin in _pins().items()
             if Version(metadata.version(name)) != pin}
    assert not drift, f"installed versions differ from requirements.lock (pin, installed): {drift}"
