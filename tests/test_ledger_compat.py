"""Ledger files written before the vote-release seam (tests/data/ledgers_v1) still load and verify."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from strategies.privacy_ledger import LedgerIntegrityError, PrivacyLedger

V1 = Path(__file__).parent / "data" / "ledgers_v1"
EXPECTED = json.loads((V1 / "expected.json").read_text())
RUN = {"dataset": "digits", "num_teachers": 10, "seed": 3}


def copied(tmp_path: Path, kind: str) -> Path:
    for source in V1.glob(f"{kind}.json*"):
        shutil.copy(source, tmp_path / source.name)
    return tmp_path / f"{kind}.json"


def load(path: Path, kind: str) -> PrivacyLedger:
    return PrivacyLedger.load(path)


@pytest.mark.parametrize("kind", sorted(EXPECTED))
def test_a_v1_ledger_loads_verifies_and_reports_what_it_recorded(tmp_path, kind):
    path = copied(tmp_path, kind)
    ledger = load(path, kind)
    expected = EXPECTED[kind]
    assert ledger.queries_checked == expected["queries_checked"]
    assert ledger.epsilon() == expected["epsilon"]  # exactly: the same costs, recomputed and checked
    ids, labels = ledger.paid_labels()
    assert ids.tolist() == expected["paid_ids"] and labels.tolist() == expected["paid_labels"]
    ledger.bind_pool("ab" * 32)
    if "release" in expected:
        assert ledger.release(np.random.default_rng(1)) == expected["release"]  # recorded, not redrawn


@pytest.mark.parametrize("kind", sorted(EXPECTED))
def test_a_v1_ledger_refuses_an_edit(tmp_path, kind):
    path = copied(tmp_path, kind)
    stored = json.loads(path.read_text())
    stored["history"][0]["n_accepted"] += 1
    path.write_text(json.dumps(stored))
    with pytest.raises(ValueError):
        load(path, kind)


@pytest.mark.parametrize(("edit", "error"), [
    ({"queries_checked": 0}, "queries_checked 0 differs from the 7"),
    ({"n_classes": 100}, "n_classes 100 differs from the 3 its entries were charged at"),
    ({"n_accepted": 2}, "entry at position 1 is out of sequence, edited"),
])
def test_a_v1_local_rr_journal_is_checked_as_its_writer_did(tmp_path, edit, error):
    path = copied(tmp_path, "local_rr")
    stored = json.loads(path.read_text())
    for key, value in edit.items():
        (stored["history"][0] if key == "n_accepted" else stored)[key] = value
    path.write_text(json.dumps(stored))
    with pytest.raises(LedgerIntegrityError, match=error):
        PrivacyLedger.load(path)


def test_a_v1_local_rr_journal_is_not_extended(tmp_path):
    ledger = PrivacyLedger.load(copied(tmp_path, "local_rr"))
    with pytest.raises(ValueError, match="loads and verifies but is not extended"):
        ledger.charge(np.ones((1, 3)))
