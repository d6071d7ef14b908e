"""The scale benchmark: its synthetic tabular sets (sizes per party, informative columns everywhere) and its
runs (the ECDH PSI output trained on, checked against the intersection; every phase timed)."""

from __future__ import annotations

import argparse

import numpy as np
import pytest
from sklearn.linear_model import LogisticRegression

from benchmarks import vertical_scale
from benchmarks.vertical_scale import scale_run
from clients.vertical.data import SYNTHETIC_USERS, make_vertical_split, synthetic_tabular


def test_synthetic_split_gives_each_party_ten_thousand_users_and_informative_columns() -> None:
    split = make_vertical_split("synthetic10k", n_parties=2, aligned_fraction=0.1, seed=0)
    assert [len(p.ids) for p in split.parties] == [9953, 10047] and len(split.aligned_ids) == 1818
    assert [p.input_shape for p in split.parties] == [(16,), (16,)]
    labels = np.array([split.labels_by_id[i] for i in split.parties[1].ids])
    for party in split.parties:  # each party's 16 columns alone predict the class far above chance (0.1)
        model = LogisticRegression(max_iter=200).fit(party.x[:2000], labels[:2000] if party.index else
                                                     party.y[:2000])
        truth = labels if party.index else party.y
        assert model.score(party.x[2000:], truth[2000:]) > 0.3


def test_scale_run_trains_on_the_ecdh_psi_output_and_times_every_phase(monkeypatch) -> None:
    monkeypatch.setitem(SYNTHETIC_USERS, "synthetic10k", 900)  # a tiny stand-in: 63 aligned users
    row = scale_run("synthetic10k", "proto", 0, 3, "ecdh")
    split = make_vertical_split("synthetic10k", n_parties=2, aligned_fraction=0.1, seed=0)
    assert row["psi"]["backend"] == "ecdh" and row["psi"]["equals_true_intersection"] is True
    assert row["psi"]["n_found"] == row["n_aligned"] == len(split.aligned_ids)
    assert row["tune_setting"] == "auto" and row["tune_chosen"] is not None  # the default resolved to auto
    assert row["psi_s"] > 0 and row["tuning_s"] > 0 and row["setup_s"] > 0 and row["evaluation_s"] > 0
    assert row["epoch_s"] is None  # the released model is the winner's last-rung trial, timed in tuning_s
    assert set(row["peak_rss_mb"]) == {"after_setup", "after_psi", "end"}
    assert row["peak_rss_mb"]["after_setup"] <= row["peak_rss_mb"]["after_psi"] <= row["peak_rss_mb"]["end"]
    assert set(row["party_data_mb"]) == set(row["party_state_mb"]) == {"active", "passive1"}
    assert set(row["test"]) == {"aligned", "active_only", "passive_only_1", "all"}
    share = 0.1 / (0.1 + 0.9 / 2)  # the label holder's aligned share of its users
    assert row["test"]["all"] == pytest.approx(share * row["test"]["aligned"]
                                               + (1 - share) * row["test"]["active_only"])
    assert len(row["loadavg"]["start"]) == len(row["loadavg"]["end"]) == 3


def test_scale_run_refuses_a_psi_output_other_than_the_intersection(monkeypatch) -> None:
    monkeypatch.setitem(SYNTHETIC_USERS, "synthetic10k", 900)
    monkeypatch.setattr(vertical_scale, "psi_aligned_ids", lambda parties, backend: parties[0].ids[:5].tolist())
    with pytest.raises(RuntimeError, match="not the 63 of the true intersection"):
        scale_run("synthetic10k", "vfl_head_fusion", 0, 1, "ecdh")


def test_scale_run_direct_alignment_and_active_only_run_no_psi(monkeypatch) -> None:
    monkeypatch.setitem(SYNTHETIC_USERS, "synthetic10k", 900)
    direct = scale_run("synthetic10k", "proto_untuned", 0, 1, "direct")
    assert direct["psi"] == {"backend": "direct", "wall_s": 0.0} and direct["tuning_s"] is None
    assert len(direct["epoch_s"]) == 1 and direct["epoch_s"][0] > 0 and direct["evaluation_s"] > 0
    local = scale_run("synthetic10k", "active_only", 0, 1, "ecdh")
    assert local["psi"] is None and local["psi_s"] is None and local["n_aligned"] is None


def test_synthetic_tabular_is_seeded() -> None:
    a, b = synthetic_tabular("synthetic10k", 500, seed=3), synthetic_tabular("synthetic10k", 500, seed=3)
    assert np.array_equal(a.x, b.x) and np.array_equal(a.y, b.y) and a.n_classes == 10
    assert not np.array_equal(a.x, synthetic_tabular("synthetic10k", 500, seed=4).x)
    assert SYNTHETIC_USERS["synthetic100k"] == 10 * SYNTHETIC_USERS["synthetic10k"]


def _scale_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="scale")
    vertical_scale.add_options(parser)
    return parser


def test_tasks_keep_the_chosen_order_and_name_a_bad_run_or_seed(capsys) -> None:
    parser = _scale_parser()
    args = parser.parse_args(["--datasets", "synthetic10k", "--runs", "proto,active_only", "--seeds", "2,0",
                              "--epochs", "3", "--psi", "direct"])
    assert vertical_scale.tasks(parser, args) == [("synthetic10k", n, s, 3, "direct")
                                                  for s in (2, 0) for n in ("proto", "active_only")]
    for argv, named in ((["--runs", "proto,bogus"], "unknown runs ['bogus']; choose from ['active_only'"),
                        (["--seeds", "0,x"], "--seeds '0,x'")):
        with pytest.raises(SystemExit) as exit_:
            vertical_scale.tasks(parser, parser.parse_args(argv))
        assert exit_.value.code == 2 and named in capsys.readouterr().err
