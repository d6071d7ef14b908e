"""Ledger files written before the vote-release seam (tests/data/ledgers_v1) still load and verify."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from strategies.fusion import GNMax
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
    stored = json.loads(path.read_text())["config"]
    if "sigma" in stored:  # written before σ2 was named sigma2: read by the new name (issue 23 §1)
        assert ledger.params["sigma2"] == stored["sigma"] and "sigma" not in ledger.params
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


def test_a_v1_ledger_records_the_noise_as_sigma_which_reads_as_sigma2():
    assert json.loads((V1 / "gnmax.json").read_text())["config"]["sigma"] == 40.0  # the file as written
    assert PrivacyLedger.load(V1 / "gnmax.json").params == {"sigma2": 40.0}


def test_a_v1_gnmax_ledger_is_resumed_by_sigma2_and_keeps_the_names_its_hash_chain_binds(tmp_path):
    path = copied(tmp_path, "gnmax")
    ledger = PrivacyLedger.for_mechanism(GNMax(sigma2=40.0), path, delta=1e-5, epsilon_budget=1e3, run=RUN)
    assert ledger.queries_checked == EXPECTED["gnmax"]["queries_checked"]
    ledger.bind_pool("ab" * 32)
    ledger.charge(np.array([[250.0] + [0.0] * 9]), labels=np.array([0]), query_ids=np.array([1000]))
    config = json.loads(path.read_text())["config"]
    assert config["sigma"] == 40.0 and "sigma2" not in config  # its genesis was hashed over these names
    again = PrivacyLedger.load(path)  # verifies the whole chain, the new entry included
    assert again.queries_checked == EXPECTED["gnmax"]["queries_checked"] + 1 and again.params == {"sigma2": 40.0}
    with pytest.raises(ValueError, match="stored ledger has sigma2=40.0, but this ledger was created with "
                                         "sigma2=30.0"):
        PrivacyLedger.for_mechanism(GNMax(sigma2=30.0), path, delta=1e-5, epsilon_budget=1e3, run=RUN)


def test_a_new_ledger_is_written_with_sigma2_and_refuses_the_earlier_name(tmp_path):
    ledger = PrivacyLedger(tmp_path / "m.json", mechanism="gnmax", delta=1e-5, epsilon_budget=5.0, sigma2=4.0)
    ledger.charge(np.array([[3.0, 1.0]]))
    config = json.loads((tmp_path / "m.json").read_text())["config"]
    assert config["sigma2"] == 4.0 and "sigma" not in config
    with pytest.raises(ValueError, match=r"^sigma was renamed: give sigma2 \(the answer noise σ2 of GNMax / "
                                         r"Confident-GNMax\); got sigma=4.0$"):
        PrivacyLedger(None, mechanism="gnmax", delta=1e-5, epsilon_budget=5.0, sigma=4.0)
