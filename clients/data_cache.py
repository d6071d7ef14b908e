"""Datasets prepared once per machine: an on-disk cache shared by every process that needs them.

Generating MNIST-1D at 100 000 samples takes about a minute of CPU; in a Flower deployment every message
starts a new ClientApp process, and in simulation each node actor is its own process. So a generated or
converted dataset (and the split of a run) is built once and kept as ``<key>.npz`` in the cache folder:

- **keyed** by everything that determines it (``what``: dataset, seed, sizes, split settings, the
  versions of the packages that generate it, a format number) — the file name is the SHA-256 of that key
  in canonical JSON, and ``<key>.json`` beside it repeats the key in clear;
- **written atomically**: the arrays go to a temporary file in the same folder, are flushed to disk, and
  ``os.replace`` makes them visible; the ``.json`` record, holding the SHA-256 of the ``.npz`` bytes, is
  replaced last, so a reader sees a complete entry or none;
- **checked on load**: the ``.npz`` bytes must match the recorded digest, and the record's key the
  requested one; an entry that does not is rebuilt (and a warning names it);
- **built by one process**: builders take an exclusive ``flock`` on ``<key>.lock``; a process that finds
  no entry waits for the lock, then reads what the first one built.

The folder is ``cache_dir`` when given (a node's ``node_config["cache-dir"]``), else the environment's
``FLWR_PRIVKIT_CACHE_DIR``, else ``$XDG_CACHE_HOME/flwr-privkit`` (``~/.cache/flwr-privkit``). A folder
that cannot be written is not an error: the data is built in memory, with a warning.
"""

from __future__ import annotations

import fcntl
import hashlib
import io
import json
import logging
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

CACHE_DIR_ENV = "FLWR_PRIVKIT_CACHE_DIR"
NODE_CONFIG_KEY = "cache-dir"
FORMAT = 1  # bump when the layout of an entry or what a builder returns changes

logger = logging.getLogger(__name__)


def default_cache_dir() -> Path:
    """``$FLWR_PRIVKIT_CACHE_DIR``, else ``$XDG_CACHE_HOME/flwr-privkit``, else ``~/.cache/flwr-privkit``."""
    if os.environ.get(CACHE_DIR_ENV):
        return Path(os.environ[CACHE_DIR_ENV]).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "flwr-privkit"


def entry_name(what: dict[str, Any]) -> str:
    """The file stem of the entry for key ``what``: SHA-256 of its canonical JSON (with the format)."""
    canonical = json.dumps({"format": FORMAT, **what}, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()


def has_entry(what: dict[str, Any], cache_dir: str | os.PathLike[str] | None = None) -> bool:
    """Whether an entry for ``what`` is stored (not verified: :func:`cached_arrays` checks it on load)."""
    folder = Path(cache_dir).expanduser() if cache_dir else default_cache_dir()
    name = entry_name(what)
    return (folder / f"{name}.json").is_file() and (folder / f"{name}.npz").is_file()


def cached_arrays(
    what: dict[str, Any],
    build: Callable[[], dict[str, np.ndarray]],
    cache_dir: str | os.PathLike[str] | None = None,
) -> dict[str, np.ndarray]:
    """The arrays ``build()`` returns for key ``what``, from the cache when a valid entry exists.

    ``what`` must be JSON-serialisable and hold everything ``build``'s output depends on. The first
    caller on the machine builds and stores the entry; concurrent callers wait for it and read it.

    Raises
    ------
    TypeError
        If ``what`` is not JSON-serialisable or ``build`` returns something other than named arrays.
    """
    folder = Path(cache_dir).expanduser() if cache_dir else default_cache_dir()
    name = entry_name(what)
    found = _read_entry(folder, name, what)
    if found is not None:
        return found
    try:
        folder.mkdir(parents=True, exist_ok=True)
        lock = open(folder / f"{name}.lock", "a+b")  # noqa: SIM115 (held across the build, closed below)
    except OSError as err:
        logger.warning("data cache %s is not usable (%s): building %s in memory", folder, err, what)
        return _checked(build(), what)
    with lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # one builder per entry; released when the file closes
        found = _read_entry(folder, name, what)  # another process may have built it while we waited
        if found is not None:
            return found
        arrays = _checked(build(), what)
        _write_entry(folder, name, what, arrays)
        return arrays


def _checked(arrays: Any, what: dict[str, Any]) -> dict[str, np.ndarray]:
    if not isinstance(arrays, dict) or not all(isinstance(v, np.ndarray) for v in arrays.values()):
        raise TypeError(f"a cache builder must return a dict of numpy arrays, got {type(arrays).__name__} "
                        f"for {what}")
    return arrays


def _read_entry(folder: Path, name: str, what: dict[str, Any]) -> dict[str, np.ndarray] | None:
    """The entry's arrays if its record and bytes check out; None if it is missing or unusable."""
    record_path, data_path = folder / f"{name}.json", folder / f"{name}.npz"
    try:
        record = json.loads(record_path.read_text())
        payload = data_path.read_bytes()
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as err:
        logger.warning("data cache entry %s is unreadable (%s): rebuilding it", record_path, err)
        return None
    if record.get("what") != json.loads(json.dumps(what)) or record.get("format") != FORMAT:
        logger.warning("data cache entry %s holds %s, not %s: rebuilding it", record_path,
                       record.get("what"), what)
        return None
    digest = hashlib.sha256(payload).hexdigest()
    if digest != record.get("sha256"):
        logger.warning("data cache entry %s: sha256 %s does not match the recorded %s: rebuilding it",
                       data_path, digest, record.get("sha256"))
        return None
    with np.load(io.BytesIO(payload), allow_pickle=False) as stored:
        return {key: stored[key] for key in stored.files}


def _write_entry(folder: Path, name: str, what: dict[str, Any], arrays: dict[str, np.ndarray]) -> None:
    """Write the arrays, then the record with their digest, each through a temporary file + replace."""
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    payload = buffer.getvalue()
    record = {"format": FORMAT, "what": what, "sha256": hashlib.sha256(payload).hexdigest(),
              "arrays": {k: [str(v.dtype), list(v.shape)] for k, v in arrays.items()}}
    try:
        _replace_atomically(folder / f"{name}.npz", payload)
        _replace_atomically(folder / f"{name}.json", json.dumps(record, indent=1).encode())
    except OSError as err:
        logger.warning("data cache %s: could not store %s (%s); it will be built again next time",
                       folder, what, err)


def _replace_atomically(path: Path, payload: bytes) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(payload)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
