"""The label holder's privacy noise (randomised response, prototype noise) comes from a per-run secret it
keeps in its node state, not from the public run seed; ``strategy.noise_seed`` pins it, with a warning."""

from __future__ import annotations

import json
import warnings
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch
from flwr.app import Message

from clients.vertical.active_party import ActiveParty
from clients.vertical.handlers import load_party
from clients.vertical.label_protection import randomized_response
from clients.vertical.parties import make_party
from clients.vertical.party_base import seeded_generator
from protocol.codec import from_flat, to_flat
from protocol.privacy_noise import PrivacyWarning, privacy_noise_seed
from protocol.vertical import VerticalConfig
from simulations.results import vertical_run_record, write_results
from strategies.vertical_flower import run_vertical
from tests.fake_grid import task_identity
from tests.vertical_helpers import FIRST_NODE_ID, flower_config, party_grid, small_config, split_parties

torch.set_num_threads(1)  # tiny models: extra intra-op threads only contend on the shared cores

NOISY = {"label_rr_epsilon": 1.0, "dp_clip": 1.0, "dp_noise": 2.0, "dp_count_noise": 2.0}
"""Both privacy mechanisms of the label holder on."""


def _aligned_active(cfg: VerticalConfig) -> tuple[ActiveParty, np.ndarray]:
    """The label holder of ``cfg`` after ``align`` (its randomised-response labels drawn), and the passive
    party's features of the aligned users (what ``prototypes`` receives)."""
    parties, common = split_parties(cfg)
    for party in parties.values():
        party.handle("align", {"aligned_ids": common})
    active, passive = parties["active"], parties["passive1"]
    assert isinstance(active, ActiveParty) and active.aligned_rows is not None
    return active, passive.encode(passive.x[passive.aligned_rows]).numpy()


def _draws(active: ActiveParty, features: np.ndarray) -> tuple[torch.Tensor, np.ndarray]:
    """The randomised-response labels of the aligned users and the next noised prototype release."""
    assert active.aligned_rows is not None
    released = active.handle("prototypes", {"passive_features": [features]})["prototypes"][0]
    return active.train_y[torch.from_numpy(active.aligned_rows)].clone(), released


def test_unset_noise_seed_draws_secret_noise_that_the_run_seed_does_not_fix() -> None:
    cfg = small_config(**NOISY)
    assert cfg.strategy.noise_seed is None and cfg.seed == 0
    with warnings.catch_warnings():
        warnings.simplefilter("error", PrivacyWarning)  # secret noise: nothing to warn about
        first, features = _aligned_active(cfg)
        second, _ = _aligned_active(cfg)
        labels_1, released_1 = _draws(first, features)
        labels_2, released_2 = _draws(second, features)
    assert first.noise_seed is not None and first.noise_seed != second.noise_seed
    assert not torch.equal(labels_1, labels_2)  # 126 users, each kept w.p. 0.23: equal draws are impossible
    assert not np.allclose(released_1, released_2)
    # the non-private randomness still follows the run seed: same initial weights
    for a, b in zip(first.parameters(), second.parameters(), strict=True):
        assert torch.equal(a, b)


def test_pinned_noise_seed_reproduces_the_draws_with_a_privacy_warning() -> None:
    cfg = small_config(**NOISY, noise_seed=11)
    with pytest.warns(PrivacyWarning, match="seed=11: reproducible, and removable"):
        first, features = _aligned_active(cfg)
    with pytest.warns(PrivacyWarning):
        second, _ = _aligned_active(cfg)
    assert first.noise_seed == second.noise_seed == 11
    labels_1, released_1 = _draws(first, features)
    labels_2, released_2 = _draws(second, features)
    assert torch.equal(labels_1, labels_2) and np.array_equal(released_1, released_2)
    # a pinned seed is not the run seed: another one draws other noise
    with pytest.warns(PrivacyWarning):
        other, _ = _aligned_active(small_config(**NOISY, noise_seed=12))
    assert not torch.equal(_draws(other, features)[0], labels_1)


def test_a_noise_seed_equal_to_the_run_seed_replays_the_draws_the_benchmarks_recorded() -> None:
    # before the secret, randomised response was seeded by the run seed: pinning noise_seed to it (what
    # benchmarks.vertical.run_once does) gives the same draws, so the recorded results still reproduce
    cfg = small_config(label_rr_epsilon=1.0, noise_seed=0)
    with pytest.warns(PrivacyWarning):
        active, _ = _aligned_active(cfg)
    assert active.aligned_rows is not None
    rows = torch.from_numpy(active.aligned_rows)
    replay = randomized_response(active.y[rows], active.data.n_classes, 1.0, seeded_generator(cfg.seed, 4))
    assert torch.equal(active.train_y[rows], replay)


def test_no_privacy_noise_draws_no_seed_and_warns_about_none() -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error", PrivacyWarning)
        active, features = _aligned_active(small_config(noise_seed=5))  # pinned, but no noise to pin
        _draws(active, features)
    assert active.noise_seed is None
    with pytest.raises(RuntimeError, match="no privacy noise seed"):
        active.privacy_generator(4)


def test_the_secret_survives_a_state_round_trip_and_is_never_redrawn() -> None:
    cfg = small_config(**NOISY)
    active, features = _aligned_active(cfg)
    secret = active.noise_seed
    assert secret is not None
    # Flower rebuilds the party from its state for every message: same secret, same labels, same noise
    clone = make_party(active.data, cfg, active.state_bytes())
    assert isinstance(clone, ActiveParty) and clone.noise_seed == secret
    labels, released = _draws(active, features)
    clone_labels, clone_released = _draws(clone, features)
    assert torch.equal(labels, clone_labels) and np.array_equal(released, clone_released)
    # a second ``align`` of the same run keeps the secret (re-randomising would leak by averaging)
    clone.handle("align", {"aligned_ids": active.data.ids[active.aligned_rows].tolist()})
    assert clone.noise_seed == secret and torch.equal(_draws(clone, features)[0], labels)
    # ... and the replies of the label holder never carry it
    reply = active.handle("align", {"aligned_ids": active.data.ids[active.aligned_rows].tolist()})
    assert str(secret) not in json.dumps({k: str(v) for k, v in reply.items()})


def test_noise_seed_setting_is_checked_and_optional_in_the_run_config() -> None:
    for bad in (-1, True, 1.5):
        with pytest.raises(ValueError, match="strategy.noise_seed must be null"):
            small_config(noise_seed=bad)
    flat = to_flat(small_config())
    assert "strategy.noise_seed" not in flat  # Flower's records hold no null
    assert from_flat(VerticalConfig, flat, require_all=True).strategy.noise_seed is None
    assert from_flat(VerticalConfig, {**flat, "strategy.noise_seed": 4}).strategy.noise_seed == 4
    with pytest.raises(ValueError, match="noise seed must be None"):
        privacy_noise_seed(-3)


@pytest.fixture
def flower_task_identity() -> Iterator[None]:
    """Outside a ServerApp process Flower's ``Message`` needs a task identity; set one, then restore."""
    with task_identity():
        yield


def _carries(msg: Message, secret: int) -> bool:
    """Whether ``msg`` holds ``secret`` in any form a record can carry (its digits, its 16 bytes)."""
    if msg.has_error():
        return False
    raw = [secret.to_bytes(16, order) for order in ("big", "little")]
    for record in msg.content.config_records.values():
        if any(str(secret) in str(value) for value in record.values()):
            return True
    for record in msg.content.array_records.values():
        if any(r in array.data for array in record.values() for r in raw):
            return True
    return False


@pytest.mark.usefixtures("flower_task_identity")
def test_over_flower_the_secret_stays_in_the_label_holders_node_state(tmp_path: Path) -> None:
    # Prepare: a run over Flower messages (the party rebuilt from context.state for each one) that records
    # every message the server sends and every reply the label holder gives
    cfg = flower_config(epochs=2, output_dir=str(tmp_path), **NOISY)
    grid = party_grid(2, output_dir=str(tmp_path))
    replies: list[Message] = []
    grid.faulty[FIRST_NODE_ID] = lambda reply: replies.append(reply) or reply
    # Execute
    res = run_vertical(grid, cfg, node_wait_timeout=1)  # type: ignore[arg-type]
    # Assert: the label holder kept one secret in its node state, and nothing sent or reported holds it
    active = load_party(grid.contexts[FIRST_NODE_ID], cfg)
    secret = active.noise_seed  # type: ignore[union-attr]
    assert isinstance(secret, int) and secret != cfg.seed
    assert res["passive_view_epsilon"] == 1.0 and res["prototype_releases"] == 2
    assert grid.sent and replies
    assert not any(_carries(msg, secret) for msg in [*grid.sent, *replies])
    written = write_results(tmp_path, vertical_run_record(cfg, res)).read_text()
    assert str(secret) not in written and "noise_seed" not in written  # unset: not in the config either
