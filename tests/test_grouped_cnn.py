"""Stacked 2-D CNN teachers as one grouped network (clients.pate.grouped_cnn) against vmap and the loop."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch.func import functional_call, stack_module_state, vmap

from clients.encoders import build_classifier
from clients.pate.grouped_cnn import grouped_logits, grouped_loss, supports
from clients.pate.teacher_ensemble import teacher_seed, train_ensemble, train_teacher_alone
from protocol.pate import ModelSpec


def _stacked(shape: tuple[int, ...], k: int, kind: str = "cnn"):
    models = []
    for seed in range(k):
        torch.manual_seed(seed)
        models.append(build_classifier(shape, 5, kind=kind, feature_dim=12))
    params, _ = stack_module_state(models)
    return copy.deepcopy(models[0]).to("meta"), {n: p.detach().requires_grad_() for n, p in params.items()}


@pytest.mark.parametrize("shape", [(28, 28), (9, 7)])  # odd sizes: ceil-mode and uneven adaptive pooling
def test_grouped_logits_and_gradients_equal_vmap(shape):
    base, params = _stacked(shape, 4)
    x = torch.rand(4, 6, *shape)
    y = torch.randint(0, 5, (4, 6))
    ref = vmap(lambda p, xb: functional_call(base, p, (xb,)))(params, x)
    assert torch.allclose(grouped_logits(base, params, x), ref, atol=1e-5)
    vmap_grads = torch.autograd.grad(
        vmap(lambda p, xb, yb: F.cross_entropy(functional_call(base, p, (xb,)), yb))(params, x, y).sum(),
        list(params.values()))
    grouped_grads = torch.autograd.grad(grouped_loss(base, params, x, y), list(params.values()))
    for a, b in zip(vmap_grads, grouped_grads, strict=True):
        assert torch.allclose(a, b, atol=1e-5)


def test_one_teachers_logits_depend_on_its_own_images_only():
    base, params = _stacked((12, 12), 3)
    x = torch.rand(3, 4, 12, 12)
    other = x.clone()
    other[[0, 2]] = torch.rand(2, 4, 12, 12) * 5
    with torch.no_grad():
        assert torch.equal(grouped_logits(base, params, x)[1], grouped_logits(base, params, other)[1])


def test_supports_2d_cnns_only_and_refuses_the_rest():
    assert supports(build_classifier((28, 28), 10, kind="cnn"), 2)
    assert not supports(build_classifier((28, 28), 10, kind="mlp"), 2)  # no convolution: vmap
    assert not supports(build_classifier((40,), 10, kind="convbase1d"), 1)
    assert not supports(torch.nn.Linear(3, 2), 2)
    base, params = _stacked((8, 8), 2)
    with pytest.raises(ValueError, match=r"x must be \(K=2, B, H, W\)"):
        grouped_logits(base, params, torch.rand(3, 4, 8, 8))
    mlp, mlp_params = _stacked((8, 8), 2, kind="mlp")
    with pytest.raises(ValueError, match="Classifier CNNs"):
        grouped_logits(mlp, mlp_params, torch.rand(2, 4, 8, 8))


def test_grouped_path_teacher_taken_out_equals_training_alone():
    rng = np.random.default_rng(3)
    x = rng.random((70, 28, 28)).astype(np.float32)
    y = rng.integers(0, 10, 70).astype(np.int64)
    spec = ModelSpec(encoder="cnn", feature_dim=16, epochs=2, batch_size=8, lr=1e-3, weight_decay=1e-4,
                     augment_shift=2)
    shards = [np.arange(0, 23), np.arange(23, 46), np.arange(46, 70)]  # 23, 23, 24: two size groups
    ens = train_ensemble(x, y, shards, [5, 1, 9], 10, spec, data_seed=4)
    probe = torch.from_numpy(x[:20])
    for t, shard in zip([5, 1, 9], shards, strict=True):
        alone = train_teacher_alone(x[shard], y[shard], 10, spec, seed=teacher_seed(4, t))
        batched = ens.teacher(t)
        sa, sb = alone.state_dict(), batched.state_dict()
        assert max(float((sa[n] - sb[n]).abs().max()) for n in sa) < 1e-4
        with torch.no_grad():
            assert torch.allclose(batched(probe), alone(probe), atol=2e-5)
