"""The digest of pyproject.toml's dependency lists that requirements.lock records (scripts/lock.sh).

Only what decides the lock enters it: ``requires-python``, ``dependencies``, the optional dependency
groups and the build requirements, as canonical JSON. Other edits of pyproject.toml keep the lock valid.
"""

from __future__ import annotations

import hashlib
import json
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def pyproject_digest(pyproject: Path = ROOT / "pyproject.toml") -> str:
    """SHA-256 of the dependency lists of ``pyproject`` (canonical JSON, keys sorted)."""
    data = tomllib.loads(pyproject.read_text())
    project = data["project"]
    locked = {
        "requires-python": project.get("requires-python"),
        "dependencies": project.get("dependencies", []),
        "optional-dependencies": project.get("optional-dependencies", {}),
        "build-requires": data.get("build-system", {}).get("requires", []),
    }
    return hashlib.sha256(json.dumps(locked, sort_keys=True).encode()).hexdigest()


if __name__ == "__main__":
    print(pyproject_digest())
