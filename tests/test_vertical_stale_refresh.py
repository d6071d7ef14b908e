"""``strategy.stale_refresh = prototypes``: a passive party refreshes the prototype part of the stale
gradients of an exchange from its current encoder, without labels (``PassiveParty.prototype_gradient_refresh``)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from benchmarks.vertical import strategy_overrides
from clients.vertical.parties import make_party
from clients.vertical.passive_party import PassiveParty
from clients.vertical.prototypes import prototype_classification_loss, prototype_temperature
from simulations.report_benchmarks import exchange_label
from strategies.vertical_prototype import InProcessLink, VerticalPrototype
from tests.vertical_helpers import small_config, split_parties

torch.set_num_threads(1)  # tiny models: extra intra-op threads only contend on the shared cores


def _passive(**strategy: object) -> tuple[PassiveParty, list[str]]:
    """The passive party of :func:`small_config` (``strategy`` over it), aligned, holding 10 prototypes."""
    cfg = small_config(**strategy)
    parties, common = split_parties(cfg)
    passive = parties["passive1"]
    assert isinstance(passive, PassiveParty)
    passive.handle("align", {"aligned_ids": common})
    rng = np.random.default_rng(3)
    passive.handle("receive", {"prototypes": rng.normal(scale=0.3, size=(10, 64)).astype(np.float32),
                               "valid": np.ones(10, dtype=bool)})
    return passive, common


def _prototype_gradient(passive: PassiveParty, features: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """d/df of the label holder's ``lam_aligned`` term in the passive space (``ActivePrototypes.
    aligned_prototype_loss``) for ``labels``: what the received gradient holds of it."""
    s = passive.cfg.strategy
    assert passive.prototypes is not None and passive.valid is not None
    f = features.clone().requires_grad_(True)
    temperature = prototype_temperature(passive.prototypes, passive.valid, s.temperature_scale)
    loss = s.lam_aligned * prototype_classification_loss(f, labels, passive.prototypes, passive.valid,
                                                         temperature)
    loss.backward()
    assert f.grad is not None
    return f.grad


def test_refresh_is_the_exact_change_of_the_prototype_gradient_whatever_the_labels() -> None:
    passive, _ = _passive(stale_refresh="prototypes")
    rng = np.random.default_rng(0)
    sent = torch.from_numpy(rng.normal(scale=0.3, size=(12, 64)).astype(np.float32))
    now = sent + torch.from_numpy(rng.normal(scale=0.1, size=(12, 64)).astype(np.float32))
    passive.sent_features = torch.cat([torch.zeros(5, 64), sent])  # the batch is rows 5… of the exchange
    refresh = passive.prototype_gradient_refresh(now, 5, epoch=0)
    for seed in range(3):  # any labels: the refresh does not depend on them (the party has none)
        labels = torch.from_numpy(np.random.default_rng(seed).integers(0, 10, size=12))
        expected = _prototype_gradient(passive, now, labels) - _prototype_gradient(passive, sent, labels)
        assert torch.allclose(refresh, expected, atol=1e-5 * float(expected.abs().max()))
    assert float(refresh.abs().max()) > 0
    # the encoder did not move: nothing to refresh
    assert torch.equal(passive.prototype_gradient_refresh(sent, 5, epoch=0), torch.zeros(12, 64))


@pytest.mark.parametrize("strategy", [{"stale_refresh": "off"}, {"lam_aligned": 0.0},
                                      {"stale_refresh": "prototypes", "warmup_epochs": 2}])
def test_no_refresh_where_the_label_holder_adds_no_prototype_term(strategy: dict) -> None:
    passive, _ = _passive(**strategy)
    passive.sent_features = torch.zeros(4, 64)
    assert torch.equal(passive.prototype_gradient_refresh(torch.ones(4, 64), 0, epoch=1), torch.zeros(4, 64))


def _steps(passive: PassiveParty, batches: list[np.ndarray], grad: np.ndarray) -> PassiveParty:
    """A copy of ``passive`` that sent its features of ``batches`` and applied ``grad`` (one exchange)."""
    copy = make_party(passive.data, passive.cfg, passive.state_bytes())
    assert isinstance(copy, PassiveParty)
    copy.handle("step", {"positions": batches})
    copy.handle("step", {"grad_positions": batches, "grad": grad, "epoch": 0, "step": 0})
    return copy


def test_stale_updates_carry_the_refresh_and_the_first_does_not() -> None:
    passive, _ = _passive(stale_refresh="prototypes", lam_passive=0.0)
    batches = [np.arange(0, 8), np.arange(8, 14)]
    grad = np.random.default_rng(1).normal(scale=1e-2, size=(14, 64)).astype(np.float32)
    refreshed = _steps(passive, batches, grad)
    # by hand: the first update on the received gradient, the second on it plus the refresh at the
    # features of the encoder the first update left
    manual = make_party(passive.data, passive.cfg, passive.state_bytes())
    assert isinstance(manual, PassiveParty) and manual.aligned_rows is not None
    manual.sent_features = manual.encode(manual.x[manual.aligned_rows[np.concatenate(batches)]])
    manual.encoder.train()
    g = torch.from_numpy(grad)
    for j, rows in enumerate(batches):
        features = manual.encoder(manual.x[manual.aligned_rows[rows]])
        step_grad = g[rows[0]:rows[-1] + 1]
        if j:
            step_grad = step_grad + manual.prototype_gradient_refresh(features.detach(), 8, epoch=0)
        manual.optimiser.zero_grad()
        (features * step_grad).sum().backward()
        manual.optimiser.step()
    for a, b in zip(refreshed.parameters(), manual.parameters(), strict=True):
        assert torch.equal(a, b)
    # … and it changed the second update: without the refresh the encoder ends elsewhere
    off = make_party(passive.data, small_config(lam_passive=0.0), passive.state_bytes())
    assert isinstance(off, PassiveParty)
    plain = _steps(off, batches, grad)
    assert not all(torch.equal(a, b) for a, b in zip(refreshed.parameters(), plain.parameters(), strict=True))
    # a single update per exchange (K = 1) is never refreshed: bit for bit the same as off
    one = [np.arange(0, 8)]
    for a, b in zip(_steps(passive, one, grad[:8]).parameters(), _steps(off, one, grad[:8]).parameters(),
                    strict=True):
        assert torch.equal(a, b)


def test_sent_features_survive_the_node_state() -> None:
    passive, _ = _passive(stale_refresh="prototypes")
    reply = passive.handle("step", {"positions": [np.arange(0, 5)]})
    again = make_party(passive.data, passive.cfg, passive.state_bytes())
    assert isinstance(again, PassiveParty) and again.sent_features is not None
    assert np.array_equal(again.sent_features.numpy(), reply["features"])
    off, _ = _passive()
    off.handle("step", {"positions": [np.arange(0, 5)]})
    assert off.sent_features is None  # kept only when the refresh needs them


def _run(**strategy: object) -> dict:
    """:func:`small_config` with ``strategy``, trained and evaluated in process."""
    cfg = small_config(**strategy)
    parties, common = split_parties(cfg)
    return VerticalPrototype(cfg).run(InProcessLink(parties), lambda link: {
        n: {"aligned_ids": common} for n in link.parties})


def test_refresh_changes_only_exchanges_of_several_steps() -> None:
    on, off = _run(guard="off", stale_refresh="prototypes"), _run(guard="off")
    assert on["history"] == off["history"] and on["test"] == off["test"]
    # whole-epoch exchanges: the later updates are refreshed, so the training differs
    whole_on = _run(guard="off", steps_per_exchange=0, stale_refresh="prototypes")
    assert whole_on["history"] != _run(guard="off", steps_per_exchange=0)["history"]


def test_bad_stale_refresh_is_refused_naming_key_and_value() -> None:
    with pytest.raises(ValueError, match=r"strategy\.stale_refresh.*'fresh'"):
        small_config(stale_refresh="fresh")


def test_benchmark_strategy_overrides() -> None:
    assert strategy_overrides(["stale_refresh=prototypes", "attack=false", "steps_per_exchange=0",
                               "noise_seed=3"]) == {"stale_refresh": "prototypes", "attack": False,
                                                    "steps_per_exchange": 0, "noise_seed": 3}
    with pytest.raises(ValueError, match="KEY a strategy setting, got 'nope=1'"):
        strategy_overrides(["nope=1"])
    with pytest.raises(ValueError, match="attack must be true or false, got 'yes'"):
        strategy_overrides(["attack=yes"])
    with pytest.raises(ValueError, match="lr must be a float, got 'fast'"):
        strategy_overrides(["lr=fast"])


def test_report_labels_say_which_rows_were_refreshed() -> None:
    row = {"steps_per_exchange": 0, "round_trips_per_epoch": 4.0}
    assert exchange_label(row, "w") == "K=whole epoch, 4 round trips/epoch"
    assert exchange_label({**row, "stale_refresh": "off"}, "w") == "K=whole epoch, 4 round trips/epoch"
    assert exchange_label({**row, "stale_refresh": "prototypes"}, "w") == (
        "K=whole epoch, 4 round trips/epoch, stale refresh prototypes")
    with pytest.raises(ValueError, match="stale_refresh must be a non-empty string, got 1"):
        exchange_label({**row, "stale_refresh": 1}, "w")
