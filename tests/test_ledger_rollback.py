"""Fail closed across processes: a ledger behind its head log, deleted, cut back, or of another run is refused."""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from strategies.accounting import PrivacyLedger
from strategies.ledger_anchor import LedgerRollbackError, head_path, read_head
from strategies.ledger_sidecar import sidecar_path
from tests.ledger_helpers import batch, charge_all, local_rr_ledger, make_ledger

pytestmark = pytest.mark.filterwarnings("ignore::strategies.accounting.PrivacyWarning")

RUN = {"data": {"dataset": "digits", "seed": 0, "query_fraction": 0.2}, "teacher_nodes": 2}


def _reset_by_hand(path: Path) -> None:
    """The plain edit of the issue: history emptied, totals and counts zeroed, nothing re-hashed."""
    stored = json.loads(path.read_text())
    stored.update(history=[], queries_checked=0, queries_answered=0, exhausted=False,
                  rdp_data_dependent=[0.0] * len(stored["orders"]),
                  rdp_data_independent=[0.0] * len(stored["orders"]))
    path.write_text(json.dumps(stored))


def _restore_backup(path: Path) -> None:
    """A copy taken after the first charge is put back after the third."""
    backup = path.with_name("backup")
    shutil.copy(backup / path.name, path)
    shutil.copy(backup / sidecar_path(path).name, sidecar_path(path))


def _delete_json(path: Path) -> None:
    path.unlink()


def _reset_and_delete_head(path: Path) -> None:
    _reset_by_hand(path)
    head_path(path).unlink()


def _garble_head(path: Path) -> None:
    head_path(path).write_text("1 not-a-hash\n")


def _other_journal(path: Path) -> None:
    """Another ledger's complete, consistent journal (same settings, charges in another order) and its row
    store, copied over this one's."""
    other = path.with_name("other.json")
    charge_all(make_ledger(other), [1, 0, 2])
    shutil.copy(other, path)
    shutil.copy(sidecar_path(other), sidecar_path(path))


@pytest.mark.parametrize(("change", "expected"), [
    (_reset_by_hand, r"the journal has 0 entries but its head log records entry 3 \(.*\): the file was rolled "
                     r"back to an older copy or reset; restore the newest copy of ledger.json"),
    (_restore_backup, r"the journal has 1 entries but its head log records entry 3"),
    (_delete_json, r"the ledger file is missing but ledger.json.votes.npz, ledger.json.head remain: it was "
                   r"deleted after charges"),
    (_reset_and_delete_head, r"its row store holds 9 charged queries but its journal pins only 0, and there is "
                             r"no head log to tell a crash from an edit"),
    (_garble_head, r"ledger.json.head: line 1 is '1 not-a-hash', expected '1 <sha256>'"),
], ids=["plain-edit-reset", "backup-restored", "json-deleted", "reset-and-head-deleted", "head-garbled"])
def test_a_new_process_refuses_a_ledger_behind_its_head(tmp_path: Path, change: Callable[[Path], None],
                                                         expected: str) -> None:
    # Prepare: three charges by a process that is gone; a backup after the first
    path = tmp_path / "ledger.json"
    (tmp_path / "backup").mkdir()
    ledger = make_ledger(path)
    charge_all(ledger, [0])
    for f in (path, sidecar_path(path)):
        shutil.copy(f, tmp_path / "backup" / f.name)
    charge_all(ledger, [1, 2])
    # Execute
    change(path)
    # Assert: refused, with the recovery steps, and nothing written
    before = {p.name: p.read_bytes() for p in tmp_path.iterdir() if p.is_file()}
    with pytest.raises(LedgerRollbackError, match=expected) as err:
        make_ledger(path)
    assert "move ledger.json and its .votes.npz and .head aside" in str(err.value)
    assert {p.name: p.read_bytes() for p in tmp_path.iterdir() if p.is_file()} == before


def test_the_head_log_records_every_entry_and_is_owner_only(tmp_path: Path) -> None:
    path = tmp_path / "ledger.json"
    ledger = make_ledger(path)
    charge_all(ledger)
    assert [h for _, h in read_head(path)] == [e["hash"] for e in ledger.history]
    assert head_path(path).stat().st_mode & 0o777 == 0o600
    assert make_ledger(path).queries_checked == 9  # the real file loads


def test_a_crash_between_the_commit_and_the_head_append_loses_nothing(tmp_path: Path, monkeypatch) -> None:
    # Prepare: the JSON of charge 2 is committed, the process dies before appending to the head log
    path = tmp_path / "ledger.json"
    charge_all(make_ledger(path), [0])
    import strategies.privacy_ledger as privacy_ledger

    def die(*_: Any) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(privacy_ledger, "append_head", die)
    with pytest.raises(KeyboardInterrupt):
        make_ledger(path).charge(**batch(1, 3))
    monkeypatch.undo()
    # Execute: the next process adopts the JSON, ahead of its head by one entry, and charges on
    resumed = make_ledger(path)
    assert resumed.queries_checked == 5 and len(read_head(path)) == 1
    resumed.charge(**batch(2, 5))
    # Assert: the head caught up with every entry
    assert [h for _, h in read_head(path)] == [e["hash"] for e in resumed.history] and len(resumed.history) == 3


def test_a_ledger_of_another_journal_of_the_same_length_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "ledger.json"
    charge_all(make_ledger(path))
    _other_journal(path)
    with pytest.raises(LedgerRollbackError, match="entry 1 has hash .* but its head log recorded .*: the journal "
                                                  "was rewritten or belongs to another ledger"):
        make_ledger(path)


@pytest.mark.parametrize(("theirs", "expected"), [
    ({**RUN, "data": {**RUN["data"], "seed": 1}}, "stored ledger has run.data.seed=0, but this ledger was "
                                                  "created with run.data.seed=1"),
    ({**RUN, "data": {**RUN["data"], "dataset": "mnist1d"}}, "run.data.dataset='digits', but .* "
                                                             "run.data.dataset='mnist1d'"),
    ({**RUN, "data": {**RUN["data"], "query_fraction": 0.1}}, "run.data.query_fraction=0.2, but"),
    ({**RUN, "teacher_nodes": 3}, "run.teacher_nodes=2, but this ledger was created with run.teacher_nodes=3"),
], ids=["seed", "dataset", "query-fraction", "teacher-nodes"])
def test_a_ledger_resumed_by_another_run_is_refused_naming_the_setting(
        tmp_path: Path, theirs: dict[str, Any], expected: str) -> None:
    path = tmp_path / "ledger.json"
    charge_all(make_ledger(path, run=RUN))
    with pytest.raises(ValueError, match=expected):
        make_ledger(path, run=theirs)
    assert make_ledger(path, run=RUN).queries_checked == 9
    assert PrivacyLedger.load(path).queries_checked == 9  # reading it needs no run


def test_a_ledger_bound_to_no_run_is_not_resumed_by_a_run(tmp_path: Path) -> None:
    path = tmp_path / "ledger.json"
    charge_all(make_ledger(path))  # written as before ledgers recorded their run
    with pytest.raises(ValueError, match="stored ledger is bound to no run .* no run can resume it"):
        make_ledger(path, run=RUN)
    with pytest.raises(TypeError, match="run must be a dict of the run's settings or None, got list"):
        make_ledger(tmp_path / "new.json", run=[1])  # type: ignore[arg-type]


def _rr(path: Path, **overrides: Any) -> PrivacyLedger:
    return local_rr_ledger(**{"epsilon": 1.0, "delta": 1e-5, "epsilon_budget": 8.0, "path": path, **overrides})


def _rr_votes(n: int) -> np.ndarray:
    return np.tile([[3.0, 1.0, 0.0]], (n, 1))


def test_local_rr_ledger_binds_its_class_count_and_run_and_refuses_rollbacks(tmp_path: Path) -> None:
    path = tmp_path / "rr.json"
    ledger = _rr(path, run=RUN)
    ledger.charge(_rr_votes(4), labels=np.zeros(4, dtype=int), query_ids=np.arange(4))
    spent = ledger.epsilon()["data_independent"]
    # the class count is in the row store the chain pins (a v1 journal's n_classes: tests/test_ledger_compat.py)
    assert _rr(path, run=RUN).epsilon()["data_independent"] == spent
    # another run, a rollback by hand, a deleted JSON
    with pytest.raises(ValueError, match="run.data.seed=0, but this ledger was created with run.data.seed=1"):
        _rr(path, run={**RUN, "data": {**RUN["data"], "seed": 1}})
    _reset_by_hand(path)
    with pytest.raises(LedgerRollbackError, match="the journal has 0 entries but its head log records entry 1"):
        _rr(path, run=RUN)
    path.unlink()
    with pytest.raises(LedgerRollbackError, match="the ledger file is missing but rr.json.votes.npz, rr.json.head remain"):
        _rr(path, run=RUN)


@pytest.mark.parametrize(("epsilon", "expected"), [
    (1000.0, "epsilon must be <= 50 \\(beyond it votes are practically never randomised and e\\^epsilon "
             "overflows\\), got 1000.0"),
    (float("nan"), "epsilon must be a finite number > 0, got nan"),
    (True, "epsilon must be a number, got True"),
])
def test_local_rr_epsilon_is_bounded_before_the_math_overflows(tmp_path: Path, epsilon: Any, expected: str) -> None:
    with pytest.raises((ValueError, TypeError), match=expected):
        _rr(tmp_path / "rr.json", epsilon=epsilon)


@pytest.mark.parametrize(("override", "expected"), [
    ("data.seed=1", "stored ledger has run.data.seed=0, but this ledger was created with run.data.seed=1"),
    ("data.query_fraction=0.1", "run.data.query_fraction=0.2, but this ledger was created with "
                                "run.data.query_fraction=0.1"),
    ("dataset=mnist1d noise=digits", "run.data.dataset='digits', but this ledger was created with run.data.dataset='mnist1d'"),
    ("teacher.epochs=3", "run.teacher.epochs="),
    ("federation.teacher_nodes=3", "run.teacher_nodes=2, but this ledger was created with run.teacher_nodes=3"),
], ids=["seed", "query-fraction", "dataset", "teacher-training", "teacher-assignment"])
def test_run_resume_refuses_a_ledger_of_other_data_or_teachers(tmp_path: Path, override: str, expected: str) -> None:
    from simulations.pate_config import compose_config
    from simulations.pate_server import build_ledger

    base = (f"run.output_dir={tmp_path}", "dataset=digits", "strategy.mechanism=gnmax")
    ledger = build_ledger(compose_config(*base))
    ledger.charge(np.array([[20.0] + [0.0] * 9]), labels=np.array([0]), query_ids=np.array([0]))
    with pytest.raises(ValueError, match=expected):
        build_ledger(compose_config(*base, *override.split(), "run.resume=true"))
    assert build_ledger(compose_config(*base, "run.resume=true")).paid_labels()[1].tolist() == [0]


def test_run_resume_false_refuses_any_ledger_file_whatever_its_counts(tmp_path: Path) -> None:
    from simulations.pate_config import compose_config
    from simulations.pate_server import build_ledger

    config = compose_config(f"run.output_dir={tmp_path}", "dataset=digits", "strategy.mechanism=gnmax")
    build_ledger(config).charge(np.array([[20.0] + [0.0] * 9]), labels=np.array([0]), query_ids=np.array([0]))
    _reset_by_hand(tmp_path / "privacy_ledger.json")  # the counts now say 0
    with pytest.raises(ValueError, match=r"run.resume=False: the ledger .* already holds 0 charged queries of an "
                                         r"earlier run \(files: privacy_ledger.json, privacy_ledger.json.votes.npz, "
                                         r"privacy_ledger.json.head\)"):
        build_ledger(config)
    (tmp_path / "privacy_ledger.json").unlink()  # only the row store and head log are left
    with pytest.raises(ValueError, match=r"already holds charges \(its file is missing or unreadable\)"):
        build_ledger(config)


def _write(name: str, data: bytes) -> Callable[[Path], None]:
    def change(folder: Path) -> None:
        (folder / name).write_bytes(data)
    return change


def _truncate_sidecar(folder: Path) -> None:
    sidecar = folder / "privacy_ledger.json.votes.npz"
    sidecar.write_bytes(sidecar.read_bytes()[:40])


def _config_to_list(folder: Path) -> None:
    path = folder / "privacy_ledger.json"
    stored = json.loads(path.read_text())
    stored["config"] = [1, 2]
    path.write_text(json.dumps(stored))


@pytest.mark.parametrize(("change", "expected"), [
    (_write("privacy_ledger.json", b""), r"privacy_ledger.json: not a privacy ledger \(empty\); if a crash cut it"),
    (_write("privacy_ledger.json", b'{"format_version": 2, "con'), r"not a privacy ledger \(not valid JSON: "),
    (_write("privacy_ledger.json", b"\xff\xfe"), r"not a privacy ledger \(not UTF-8 text"),
    (_config_to_list, r"privacy ledger's config must be a JSON object, got list"),
    (_truncate_sidecar, r"privacy_ledger.json.votes.npz: not a readable vote sidecar \((BadZipFile|EOFError|OSError"
                        r"|ValueError)"),
], ids=["empty", "truncated-json", "not-utf8", "config-a-list", "truncated-sidecar"])
def test_a_damaged_ledger_file_is_one_clear_error(tmp_path: Path, change: Callable[[Path], None],
                                                    expected: str) -> None:
    from simulations.pate_config import compose_config
    from simulations.pate_server import build_ledger

    base = (f"run.output_dir={tmp_path}", "dataset=digits", "strategy.mechanism=gnmax")
    build_ledger(compose_config(*base)).charge(np.array([[20.0] + [0.0] * 9]), labels=np.array([0]),
                                               query_ids=np.array([0]))
    change(tmp_path)
    with pytest.raises(ValueError, match=expected):
        build_ledger(compose_config(*base, "run.resume=true"))


@pytest.mark.parametrize(("ledger_path", "expected"), [
    ("{tmp}", r"run.ledger_path='.*': is a directory; name the ledger file"),
    ("{tmp}/file/ledger.json", r"the ledger's folder .*/file cannot be created: "),
], ids=["a-directory", "under-a-file"])
def test_an_unusable_ledger_path_is_refused_before_the_run(tmp_path: Path, ledger_path: str, expected: str) -> None:
    from simulations.pate_config import compose_config
    from simulations.pate_server import build_ledger

    (tmp_path / "file").write_text("not a folder")
    with pytest.raises(ValueError, match=expected):
        build_ledger(compose_config(f"run.output_dir={tmp_path}", "dataset=digits",
                                    f"run.ledger_path={ledger_path.format(tmp=tmp_path)}"))


def test_local_rr_refuses_repeated_query_ids_before_any_charge(tmp_path: Path) -> None:
    ledger = _rr(tmp_path / "rr.json")
    with pytest.raises(ValueError, match="query_ids must be distinct within a batch, got id 7 at indices 0 and 2"):
        ledger.charge(_rr_votes(3), labels=np.zeros(3, dtype=int), query_ids=np.array([7, 1, 7]))
    assert ledger.queries_checked == 0 and not (tmp_path / "rr.json").exists()
