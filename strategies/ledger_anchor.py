"""The ledger's head log: an append-only high-water mark beside its journal, checked on every load.

A journal (:mod:`strategies.ledger_journal`) proves that a file adds up, not that it is the newest: an
older copy restored from a backup, or a plain edit that empties ``history`` and zeroes the totals, is a
consistent journal too, and every resume is a new process that remembers nothing. So every ledger file
``<ledger>`` has ``<ledger>.head``: one line ``"<seq> <hash>"`` per journal entry ever committed, only
ever appended (``O_APPEND``, owner-only, fsynced) after the JSON's ``os.replace``. On load:

- the journal must reach the head's last entry and hold the same hash at every entry the head names
  (:func:`check_head`), so a JSON behind its head — rolled back, reset by hand, swapped for another
  run's — is refused; a JSON *ahead* of its head by entries committed just before a crash is accepted,
  and the head catches up at the next write (:func:`append_head`);
- a ledger file that is gone while its row store or head log remains is refused
  (:func:`check_no_orphans`): the JSON was deleted, not never written;
- a ledger without a head log (written before head logs existed) loads when its row store holds no
  more rows than its journal pins, and gets one at its next charge.

What stays out of reach, plainly: an operator who deletes or rewrites *every* copy — the JSON, its row
store and its head log — consistently; the files live in one folder that the operator controls. Keep a
copy of the head log elsewhere (it holds only sequence numbers and hashes) to guard against that.
"""

from __future__ import annotations

import os
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from strategies.ledger_sidecar import sidecar_path
from strategies.ledger_store import FILE_MODE

HEAD_LINE = re.compile(r"^(\d+) ([0-9a-f]{64})$")


class LedgerRollbackError(ValueError):
    """A ledger file is behind its head log, or gone while its companions remain: never adopted."""


def head_path(path: Path) -> Path:
    """``<ledger>.head``: the head log of ledger file ``path``."""
    return path.with_name(path.name + ".head")


def recovery(path: Path) -> str:
    """The recovery steps a refusal names."""
    return (f"restore the newest copy of {path.name} (the one that reaches the head log's last entry); to "
            f"give this ledger up, move {path.name} and its .votes.npz and .head aside and start a new run "
            "in another output folder — the ε it recorded stays spent on those teachers")


def read_head(path: Path) -> list[tuple[int, str]]:
    """The ``(seq, hash)`` lines of ``path``'s head log; empty if it has none.

    Raises
    ------
    LedgerRollbackError
        If a line is malformed or the sequence numbers are not 1, 2, 3, ...
    """
    try:
        text = head_path(path).read_text(encoding="ascii")
    except FileNotFoundError:
        return []
    except (OSError, UnicodeDecodeError) as err:
        raise LedgerRollbackError(f"{head_path(path)}: unreadable head log ({err}); "
                                  f"{recovery(path)}") from err
    entries = []
    for number, line in enumerate(text.splitlines(), start=1):
        match = HEAD_LINE.match(line)
        if match is None or int(match.group(1)) != number:
            raise LedgerRollbackError(f"{head_path(path)}: line {number} is {line[:80]!r}, expected "
                                      f"'{number} <sha256>'; {recovery(path)}")
        entries.append((number, match.group(2)))
    return entries


def check_head(path: Path, journal: Sequence[dict[str, Any]], head: Sequence[tuple[int, str]],
               rows_in_store: int | None = None, rows_pinned: int | None = None) -> None:
    """Refuse ``journal`` (the entries of ledger file ``path``) unless it reaches ``head``, its head log as
    :func:`read_head` read it *before* the journal was read: the head is appended only after the journal
    is replaced, so read in that order a journal is never behind its head unless it was rolled back.

    With ``rows_in_store`` and ``rows_pinned`` (the row store's rows and those the journal's entries pin),
    a ledger without a head log is refused when its row store holds more rows than its journal pins:
    the journal was cut back (an edited ``history``), or a write of an old version crashed.

    Raises
    ------
    LedgerRollbackError
        Naming the head's entry the journal does not reach or does not match, and the recovery steps.
    """
    if not head:
        if rows_in_store is not None and rows_pinned is not None and rows_in_store > rows_pinned:
            raise LedgerRollbackError(
                f"{path}: its row store holds {rows_in_store} charged queries but its journal pins only "
                f"{rows_pinned}, and there is no head log to tell a crash from an edit: the journal was cut "
                f"back; {recovery(path)}")
        return
    seq, digest = head[-1]
    if len(journal) < seq:
        raise LedgerRollbackError(
            f"{path}: the journal has {len(journal)} entries but its head log records entry {seq} "
            f"({digest[:12]}…): the file was rolled back to an older copy or reset; {recovery(path)}")
    for number, expected in head:
        found = journal[number - 1].get("hash") if isinstance(journal[number - 1], dict) else None
        if found != expected:
            raise LedgerRollbackError(
                f"{path}: entry {number} has hash {str(found)[:12]}… but its head log recorded "
                f"{expected[:12]}…: the journal was rewritten or belongs to another ledger; {recovery(path)}")


def append_head(path: Path, journal: Sequence[dict[str, Any]], known: int) -> None:
    """Append to ``path``'s head log the entries of ``journal`` after its first ``known`` (the entries the
    log records, as the ledger last read or appended it under the same lock: the log is not re-read), after
    the JSON that holds them was committed; the caller holds the ledger's lock."""
    lines = "".join(f"{entry['seq']} {entry['hash']}\n" for entry in journal[known:])
    if not lines:
        return
    fd = os.open(head_path(path), os.O_WRONLY | os.O_CREAT | os.O_APPEND, FILE_MODE)
    try:
        os.write(fd, lines.encode("ascii"))
        os.fsync(fd)
    finally:
        os.close(fd)


def refuse_vanished(path: Path, checked: int, journal: Sequence[dict[str, Any]]) -> None:
    """Refuse to go on with ledger ``path`` if its file is gone after this process charged or adopted
    ``journal`` (``checked`` queries): a ledger is never reset silently.

    Raises
    ------
    ValueError
        If ``path`` does not exist and ``checked`` or ``journal`` is not empty.
    """
    if not path.exists() and (checked or journal):
        raise ValueError(f"{path}: the privacy ledger file vanished after {checked} checked queries; "
                         "refusing to charge (restore the file or start a new ledger)")


def companions(path: Path) -> list[Path]:
    """The files that exist only beside a ledger file: its row store and its head log."""
    return [sidecar_path(path), head_path(path)]


def check_no_orphans(path: Path) -> None:
    """Refuse to start ledger ``path`` afresh while its row store or head log survives it.

    Raises
    ------
    LedgerRollbackError
        If ``path`` does not exist but a companion does (the ledger file was deleted).
    """
    if path.exists():
        return
    left = [p.name for p in companions(path) if p.exists()]
    if left:
        raise LedgerRollbackError(
            f"{path}: the ledger file is missing but {', '.join(left)} remain: it was deleted after charges, "
            f"and starting afresh would spend the same queries' privacy again; {recovery(path)}")


def existing_ledger_files(path: Path) -> list[Path]:
    """The ledger file and its companions that exist on disk."""
    return [p for p in (path, *companions(path)) if p.exists()]


def check_settings(path: Path | None, mine: dict[str, Any], theirs: Any,
                   intro: str = "stored ledger has ") -> None:
    """Refuse a stored ledger whose settings (``theirs``) differ from this ledger's (``mine``), naming the
    first dotted key that differs and both values; one bound to no run is not resumed by a run.

    Raises
    ------
    ValueError
        On the first difference.
    """
    theirs = theirs if isinstance(theirs, dict) else {}
    if mine.get("mechanism") != theirs.get("mechanism"):  # the mechanism first: it explains the rest
        raise ValueError(f"{path}: {intro}mechanism={theirs.get('mechanism')!r}, but this ledger was created "
                         f"with mechanism={mine.get('mechanism')!r}")
    if mine.get("run") is not None and theirs.get("run") is None:
        raise ValueError(f"{path}: stored ledger is bound to no run (written before ledgers recorded their "
                         "run's data and teacher settings); no run can resume it, as its paid labels could "
                         "go to other samples: start a new run")
    different = first_difference(mine, theirs)
    if different is not None:
        key, own, stored = different
        raise ValueError(f"{path}: {intro}{key}={stored!r}, but this ledger was created with {key}={own!r}")


def first_difference(mine: Any, theirs: Any, key: str = "") -> tuple[str, Any, Any] | None:
    """The first dotted key (sorted) where two settings differ, with their values; None if equal."""
    if isinstance(mine, dict) and isinstance(theirs, dict):
        for name in sorted(set(mine) | set(theirs)):
            found = first_difference(mine.get(name), theirs.get(name), f"{key}.{name}" if key else name)
            if found is not None:
                return found
        return None
    return None if mine == theirs else (key, mine, theirs)


def check_pool(path: Path | None, journal: Sequence[dict[str, Any]], digest: str) -> None:
    """Refuse to extend ``journal`` for a student pool other than the one its entries paid labels for.

    Entries charged with a pool record its SHA-256 (``pool_sha256``, inside the hash chain); the labels they
    paid for belong to the samples at those positions of that pool, and only of that pool.

    Raises
    ------
    ValueError
        Naming both digests and how many charged queries the recorded pool holds.
    """
    recorded = [entry["pool_sha256"] for entry in journal if "pool_sha256" in entry]
    if recorded and recorded[-1] != digest:
        charged = sum(int(entry.get("n_accepted", 0)) for entry in journal)
        raise ValueError(f"{path}: the student's pool (sha256 {digest[:16]}…) is not the pool this ledger's "
                         f"{charged} charged queries were asked on (sha256 {recorded[-1][:16]}…): its paid "
                         "labels would go to other samples; resume with the student's original data, or "
                         "start a new run in another output folder")
