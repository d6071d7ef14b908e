"""Student model saving/serving (``predict`` entry point) and the PATE message protocol helpers."""

from __future__ import annotations

import json

import numpy as np
import pytest
from flwr.app import RecordDict

from clients.encoders import build_classifier
from clients.pate.student import self_train_labels, train_student
from clients.pate.student_model import load_student, main, predict, save_student
from protocol.codec import from_record, to_record
from protocol.pate import (
    DataSpec,
    ModelSpec,
    StudentSettings,
    array_record,
    node_role,
    parse_teacher_ids,
    read_array,
)


@pytest.fixture
def saved_model(tmp_path):
    rng = np.random.default_rng(0)
    x = rng.random((60, 8, 8), dtype=np.float32)
    y = (x[:, 0, 0] > 0.5).astype(np.int64)
    model, _ = train_student(x, y, x[:0], 2, ModelSpec(epochs=30), seed=0)
    path = save_student(model, tmp_path / "student", {"classes": [0, 1], "input_shape": [8, 8],
                                                      "model": ModelSpec(epochs=30).__dict__})
    return path, x, y


def test_saved_model_round_trips_and_predicts_like_the_original(saved_model):
    path, x, _ = saved_model
    model, meta = load_student(path)
    assert meta["input_shape"] == [8, 8] and path.with_suffix(".pt").exists()
    np.testing.assert_array_equal(predict(path, x), model(__import__("torch").from_numpy(x)).argmax(1).numpy())


def test_predict_cli_writes_labels_and_rejects_wrong_shape(saved_model, tmp_path, capsys):
    path, x, _ = saved_model
    np.save(tmp_path / "x.npy", x[:5])
    assert main(["predict", "--model", str(path), "--input", str(tmp_path / "x.npy"),
                 "--output", str(tmp_path / "y.npy")]) == 0
    assert np.load(tmp_path / "y.npy").shape == (5,)
    np.save(tmp_path / "bad.npy", np.zeros((5, 64), dtype=np.float32))
    assert main(["predict", "--model", str(path), "--input", str(tmp_path / "bad.npy")]) == 2
    assert "input must have shape (N, 8, 8), got (5, 64)" in capsys.readouterr().err


def test_predict_rejects_nan_and_foreign_files(saved_model, tmp_path):
    path, x, _ = saved_model
    bad = x[:2].copy()
    bad[0, 0, 0] = np.nan
    with pytest.raises(ValueError, match="NaN or inf"):
        predict(path, bad)
    (tmp_path / "other.json").write_text(json.dumps({"format": "something-else"}))
    with pytest.raises(ValueError, match="not a flwr-privkit student model"):
        load_student(tmp_path / "other.json")


def test_student_refuses_to_train_on_nothing():
    with pytest.raises(ValueError, match="received no answered query"):
        train_student(np.zeros((0, 8, 8), np.float32), np.zeros(0, np.int64), np.zeros((3, 8, 8), np.float32),
                      10, ModelSpec(epochs=1), seed=0)


def test_self_training_keeps_only_confident_predictions():
    model = build_classifier((2,), 2)
    keep, labels = self_train_labels(model, np.zeros((0, 2), np.float32), 0.9)
    assert len(keep) == len(labels) == 0
    keep_all, _ = self_train_labels(model, np.ones((4, 2), np.float32), 0.0)
    keep_none, _ = self_train_labels(model, np.ones((4, 2), np.float32), 1.01)
    assert len(keep_all) == 4 and len(keep_none) == 0


@pytest.mark.parametrize(("text", "ids"), [("0,1,2", [0, 1, 2]), ("3-5", [3, 4, 5]), ("0-1, 7", [0, 1, 7])])
def test_parse_teacher_ids(text, ids):
    assert parse_teacher_ids(text) == ids


@pytest.mark.parametrize(("text", "match"), [("", "names no teacher"), ("a", "malformed"), ("5-3", "malformed"),
                                             ("1,1", "names a teacher twice")])
def test_parse_teacher_ids_errors(text, match):
    with pytest.raises(ValueError, match=match):
        parse_teacher_ids(text)


def test_simulation_roles_spread_teachers_round_robin():
    roles = [node_role({"partition-id": p, "num-partitions": 4}, 10) for p in range(4)]
    assert roles == [("teacher", [0, 3, 6, 9]), ("teacher", [1, 4, 7]), ("teacher", [2, 5, 8]), ("student", [])]


@pytest.mark.parametrize(
    ("config", "match"),
    [
        ({"role": "boss"}, "role must be 'teacher' or 'student'"),
        ({"role": "teacher"}, "needs node_config 'teachers'"),
        ({"role": "teacher", "teachers": "8-12"}, "hosts teacher 12 but the run has only 10"),
        ({"partition-id": 0, "num-partitions": 1}, ">= 2 nodes"),
        ({}, "needs either 'role'"),
    ],
)
def test_node_role_errors(config, match):
    with pytest.raises(ValueError, match=match):
        node_role(config, 10)


def test_specs_round_trip_and_missing_keys_are_named():
    spec = DataSpec(dataset="mnist5k", num_teachers=7)
    assert from_record(DataSpec, to_record(spec)) == spec
    with pytest.raises(ValueError, match=r"DataSpec record lacks keys \['seed'\]"):
        from_record(DataSpec, {k: v for k, v in to_record(spec).items() if k != "seed"})


def test_read_array_names_what_is_missing():
    content = RecordDict({"q": array_record(x=np.ones(2))})
    assert read_array(content, "q", "x").tolist() == [1.0, 1.0]
    with pytest.raises(ValueError, match="no ArrayRecord 'votes'"):
        read_array(content, "votes", "votes")


def _two_blobs(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, n).astype(np.int64)
    x = rng.normal(0, 0.3, (n, 16)).astype(np.float32)
    x[:, 6:10] += np.where(y[:, None] == 1, 1.0, -1.0).astype(np.float32)
    return x, y


def test_train_student_fixmatch_uses_the_unlabeled_pool_and_counts_confident_samples():
    x_l, y_l = _two_blobs(16, 0)
    x_u, _ = _two_blobs(300, 1)
    x_t, y_t = _two_blobs(200, 2)
    settings = StudentSettings(method="fixmatch", fixmatch_epochs=3, fixmatch_warmup_epochs=20, fixmatch_mu=4,
                               fixmatch_threshold=0.8, fixmatch_weak_shift=1, fixmatch_strong_shift=2,
                               fixmatch_cutout=2)
    spec = ModelSpec(epochs=1, batch_size=8, feature_dim=16, hidden=32)
    model, n_confident = train_student(x_l, y_l, x_u, 2, spec, seed=0, method="fixmatch", settings=settings)
    assert 0 < n_confident <= 300
    assert float(np.mean(model(__import__("torch").from_numpy(x_t)).argmax(1).numpy() == y_t)) > 0.9


def test_train_student_methods_keep_the_old_behaviour_and_reject_unknown_ones():
    x_l, y_l = _two_blobs(16, 0)
    x_u, _ = _two_blobs(50, 1)
    spec = ModelSpec(epochs=5, feature_dim=8, hidden=8)
    _, n_default = train_student(x_l, y_l, x_u, 2, spec, seed=0, self_training_confidence=0.0)
    _, n_self = train_student(x_l, y_l, x_u, 2, spec, seed=0, method="self_training",
                              settings=StudentSettings(self_training_confidence=0.0))
    _, n_supervised = train_student(x_l, y_l, x_u, 2, spec, seed=0, method="supervised",
                                    self_training_confidence=0.0)
    assert n_default == n_self == 50 and n_supervised == 0
    with pytest.raises(ValueError, match="student method must be one of .* got 'mixmatch'"):
        train_student(x_l, y_l, x_u, 2, spec, seed=0, method="mixmatch")


def test_student_settings_reject_an_unknown_method():
    with pytest.raises(ValueError, match="StudentSettings.method must be one of .* got 'mixmatch'"):
        StudentSettings(method="mixmatch")
    assert from_record(StudentSettings, to_record(StudentSettings(method="fixmatch"))).method == "fixmatch"
