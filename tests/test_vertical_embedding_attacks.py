"""The forward-embedding (clustering) label attack (Sun et al. 2022) and its measurement in a run."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from clients.vertical.embedding_attacks import (
    best_mapping_accuracy,
    cluster_guesses,
    kmeans,
    permutation_chance,
)
from clients.vertical.gradient_attacks import known_users
from strategies.vertical_prototype import InProcessLink, VerticalPrototype
from tests.vertical_helpers import small_config, split_parties

torch.set_num_threads(1)  # tiny models: extra intra-op threads only contend on the shared cores


def _blobs(n: int, n_classes: int, spread: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """``n`` points in 16-D around one centre per class (centres 10 apart on the axes) and their labels."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, n_classes, n)
    centres = 10.0 * np.eye(n_classes, 16)
    return centres[labels] + spread * rng.normal(size=(n, 16)), labels


def test_separated_embeddings_give_their_labels_away() -> None:
    points, labels = _blobs(300, 5, spread=1.0, seed=0)
    clusters = kmeans(points, 5, seed=0)
    assert best_mapping_accuracy(clusters, labels, 5) == 1.0
    known = known_users(300, 5, seed=0)  # 10 users, as the attack measurement draws them
    guesses = cluster_guesses(clusters, known, labels[known], 5)
    unknown = np.setdiff1d(np.arange(300), known)
    assert np.mean(guesses[unknown] == labels[unknown]) >= 0.95  # a cluster may hold no known user


def test_label_independent_embeddings_score_near_chance() -> None:
    rng = np.random.default_rng(1)
    points, labels = rng.normal(size=(400, 16)), rng.integers(0, 4, 400)
    clusters = kmeans(points, 4, seed=1)
    known = known_users(400, 4, seed=1)
    unknown = np.setdiff1d(np.arange(400), known)
    chance = np.bincount(labels[unknown]).max() / len(unknown)
    guesses = cluster_guesses(clusters, known, labels[known], 4)
    assert abs(np.mean(guesses[unknown] == labels[unknown]) - chance) < 0.06
    # the best mapping is compared with its own chance level (the same clusters, labels permuted)
    best, best_chance = best_mapping_accuracy(clusters, labels, 4), permutation_chance(clusters, labels, 4, 1)
    assert abs(best - best_chance) < 0.04


def test_kmeans_is_seeded() -> None:
    points, _ = _blobs(200, 6, spread=6.0, seed=2)  # overlapping: restarts can disagree
    assert np.array_equal(kmeans(points, 6, seed=3), kmeans(points, 6, seed=3))
    assert kmeans(points, 6, seed=3).dtype == np.int64 and set(kmeans(points, 6, seed=3)) == set(range(6))


def test_cluster_guesses_hand_example() -> None:
    clusters = np.array([0, 0, 1, 1, 2, 2])
    # cluster 0: known labels 2, 2 -> 2; cluster 1: a tie between 0 and 1 -> 0; cluster 2: no known user
    # -> the most frequent known label overall (2)
    guesses = cluster_guesses(clusters, np.array([0, 1, 2, 3]), np.array([2, 2, 1, 0]), n_classes=3)
    assert guesses.tolist() == [2, 2, 0, 0, 2, 2]
    assert cluster_guesses(clusters, np.array([], dtype=int), np.array([], dtype=int), 3).tolist() == [-1] * 6
    assert best_mapping_accuracy(clusters, np.array([1, 1, 0, 0, 0, 2]), 3) == pytest.approx(5 / 6)


def test_bad_inputs_are_refused_by_name() -> None:
    points = np.zeros((5, 3))
    with pytest.raises(ValueError, match=r"\(users, dim\), got shape \(5,\)"):
        kmeans(points[:, 0], 2, seed=0)
    bad = points.copy()
    bad[3, 1] = np.nan
    with pytest.raises(ValueError, match="finite, got nan at row 3, column 1"):
        kmeans(bad, 2, seed=0)
    with pytest.raises(ValueError, match="1 <= k <= 5 users, got k=6"):
        kmeans(points, 6, seed=0)
    with pytest.raises(ValueError, match=r"clusters must be a 1-D array of indices in \[0, 2\), got shape "
                                         r"\(3,\) and values in \[0, 2\]"):
        cluster_guesses(np.array([0, 1, 2]), np.array([0]), np.array([1]), 2)
    with pytest.raises(ValueError, match="known users must index the 3 users, got \\[3\\]"):
        cluster_guesses(np.array([0, 1, 1]), np.array([3]), np.array([1]), 2)
    with pytest.raises(ValueError, match="2 known users for 1 known labels"):
        cluster_guesses(np.array([0, 1, 1]), np.array([0, 1]), np.array([1]), 2)
    with pytest.raises(ValueError, match=r"labels must be a 1-D array of indices in \[0, 2\)"):
        best_mapping_accuracy(np.array([0, 1]), np.array([0, -1]), 2)
    with pytest.raises(ValueError, match="2 cluster indices for 3 labels"):
        best_mapping_accuracy(np.array([0, 1]), np.array([0, 1, 1]), 2)


def test_runs_measure_the_forward_embedding_attack_at_every_passive_party() -> None:
    cfg = small_config()
    parties, common = split_parties(cfg)
    res = VerticalPrototype(cfg).run(InProcessLink(parties), lambda link: {
        n: {"aligned_ids": common} for n in link.parties})
    attack = res["attack"]
    passives = [name for name in parties if name != "active"]
    for key in ("fwd_cluster", "fwd_cluster_untrained", "fwd_cluster_best", "fwd_cluster_best_chance"):
        assert attack[key] == max(attack[f"{name}_{key}"] for name in passives)
        assert 0.0 <= attack[key] <= 1.0
    # digits halves cluster by digit even through the untrained encoder; 3 epochs of split learning
    # sharpen that: both far above the chance level the direction attack shares
    assert attack["fwd_cluster_untrained"] > 2 * attack["grad_direction_chance"]
    assert attack["fwd_cluster_best"] > attack["fwd_cluster_best_chance"] + 0.2
