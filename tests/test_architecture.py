"""The import graph runs one way: protocol/ at the bottom, clients/ and strategies/ beside each other
on top of it, simulations/ and benchmarks/ above all three.

Walks every module's ``import`` statements (with ``ast``, so nothing is executed) and fails on a
forbidden direction, naming the module and the import.
"""

from __future__ import annotations

import ast
import sys
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


# --------------------------------------------------------------------------------------------------
# clients/ by method: one subpackage per method, what they share at the top, and who imports whom
# --------------------------------------------------------------------------------------------------

CLIENTS_SHARED = {"data", "data_cache", "encoders", "training", "node_output", "progress_log", "tabular",
                  "tabular_transform", "lazy_handlers"}
"""The modules at the top of ``clients/``: what more than one method (or the simulations) use."""
# method subpackage -> the other method subpackages it may import (the vertical parties align by PSI)
CLIENTS_METHODS: dict[str, set[str]] = {"pate": set(), "psi": set(), "vertical": {"psi"}}
# method subpackage -> top-level packages it never imports (the PSI is crypto on plain integers)
CLIENTS_METHOD_FORBIDDEN: dict[str, set[str]] = {"psi": {"torch", "hydra", "omegaconf"}}
PRIVATE_RULE_PACKAGES = ("protocol", "clients", "simulations", "benchmarks")
"""Packages whose modules never use another module's underscore names. ``strategies/`` joins once its
ledger and mechanism modules are reworked (issue 23, item 1; changed on another branch)."""


def module_name(path: Path) -> str:
    """``clients/psi/ids.py`` → ``clients.psi.ids``; a package's ``__init__.py`` → the package."""
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def is_project_module(dotted: str) -> bool:
    base = ROOT.joinpath(*dotted.split("."))
    return base.with_suffix(".py").is_file() or (base / "__init__.py").is_file()


def absolute_module(node: ast.ImportFrom, path: Path) -> str:
    """The module a ``from … import`` in the module at ``path`` names, relative imports resolved."""
    if not node.level:
        return node.module or ""
    package = module_name(path) if path.name == "__init__.py" else module_name(path).rpartition(".")[0]
    base = package.split(".")[: len(package.split(".")) - node.level + 1]
    return ".".join([*base, *([node.module] if node.module else [])])


def imported_modules(path: Path) -> list[tuple[int, str, list[str]]]:
    """``(line, absolute module, imported names)`` of every import in the module at ``path``; relative
    imports are resolved, ``from package import module`` is reported as an import of ``package.module``."""
    tree = ast.parse(path.read_text(), filename=str(path))
    found: list[tuple[int, str, list[str]]] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name, []) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            module = absolute_module(node, path)
            names = [alias.name for alias in node.names]
            submodules = [n for n in names if is_project_module(f"{module}.{n}")]
            found += [(node.lineno, f"{module}.{n}", []) for n in submodules]
            rest = [n for n in names if n not in submodules]
            if rest or not submodules:
                found.append((node.lineno, module, rest))
    return found


def private_uses(path: Path) -> list[tuple[int, str]]:
    """``(line, "module._name")`` wherever the module at ``path`` imports or reads another project
    module's underscore name (dunder names are not private)."""
    tree = ast.parse(path.read_text(), filename=str(path))
    private = lambda name: name.startswith("_") and not name.startswith("__")  # noqa: E731
    found = [(line, f"{module}.{name}") for line, module, names in imported_modules(path)
             if module.split(".")[0] in PROJECT_PACKAGES for name in names if private(name)]
    aliases: dict[str, str] = {}  # local name -> project module it is bound to
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.asname and is_project_module(alias.name):
                    aliases[alias.asname] = alias.name
                elif alias.name.split(".")[0] in PROJECT_PACKAGES:
                    aliases[alias.name.split(".")[0]] = alias.name.split(".")[0]
        elif isinstance(node, ast.ImportFrom):
            module = absolute_module(node, path)
            for alias in node.names:
                if is_project_module(f"{module}.{alias.name}"):
                    aliases[alias.asname or alias.name] = f"{module}.{alias.name}"
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute) and private(node.attr):
            chain, value = [], node.value
            while isinstance(value, ast.Attribute):
                chain.insert(0, value.attr)
                value = value.value
            if isinstance(value, ast.Name) and value.id in aliases:
                dotted = ".".join([aliases[value.id], *chain])
                if is_project_module(dotted):
                    found.append((node.lineno, f"{dotted}.{node.attr}"))
    return found


def method_of(path: Path) -> str | None:
    """The method subpackage of ``clients/`` that holds ``path`` (``None`` for the shared modules)."""
    parts = path.relative_to(ROOT / "clients").parts
    return parts[0] if len(parts) > 1 else None


def test_clients_holds_the_shared_modules_and_one_subpackage_per_method():
    top = {p.stem for p in (ROOT / "clients").glob("*.py")} - {"__init__"}
    subpackages = {p.name for p in (ROOT / "clients").iterdir() if p.is_dir() and p.name != "__pycache__"}
    assert top == CLIENTS_SHARED, f"modules at the top of clients/ that are not shared: {sorted(top - CLIENTS_SHARED)}"
    assert subpackages == set(CLIENTS_METHODS)
    for name in subpackages:
        assert (ROOT / "clients" / name / "__init__.py").is_file(), name
        nested = [p for p in (ROOT / "clients" / name).iterdir() if p.is_dir() and p.name != "__pycache__"]
        assert not nested, f"clients/{name}/ is one level deep, found {nested}"


@pytest.mark.parametrize("method", [None, *sorted(CLIENTS_METHODS)])
def test_client_methods_import_only_what_is_shared_and_what_they_build_on(method):
    allowed = CLIENTS_METHODS.get(method, set()) if method else set()
    violations = [
        f"{path.relative_to(ROOT)}:{line} imports {module}"
        for path in modules_of("clients") if method_of(path) == method
        for line, module, _ in imported_modules(path)
        if module.split(".")[0] == "clients" and len(module.split(".")) > 1
        and module.split(".")[1] in CLIENTS_METHODS and module.split(".")[1] not in {method, *allowed}
    ]
    what = f"clients/{method}/" if method else "the shared modules of clients/"
    assert not violations, f"{what} import another method:\n" + "\n".join(violations)


@pytest.mark.parametrize("method", sorted(CLIENTS_METHOD_FORBIDDEN))
def test_client_methods_keep_their_dependencies_apart(method):
    violations = [
        f"{path.relative_to(ROOT)}:{line} imports {name}"
        for path in modules_of(f"clients/{method}")
        for line, name in imported_top_levels(path)
        if name in CLIENTS_METHOD_FORBIDDEN[method]
    ]
    assert not violations, f"clients/{method}/ imports what it must not:\n" + "\n".join(violations)


@pytest.mark.parametrize("package", PRIVATE_RULE_PACKAGES)
def test_underscore_names_stay_private_to_their_module(package):
    violations = [f"{path.relative_to(ROOT)}:{line} uses {name}"
                  for path in modules_of(package) for line, name in private_uses(path)]
    assert not violations, "underscore names used outside their module:\n" + "\n".join(violations)


def test_the_walkers_resolve_relative_imports_submodules_and_private_uses(tmp_path, monkeypatch):
    # Prepare: a throwaway project with one package of two modules
    monkeypatch.setattr(sys.modules[__name__], "ROOT", tmp_path)
    (tmp_path / "clients" / "psi").mkdir(parents=True)
    for name in ("clients/__init__.py", "clients/psi/__init__.py", "clients/psi/ids.py", "clients/data.py"):
        (tmp_path / name).write_text("")
    user = tmp_path / "clients" / "psi" / "user.py"
    user.write_text("from . import ids\nfrom ..data import _load, load\nimport clients.psi.ids as i\n"
                    "from clients import psi\nx = i._hash, ids._salt, psi.ids._bins, ids.__doc__\n")
    # Execute and assert
    assert imported_modules(user) == [(1, "clients.psi.ids", []), (2, "clients.data", ["_load", "load"]),
                                      (3, "clients.psi.ids", []), (4, "clients.psi", [])]
    assert sorted(private_uses(user)) == [(2, "clients.data._load"), (5, "clients.psi.ids._bins"),
                                          (5, "clients.psi.ids._hash"), (5, "clients.psi.ids._salt")]


# --------------------------------------------------------------------------------------------------
# Nothing cites a file that is not in the repository
# --------------------------------------------------------------------------------------------------

OUTSIDE_FILES = ("DESIGN.md", "../shared", "shared/STYLE.md", "FLOWER_NOTES", "PATE_NOTES")
"""Notes kept beside the repository, never in it: a reader of the repository cannot open them."""


def cited_outside_files(path: Path) -> list[tuple[int, str]]:
    return [(i, name) for i, text in enumerate(path.read_text().splitlines(), 1)
            for name in OUTSIDE_FILES if name in text]


def test_no_file_cites_notes_kept_outside_the_repository():
    texts = [*(p for package in (*PROJECT_PACKAGES, "tests") for p in modules_of(package)),
             *sorted((ROOT / "conf").rglob("*.yaml")), ROOT / "README.md", ROOT / "pyproject.toml",
             *sorted((ROOT / "docs").glob("*.md"))]
    offenders = [f"{path.relative_to(ROOT)}:{line} cites {name}"
                 for path in texts if path.name != Path(__file__).name
                 for line, name in cited_outside_files(path)]
    assert not offenders, "files cite notes that are not in the repository:\n" + "\n".join(offenders)


def test_the_citation_check_sees_a_design_note(tmp_path):
    module = tmp_path / "m.py"
    module.write_text('"""The method (DESIGN.md §4)."""\n# see ../shared/PATE_NOTES.md\n')
    assert cited_outside_files(module) == [(1, "DESIGN.md"), (2, "../shared"), (2, "PATE_NOTES")]
