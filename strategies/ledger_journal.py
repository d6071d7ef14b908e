"""The privacy ledger's append-only journal: hash-chained entries whose totals a reader recomputes.

The ledger JSON's ``history`` is a journal, one entry per charge. Besides the counts and the ε after
the charge, each entry holds

* ``seq``: its sequence number, 1, 2, 3, ... (the file's *sequence* is its last entry's);
* ``cost_data_dependent``, ``cost_data_independent``: the batch's RDP at every order, i.e. the sum of
  the per-query costs of its accepted prefix (in the order the ledger added them);
* ``rows_sha256``: the SHA-256 of the batch's rows in the row store (:mod:`strategies.ledger_sidecar`):
  the votes and answered flags that determine those costs, and the labels they paid for (None for a
  batch of which nothing was accepted);
* ``prev_hash``: the previous entry's ``hash`` (for entry 1: :func:`genesis_hash` of the format
  version, settings and order grid, which binds the journal to the ledger it was written for);
* ``hash``: SHA-256 of the canonical JSON (sorted keys, no whitespace, no NaN) of all the other fields.

The recorded totals (``rdp_data_dependent``, ``rdp_data_independent``, ``queries_checked``,
``queries_answered``, ``exhausted``, ``epsilon_released``) are derived: :func:`verify_journal`
recomputes them from the entries and refuses the file (:class:`LedgerIntegrityError`, naming the
file, the entry's sequence number and what is wrong) if any of these fail: an entry is malformed or
out of sequence (deleted or reordered), a cost is non-finite or negative, a ``prev_hash`` or
``hash`` does not match (an entry was edited), a batch's rows do not match its ``rows_sha256`` or its
costs differ from the costs recomputed from those rows, a recorded ε differs from the one its totals
give or exceeds the budget, or a recorded total differs from the sum of the entries. A live ledger
also refuses a file that does not extend the journal it last wrote or adopted
(:func:`check_extends`): a file rolled back to an older copy, or rewritten.

What it does not do: the hash is unkeyed, so it detects edits, deletions, reorderings and stale
copies, not a forger who rewrites the whole journal and its row store consistently; and a stale but
complete copy handed to a *new* process is indistinguishable from the real one (only a live ledger,
which remembers what it wrote, can tell). The release record (``release``) is not part of the chain.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from strategies.ledger_sidecar import LedgerRows, rows_digest
from strategies.rdp_analysis import FloatArray

COST_KEYS = {"cost_data_dependent": "data-dependent", "cost_data_independent": "data-independent"}
_ENTRY_KEYS = ("seq", "prev_hash", "hash", "rows_sha256", "n_offered", "n_accepted", "n_answered",
               "exhausted", "epsilon_data_dependent", "epsilon_data_independent", *COST_KEYS)
_RECOMPUTE_RTOL, _RECOMPUTE_ATOL = 1e-9, 1e-12  # libm may differ in the last bits between machines


class LedgerIntegrityError(ValueError):
    """A stored privacy ledger failed a journal check: it is refused, never adopted."""


def _canonical(obj: Any) -> bytes:
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=True, allow_nan=False).encode()


def genesis_hash(format_version: int, config: dict[str, Any], orders: Sequence[float]) -> str:
    """``prev_hash`` of entry 1: SHA-256 of the ledger's format version, settings and order grid."""
    return hashlib.sha256(_canonical({"format_version": format_version, "config": config,
                                      "orders": list(orders)})).hexdigest()


def entry_hash(entry: dict[str, Any]) -> str:
    """SHA-256 of the canonical JSON of ``entry`` without its ``hash`` field.

    Raises
    ------
    ValueError
        If the entry holds a non-finite float (canonical JSON has no NaN or infinity).
    """
    return hashlib.sha256(_canonical({k: v for k, v in entry.items() if k != "hash"})).hexdigest()


def seal(entry: dict[str, Any], journal: Sequence[dict[str, Any]], genesis: str) -> dict[str, Any]:
    """``entry`` as the next entry of ``journal``: with ``seq``, ``prev_hash`` and ``hash``."""
    sealed = {**entry, "seq": len(journal) + 1, "prev_hash": journal[-1]["hash"] if journal else genesis}
    sealed["hash"] = entry_hash(sealed)
    return sealed


@dataclasses.dataclass(frozen=True)
class JournalTotals:
    """What a verified journal adds up to."""

    rdp_data_dependent: FloatArray
    rdp_data_independent: FloatArray
    checked: int
    answered: int
    exhausted: bool
    epsilon_released: float | None


@dataclasses.dataclass(frozen=True)
class JournalSpec:
    """What verifying a journal needs to know of its ledger.

    ``costs(votes, answered)`` gives the per-query RDP ``(Q, K)`` on both accountings (raising
    ValueError on invalid rows); ``spent(rdp, checked)`` the ε and best order of a total.
    """

    genesis: str
    orders: FloatArray
    costs: Callable[[FloatArray, np.ndarray], tuple[FloatArray, FloatArray]]
    spent: Callable[[FloatArray, int], tuple[float, float]]
    budget: float
    budget_on: str


def _fail(path: Path, where: str, what: str) -> LedgerIntegrityError:
    return LedgerIntegrityError(f"{path}: {where}: {what}; refusing this ledger file")


def _count(path: Path, seq: int, entry: dict[str, Any], key: str) -> int:
    value = entry[key]
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise _fail(path, f"entry {seq}", f"{key} must be an integer >= 0, got {value!r}")
    return value


def _cost(path: Path, seq: int, entry: dict[str, Any], key: str, orders: FloatArray) -> FloatArray:
    """The entry's recorded cost curve at ``key``, checked: K finite numbers >= 0."""
    value = entry[key]
    try:
        cost = np.asarray(value, dtype=float)
    except (TypeError, ValueError):
        cost = np.zeros(0)
    if cost.shape != orders.shape or (isinstance(value, list) and any(isinstance(v, bool) for v in value)):
        raise _fail(path, f"entry {seq}", f"{key} must be a list of {orders.size} numbers (one per order)")
    for bad, rule in ((~np.isfinite(cost), "non-finite"), (cost < 0, "negative")):
        if bad.any():
            k = int(np.argmax(bad))
            what = f"{COST_KEYS[key]} cost is {rule} ({float(cost[k])!r}) at order {orders[k]:g}"
            raise _fail(path, f"entry {seq}", what)
    return cost


def check_chain(path: Path, journal: Any, spec: JournalSpec) -> list[tuple[FloatArray, FloatArray]]:
    """Check the structure, sequence, counts, costs and hash chain of ``journal``.

    Returns the recorded ``(data-dependent, data-independent)`` cost curves of the entries, in order.
    """
    if not isinstance(journal, list):
        raise _fail(path, "history", f"must be a list of journal entries, got {type(journal).__name__}")
    costs: list[tuple[FloatArray, FloatArray]] = []
    prev = spec.genesis
    for position, entry in enumerate(journal, start=1):
        if not isinstance(entry, dict):
            raise _fail(path, f"entry at position {position}", "is not a JSON object")
        missing = [key for key in _ENTRY_KEYS if key not in entry]
        if missing:
            raise _fail(path, f"entry at position {position}", f"is missing {', '.join(missing)}")
        seq = entry["seq"]
        if seq != position:
            raise _fail(path, f"entry {seq!r}", f"it is at position {position} of the journal: an entry was "
                        "deleted or the entries were reordered")
        n_offered, n_accepted, n_answered = (_count(path, seq, entry, key)
                                             for key in ("n_offered", "n_accepted", "n_answered"))
        if not n_answered <= n_accepted <= n_offered:
            raise _fail(path, f"entry {seq}", f"counts out of order: n_offered {n_offered}, n_accepted "
                        f"{n_accepted}, n_answered {n_answered}")
        dd, di = (_cost(path, seq, entry, key, spec.orders) for key in COST_KEYS)
        costs.append((dd, di))
        if entry["prev_hash"] != prev:
            after = "the ledger's settings and order grid" if seq == 1 else f"entry {seq - 1}"
            raise _fail(path, f"entry {seq}", f"prev_hash does not match {after}")
        try:
            digest = entry_hash(entry)
        except ValueError as err:  # a NaN or infinity elsewhere in the entry
            raise _fail(path, f"entry {seq}", f"holds a non-finite number ({err})") from err
        if entry["hash"] != digest:
            raise _fail(path, f"entry {seq}", "hash does not match its content (the entry was edited)")
        prev = digest
    return costs


def check_extends(path: Path, journal: Sequence[dict[str, Any]], known: Sequence[dict[str, Any]]) -> None:
    """Refuse a chain-checked ``journal`` that does not extend ``known``, the journal last written or adopted.

    Raises
    ------
    LedgerIntegrityError
        If the file's sequence is behind ``known`` (rolled back to an older copy), or its entry at
        ``known``'s sequence is another one (rewritten).
    """
    if not known:
        return
    if len(journal) < len(known):
        raise LedgerIntegrityError(
            f"{path}: file sequence {len(journal)} is behind the {len(known)} this ledger last wrote or "
            "adopted: rollback refused (restore the newer file or start a new ledger)")
    if journal[len(known) - 1]["hash"] != known[-1]["hash"]:
        raise LedgerIntegrityError(
            f"{path}: entry {len(known)} is not the one this ledger last wrote or adopted: the journal "
            "was rewritten, refused")


def _close(a: Any, b: Any) -> npt.NDArray[np.bool_]:
    return np.isclose(a, b, rtol=_RECOMPUTE_RTOL, atol=_RECOMPUTE_ATOL)


def _check_rows(path: Path, entry: dict[str, Any], rows: LedgerRows, start: int,
                recorded: tuple[FloatArray, FloatArray], spec: JournalSpec, recompute: bool) -> None:
    """Check one entry against its rows ``start..`` of the row store: digest, counts and (if
    ``recompute``) the costs recomputed from its votes."""
    seq, n = entry["seq"], len(rows)
    if n == 0:
        if entry["rows_sha256"] is not None:
            raise _fail(path, f"entry {seq}", "accepts no query but pins rows")
        return
    if entry["rows_sha256"] != rows_digest(rows):
        pinned = str(entry["rows_sha256"])[:12]
        raise _fail(path, f"entry {seq}", f"vote sidecar does not match the ledger: its rows {start}.."
                    f"{start + n - 1} do not hash to the entry's rows_sha256 {pinned}...")
    if int(rows.answered.sum()) != entry["n_answered"]:
        raise _fail(path, f"entry {seq}", f"n_answered {entry['n_answered']} != its "
                    f"{int(rows.answered.sum())} answered rows")
    if not recompute:
        return
    try:
        per_query = spec.costs(rows.votes, rows.answered)
    except ValueError as err:
        raise _fail(path, f"entry {seq}", f"its charged rows are invalid ({err})") from err
    for what, cost, mine in zip(COST_KEYS.values(), recorded, per_query, strict=True):
        again = np.cumsum(mine, axis=0)[-1]  # the batch's cost as the ledger sums it
        differs = ~_close(cost, again)
        if differs.any():
            k = int(np.argmax(differs))
            raise _fail(path, f"entry {seq}", f"recorded {what} cost {cost[k]:.6g} != {again[k]:.6g} "
                        f"recomputed from its votes (at order {spec.orders[k]:g})")


def verify_journal(
    path: Path, stored: dict[str, Any], spec: JournalSpec, read_rows: Callable[[int], LedgerRows],
    known: Sequence[dict[str, Any]] = (),
) -> tuple[JournalTotals, LedgerRows]:
    """Verify the journal of ``stored`` and recompute its totals; return them and its rows.

    ``read_rows(n)`` reads the first ``n`` rows of the row store. ``known`` is the journal this
    process last wrote or adopted: its entries, already verified, skip the cost recomputation, and
    the file, once found consistent, must extend it (:func:`check_extends`).

    Raises
    ------
    LedgerIntegrityError
        Naming the file, the entry and what does not match.
    """
    journal: list[dict[str, Any]] = stored["history"]
    costs = check_chain(path, journal, spec)
    rows = read_rows(sum(entry["n_accepted"] for entry in journal))
    total_dd, total_di = np.zeros_like(spec.orders), np.zeros_like(spec.orders)
    checked = answered = start = 0
    exhausted, eps_released = False, None
    for i, (entry, recorded) in enumerate(zip(journal, costs, strict=True)):
        seq, n_accepted = entry["seq"], entry["n_accepted"]
        if exhausted:
            raise _fail(path, f"entry {seq}", f"follows entry {seq - 1}, which exhausted the budget")
        exhausted = entry["exhausted"]
        if not isinstance(exhausted, bool) or (n_accepted < entry["n_offered"] and not exhausted):
            raise _fail(path, f"entry {seq}", f"exhausted is {exhausted!r} but {n_accepted} of "
                        f"{entry['n_offered']} queries were accepted")
        recompute = not (i < len(known) and known[i]["hash"] == entry["hash"])
        _check_rows(path, entry, rows[start:start + n_accepted], start, recorded, spec, recompute)
        start += n_accepted
        total_dd, total_di = total_dd + recorded[0], total_di + recorded[1]  # as the ledger adds them
        checked, answered = checked + n_accepted, answered + entry["n_answered"]
        for key, total in (("data_dependent", total_dd), ("data_independent", total_di)):
            eps, value = spec.spent(total, checked)[0], entry[f"epsilon_{key}"]
            if isinstance(value, bool) or not isinstance(value, float | int) or not _close(value, eps):
                raise _fail(path, f"entry {seq}", f"recorded epsilon_{key} {value!r} != {eps:.6g} "
                            "recomputed from its totals")
            if key == spec.budget_on and eps > spec.budget * (1 + _RECOMPUTE_RTOL):
                raise _fail(path, f"entry {seq}", f"ε {eps:.6g} ({key}) exceeds the epsilon_budget "
                            f"{spec.budget}")
        eps_released = entry.get("epsilon_released")
    _check_totals(path, stored, spec, len(journal), (total_dd, total_di, checked, answered, exhausted))
    if spec.budget_on == "released" and stored.get("epsilon_released") != eps_released:
        raise _fail(path, f"entry {len(journal)}", "recorded epsilon_released "
                    f"{stored.get('epsilon_released')!r} != {eps_released!r} of the last entry")
    check_extends(path, journal, known)  # last: a consistent file that is merely stale or another one
    return JournalTotals(total_dd, total_di, checked, answered, exhausted, eps_released), rows


def _check_totals(path: Path, stored: dict[str, Any], spec: JournalSpec, n_entries: int,
                  recomputed: tuple[FloatArray, FloatArray, int, int, bool]) -> None:
    """Refuse recorded totals that are not exactly what the entries add up to."""
    where = f"entry {n_entries}" if n_entries else "no entries"
    total_dd, total_di, checked, answered, exhausted = recomputed
    for key, again in (("rdp_data_dependent", total_dd), ("rdp_data_independent", total_di)):
        try:
            recorded = np.asarray(stored[key], dtype=float)
        except (TypeError, ValueError):
            recorded = np.zeros(0)
        if recorded.shape != again.shape:
            raise _fail(path, where, f"recorded total {key} must be {again.size} numbers, one per order")
        differs = ~(recorded == again)  # exact: the same float additions in the same order; NaN differs
        if differs.any():
            k = int(np.argmax(differs))
            eps_recorded = spec.spent(recorded, checked)[0] if np.isfinite(recorded).all() else math.nan
            raise _fail(path, where, f"recorded total {key} {recorded[k]:.6g} != recomputed {again[k]:.6g} "
                        f"at order {spec.orders[k]:g} (ε {eps_recorded:.6g} recorded, "
                        f"{spec.spent(again, checked)[0]:.6g} recomputed)")
    counts = {"queries_checked": checked, "queries_answered": answered, "exhausted": exhausted}
    for key, again in counts.items():
        if stored[key] != again or isinstance(stored[key], bool) != isinstance(again, bool):
            raise _fail(path, where, f"recorded {key} {stored[key]!r} != recomputed {again!r}")
