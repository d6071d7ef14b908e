"""Distance-correlation decorrelation of passive embeddings from the labels (Sun et al. 2022):
the dCor statistic, its wiring into the label holder's step, its effect in a run, refused settings."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from clients.vertical.active_party import ActiveParty
from clients.vertical.embedding_protection import distance_correlation, label_decorrelation_loss
from clients.vertical.parties import make_party
from clients.vertical.passive_party import PassiveParty
from protocol.vertical import VerticalStrategyConfig
from strategies.vertical_prototype import InProcessLink, VerticalPrototype
from tests.vertical_helpers import small_config, split_parties

torch.set_num_threads(1)  # tiny models: extra intra-op threads only contend on the shared cores


def _dcor_by_loops(x: np.ndarray, y: np.ndarray) -> float:
    """Székely et al. (2007) Definition 4 written out element by element."""
    n = len(x)

    def centred(z: np.ndarray) -> np.ndarray:
        d = np.array([[math.dist(z[k], z[m]) for m in range(n)] for k in range(n)])
        out = np.empty_like(d)
        for k in range(n):
            for m in range(n):
                out[k, m] = d[k, m] - d[k, :].mean() - d[:, m].mean() + d.mean()
        return out

    a, b = centred(x), centred(y)
    dcov2 = sum(a[k, m] * b[k, m] for k in range(n) for m in range(n)) / n**2
    var_x, var_y = (a**2).sum() / n**2, (b**2).sum() / n**2
    return math.sqrt(dcov2 / math.sqrt(var_x * var_y))


def test_distance_correlation_matches_the_definition() -> None:
    x = np.array([[0.0], [1.0], [2.0], [3.0]])
    y = x**2
    # a_kl = |k − l|, b_kl = |k² − l²| (k, l = 0..3), double-centred: dCov² = 39/16, dVar²(x) = 13/16,
    # dVar²(y) = 133/16, so dCor² = 39 / √(13 · 133) = 0.93792...
    value = float(distance_correlation(torch.tensor(x), torch.tensor(y)))
    assert value**2 == pytest.approx(39 / math.sqrt(13 * 133), rel=1e-12)
    assert value == pytest.approx(_dcor_by_loops(x, y), rel=1e-9)
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(7, 3)), rng.normal(size=(7, 2))
    assert float(distance_correlation(torch.tensor(x), torch.tensor(y))) == pytest.approx(
        _dcor_by_loops(x, y), rel=1e-9)
    labels = np.array([0, 1, 1, 2, 0, 2, 1])
    onehot = np.eye(3)[labels]
    assert float(label_decorrelation_loss([torch.tensor(x, dtype=torch.float32)], torch.tensor(labels), 3)) == (
        pytest.approx(_dcor_by_loops(x, onehot), rel=1e-5))


def test_independent_samples_score_near_zero_identical_ones_one() -> None:
    rng = np.random.default_rng(1)
    # the sample dCor² of independent samples is positive, shrinking like 1/n: 0.25, 0.15, 0.086 here
    values = []
    for n in (200, 600, 2000):
        x, y = torch.tensor(rng.normal(size=(n, 4))), torch.tensor(rng.normal(size=(n, 4)))
        values.append(float(distance_correlation(x, y)))
    assert values[0] > values[1] > values[2] and values[2] < 0.1
    assert float(distance_correlation(x, x)) == pytest.approx(1.0)
    assert float(distance_correlation(x, 3.0 * x + 1.0)) == pytest.approx(1.0)  # scale and shift invariant
    assert float(distance_correlation(torch.zeros(5, 2), x[:5])) == 0.0  # a constant sample: 0


def test_gradients_are_finite_with_repeated_rows() -> None:
    # one-hot labels repeat rows (zero distances), and so may embeddings: √ has no derivative at 0
    x = torch.tensor([[1.0, 2.0], [1.0, 2.0], [0.0, 1.0], [3.0, -1.0]], requires_grad=True)
    loss = label_decorrelation_loss([x], torch.tensor([0, 0, 1, 1]), n_classes=2)
    loss.backward()
    assert x.grad is not None and bool(torch.isfinite(x.grad).all()) and float(x.grad.abs().sum()) > 0
    assert float(label_decorrelation_loss([x], torch.tensor([1]), 2)) == 0.0  # one user: nothing to correlate


def test_the_penalty_rides_in_the_passive_gradients_only() -> None:
    cfg = small_config()
    parties, common = split_parties(cfg)
    active, passive = parties["active"], parties["passive1"]
    assert isinstance(active, ActiveParty) and isinstance(passive, PassiveParty)
    for party in parties.values():
        party.handle("align", {"aligned_ids": common})
    features = passive.encode(passive.x[passive.aligned_rows[:16]])
    batch = {"positions": [np.arange(16)], "epoch": 0, "passive_features": [features.numpy()]}
    replies, models = {}, {}
    for weight in (0.0, 2.0):
        weighted = small_config(dcor_weight=weight)
        party = make_party(active.data, weighted, active.state_bytes())
        replies[weight] = party.handle("step", batch)["grads"][0]
        models[weight] = [p.detach().clone() for p in party.parameters()]
    # the label holder's own update does not see the term ...
    assert all(torch.equal(a, b) for a, b in zip(models[0.0], models[2.0], strict=True))
    # ... the passive party receives exactly weight × its gradient on top
    leaf = features.clone().requires_grad_(True)
    label_decorrelation_loss([leaf], active.y[active.aligned_rows[:16]], active.data.n_classes).backward()
    assert leaf.grad is not None
    assert np.allclose(replies[2.0] - replies[0.0], 2.0 * leaf.grad.numpy(), atol=1e-7)


def _embedding_dcor(weight: float) -> tuple[float, dict]:
    cfg = small_config(dcor_weight=weight)
    parties, common = split_parties(cfg)
    result = VerticalPrototype(cfg).run(InProcessLink(parties), lambda link: {
        n: {"aligned_ids": common} for n in link.parties})
    active, passive = parties["active"], parties["passive1"]
    assert isinstance(active, ActiveParty) and isinstance(passive, PassiveParty)
    embeddings = passive.encode(passive.x[passive.aligned_rows])
    labels = active.y[active.aligned_rows]
    return float(label_decorrelation_loss([embeddings], labels, active.data.n_classes)), result


def test_the_weight_decorrelates_the_embeddings_in_a_run() -> None:
    plain, plain_result = _embedding_dcor(0.0)
    protected, result = _embedding_dcor(3.0)
    # 3 epochs on digits, the aligned users' embeddings by the trained passive encoder: dCor 0.73 -> 0.54,
    # the forward-embedding attack 48 % -> 27 % of the users it did not know (chance 14 %)
    assert protected < plain - 0.1
    assert result["attack"]["fwd_cluster"] < plain_result["attack"]["fwd_cluster"] - 0.1


def test_bad_inputs_and_settings_are_refused_by_name() -> None:
    with pytest.raises(ValueError, match=r"x must be \(samples, dim\), got shape \(3,\)"):
        distance_correlation(torch.zeros(3), torch.zeros(3, 1))
    with pytest.raises(ValueError, match="y must be finite"):
        distance_correlation(torch.zeros(2, 1), torch.tensor([[0.0], [math.inf]]))
    with pytest.raises(ValueError, match="same number >= 2 of rows, got 3 and 2"):
        distance_correlation(torch.zeros(3, 1), torch.zeros(2, 1))
    with pytest.raises(ValueError, match=r"labels must be 1-D in \[0, 3\), got shape \(2,\)"):
        label_decorrelation_loss([torch.zeros(2, 4)], torch.tensor([0, 3]), 3)
    for bad in (-0.1, math.nan, math.inf):
        with pytest.raises(ValueError, match=f"strategy.dcor_weight must be finite and >= 0, got {bad!r}"):
            VerticalStrategyConfig(dcor_weight=bad).validate()
    # no privacy noise, no ε the tuning trials would leave uncharged: ``tune = auto`` accepts it
    VerticalStrategyConfig(tune="auto", dcor_weight=1.0).validate()
