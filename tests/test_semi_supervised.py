"""FixMatch student training (loss, augmentations, training loop) and uncertainty-based query choice."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from clients.encoders import build_classifier
from clients.pate.semi_supervised import (
    FixMatchConfig,
    fixmatch_loss,
    random_cutout,
    random_shift,
    select_queries,
    strong_augment,
    train_fixmatch,
    weak_augment,
)


def test_fixmatch_loss_matches_a_hand_computed_batch():
    # labeled: logits (0, 0) -> CE = log 2 for either label; mean l_s = log 2
    logits_l = torch.zeros(2, 2)
    y = torch.tensor([0, 1])
    # unlabeled sample 0: weak softmax (e^2/(e^2+1), ...) = 0.881 >= 0.8, pseudo-label 0;
    #   strong logits (0, log 3) -> p_0 = 1/4, CE = log 4
    # unlabeled sample 1: weak softmax (0.5, 0.5) < 0.8: masked out, but counted in the mean
    logits_w = torch.tensor([[2.0, 0.0], [0.0, 0.0]])
    logits_s = torch.tensor([[0.0, math.log(3.0)], [5.0, -5.0]])
    loss, mask_rate = fixmatch_loss(logits_l, y, logits_w, logits_s, threshold=0.8, weight=2.0)
    expected = math.log(2.0) + 2.0 * (math.log(4.0) + 0.0) / 2
    assert loss.item() == pytest.approx(expected, rel=1e-6)
    assert mask_rate == 0.5


def test_fixmatch_loss_stops_gradients_through_the_weak_view_and_smooths_labels():
    logits_w = torch.tensor([[3.0, 0.0]], requires_grad=True)
    logits_s = torch.tensor([[0.0, 0.0]], requires_grad=True)
    loss, _ = fixmatch_loss(torch.zeros(1, 2), torch.tensor([0]), logits_w, logits_s, 0.5, 1.0)
    loss.backward()
    assert logits_w.grad is None or torch.all(logits_w.grad == 0)
    assert logits_s.grad is not None and logits_s.grad.abs().sum() > 0
    # smoothing 0.5 over 2 classes: target (0.75, 0.25); logits (log 3, 0) -> p = (3/4, 1/4)
    smoothed, rate = fixmatch_loss(torch.tensor([[math.log(3.0), 0.0]]), torch.tensor([0]),
                                   torch.zeros(0, 2), torch.zeros(0, 2), 0.9, 1.0, label_smoothing=0.5)
    assert smoothed.item() == pytest.approx(-(0.75 * math.log(0.75) + 0.25 * math.log(0.25)), rel=1e-6)
    assert rate == 0.0


def test_fixmatch_loss_rejects_mismatched_shapes():
    with pytest.raises(ValueError, match="logits_weak and logits_strong must have one shape"):
        fixmatch_loss(torch.zeros(1, 2), torch.tensor([0]), torch.zeros(2, 2), torch.zeros(3, 2), 0.9, 1.0)
    with pytest.raises(ValueError, match="differ in length: 2 vs 1"):
        fixmatch_loss(torch.zeros(2, 2), torch.tensor([0]), torch.zeros(1, 2), torch.zeros(1, 2), 0.9, 1.0)


def test_random_shift_moves_signals_and_images_with_zero_fill():
    gen = torch.Generator().manual_seed(0)
    x = torch.arange(1.0, 9.0).repeat(50, 1)  # (50, 8), values 1..8
    out = random_shift(x, 2, gen)
    for row in out:
        nonzero = torch.nonzero(row).flatten()
        offset = int(nonzero[0]) if row[nonzero[0]] == 1 else -int(row[0] - 1)
        assert -2 <= offset <= 2
        assert torch.equal(row, torch.roll(x[0], offset) * ((torch.arange(8) - offset >= 0)
                                                             & (torch.arange(8) - offset < 8)))
    img = torch.ones(20, 5, 5)
    shifted = random_shift(img, 1, gen)
    assert shifted.shape == img.shape and shifted.sum() < img.sum()
    assert torch.equal(random_shift(x, 0, gen), x)
    with pytest.raises(ValueError, match="max_shift must be >= 0, got -1"):
        random_shift(x, -1, gen)


def test_cutout_zeroes_one_segment_or_square():
    gen = torch.Generator().manual_seed(1)
    out = random_cutout(torch.ones(30, 40), 8, gen)
    zeros = (out == 0).sum(dim=1)
    assert torch.all(zeros <= 8) and torch.all(zeros >= 4)  # clipped at most to half at a border
    img = random_cutout(torch.ones(30, 10, 10), 4, gen)
    assert torch.all((img == 0).flatten(1).sum(1) <= 16) and (img == 0).any()


def test_augmentations_keep_shape_and_strong_differs_more():
    gen = torch.Generator().manual_seed(2)
    x = torch.randn(64, 40)
    config = FixMatchConfig(weak_shift=1, strong_shift=6)
    weak, strong = weak_augment(x, config, gen), strong_augment(x, config, gen)
    assert weak.shape == strong.shape == x.shape
    assert (strong - x).abs().mean() > (weak - x).abs().mean()


def test_config_errors_name_field_and_value():
    with pytest.raises(ValueError, match=r"threshold=1.5.*mu=0|mu=0.*threshold=1.5"):
        FixMatchConfig(threshold=1.5, mu=0)


def _toy(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, n)
    x = rng.normal(0, 0.3, (n, 16)).astype(np.float32)
    x[:, 6:10] += np.where(y[:, None] == 1, 1.0, -1.0).astype(np.float32)
    return x, y.astype(np.int64)


def test_train_fixmatch_learns_a_toy_problem_from_few_labels():
    x_l, y_l = _toy(20, 0)
    x_u, _ = _toy(400, 1)
    x_t, y_t = _toy(200, 2)
    model = build_classifier((16,), 2, kind="mlp", feature_dim=16, hidden=32)
    config = FixMatchConfig(epochs=3, batch_size=8, mu=4, threshold=0.8, weak_shift=1, strong_shift=2,
                            cutout=2, warmup_epochs=5)
    stats = train_fixmatch(model, x_l, y_l, x_u, config, seed=0)
    acc = float(np.mean(model(torch.from_numpy(x_t)).argmax(1).numpy() == y_t))
    assert acc > 0.9
    assert 0 < stats.confident <= 400 and stats.mask_rate == pytest.approx(stats.confident / 400)
    assert stats.steps == 5 * 3 + 3 * math.ceil(400 / 32)


def test_train_fixmatch_is_seeded_and_runs_without_unlabeled_data():
    x_l, y_l = _toy(20, 0)
    config = FixMatchConfig(epochs=2, batch_size=8, mu=2)
    a, b = (build_classifier((16,), 2, kind="mlp", feature_dim=8, hidden=8) for _ in range(2))
    b.load_state_dict(a.state_dict())
    for model in (a, b):
        train_fixmatch(model, x_l, y_l, x_l[:0], config, seed=3)
    for p, q in zip(a.parameters(), b.parameters(), strict=True):
        assert torch.equal(p, q)
    with pytest.raises(ValueError, match="at least one labeled sample"):
        train_fixmatch(a, x_l[:0], y_l[:0], x_l, config)
    with pytest.raises(ValueError, match=r"x_unlabeled samples have shape \(8,\)"):
        train_fixmatch(a, x_l, y_l, np.zeros((3, 8), np.float32), config)


class _FixedLogits(torch.nn.Module):
    def __init__(self, logits: torch.Tensor) -> None:
        super().__init__()
        self.logits = logits

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.logits[x[:, 0].long()]


def test_select_queries_ranks_by_uncertainty_and_skips_excluded():
    logits = torch.log(torch.tensor([[0.9, 0.05, 0.05], [0.4, 0.35, 0.25], [0.5, 0.5, 0.0 + 1e-9],
                                     [0.6, 0.2, 0.2]]))
    model = _FixedLogits(logits)
    x_pool = np.arange(4, dtype=np.float32)[:, None]
    assert select_queries(model, x_pool, 2).tolist() == [2, 1]  # margins 0, 0.05
    assert select_queries(model, x_pool, 2, strategy="least_confident").tolist() == [1, 2]
    assert select_queries(model, x_pool, 1, strategy="entropy").tolist() == [1]
    assert select_queries(model, x_pool, 10, exclude=np.array([2])).tolist() == [1, 3, 0]
    assert select_queries(model, x_pool, 0).tolist() == []
    with pytest.raises(ValueError, match="unknown selection strategy 'random'"):
        select_queries(model, x_pool, 1, strategy="random")
    with pytest.raises(ValueError, match=r"exclude positions must lie in \[0, 4\), got \[0, 4\]"):
        select_queries(model, x_pool, 1, exclude=np.array([0, 4]))


def test_convbase1d_wide_encoder_has_64_channels_and_the_convbase_shape() -> None:
    narrow = build_classifier((40,), 10, kind="convbase1d", feature_dim=16)
    wide = build_classifier((40,), 10, kind="convbase1d_wide", feature_dim=16)
    x = torch.zeros(3, 40)
    assert wide(x).shape == narrow(x).shape == (3, 10)
    assert [m.out_channels for m in wide.encoder if isinstance(m, torch.nn.Conv1d)] == [64, 64, 64]
    with pytest.raises(ValueError, match="convbase1d_wide"):
        build_classifier((4, 4), 10, kind="convbase1d_wide")
