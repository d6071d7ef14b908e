"""Semi-supervised teachers (clients.pate.teacher_pseudo_label, teacher_fixmatch): labels from own shard only."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from clients.pate.teacher_ensemble import train_ensemble
from clients.pate.teacher_fixmatch import train_fixmatch_ensemble
from clients.pate.teacher_pseudo_label import train_pseudo_label_ensemble
from protocol.codec import from_record, to_record
from protocol.pate import ModelSpec, TeacherSettings

SPEC = ModelSpec(encoder="convbase1d", feature_dim=16, epochs=3, batch_size=8, lr=3e-3, weight_decay=1e-4,
                 augment_shift=3)
SETTINGS = TeacherSettings(method="pseudo_label", pool_per_teacher=30, pseudo_label_threshold=0.3,
                           pseudo_label_epochs=2, pseudo_label_mu=2)


def _data(n: int = 100, length: int = 40, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 4, n)
    x = rng.normal(size=(n, length)).astype(np.float32) + y[:, None].astype(np.float32)
    return x, y.astype(np.int64)


SHARDS = [np.arange(0, 20), np.arange(20, 40), np.arange(40, 61)]


def _pool() -> np.ndarray:
    return _data(50, seed=1)[0]  # unlabelled: the labels are dropped here and never exist downstream


def test_pseudo_labels_are_each_teachers_own_predictions_on_its_own_subset():
    x, y = _data()
    ids = [0, 1, 2]
    ensemble, labels = train_pseudo_label_ensemble(x, y, SHARDS, ids, 4, SPEC, SETTINGS, _pool(), data_seed=0)
    supervised = train_ensemble(x, y, SHARDS, ids, 4, SPEC, data_seed=0)  # step 1 alone, the same seeds
    assert labels.teacher_ids == supervised.teacher_ids == ensemble.teacher_ids
    own = supervised.predictions(_pool())
    assert labels.pool_index.shape == (3, 30)
    for k in range(3):
        assert np.array_equal(labels.labels[k], own[k][labels.pool_index[k]])  # the teacher's own answer
        assert len(set(labels.pool_index[k])) == 30  # a subset, drawn per teacher
    assert not np.array_equal(labels.pool_index[0], labels.pool_index[1])
    assert labels.counts() == [int(c) for c in labels.confident.sum(1)]
    assert any(not torch.equal(ensemble.chunks[0].params[n], supervised.chunks[0].params[n])
               for n in supervised.chunks[0].params)  # step 3 trained on


def _train(method: str, x: np.ndarray, y: np.ndarray, shards: list[np.ndarray], ids: list[int]):
    """The trained ensemble of ``method`` (pseudo_label or fixmatch), chunk = all teachers."""
    settings = dataclasses.replace(SETTINGS, method=method)
    if method == "fixmatch":
        return train_fixmatch_ensemble(x, y, shards, ids, 4, SPEC, settings, _pool(), data_seed=0)
    return train_pseudo_label_ensemble(x, y, shards, ids, 4, SPEC, settings, _pool(), data_seed=0)[0]


@pytest.mark.parametrize("method", ["pseudo_label", "fixmatch"])
def test_each_teachers_labelled_part_is_its_own_shard_only(method):
    x, y = _data()
    batched = _train(method, x, y, SHARDS, [0, 1, 2])
    outside = np.ones(len(y), dtype=bool)
    outside[SHARDS[0]] = False
    y_own = np.where(outside, -1, y)  # every label but teacher 0's shard is unusable: -1 fails cross-entropy
    alone = _train(method, x, y_own, SHARDS[:1], [0])  # the pool passed in carries no label at all
    a, b = batched.teacher(0).state_dict(), alone.teacher(0).state_dict()
    assert max(float((a[n] - b[n]).abs().max()) for n in a) < 1e-4
    with pytest.raises((IndexError, RuntimeError), match="out of bounds"):  # the check above is real
        _train(method, x, y_own, SHARDS[1:2], [1])


def test_supervised_handler_is_bit_for_bit_train_ensemble():
    from flwr.app import Context, Message, RecordDict

    from clients.pate.sites import teacher_data
    from clients.pate.teacher import STATE_PREFIX, handle_train
    from protocol.pate import MSG_TRAIN_TEACHERS, DataSpec
    from tests.fake_grid import task_identity

    data = DataSpec(dataset="digits", num_teachers=4, seed=0)
    model = ModelSpec(encoder="mlp", feature_dim=8, hidden=16, epochs=2, batch_size=16, augment_shift=1)
    results = {}
    for method in ("supervised", "pseudo_label", "fixmatch"):
        context = Context(run_id=1, node_id=1, node_config={"role": "teacher", "teachers": "0-3"},
                          state=RecordDict(), run_config={})
        settings = dataclasses.replace(SETTINGS, method=method, pseudo_label_threshold=0.0)
        content = RecordDict({"data": to_record(data), "model": to_record(model),
                              "teacher_training": to_record(settings)})
        with task_identity():
            msg = Message(content, dst_node_id=1, message_type=MSG_TRAIN_TEACHERS)
            metrics = handle_train(msg, context).content["metrics"]
        results[method] = (context.state[f"{STATE_PREFIX}chunk.0"], list(metrics["pseudo_labels"]))
    td = teacher_data(context, data, [0, 1, 2, 3])
    direct = train_ensemble(td.x, td.y, td.shards, [0, 1, 2, 3], td.n_classes, model, data_seed=0)
    stored, counts = results["supervised"]
    assert counts == [0, 0, 0, 0]
    for name, p in direct.chunks[0].params.items():
        assert np.array_equal(stored[name].numpy(), p.numpy())
    assert sum(results["pseudo_label"][1]) > 0
    assert results["fixmatch"][1] == [0, 0, 0, 0]


def test_teacher_settings_round_trip_and_refuse_unknown_methods():
    assert from_record(TeacherSettings, to_record(SETTINGS)) == SETTINGS
    assert TeacherSettings().method == "supervised"
    with pytest.raises(ValueError, match="method must be one of"):
        TeacherSettings(method="mixmatch")
    with pytest.raises(ValueError, match="pseudo_label_threshold"):
        TeacherSettings(pseudo_label_threshold=1.5)
    with pytest.raises(ValueError, match="unlabelled pool"):
        x, y = _data()
        train_pseudo_label_ensemble(x, y, SHARDS, [0, 1, 2], 4, SPEC, SETTINGS, x[:0], data_seed=0)
