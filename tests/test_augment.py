"""Random-shift augmentation (clients.pate.augment): shapes, labels' inputs, identity, exact translation."""

from __future__ import annotations

import pytest
import torch

from clients.pate.augment import apply_shifts, draw_shifts, random_shift


def test_zero_shift_is_identity_and_draws_nothing():
    x = torch.randn(7, 40)
    g = torch.Generator().manual_seed(1)
    assert random_shift(x, 0, g, input_rank=1) is x
    assert torch.equal(torch.randint(0, 100, (5,), generator=g),
                       torch.randint(0, 100, (5,), generator=torch.Generator().manual_seed(1)))
    assert torch.equal(apply_shifts(x, torch.zeros(7, dtype=torch.long)), x)


def test_1d_shift_equals_original_shifted_with_zero_fill():
    x = torch.arange(1, 4 * 10 + 1, dtype=torch.float32).view(4, 10)
    shifts = torch.tensor([0, 3, -2, 10])
    out = apply_shifts(x, shifts)
    assert out.shape == x.shape
    assert torch.equal(out[0], x[0])
    assert torch.equal(out[1, 3:], x[1, :-3]) and torch.all(out[1, :3] == 0)
    assert torch.equal(out[2, :-2], x[2, 2:]) and torch.all(out[2, -2:] == 0)
    assert torch.all(out[3] == 0)


def test_2d_shift_equals_pad_and_crop():
    x = torch.rand(3, 6, 5) + 1
    shifts = torch.tensor([[1, -2], [0, 0], [-3, 4]])
    out = apply_shifts(x, shifts)
    assert out.shape == x.shape
    pad = 4
    padded = torch.nn.functional.pad(x, (pad, pad, pad, pad))
    for i, (dy, dx) in enumerate(shifts.tolist()):
        crop = padded[i, pad - dy:pad - dy + 6, pad - dx:pad - dx + 5]
        assert torch.equal(out[i], crop)


def test_batched_leading_axes_match_per_sample():
    x = torch.randn(3, 4, 12)
    shifts = torch.randint(-5, 6, (3, 4))
    out = apply_shifts(x, shifts)
    for k in range(3):
        assert torch.equal(out[k], apply_shifts(x[k], shifts[k]))


@pytest.mark.parametrize("rank,shape", [(1, (16, 40)), (2, (16, 8, 8))])
def test_random_shift_keeps_shape_is_seeded_and_bounded(rank, shape):
    x = torch.rand(shape) + 1
    a = random_shift(x, 3, torch.Generator().manual_seed(5), input_rank=rank)
    b = random_shift(x, 3, torch.Generator().manual_seed(5), input_rank=rank)
    assert a.shape == x.shape and torch.equal(a, b)
    s = draw_shifts(1000, 3, rank, torch.Generator().manual_seed(0))
    assert s.min() == -3 and s.max() == 3 and s.shape == ((1000,) if rank == 1 else (1000, 2))
    # every sample is a translation of its own original: the nonzero content is a window of it
    if rank == 1:
        for i in range(len(x)):
            kept = a[i][a[i] != 0]
            assert any(torch.equal(kept, x[i][j:j + len(kept)]) for j in range(40 - len(kept) + 1))


def test_errors_name_the_value():
    g = torch.Generator()
    with pytest.raises(ValueError, match="max_shift must be an integer >= 0, got -1"):
        random_shift(torch.zeros(2, 4), -1, g, input_rank=1)
    with pytest.raises(ValueError, match="input_rank must be one of"):
        draw_shifts(3, 1, 3, g)
    with pytest.raises(ValueError, match=r"rank-2 input, got shape \(2, 4\)"):
        random_shift(torch.zeros(2, 4), 1, g, input_rank=2)
    with pytest.raises(ValueError, match="fit neither"):
        apply_shifts(torch.zeros(2, 4), torch.zeros(3, dtype=torch.long))
