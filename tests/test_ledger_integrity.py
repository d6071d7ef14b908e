"""The privacy ledger's journal integrity, rollback refusal, owner-only files and its label store.

Each refusal is a named case: the file is tampered with the way a user (or a bad restore) would, and
both a fresh ``PrivacyLedger.load`` and a live ledger's next charge must refuse it with a
``LedgerIntegrityError`` naming the file, the entry and what is wrong, without overwriting it.
"""

from __future__ import annotations

import json
import os
import shutil
import stat
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from strategies import ledger_store, privacy_ledger
from strategies.accounting import LedgerIntegrityError, PrivacyLedger
from strategies.ledger_anchor import LedgerRollbackError
from strategies.ledger_journal import entry_hash, genesis_hash
from strategies.ledger_sidecar import sidecar_path
from tests.ledger_helpers import batch, charge_all, make_ledger

pytestmark = pytest.mark.filterwarnings("ignore::strategies.accounting.PrivacyWarning")

@pytest.fixture
def journal(tmp_path: Path) -> Path:
    """A ledger file with three charges (entries 1..3), written by a ledger that is gone."""
    path = tmp_path / "ledger.json"
    charge_all(make_ledger(path))
    return path


def rechain(stored: dict[str, Any]) -> None:
    """Re-seal every entry's prev_hash and hash, as a forger who knows the format would."""
    prev = genesis_hash(stored["format_version"], stored["config"], stored["orders"])
    for entry in stored["history"]:
        entry["prev_hash"] = prev
        entry["hash"] = prev = entry_hash(entry)


def edit(path: Path, change: Callable[[dict[str, Any]], None]) -> None:
    stored = json.loads(path.read_text())
    change(stored)
    path.write_text(json.dumps(stored, indent=1))  # NaN is written as NaN, as a careless editor would


def _set(key: str, value: Callable[[Any], Any]) -> Callable[[dict[str, Any]], None]:
    def change(stored: dict[str, Any]) -> None:
        stored[key] = value(stored[key])
    return change


def _entry(seq: int, key: str, value: Callable[[Any], Any], *, reseal: bool = False) -> Callable[[dict], None]:
    def change(stored: dict[str, Any]) -> None:
        entry = stored["history"][seq - 1]
        entry[key] = value(entry[key])
        if reseal:
            rechain(stored)
    return change


def _delete(seq: int) -> Callable[[dict[str, Any]], None]:
    return lambda stored: stored["history"].pop(seq - 1)


def _swap(stored: dict[str, Any]) -> None:
    h = stored["history"]
    h[1], h[2] = h[2], h[1]


def _halve_totals(stored: dict[str, Any]) -> None:
    for key in ("rdp_data_dependent", "rdp_data_independent"):
        stored[key] = [v / 2 for v in stored[key]]


def _first(values: list[float], new: float) -> list[float]:
    return [new, *values[1:]]


TAMPERING = [
    # the user's findings: totals edited with the history kept
    pytest.param(_set("rdp_data_dependent", lambda v: [-1e6] * len(v)),
                 r"entry 3: recorded total rdp_data_dependent -1e\+06 != recomputed .* \(ε -1e\+06 recorded",
                 id="totals-negative"),
    pytest.param(_set("rdp_data_dependent", lambda v: [0.0] * len(v)),
                 r"entry 3: recorded total rdp_data_dependent 0 != recomputed", id="totals-zeroed"),
    pytest.param(_halve_totals, r"entry 3: recorded total rdp_data_dependent .* != recomputed", id="totals-halved"),
    pytest.param(_set("queries_checked", lambda v: v - 3), r"entry 3: recorded queries_checked 6 != recomputed 9",
                 id="checked-count-edited"),
    pytest.param(_set("exhausted", lambda v: True), r"entry 3: recorded exhausted True != recomputed False",
                 id="exhausted-edited"),
    # the journal itself
    pytest.param(_delete(2), r"entry 3: it is at position 2 of the journal: an entry was deleted or the "
                 "entries were reordered", id="entry-deleted"),
    pytest.param(_delete(3), r"entry 2: recorded total rdp_data_dependent .* != recomputed", id="last-entry-deleted"),
    pytest.param(_swap, r"entry 3: it is at position 2 of the journal", id="entries-reordered"),
    pytest.param(_entry(2, "cost_data_dependent", lambda v: [x / 2 for x in v]),
                 r"entry 2: hash does not match its content \(the entry was edited\)", id="cost-edited"),
    pytest.param(_entry(2, "cost_data_dependent", lambda v: [x / 2 for x in v], reseal=True),
                 r"entry 2: recorded data-dependent cost .* != .* recomputed from its votes \(at order 2\)",
                 id="cost-edited-and-chain-resealed"),
    pytest.param(_entry(2, "cost_data_independent", lambda v: _first(v, float("nan"))),
                 r"entry 2: data-independent cost is non-finite \(nan\) at order 2", id="cost-nan"),
    pytest.param(_entry(1, "cost_data_dependent", lambda v: _first(v, -0.5)),
                 r"entry 1: data-dependent cost is negative \(-0.5\) at order 2", id="cost-negative"),
    pytest.param(_entry(3, "cost_data_dependent", lambda v: _first(v, float("inf"))),
                 r"entry 3: data-dependent cost is non-finite \(inf\)", id="cost-infinite"),
    pytest.param(_entry(2, "prev_hash", lambda v: "0" * 64), r"entry 2: prev_hash does not match entry 1",
                 id="chain-broken"),
    pytest.param(_entry(3, "epsilon_data_dependent", lambda v: v / 2, reseal=True),
                 r"entry 3: recorded epsilon_data_dependent .* != .* recomputed from its totals",
                 id="recorded-epsilon-edited-and-resealed"),
    pytest.param(_entry(1, "n_answered", lambda v: v - 1, reseal=True),
                 r"entry 1: n_answered 1 != its 2 answered rows", id="answered-count-resealed"),
    pytest.param(_entry(1, "n_accepted", lambda v: "3"), r"entry 1: n_accepted must be an integer >= 0, got '3'",
                 id="count-not-an-integer"),
]


@pytest.mark.parametrize(("change", "match"), TAMPERING)
def test_a_tampered_journal_is_refused_by_load_and_by_a_live_ledger(
    journal: Path, change: Callable[[dict[str, Any]], None], match: str
) -> None:
    # Prepare: a live ledger that adopted the file, then the file is tampered with
    live = make_ledger(journal)
    edit(journal, change)
    tampered = journal.read_bytes()

    # Execute / Assert
    for attempt in (lambda: PrivacyLedger.load(journal), lambda: make_ledger(journal),
                    lambda: live.charge(**batch(0, 100))):
        with pytest.raises(LedgerIntegrityError, match=match) as caught:
            attempt()
        assert str(journal) in str(caught.value) and "refusing this ledger file" in str(caught.value)
    assert journal.read_bytes() == tampered  # never overwritten
    assert live.queries_checked == 9  # nothing adopted


def test_edited_settings_break_the_chain_at_entry_1(journal: Path) -> None:
    # Raising the budget in the file, then loading it with the file's own settings
    edit(journal, lambda stored: stored["config"].update(epsilon_budget=1000.0))
    with pytest.raises(LedgerIntegrityError, match=r"entry 1: prev_hash does not match the ledger's settings"):
        PrivacyLedger.load(journal)


@pytest.mark.parametrize("target", ["votes", "labels", "query_ids"])
def test_an_edited_row_store_is_refused_even_for_entries_already_verified(journal: Path, target: str) -> None:
    # Prepare: a live ledger has verified entries 1..3; then one row of its row store is edited
    live = make_ledger(journal)
    store = sidecar_path(journal)
    with np.load(store) as data:
        arrays = {key: data[key].copy() for key in data.files}
    arrays[target][3] = np.roll(arrays[target][3], 1) if target == "votes" else 7
    np.savez(store, **arrays)

    # Execute / Assert: entry 2 holds rows 3..4
    match = r"entry 2: vote sidecar does not match the ledger: its rows 3..4 do not hash"
    for attempt in (lambda: PrivacyLedger.load(journal), lambda: live.charge(**batch(0))):
        with pytest.raises(LedgerIntegrityError, match=match):
            attempt()


# ---------------------------------------------------------------------------------------------------
# Rollback: a live ledger refuses a file behind what it last wrote or adopted
# ---------------------------------------------------------------------------------------------------


def test_a_live_ledger_refuses_a_file_rolled_back_to_an_older_copy(tmp_path: Path) -> None:
    # Prepare: the live run writes entry 1, a backup is taken, it writes entries 2 and 3
    path, backup = tmp_path / "ledger.json", tmp_path / "backup"
    backup.mkdir()
    live = make_ledger(path)
    charge_all(live, [0])
    for f in (path, sidecar_path(path)):
        shutil.copy(f, backup / f.name)
    charge_all(live, [1, 2])
    assert live.queries_checked == 9

    # Execute: the file is restored from the backup, then the live run charges again
    for f in (path, sidecar_path(path)):
        shutil.copy(backup / f.name, f)
    with pytest.raises(LedgerIntegrityError,
                       match=r"file sequence 1 is behind the 3 this ledger last wrote or adopted: rollback refused"):
        live.charge(**batch(0, 100))

    # Assert: the old copy is not overwritten, the live ledger keeps its 9 checked queries (not 3 + 3)
    assert json.loads(path.read_text())["queries_checked"] == 3
    assert live.queries_checked == 9 and len(live.history) == 3
    # A new process refuses the complete older copy too: it is behind the head log (strategies.ledger_anchor)
    with pytest.raises(LedgerRollbackError, match="the journal has 1 entries but its head log records entry 3"):
        PrivacyLedger.load(path)


def test_a_live_ledger_refuses_a_journal_rewritten_to_the_same_length(tmp_path: Path) -> None:
    # Prepare: another run's ledger of the same settings and length is copied over this one
    path, other = tmp_path / "ledger.json", tmp_path / "other" / "ledger.json"
    other.parent.mkdir()
    live = make_ledger(path)
    charge_all(live, [0, 1])
    charge_all(make_ledger(other), [1, 0])
    for f in (other, sidecar_path(other)):
        shutil.copy(f, path.parent / f.name)

    # Execute / Assert
    with pytest.raises(LedgerIntegrityError, match=r"entry 2 is not the one this ledger last wrote or adopted"):
        live.charge(**batch(2))


def test_a_live_ledger_still_adopts_what_another_process_appended(tmp_path: Path) -> None:
    path = tmp_path / "ledger.json"
    first, second = make_ledger(path), make_ledger(path)
    first.charge(**batch(0))
    second.charge(**batch(1, 3))
    first.charge(**batch(2, 5))
    assert first.queries_checked == PrivacyLedger.load(path).queries_checked == 9
    assert [e["seq"] for e in first.history] == [1, 2, 3]


# ---------------------------------------------------------------------------------------------------
# ε of an empty ledger
# ---------------------------------------------------------------------------------------------------


def test_an_empty_ledger_reports_epsilon_zero(tmp_path: Path) -> None:
    # Prepare: one order α = 3, σ² = 3, δ = e^-2: a query costs RDP 1 and the δ term is 1.
    hand = {"mechanism": "gnmax", "sigma2": 3.0**0.5, "delta": float(np.exp(-2.0)), "orders": [3.0],
            "budget_on": "data_independent"}
    path = tmp_path / "ledger.json"
    empty = PrivacyLedger(None, epsilon_budget=1.5, **hand)

    # Execute: a budget of 1.5 fits no query (1 + 1 = 2 > 1.5); a budget of 5 fits them
    cut = PrivacyLedger(path, epsilon_budget=1.5, **hand).charge(np.array([[200.0, 50.0]]))
    one = PrivacyLedger(None, epsilon_budget=5.0, **hand).charge(np.array([[200.0, 50.0]]))

    # Assert: ε = 0 before any query (was ln(1/δ)/(α_max - 1) = 1 here), unchanged after one
    assert empty.epsilon()["data_dependent"] == empty.epsilon()["data_independent"] == 0.0
    assert empty.remaining == 1.5
    assert (cut.n_accepted, cut.epsilon_data_independent, cut.epsilon_data_dependent) == (0, 0.0, 0.0)
    assert PrivacyLedger.load(path).epsilon()["data_independent"] == 0.0
    assert one.epsilon_data_independent == pytest.approx(2.0, rel=1e-12)


# ---------------------------------------------------------------------------------------------------
# Files: owner-only from the start, orphan temp files cleaned
# ---------------------------------------------------------------------------------------------------


def test_ledger_files_are_owner_only_from_the_start(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # Prepare: a permissive umask, and a record of how every file is opened and whether chmod is used
    opened: list[tuple[str, int, int]] = []
    real_open = os.open

    def spy_open(file: Any, flags: int, mode: int = 0o777, **kwargs: Any) -> int:
        opened.append((os.fspath(file), flags, mode))
        return real_open(file, flags, mode, **kwargs)

    def no_chmod(*args: Any, **kwargs: Any) -> None:
        raise AssertionError("a ledger file was chmod-ed after it was created")

    monkeypatch.setattr(ledger_store.os, "open", spy_open)
    monkeypatch.setattr(ledger_store.os, "chmod", no_chmod)
    old_umask = os.umask(0)
    try:
        # Execute
        path = tmp_path / "ledger.json"
        charge_all(make_ledger(path))
    finally:
        os.umask(old_umask)

    # Assert
    temps = [(f, flags, mode) for f, flags, mode in opened if f.endswith(".tmp")]
    assert len(temps) == 6  # row store and JSON, three charges
    assert all(mode == 0o600 and flags & os.O_EXCL and flags & os.O_CREAT for _, flags, mode in temps)
    for f in (path, sidecar_path(path), path.with_name("ledger.json.lock"), path.with_name("ledger.json.head")):
        assert stat.S_IMODE(f.stat().st_mode) == 0o600, f


def test_orphan_temp_files_are_cleaned_under_the_lock(journal: Path) -> None:
    # Prepare: two writers were killed between creating their temp file and the rename
    orphans = [journal.with_name(".ledger.json.1a2b3c.tmp"), journal.with_name(".ledger.json.votes.npz.9f8e.tmp")]
    for orphan in orphans:
        orphan.write_text("half-written")
    unrelated = journal.with_name(".other.json.1a2b3c.tmp")
    unrelated.write_text("not ours")

    # Execute
    make_ledger(journal).charge(**batch(0, 100))

    # Assert
    assert not any(orphan.exists() for orphan in orphans)
    assert unrelated.exists()
    assert sorted(p.name for p in journal.parent.iterdir() if not p.name.startswith(".other")) == [
        "ledger.json", "ledger.json.head", "ledger.json.lock", "ledger.json.votes.npz"]


# ---------------------------------------------------------------------------------------------------
# The label store: paid-for labels are kept with their charge
# ---------------------------------------------------------------------------------------------------


def test_paid_labels_are_the_accepted_answered_prefix_and_survive_load(tmp_path: Path) -> None:
    # Prepare: the second batch is cut by the budget (18 queries of 30 teachers at σ1 = 8, σ = 4 fit, not 50)
    path = tmp_path / "ledger.json"
    ledger = PrivacyLedger(path, mechanism="confident_gnmax", delta=1e-5, epsilon_budget=3.0, sigma2=4.0,
                           sigma1=8.0, threshold=20.0)
    votes = np.tile([[30.0, 0.0, 0.0]], (50, 1))
    votes[::3] = [10.0, 10.0, 10.0]  # not confident: unanswered
    answered = votes.max(axis=1) >= 20
    labels = np.where(answered, np.arange(50) % 3, -1)
    ids = 1000 + np.arange(50)

    # Execute
    first = ledger.charge(votes[:4], answered[:4], labels=labels[:4], query_ids=ids[:4])
    second = ledger.charge(votes[4:], answered[4:], labels=labels[4:], query_ids=ids[4:])

    # Assert
    n = 4 + second.n_accepted
    assert first.n_accepted == 4 and 0 < second.n_accepted < 46 and second.exhausted
    keep = answered[:n]
    for view in (ledger, PrivacyLedger.load(path)):
        got_ids, got_labels = view.paid_labels()
        np.testing.assert_array_equal(got_ids, ids[:n][keep])
        np.testing.assert_array_equal(got_labels, labels[:n][keep])
        assert got_ids.dtype == got_labels.dtype == np.int64 and len(got_ids) == view.queries_answered


def test_charges_without_labels_store_none_and_keep_the_old_call_working(tmp_path: Path) -> None:
    path = tmp_path / "ledger.json"
    ledger = make_ledger(path)
    ledger.charge(batch(0)["votes"], batch(0)["answered"])  # today's call
    ledger.charge(**batch(1, 3))
    ids, labels = PrivacyLedger.load(path).paid_labels()
    assert ids.tolist() == [3, 4] and labels.tolist() == [1, 2]
    assert make_ledger(None).paid_labels()[0].shape == (0,)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        pytest.param({"labels": [0, -1, 0]}, r"labels and query_ids must be given together", id="labels-alone"),
        pytest.param({"query_ids": [0, 1, 2]}, r"labels and query_ids must be given together", id="ids-alone"),
        pytest.param({"labels": [0, -1], "query_ids": [0, 1]}, r"labels must be an integer array of shape \(3,\)",
                     id="short"),
        pytest.param({"labels": [0.0, -1.0, 0.0], "query_ids": [0, 1, 2]}, r"got dtype float64", id="floats"),
        pytest.param({"labels": [0, -1, 3], "query_ids": [0, 1, 2]},
                     r"labels of answered queries must be in \[0, 3\), got 3 at index 2", id="not-a-class"),
        pytest.param({"labels": [0, 1, 0], "query_ids": [0, 1, 2]},
                     r"labels of unanswered queries must be -1, got 1 at index 1", id="unanswered-labelled"),
        pytest.param({"labels": [0, -1, 0], "query_ids": [0, -5, 2]}, r"query_ids must be >= 0, got -5 at index 1",
                     id="negative-id"),
    ],
)
def test_charge_rejects_bad_labels_before_charging(tmp_path: Path, kwargs: dict[str, Any], match: str) -> None:
    ledger = make_ledger(tmp_path / "ledger.json")
    with pytest.raises(ValueError, match=match):
        ledger.charge(batch(0)["votes"], batch(0)["answered"], **kwargs)
    assert ledger.queries_checked == 0 and not (tmp_path / "ledger.json").exists()


def test_a_batch_with_another_number_of_classes_is_refused(journal: Path) -> None:
    with pytest.raises(ValueError, match=r"votes must keep the ledger's 3 classes, got 2"):
        make_ledger(journal).charge(np.array([[250.0, 0.0]]), np.array([True]))


@pytest.mark.parametrize("failing", ["atomic_write_json", "write_sidecar"])
def test_labels_and_their_charge_are_written_in_one_step(
    journal: Path, monkeypatch: pytest.MonkeyPatch, failing: str
) -> None:
    # Prepare: a live ledger; the process dies in the JSON write (after the row store was written),
    # or in the row store write (before anything was written)
    ledger = make_ledger(journal)
    before_state, before_labels = ledger.to_dict(), ledger.paid_labels()
    before_json = journal.read_bytes()

    def crash(*args: Any, **kwargs: Any) -> None:
        raise OSError("killed")

    monkeypatch.setattr(privacy_ledger, failing, crash)

    # Execute
    with pytest.raises(OSError, match="killed"):
        ledger.charge(**batch(2, 100))
    monkeypatch.undo()

    # Assert: neither the charge nor its labels happened, in memory or on disk
    assert journal.read_bytes() == before_json
    for view in (ledger, PrivacyLedger.load(journal)):
        assert view.to_dict() == before_state
        for got, want in zip(view.paid_labels(), before_labels, strict=True):
            np.testing.assert_array_equal(got, want)
    if failing == "atomic_write_json":  # the row store holds the unpaid rows; they are ignored
        with np.load(sidecar_path(journal)) as data:
            assert len(data["labels"]) == 9 + 4
    # and the ledger goes on from where it was
    ledger.charge(**batch(2, 100))
    assert PrivacyLedger.load(journal).queries_checked == 13
    assert PrivacyLedger.load(journal).paid_labels()[0][-3:].tolist() == [101, 102, 103]
