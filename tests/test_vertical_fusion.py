"""The active party's fusion of its predictors and the validation choice among candidate fusions."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from clients.vertical.active_party import ActiveParty
from clients.vertical.fusion import choose_fusion, fuse
from clients.vertical.parties import make_party
from protocol.vertical import VerticalConfig, VerticalStrategyConfig, configured_fusion, fusion_candidates
from strategies.vertical_prototype import InProcessLink, VerticalPrototype
from tests.vertical_helpers import small_config, split_parties


@pytest.mark.parametrize(("switches", "expected"), [
    ({}, [(1.0, 1.0, 1.0), (1.0, 1.0, 0.0), (0.0, 1.0, 0.0), (0.0, 1.0, 1.0)]),
    ({"prototype_fusion": 0.5}, [(1.0, 1.0, 0.5), (1.0, 1.0, 0.0), (0.0, 1.0, 0.0), (0.0, 1.0, 0.5)]),
    ({"fusion_selection": "fixed"}, [(1.0, 1.0, 1.0)]),
    ({"prototypes": False}, [(1.0, 1.0, 0.0), (0.0, 1.0, 0.0)]),  # vfl_head_fusion
    ({"prototypes": False, "local_head": False}, [(1.0, 0.0, 0.0)]),  # vfl_aligned: nothing to choose
    ({"local_head": False}, [(1.0, 0.0, 1.0), (1.0, 0.0, 0.0)]),
])
def test_fusion_candidates_put_the_configured_fusion_first(switches: dict, expected: list) -> None:
    strategy = dataclasses.replace(VerticalStrategyConfig(), **switches)
    assert fusion_candidates(strategy) == expected
    assert fusion_candidates(strategy)[0] == configured_fusion(strategy)


def test_fuse_weights_log_probabilities() -> None:
    components = {"top": torch.tensor([[-1.0, -2.0]]), "head": torch.tensor([[-3.0, -0.5]]),
                  "proto": torch.tensor([[-0.1, -4.0]])}
    assert torch.allclose(fuse(components, (1.0, 1.0, 1.0)), torch.tensor([[-4.1, -6.5]]))
    assert torch.allclose(fuse(components, (0.0, 1.0, 0.5)), torch.tensor([[-3.05, -2.5]]))


def test_choose_fusion_keeps_the_best_and_the_earliest_on_ties() -> None:
    log = torch.log
    # three users, labels 0, 1, 1: the top model is right on user 0 only, the head on all three
    components = {"top": log(torch.tensor([[0.9, 0.1], [0.9, 0.1], [0.8, 0.2]])),
                  "head": log(torch.tensor([[0.6, 0.4], [0.3, 0.7], [0.4, 0.6]])),
                  "proto": torch.zeros(3, 2)}
    labels = torch.tensor([0, 1, 1])
    candidates = [(1.0, 1.0, 1.0), (1.0, 1.0, 0.0), (0.0, 1.0, 0.0), (0.0, 1.0, 1.0)]
    chosen, accuracies = choose_fusion(components, labels, candidates)
    assert accuracies == pytest.approx([1 / 3, 1 / 3, 1.0, 1.0])
    assert chosen == (0.0, 1.0, 0.0)  # ties with (0, 1, 1): the earlier candidate wins
    assert choose_fusion(components, labels, candidates[:2])[0] == (1.0, 1.0, 1.0)
    with pytest.raises(ValueError, match="no candidate"):
        choose_fusion(components, labels, [])
    with pytest.raises(ValueError, match="at least one labelled"):
        choose_fusion({k: v[:0] for k, v in components.items()}, labels[:0], candidates)


def test_run_selects_the_fusion_on_validation_users_and_keeps_it() -> None:
    cfg = small_config()
    parties, common = split_parties(cfg)
    active = parties["active"]
    assert isinstance(active, ActiveParty)
    res = VerticalPrototype(cfg).run(InProcessLink(parties),
                                     lambda link: {n: {"aligned_ids": common} for n in link.parties})
    assert res["fusion_candidates"] == [list(c) for c in fusion_candidates(cfg.strategy)]
    assert res["fusion"] in res["fusion_candidates"]
    best = max(res["fusion_val_accuracies"])
    assert res["fusion_val_accuracies"][res["fusion_candidates"].index(res["fusion"])] == best
    # the reported validation accuracy of aligned users is that of the chosen fusion
    assert res["val"]["aligned"] == pytest.approx(best)
    assert list(active.fusion) == res["fusion"]
    clone = make_party(active.data, cfg, active.state_bytes())
    assert isinstance(clone, ActiveParty) and clone.fusion == active.fusion


def test_fixed_fusion_is_reported_and_select_fusion_refuses_bad_features() -> None:
    cfg = small_config(fusion_selection="fixed")
    parties, common = split_parties(cfg)
    res = VerticalPrototype(cfg).run(InProcessLink(parties),
                                     lambda link: {n: {"aligned_ids": common} for n in link.parties})
    assert res["fusion"] == [1.0, 1.0, 1.0] and "fusion_candidates" not in res
    n_val = len(parties["active"].data.val_ids)
    bad = np.zeros((n_val - 1, cfg.model.feature_dim), dtype=np.float32)
    with pytest.raises(ValueError, match="sent .* feature rows"):
        parties["active"].handle("select_fusion", {"passive_features": [bad]})


def test_unknown_fusion_selection_is_refused() -> None:
    cfg = VerticalConfig()
    cfg.strategy = dataclasses.replace(cfg.strategy, fusion_selection="best")
    with pytest.raises(ValueError, match="fusion_selection must be one of"):
        cfg.validate()
