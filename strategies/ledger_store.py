"""Persistence of the privacy ledger: owner-only atomic writes, the file lock, reading a stored ledger.

Every ledger file (the JSON journal, its ``<ledger>.votes.npz`` sidecar, the ``<ledger>.lock``) is
created with mode 0o600 from the start: the temp file is opened with that mode before a byte is
written (``os.open(..., 0o600)``, not a chmod afterwards), and ``os.replace`` keeps it. A writer
killed between creating its temp file and the rename leaves ``.<name>.<random>.tmp`` behind; the
ledger removes such orphans with :func:`remove_orphan_temps` while it holds the lock, when no other
writer can be mid-write.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import secrets
from collections.abc import Iterator
from pathlib import Path
from typing import Any

LEDGER_FORMAT_VERSION = 2
"""2: the hash-chained journal (:mod:`strategies.ledger_journal`); 1 (no journal) is refused."""

LOCAL_RR_V1_FORMAT = "flwr-privkit/local-rr-ledger/1"
"""The journal local randomised response kept before the vote-release seam: read (and verified by
:func:`strategies.local_rr.verify_v1_journal`), never written."""

FILE_MODE = 0o600
"""Owner read/write only: a ledger holds the teachers' vote histograms and the paid-for labels."""


def _temp_name(path: Path) -> Path:
    return path.with_name(f".{path.name}.{secrets.token_hex(8)}.tmp")


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` atomically: an owner-only temp file beside it, fsync, os.replace.

    The temp file is created with ``O_CREAT | O_EXCL`` and mode :data:`FILE_MODE` before anything is
    written, so the data is never readable by others, not even for an instant. On any failure the
    temp file is removed and ``path`` is left as it was.
    """
    tmp = _temp_name(path)
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, FILE_MODE)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    # Make the rename itself durable (POSIX); not possible on every platform.
    with contextlib.suppress(OSError):
        dir_fd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)


def atomic_write_json(path: Path, payload: dict[str, Any]) -> None:
    """Write ``payload`` as JSON to ``path`` atomically and owner-only (:func:`atomic_write_bytes`)."""
    atomic_write_bytes(path, json.dumps(payload, indent=1, allow_nan=False).encode("utf-8"))


def remove_orphan_temps(*paths: Path) -> list[Path]:
    """Remove the temp files a killed writer left for ``paths``; return the ones removed.

    Call only while holding the ledger's lock: every writer holds it from temp file to rename.
    """
    removed = []
    for path in paths:
        for orphan in path.parent.glob(f".{path.name}.*.tmp"):
            with contextlib.suppress(FileNotFoundError):
                orphan.unlink()
                removed.append(orphan)
    return removed


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
def ledger_lock(path: Path) -> Iterator[None]:
    """Exclusive lock on ``<path>.lock`` for one read-charge-write of a shared ledger file.

    Every process that charges the same ledger file takes it (POSIX ``flock``), so two runs over the
    same teachers serialize their charges instead of the last writer silently dropping the other's.
    The lock file itself holds nothing and may stay on disk.
    """
    fd = os.open(path.with_name(path.name + ".lock"), os.O_RDWR | os.O_CREAT, FILE_MODE)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)


def read_ledger_file(path: Path) -> dict[str, Any]:
    """Read a persisted ledger, raising ValueError (naming the file) unless it has this version's format
    (or is a v1 local-RR journal, :data:`LOCAL_RR_V1_FORMAT`, returned as stored)."""
    try:
        stored = json.loads(path.read_text(encoding="utf-8"))
    except UnicodeDecodeError as err:
        raise ValueError(f"{path}: not a privacy ledger (not UTF-8 text: {err})") from err
    except json.JSONDecodeError as err:
        what = "empty" if not path.read_bytes().strip() else f"not valid JSON: {err}"
        raise ValueError(f"{path}: not a privacy ledger ({what}); if a crash cut it short, restore it from "
                         "a copy — its head log tells which copy is the newest") from err
    except IsADirectoryError as err:
        raise ValueError(f"{path}: the ledger path is a directory, not a ledger file") from err
    if isinstance(stored, dict) and stored.get("format") == LOCAL_RR_V1_FORMAT:
        return stored
    if not isinstance(stored, dict) or stored.get("format_version") != LEDGER_FORMAT_VERSION:
        version = stored.get("format_version") if isinstance(stored, dict) else None
        hint = (" (format 1 has no integrity journal, so its totals cannot be verified: start a new "
                "ledger)") if version == 1 else ""
        raise ValueError(
            f"{path}: not a privacy ledger of format_version {LEDGER_FORMAT_VERSION} "
            f"(found format_version {version!r}){hint}"
        )
    missing = [key for key in _LEDGER_KEYS if key not in stored]
    if missing:
        raise ValueError(f"{path}: privacy ledger is missing {', '.join(missing)}")
    for key, kind in (("config", dict), ("orders", list), ("history", list)):
        if not isinstance(stored[key], kind):
            raise ValueError(f"{path}: privacy ledger's {key} must be a JSON "
                             f"{'object' if kind is dict else 'array'}, got {type(stored[key]).__name__}")
    return stored
