"""The privacy ledger's row store ``<ledger>.votes.npz``: what every charged query was, and its label.

One row per charged query, in charge order: its vote histogram, whether it was answered, and, when
the caller passed them to :meth:`~strategies.privacy_ledger.PrivacyLedger.charge`, its query id and
fused label (``-1`` where none was given, and for every unanswered query). The votes and answered
flags are the inputs that determine the query's RDP cost, so a reloaded ledger recomputes its costs
from them; the labels are what the privacy spent bought.

Consistency with the JSON journal (:mod:`strategies.ledger_journal`): the sidecar is written
atomically *before* the JSON, and every journal entry pins the SHA-256 of its rows
(:func:`rows_digest`). The JSON's ``os.replace`` is therefore the one commit point of a charge and of
its labels: a crash between the two writes leaves the sidecar with rows beyond the journal's
``queries_checked``, which are ignored (they were never charged, and their labels never paid for).
"""

from __future__ import annotations

import dataclasses
import hashlib
import io
import zipfile
from pathlib import Path

import numpy as np
import numpy.typing as npt

from strategies.ledger_store import atomic_write_bytes
from strategies.rdp_analysis import ArrayLike, FloatArray

IntArray = npt.NDArray[np.int64]
NO_LABEL = -1
"""Label and query id of a row charged without labels, and the label of every unanswered query."""


def sidecar_path(path: Path) -> Path:
    """``<ledger>.votes.npz``: where the ledger at ``path`` keeps its charged rows."""
    return path.with_name(path.name + ".votes.npz")


@dataclasses.dataclass(frozen=True)
class LedgerRows:
    """Charged queries, one row each: ``votes (N, C)``, ``answered``, ``query_ids``, ``labels`` ``(N,)``."""

    votes: FloatArray
    answered: npt.NDArray[np.bool_]
    query_ids: IntArray
    labels: IntArray

    @classmethod
    def empty(cls) -> LedgerRows:
        return cls(np.zeros((0, 0)), np.zeros(0, dtype=bool), np.zeros(0, dtype=np.int64),
                   np.zeros(0, dtype=np.int64))

    def __len__(self) -> int:
        return int(self.answered.shape[0])

    def __getitem__(self, rows: slice) -> LedgerRows:
        return LedgerRows(self.votes[rows], self.answered[rows], self.query_ids[rows], self.labels[rows])

    def extended(self, more: LedgerRows) -> LedgerRows:
        """These rows followed by ``more``.

        Raises
        ------
        ValueError
            If ``more`` has another number of classes than the rows so far.
        """
        if not len(self):
            return more
        if more.votes.shape[1] != self.votes.shape[1]:
            raise ValueError(f"votes must keep the ledger's {self.votes.shape[1]} classes, "
                             f"got {more.votes.shape[1]}")
        return LedgerRows(*(np.concatenate((a, b)) for a, b in zip(dataclasses.astuple(self),
                                                                    dataclasses.astuple(more), strict=True)))


def check_distinct_ids(ids: npt.NDArray[np.integer]) -> None:
    """Raise ValueError if a query id repeats within a batch (each appearance would be charged, for one
    label), naming the id and both positions."""
    repeat = first_repeat(ids)
    if repeat is not None:
        raise ValueError(f"query_ids must be distinct within a batch, got id {ids[repeat[0]]} at indices "
                         f"{repeat[0]} and {repeat[1]}: each appearance would be charged, for one label")


def first_repeat(ids: npt.NDArray[np.integer]) -> tuple[int, int] | None:
    """``(i, j)``, ``i < j``: the first repeat (smallest ``j``) with ``ids[i] == ids[j]``; None if none."""
    seen: dict[int, int] = {}
    for j, query_id in enumerate(np.asarray(ids).tolist()):
        if query_id in seen:
            return seen[query_id], j
        seen[query_id] = j
    return None


def batch_rows(
    votes: FloatArray, answered: npt.NDArray[np.bool_], labels: ArrayLike | None, query_ids: ArrayLike | None
) -> LedgerRows:
    """The rows of one charged batch, validating ``labels`` and ``query_ids`` against it.

    Raises
    ------
    ValueError
        If only one of ``labels`` and ``query_ids`` is given, either is not an integer array of shape
        ``(Q,)``, a query id is negative or repeats within the batch, an answered label is not a class
        index in ``[0, C)``, or an unanswered label is not ``-1``. A repeated id would be charged once
        per appearance for what the store keeps as one query, with two labels for it.
    """
    n, n_classes = votes.shape
    if (labels is None) != (query_ids is None):
        raise ValueError("labels and query_ids must be given together (one per query of the batch), "
                         f"got labels={'None' if labels is None else 'an array'} and "
                         f"query_ids={'None' if query_ids is None else 'an array'}")
    if labels is None or query_ids is None:
        none = np.full(n, NO_LABEL, dtype=np.int64)
        return LedgerRows(votes, answered, none, none.copy())
    checked = {}
    for name, given in (("labels", labels), ("query_ids", query_ids)):
        arr = np.asarray(given)
        if not np.issubdtype(arr.dtype, np.integer) or arr.shape != (n,):
            raise ValueError(f"{name} must be an integer array of shape ({n},), got dtype {arr.dtype} "
                             f"and shape {arr.shape}")
        checked[name] = arr.astype(np.int64)
    lab, ids = checked["labels"], checked["query_ids"]
    bad = np.flatnonzero(ids < 0)
    if bad.size:
        raise ValueError(f"query_ids must be >= 0, got {ids[bad[0]]} at index {bad[0]}")
    check_distinct_ids(ids)
    bad = np.flatnonzero(answered & ((lab < 0) | (lab >= n_classes)))
    if bad.size:
        raise ValueError(f"labels of answered queries must be in [0, {n_classes}), got {lab[bad[0]]} at "
                         f"index {bad[0]}")
    bad = np.flatnonzero(~answered & (lab != NO_LABEL))
    if bad.size:
        raise ValueError(f"labels of unanswered queries must be {NO_LABEL}, got {lab[bad[0]]} at index "
                         f"{bad[0]}")
    return LedgerRows(votes, answered, ids, lab)


def rows_digest(rows: LedgerRows) -> str:
    """SHA-256 of the shapes and bytes of the rows' votes (float64), flags (bool), ids and labels (int64)."""
    h = hashlib.sha256()
    for arr, dtype in zip(dataclasses.astuple(rows), (np.float64, bool, np.int64, np.int64), strict=True):
        arr = np.ascontiguousarray(arr, dtype=dtype)
        h.update(repr(arr.shape).encode())
        h.update(arr.tobytes())
    return h.hexdigest()


def write_sidecar(
    path: Path, votes: ArrayLike, answered: ArrayLike, query_ids: ArrayLike | None = None,
    labels: ArrayLike | None = None,
) -> None:
    """Write the row store of the ledger at ``path`` atomically and owner-only (ids, labels default -1)."""
    n = len(np.asarray(answered))
    buffer = io.BytesIO()
    none = np.full(n, NO_LABEL, dtype=np.int64)
    np.savez(buffer, votes=np.asarray(votes, dtype=float), answered=np.asarray(answered, dtype=bool),
             query_ids=none if query_ids is None else np.asarray(query_ids, dtype=np.int64),
             labels=none if labels is None else np.asarray(labels, dtype=np.int64))
    atomic_write_bytes(sidecar_path(path), buffer.getvalue())


def sidecar_row_count(path: Path) -> int:
    """How many rows the row store of the ledger at ``path`` holds (0 if it has none).

    Raises
    ------
    ValueError
        If the row store exists but cannot be read.
    """
    target = sidecar_path(path)
    if not target.exists():
        return 0
    try:
        with np.load(target, allow_pickle=False) as data:
            return len(data["answered"])
    except (OSError, KeyError, ValueError, EOFError, zipfile.BadZipFile) as err:
        raise ValueError(f"{target}: not a readable vote sidecar ({type(err).__name__}: {err})") from err


def read_sidecar(path: Path, n_rows: int) -> LedgerRows:
    """The first ``n_rows`` rows of the ledger at ``path`` (the journal checks them against its entries).

    Rows beyond ``n_rows`` are a crash's residue and are dropped. A sidecar without ``query_ids`` or
    ``labels`` reads as charged without labels.

    Raises
    ------
    ValueError
        If ``n_rows > 0`` and the sidecar is missing, unreadable, or has fewer rows.
    """
    if n_rows == 0:
        return LedgerRows.empty()
    target = sidecar_path(path)
    if not target.exists():
        raise ValueError(f"{path}: the ledger has {n_rows} charged queries but its vote sidecar {target} "
                         "is missing; refusing to continue (restore it or start a new ledger)")
    try:
        with np.load(target, allow_pickle=False) as data:
            votes, answered = np.asarray(data["votes"], dtype=float), np.asarray(data["answered"], dtype=bool)
            none = np.full(len(answered), NO_LABEL, dtype=np.int64)
            ids = np.asarray(data["query_ids"], dtype=np.int64) if "query_ids" in data else none
            labels = np.asarray(data["labels"], dtype=np.int64) if "labels" in data else none
    except (OSError, KeyError, ValueError, EOFError, zipfile.BadZipFile) as err:
        raise ValueError(f"{target}: not a readable vote sidecar ({type(err).__name__}: {err})") from err
    if votes.ndim != 2 or not len(votes) == len(answered) == len(ids) == len(labels) or len(votes) < n_rows:
        raise ValueError(f"{target}: vote sidecar does not match the ledger: it has votes of shape "
                         f"{votes.shape} and {len(answered)} flags, the ledger {n_rows} charged queries")
    return LedgerRows(votes, answered, ids, labels)[:n_rows]
