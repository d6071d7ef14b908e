"""Several aligned minibatches per exchange (``strategy.steps_per_exchange``) and the round-trip count."""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import pytest
import torch

from clients.vertical.active_party import ActiveParty
from clients.vertical.parties import make_party
from clients.vertical.passive_party import PassiveParty
from protocol.vertical import ACTIVE, VerticalConfig, decode_payload, encode_payload, pack_batch, unpack_batch
from strategies.vertical_flower import run_vertical
from strategies.vertical_prototype import InProcessLink, VerticalPrototype, passive_names
from tests.fake_grid import task_identity
from tests.vertical_helpers import flower_config, party_grid, run_in_process, small_config, split_parties

torch.set_num_threads(1)  # tiny models: extra intra-op threads only contend on the shared cores


def _run(**strategy: object) -> dict:
    cfg = small_config(**strategy)
    parties, common = split_parties(cfg)
    return VerticalPrototype(cfg).run(InProcessLink(parties), lambda link: {
        n: {"aligned_ids": common} for n in link.parties})


def _per_batch_protocol(cfg: VerticalConfig) -> tuple[list[dict], dict[str, ActiveParty | PassiveParty]]:
    """``cfg``'s training driven as before batching: one party operation per message, each minibatch's
    gradients applied as soon as the active party returns them. Returns the per-epoch metrics and the
    parties."""
    s = cfg.strategy
    parties, common = split_parties(cfg)
    passives = passive_names(cfg.dataset.n_parties)
    for party in parties.values():
        party.handle("align", {"aligned_ids": common})
    rng, history = np.random.default_rng(cfg.seed), []
    for epoch in range(s.epochs):
        order = rng.permutation(len(common))
        total = 0.0
        for step, i in enumerate(range(0, len(order), s.aligned_batch_size)):
            batch = order[i:i + s.aligned_batch_size]
            feats = [parties[n].handle("step", {"positions": [batch]})["features"] for n in passives]
            reply = parties[ACTIVE].handle("step", {"positions": [batch], "epoch": epoch,
                                                    "passive_features": feats})
            total += float(reply["losses"][0]) * len(batch)
            for name, grad in zip(passives, reply["grads"], strict=True):
                parties[name].handle("step", {"grad_positions": [batch], "grad": grad, "epoch": epoch,
                                              "step": step})
        snaps = [parties[n].handle("snapshot", {})["features"] for n in passives]
        protos = parties[ACTIVE].handle("prototypes", {"passive_features": snaps})
        for name, prototypes, valid in zip(passives, protos["prototypes"], protos["valid"], strict=True):
            parties[name].handle("receive", {"prototypes": prototypes, "valid": valid})
        local = parties[ACTIVE].handle("local", {"epoch": epoch})
        history.append({"epoch": epoch, "loss": total / len(order), "n_valid": float(protos["n_valid_own"]),
                        "local_loss": float(local["loss"])})
    return history, parties


def test_one_step_per_exchange_reproduces_the_per_batch_protocol_bit_for_bit() -> None:
    # the method's own numbers, measured before the guard: guard off (with it, the same training serves
    # active-only users by the label holder's baseline, tests/test_vertical_guard.py)
    cfg = small_config(guard="off")
    assert cfg.strategy.steps_per_exchange == 1 and cfg.strategy.proto_every == 1
    parties, common = split_parties(cfg)
    res = VerticalPrototype(cfg).run(InProcessLink(parties), lambda link: {
        n: {"aligned_ids": common} for n in link.parties})
    # the same computation, one operation per message, in this process: equal bit for bit
    history, per_batch = _per_batch_protocol(cfg)
    assert res["history"] == history
    for name, party in parties.items():
        for a, b in zip(party.parameters(), per_batch[name].parameters(), strict=True):
            assert torch.equal(a, b), name
        assert party.prototypes is not None and per_batch[name].prototypes is not None
        assert torch.equal(party.prototypes, per_batch[name].prototypes), name
    # the numbers of small_config() measured with one Flower message per operation (before batching),
    # within tolerances: float32 training, so torch/BLAS/numpy versions move the last bits of the losses
    # (measured: ~3e-8 relative); rel=1e-4 still catches any change of the computation
    last = res["history"][-1]
    assert last["epoch"] == 2 and last["n_valid"] == 10.0
    assert last["loss"] == pytest.approx(1.8620042668448553, rel=1e-4)
    assert last["local_loss"] == pytest.approx(3.957299814821157, rel=1e-4)
    # accuracies: a last-bit drift may flip a borderline user; abs=0.01 is ±3 of the 359 test users
    assert res["test"] == pytest.approx({"aligned": 0.8272980501392758, "active_only": 0.4373259052924791,
                                         "passive_only_1": 0.7381615598885793}, abs=0.01)
    # ±2 of the 126 aligned users the attack guesses
    assert res["attack"]["nearest"] == pytest.approx(0.8253968253968254, abs=0.02)
    # 126 aligned users at batch 32: 4 exchanges of 2 round trips + snapshot + prototypes, per epoch
    assert res["steps_per_exchange"] == 1 and res["round_trips_per_epoch"] == 10.0
    assert res["round_trips"] == {"alignment": 1, "training": 30, "evaluation": 7}


@pytest.mark.parametrize(("strategy", "per_epoch"), [
    ({"steps_per_exchange": 0}, 4.0),  # the whole epoch: features, gradients, snapshot, prototypes
    ({"steps_per_exchange": 2}, 6.0),  # 2 exchanges of 2 minibatches
    ({"steps_per_exchange": 16}, 4.0),  # more than the epoch's 4 minibatches
    ({"steps_per_exchange": 0, "proto_every": 3}, 8 / 3),  # a release in epoch 0 only
    ({"steps_per_exchange": 0, "prototypes": False}, 2.0),  # the local pass rides with the gradients
    ({"split_learning": False, "prototypes": False}, 1.0),  # active only: its local pass
])
def test_round_trips_per_epoch(strategy: dict, per_epoch: float) -> None:
    res = _run(**strategy)
    assert res["round_trips_per_epoch"] == pytest.approx(per_epoch)
    assert res["round_trips"]["training"] == round(3 * per_epoch)


def test_whole_epoch_exchange_trains() -> None:
    res = _run(steps_per_exchange=0)
    # after 3 epochs (12 steps) the passive features lag one epoch behind: below K = 1's 0.827
    assert res["test"]["aligned"] > 0.5 and res["prototype_releases"] == 3


def test_passive_party_applies_k_gradients_as_k_local_updates() -> None:
    cfg = small_config()
    parties, common = split_parties(cfg)
    passive = parties["passive1"]
    assert isinstance(passive, PassiveParty)
    passive.handle("align", {"aligned_ids": common})
    batches = [np.arange(0, 8), np.arange(8, 14)]
    grad = np.random.default_rng(0).normal(size=(14, 64)).astype(np.float32)
    # Execute: one message with both gradients, and two messages with one each
    together = make_party(passive.data, cfg, passive.state_bytes())
    together.handle("step", {"grad_positions": batches, "grad": grad, "epoch": 0, "step": 0})
    apart = make_party(passive.data, cfg, passive.state_bytes())
    apart.handle("step", {"grad_positions": batches[:1], "grad": grad[:8], "epoch": 0, "step": 0})
    apart.handle("step", {"grad_positions": batches[1:], "grad": grad[8:], "epoch": 0, "step": 1})
    # Assert: the same two updates; one update of both would differ
    for a, b in zip(together.parameters(), apart.parameters(), strict=True):
        assert torch.equal(a, b)
    single = make_party(passive.data, cfg, passive.state_bytes())
    single.handle("step", {"grad_positions": [np.arange(14)], "grad": grad, "epoch": 0, "step": 0})
    assert not all(torch.equal(a, b) for a, b in zip(single.parameters(), apart.parameters(), strict=True))
    with pytest.raises(ValueError, match=r"gradient must have shape \(14, 64\), got \(13, 64\)"):
        together.handle("step", {"grad_positions": batches, "grad": grad[:13], "epoch": 0, "step": 0})


def test_active_party_steps_on_stale_passive_features_in_order() -> None:
    cfg = small_config()
    parties, common = split_parties(cfg)
    active = parties["active"]
    assert isinstance(active, ActiveParty)
    active.handle("align", {"aligned_ids": common})
    feats = np.random.default_rng(1).normal(size=(14, 64)).astype(np.float32)
    batches = [np.arange(0, 8), np.arange(8, 14)]
    together = make_party(active.data, cfg, active.state_bytes())
    reply = together.handle("step", {"positions": batches, "passive_features": [feats], "epoch": 0})
    apart = make_party(active.data, cfg, active.state_bytes())
    first = apart.handle("step", {"positions": batches[:1], "passive_features": [feats[:8]], "epoch": 0})
    second = apart.handle("step", {"positions": batches[1:], "passive_features": [feats[8:]], "epoch": 0})
    assert reply["losses"].tolist() == [*first["losses"].tolist(), *second["losses"].tolist()]
    assert np.array_equal(reply["grads"][0], np.concatenate([first["grads"][0], second["grads"][0]]))


def test_batch_payloads_survive_the_wire_and_refuse_other_operations() -> None:
    ops = [("step", {"grad_positions": [np.arange(3)], "grad": np.ones((3, 2)), "epoch": 1, "step": 0}),
           ("receive", {"prototypes": np.zeros((2, 2)), "valid": np.array([True, False])}),
           ("predict", {"split": "val"})]
    back = unpack_batch(decode_payload(encode_payload(pack_batch(ops))))
    assert [op for op, _ in back] == ["step", "receive", "predict"]
    assert back[0][1]["epoch"] == 1 and np.array_equal(back[0][1]["grad_positions"][0], np.arange(3))
    assert back[1][1]["valid"].tolist() == [True, False] and back[2][1] == {"split": "val"}
    with pytest.raises(ValueError, match="operation 'align' cannot be batched"):
        pack_batch([("align", {})])
    with pytest.raises(ValueError, match="at least one operation"):
        pack_batch([])
    with pytest.raises(ValueError, match="lacks its 'ops' list"):
        unpack_batch({"0/split": "val"})
    with pytest.raises(ValueError, match="steps_per_exchange must be >= 0, got -1"):
        small_config(steps_per_exchange=-1)


@pytest.fixture
def flower_identity() -> Iterator[None]:
    with task_identity():
        yield


@pytest.mark.usefixtures("flower_identity")
def test_whole_epoch_exchange_over_flower_matches_in_process() -> None:
    cfg = flower_config(steps_per_exchange=0)
    grid = party_grid(2)
    over_flower = run_vertical(grid, cfg, node_wait_timeout=1)  # type: ignore[arg-type]
    direct = run_in_process(cfg)
    assert over_flower["test"] == pytest.approx(direct["test"])
    assert over_flower["round_trips"]["alignment"] == 2  # plaintext IDs, then align
    assert over_flower["round_trips"]["training"] == direct["round_trips"]["training"] == 16  # 4 × 4
    batches = [m for m in grid.sent if m.metadata.message_type == "train.vfl_batch"]
    # per epoch: passive gradients + next features (3), passive gradients + snapshot (4), active
    # prototypes + local pass (4); the last epoch's gradients and prototypes ride with the first predict
    assert len(batches) == 3 + 4 + 4 + 1
