"""Persistence of the privacy ledger: atomic JSON writes, the file lock, reading a stored ledger."""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

LEDGER_FORMAT_VERSION = 1


def _atomic_write_json(path: Path, payload: dict[str, Any]) -> None:
    """Write ``payload`` to ``path`` atomically: temp file in the same dir, fsync, os.replace."""
    text = json.dumps(payload, indent=1, allow_nan=False)
    fd, tmp_name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp_name, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp_name)
        raise
    # Make the rename itself durable (POSIX); not possible on every platform.
    with contextlib.suppress(OSError):
        dir_fd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)


_LEDGER_KEYS = (
    "format_version",
    "config",
    "orders",
    "rdp_data_dependent",
    "rdp_data_independent",
    "queries_checked",
    "queries_answered",
    "exhausted",
    "history",
)


@contextlib.contextmanager
def _ledger_lock(path: Path) -> Iterator[None]:
    """Exclusive lock on ``<path>.lock`` for one read-charge-write of a shared ledger file.

    Every process that charges the same ledger file takes it (POSIX ``flock``), so two runs over the
    same teachers serialize their charges instead of the last writer silently dropping the other's.
    The lock file itself holds nothing and may stay on disk.
    """
    with open(path.with_name(path.name + ".lock"), "a", encoding="utf-8") as handle:
        fcntl.flock(handle.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle.fileno(), fcntl.LOCK_UN)


def _read_ledger_file(path: Path) -> dict[str, Any]:
    """Read a persisted ledger, raising ValueError unless it has this version's format."""
    stored = json.loads(path.read_text(encoding="utf-8"))  # JSONDecodeError is a ValueError
    if not isinstance(stored, dict) or stored.get("format_version") != LEDGER_FORMAT_VERSION:
        version = stored.get("format_version") if isinstance(stored, dict) else None
        raise ValueError(
            f"{path}: not a privacy ledger of format_version {LEDGER_FORMAT_VERSION} "
            f"(found format_version {version!r})"
        )
    missing = [key for key in _LEDGER_KEYS if key not in stored]
    if missing:
        raise ValueError(f"{path}: privacy ledger is missing {', '.join(missing)}")
    return stored
