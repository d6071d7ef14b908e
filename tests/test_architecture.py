"""The import graph runs one way: protocol/ at the bottom, clients/ and strategies/ beside each other
on top of it, simulations/ and benchmarks/ above all three.

Walks every module's ``import`` statements (with ``ast``, so nothing is executed) and fails on a
forbidden direction, naming the module and the import.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PROJECT_PACKAGES = ("protocol", "clients", "strategies", "simulations", "benchmarks")

# package -> top-level names its modules must never import
FORBIDDEN = {
    "protocol": {"clients", "strategies", "simulations", "benchmarks", "torch", "hydra", "omegaconf"},
    "clients": {"strategies", "simulations", "benchmarks"},
    "strategies": {"clients", "simulations", "benchmarks", "torch", "hydra", "omegaconf"},
    "simulations": {"benchmarks"},
}


def imported_top_levels(path: Path) -> list[tuple[int, str]]:
    """``(line, top-level package)`` of every absolute import in the module at ``path``."""
    tree = ast.parse(path.read_text(), filename=str(path))
    found: list[tuple[int, str]] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name.split(".")[0]) for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.append((node.lineno, node.module.split(".")[0]))
    return found


def modules_of(package: str) -> list[Path]:
    return sorted((ROOT / package).rglob("*.py"))


@pytest.mark.parametrize("package", sorted(FORBIDDEN))
def test_imports_never_point_the_wrong_way(package):
    violations = [
        f"{path.relative_to(ROOT)}:{line} imports {name}"
        for path in modules_of(package)
        for line, name in imported_top_levels(path)
        if name in FORBIDDEN[package]
    ]
    assert not violations, "forbidden import direction:\n" + "\n".join(violations)


def test_every_package_is_checked_and_exists():
    for package in PROJECT_PACKAGES:
        assert (ROOT / package / "__init__.py").is_file(), package
    assert set(FORBIDDEN) <= set(PROJECT_PACKAGES)


def test_the_walker_sees_a_forbidden_import(tmp_path):
    module = tmp_path / "bad.py"
    module.write_text("import os\nfrom clients.teacher import x\nfrom . import sibling\n")
    assert imported_top_levels(module) == [(1, "os"), (2, "clients")]


def test_no_module_cites_files_outside_the_repository():
    offenders = [
        f"{path.relative_to(ROOT)}:{i}"
        for package in (*PROJECT_PACKAGES, "tests")
        for path in modules_of(package)
        for i, text in enumerate(path.read_text().splitlines(), 1)
        if "shared/" in text and "test_architecture.py" not in path.name
    ]
    assert not offenders, "modules cite ../shared/, which is not part of the project: " + ", ".join(offenders)


def test_no_test_module_imports_another_test_module():
    helpers = {"fake_grid", "vertical_helpers", "ledger_helpers", "conftest"}  # shared helpers, not test modules
    offenders = []
    for path in modules_of("tests"):
        for line, name in imported_top_levels(path):
            if name == "tests":
                text = path.read_text().splitlines()[line - 1]
                if not any(h in text for h in helpers):
                    offenders.append(f"{path.relative_to(ROOT)}:{line}")
    assert not offenders, "test modules import other test modules: " + ", ".join(offenders)
