"""Offline datasets and the PATE split."""

from __future__ import annotations

import numpy as np
import pytest

from clients.data import (
    PateSplit,
    assert_disjoint,
    bundled_inputs,
    load_dataset,
    load_pate_data,
    partition_teachers,
    split_for_pate,
)


@pytest.mark.parametrize(("name", "shape", "n"), [("digits", (8, 8), 1797), ("mnist5k", (28, 28), 5000),
                                                  ("mnist1d", (40,), 500)])
def test_datasets_load_offline_with_their_shapes(name, shape, n):
    data = load_dataset(name, seed=0, mnist1d_samples=500)
    assert data.input_shape == shape and len(data) == n and data.n_classes == 10
    assert bundled_inputs(name) == (shape, 10)  # what describe answers without loading the data
    assert data.x.dtype == np.float32 and np.isfinite(data.x).all() and data.x.max() <= 1.0
    assert set(np.unique(data.y)) == set(range(10))


def test_mnist1d_generation_is_seeded_and_leaves_global_rng_alone(tmp_path):
    np.random.seed(123)
    before = np.random.get_state()[1].copy()
    a = load_dataset("mnist1d", seed=4, mnist1d_samples=300, cache_dir=str(tmp_path / "a"))
    np.testing.assert_array_equal(np.random.get_state()[1], before)
    b = load_dataset("mnist1d", seed=4, mnist1d_samples=300, cache_dir=str(tmp_path / "b"))  # built again
    np.testing.assert_array_equal(a.x, b.x)
    np.testing.assert_array_equal(a.y, b.y)


@pytest.mark.parametrize("scheme", ["iid", "dirichlet"])
def test_split_is_disjoint_complete_and_seeded(scheme):
    data = load_dataset("digits")
    split = split_for_pate(data, 15, scheme=scheme, dirichlet_alpha=0.1, seed=2)
    everything = np.concatenate([*split.teacher_shards, split.query_pool, split.validation, split.test])
    assert len(everything) == len(np.unique(everything)) == len(data)
    assert all(len(s) > 0 for s in split.teacher_shards)
    again = split_for_pate(data, 15, scheme=scheme, dirichlet_alpha=0.1, seed=2)
    assert all(np.array_equal(a, b) for a, b in zip(split.teacher_shards, again.teacher_shards, strict=True))


def test_dirichlet_skews_labels_more_than_iid():
    data = load_dataset("digits")
    idx = np.arange(len(data))

    def mean_classes(scheme):
        shards = partition_teachers(data.y, idx, 20, scheme=scheme, dirichlet_alpha=0.05, seed=0)
        return np.mean([len(np.unique(data.y[s])) for s in shards])

    assert mean_classes("dirichlet") < 5 < mean_classes("iid")


def test_assert_disjoint_names_the_overlap():
    split = PateSplit(teacher_shards=(np.array([1, 2]), np.array([3])), query_pool=np.array([2]),
                      validation=np.array([4]), test=np.array([5]))
    with pytest.raises(RuntimeError, match="sample 2 is in both teacher 0 and query pool"):
        assert_disjoint(split)


@pytest.mark.parametrize(
    ("call", "match"),
    [
        (lambda: load_dataset("cifar"), "unknown dataset 'cifar'"),
        (lambda: load_dataset("mnist1d", mnist1d_samples=10), "mnist1d_samples must be >= 100"),
        (lambda: partition_teachers(np.zeros(5), np.arange(5), 6), "exceeds the 5 teacher samples"),
        (lambda: partition_teachers(np.zeros(5), np.arange(5), 2, scheme="x"), "unknown partition scheme"),
        (lambda: split_for_pate(load_dataset("digits"), 3, query_fraction=0.5, test_fraction=0.5),
         "must leave data for the teachers"),
        (lambda: split_for_pate(load_dataset("digits"), 3, test_fraction=0.0), r"test_fraction must be in \(0, 1\)"),
    ],
)
def test_bad_arguments_are_named(call, match):
    with pytest.raises(ValueError, match=match):
        call()


def test_load_pate_data_is_cached_per_process():
    args = ("digits", 0, 4, "iid", 0.5, 0.2, 0.1, 0.2, 4000)
    assert load_pate_data(*args) is load_pate_data(*args)
