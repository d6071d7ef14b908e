"""Batched teacher ensemble (clients.pate.teacher_ensemble) against the one-teacher reference loop."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from clients.pate.teacher_ensemble import teacher_seed, train_ensemble, train_teacher_alone
from protocol.pate import ModelSpec

SPEC = ModelSpec(encoder="convbase1d", feature_dim=16, epochs=3, batch_size=8, lr=3e-3, weight_decay=1e-4,
                 augment_shift=3)


def _data(n: int = 120, length: int = 40, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 4, n)
    x = rng.normal(size=(n, length)).astype(np.float32) + y[:, None].astype(np.float32)
    return x, y.astype(np.int64)


def _shards(sizes: list[int]) -> list[np.ndarray]:
    edges = np.cumsum([0, *sizes])
    return [np.arange(a, b) for a, b in zip(edges[:-1], edges[1:], strict=True)]


def _max_gap(a: torch.nn.Module, b: torch.nn.Module) -> float:
    sa, sb = a.state_dict(), b.state_dict()
    assert sa.keys() == sb.keys()
    return max(float((sa[k] - sb[k]).abs().max()) for k in sa)


def test_teacher_taken_out_of_the_batch_equals_training_alone():
    x, y = _data()
    shards = _shards([20, 20, 21, 21, 19])  # sizes differ: grouped by size
    ids = [3, 7, 1, 0, 4]
    ens = train_ensemble(x, y, shards, ids, 4, SPEC, data_seed=2)
    assert sorted(ens.teacher_ids) == sorted(ids)
    probe = torch.from_numpy(x[:30])
    for t, shard in zip(ids, shards, strict=True):
        alone = train_teacher_alone(x[shard], y[shard], 4, SPEC, seed=teacher_seed(2, t))
        batched = ens.teacher(t)
        # float rounding only (batched vs plain conv kernels); Adam's per-element normalisation
        # amplifies it on near-zero gradients, so weights get a looser bound than logits
        assert _max_gap(batched, alone) < 1e-4
        with torch.no_grad():
            assert torch.allclose(batched(probe), alone(probe), atol=2e-5)


def test_2d_cnn_teacher_equals_training_alone():
    rng = np.random.default_rng(1)
    x = rng.random((40, 8, 8)).astype(np.float32)
    y = rng.integers(0, 3, 40).astype(np.int64)
    spec = ModelSpec(encoder="cnn", feature_dim=8, epochs=2, batch_size=8, lr=1e-3, augment_shift=1)
    shards = _shards([20, 20])
    ens = train_ensemble(x, y, shards, [0, 1], 3, spec, data_seed=0)
    for t in (0, 1):
        alone = train_teacher_alone(x[shards[t]], y[shards[t]], 3, spec, seed=teacher_seed(0, t))
        assert _max_gap(ens.teacher(t), alone) < 1e-5


def test_shards_never_mix_poisoning_one_shard_changes_only_its_teacher():
    x, y = _data()
    shards = _shards([24, 24, 24])
    clean = train_ensemble(x, y, shards, [0, 1, 2], 4, SPEC, data_seed=0)
    poisoned_y = y.copy()
    poisoned_y[shards[1]] = (poisoned_y[shards[1]] + 1) % 4
    poisoned_x = x.copy()
    poisoned_x[shards[1]] *= -1
    poisoned = train_ensemble(poisoned_x, poisoned_y, shards, [0, 1, 2], 4, SPEC, data_seed=0)
    assert _max_gap(clean.teacher(0), poisoned.teacher(0)) == 0.0
    assert _max_gap(clean.teacher(2), poisoned.teacher(2)) == 0.0
    assert _max_gap(clean.teacher(1), poisoned.teacher(1)) > 1e-3
    # samples outside every shard never matter either
    outside = x.copy()
    outside[72:] = 1e3
    assert _max_gap(clean.teacher(2), train_ensemble(outside, y, shards, [0, 1, 2], 4, SPEC,
                                                     data_seed=0).teacher(2)) == 0.0


def test_chunking_equals_one_chunk():
    x, y = _data()
    shards = _shards([20] * 5)
    one = train_ensemble(x, y, shards, list(range(5)), 4, SPEC, data_seed=1, chunk=5)
    many = train_ensemble(x, y, shards, list(range(5)), 4, SPEC, data_seed=1, chunk=2)
    assert len(many.chunks) == 3 and len(one.chunks) == 1
    for t in range(5):
        assert _max_gap(one.teacher(t), many.teacher(t)) < 1e-5


def test_batched_votes_equal_the_loop_votes():
    x, y = _data()
    shards = _shards([20] * 5)
    ens = train_ensemble(x, y, shards, list(range(5)), 4, SPEC, data_seed=0, chunk=3)
    queries = x[100:]
    votes = ens.vote_histogram(queries, 4)
    expected = np.zeros_like(votes)
    with torch.no_grad():
        for t in range(5):
            pred = ens.teacher(t)(torch.from_numpy(queries)).argmax(1).numpy()
            np.add.at(expected, (np.arange(len(queries)), pred), 1)
    assert votes.shape == (20, 4) and np.array_equal(votes, expected)
    assert np.all(votes.sum(1) == 5)
    preds = ens.predictions(queries)
    acc = ens.accuracies(queries, y[100:])
    assert np.allclose(acc, (preds == y[100:][None]).mean(1))


def test_global_rng_untouched_and_errors_name_the_value():
    x, y = _data()
    torch.manual_seed(0)
    before = torch.rand(1)
    torch.manual_seed(0)
    train_ensemble(x, y, _shards([10, 10]), [0, 1], 4, SPEC, data_seed=0)
    assert torch.equal(torch.rand(1), before)
    with pytest.raises(ValueError, match="differ in length: 2 vs 1"):
        train_ensemble(x, y, _shards([10, 10]), [0], 4, SPEC, data_seed=0)
    with pytest.raises(ValueError, match="chunk must be >= 1, got 0"):
        train_ensemble(x, y, _shards([10]), [0], 4, SPEC, data_seed=0, chunk=0)
    with pytest.raises(ValueError, match="empty shard"):
        train_ensemble(x, y, [np.arange(0)], [0], 4, SPEC, data_seed=0)
    with pytest.raises(KeyError, match="teacher 9 is not in this ensemble"):
        train_ensemble(x, y, _shards([10]), [0], 4, SPEC, data_seed=0).teacher(9)


def test_node_handlers_store_stacked_chunks_report_validation_and_vote():
    from flwr.app import ConfigRecord, Context, Message, RecordDict

    from clients.pate.teacher import STATE_INDEX, handle_train, handle_votes
    from protocol.codec import to_record
    from protocol.pate import MSG_TRAIN_TEACHERS, MSG_VOTES, DataSpec, TeacherSettings, array_record
    from tests.fake_grid import task_identity

    data = DataSpec(dataset="digits", num_teachers=4, seed=0)
    model = ModelSpec(encoder="mlp", feature_dim=8, hidden=16, epochs=2, batch_size=16, augment_shift=1)
    context = Context(run_id=1, node_id=1, node_config={"role": "teacher", "teachers": "0-3", "teacher-chunk": 3},
                      state=RecordDict(), run_config={})
    spec_records = {"data": ConfigRecord(to_record(data)), "model": ConfigRecord(to_record(model)),
                    "teacher_training": to_record(TeacherSettings())}
    queries = np.random.default_rng(0).random((9, 8, 8)).astype(np.float32)
    with task_identity():
        vote_msg = Message(RecordDict({**spec_records, "queries": array_record(x=queries)}), dst_node_id=1,
                           message_type=MSG_VOTES)
        with pytest.raises(RuntimeError, match="teacher 0 is not trained on this node"):
            handle_votes(vote_msg, context)
        train_msg = Message(RecordDict(spec_records), dst_node_id=1, message_type=MSG_TRAIN_TEACHERS)
        metrics = handle_train(train_msg, context).content["metrics"]
        assert list(metrics["teacher_ids"]) == [0, 1, 2, 3]
        assert len(metrics["validation_accuracy"]) == len(metrics["test_accuracy"]) == 4
        assert int(context.state[STATE_INDEX]["num_chunks"]) == 2
        votes = handle_votes(vote_msg, context).content["votes"]["votes"].numpy()
    assert votes.shape == (9, 10) and np.all(votes.sum(1) == 4)
