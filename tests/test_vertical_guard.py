"""The label holder's guard (issue 26 §1): each population it serves gets the better, on validation, of
the method's predictor and its local-only baseline, in evaluation and in the saved model."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest
import torch

from clients.vertical.active_party import ActiveParty
from clients.vertical.guard import (
    apply_choice,
    baseline_config,
    choose_predictors,
    population_sigmas,
    wins_beyond_noise,
)
from clients.vertical.parties import make_party
from clients.vertical.predict import predict_saved
from protocol.vertical import ACTIVE, VerticalConfig, VerticalStrategyConfig
from strategies.vertical_prototype import InProcessLink, VerticalPrototype
from tests.vertical_helpers import small_config, split_parties

torch.set_num_threads(1)  # tiny models: extra intra-op threads only contend on the shared cores

CRIPPLED = {"lam": 100.0, "lam_impute": 0.0}
"""An absurd prototype-pull weight: the label holder's head (and shared encoder) is spoilt."""


def _run(cfg: VerticalConfig, noise_passive: bool = False) -> tuple[dict, dict]:
    """A run of ``cfg`` over in-process parties (``noise_passive``: the passive party's columns replaced
    by Gaussian noise); its results and the parties (trained)."""
    parties, common = split_parties(cfg)
    if noise_passive:
        data, rng = parties["passive1"].data, np.random.default_rng(0)
        noise = {k: rng.standard_normal(getattr(data, k).shape).astype(np.float32)
                 for k in ("x", "val_x", "test_x")}
        parties["passive1"] = make_party(dataclasses.replace(data, **noise), cfg)
    res = VerticalPrototype(cfg).run(InProcessLink(parties),
                                     lambda link: {n: {"aligned_ids": common} for n in link.parties})
    return res, parties


def test_choice_needs_a_gain_beyond_noise_and_keeps_the_baseline_on_ties() -> None:
    labels = torch.tensor([0, 1, 2, 1, 0, 1, 2, 1])
    local = torch.tensor([0, 1, 0, 0, 0, 1, 0, 0])  # 4/8 right
    method = {"aligned": labels.clone(),  # 4 users only it gets right, none only the baseline: 4 > 1·sqrt(4)
              "active_only": torch.full((8,), -1)}  # no predictor
    record = choose_predictors(method, local, labels, {"aligned": 1.0, "active_only": 1.0})
    assert record["aligned"] == {"chosen": "method", "method_val": 1.0, "local_val": 0.5}
    assert record["active_only"] == {"chosen": "local", "method_val": 0.0, "local_val": 0.5}
    served = apply_choice(method, local, {p: str(r["chosen"]) for p, r in record.items()})
    assert torch.equal(served["aligned"], method["aligned"]) and torch.equal(served["active_only"], local)
    # a tie, or a gain inside the noise of the paired comparison (3 vs 1: 2 <= sqrt(4)), keeps the baseline
    one = {"aligned": 1.0, "active_only": 1.0}
    tie = choose_predictors({"aligned": local, "active_only": local}, local.clone(), labels, one)
    assert {r["chosen"] for r in tie.values()} == {"local"}
    narrow = torch.tensor([0, 1, 2, 1, 0, 0, 2, 0])  # right 5/8: users 2, 3, 6 only it, user 5 only local
    assert choose_predictors({"aligned": narrow, "active_only": narrow}, local, labels, one)["aligned"][
        "chosen"] == "local"
    with pytest.raises(ValueError, match="no baseline"):
        apply_choice(method, None, {"aligned": "local"})


def test_the_default_guard_asks_one_sigma_for_aligned_users_and_two_for_the_label_holders_own() -> None:
    """``strategy.guard_sigmas_aligned`` (default 1) and ``guard_sigmas_active_only`` (default 2): 4 users
    only the method gets right and none only the baseline is 4 > 1·sqrt(4) but not > 2·sqrt(4); 5 of 5 is
    5 > 2·sqrt(5) ≈ 4.47; 0 σ takes any strict win (2 vs 1), never a tie."""
    assert population_sigmas(VerticalStrategyConfig()) == {"aligned": 1.0, "active_only": 2.0}
    four, five = torch.tensor([True] * 4 + [False] * 4), torch.tensor([True] * 5 + [False] * 3)
    nothing = torch.zeros(8, dtype=torch.bool)
    assert wins_beyond_noise(four, nothing, 1.0) and not wins_beyond_noise(four, nothing, 2.0)
    assert wins_beyond_noise(five, nothing, 2.0)
    two_vs_one = torch.tensor([True, True, False]), torch.tensor([False, False, True])
    assert wins_beyond_noise(*two_vs_one, 0.0) and not wins_beyond_noise(*two_vs_one, 1.0)
    assert not wins_beyond_noise(nothing, nothing, 0.0)  # a tie never wins
    labels = torch.tensor([0, 1, 2, 1, 0, 1, 2, 1])
    local = torch.tensor([0, 1, 0, 0, 0, 1, 0, 0])
    record = choose_predictors({"aligned": labels, "active_only": labels}, local, labels,
                               population_sigmas(VerticalStrategyConfig()))
    assert (record["aligned"]["chosen"], record["active_only"]["chosen"]) == ("method", "local")


@pytest.mark.parametrize("key", ["guard_sigmas_aligned", "guard_sigmas_active_only"])
@pytest.mark.parametrize("value", [-0.5, float("nan"), float("inf")])
def test_guard_sigmas_must_be_finite_and_non_negative(key: str, value: float) -> None:
    with pytest.raises(ValueError, match=rf"strategy.{key} must be finite and >= 0, got {value!r}"):
        VerticalStrategyConfig(**{key: value}).validate()


def test_baseline_config_is_the_active_only_baseline() -> None:
    cfg = small_config(label_rr_epsilon=1.0, lam=3.0)
    s = baseline_config(cfg).strategy
    assert (s.split_learning, s.prototypes, s.local_head, s.label_rr_epsilon, s.guard) == (
        False, False, True, 0.0, "off")
    assert (s.lr, s.epochs, s.local_batch_size) == (cfg.strategy.lr, cfg.strategy.epochs,
                                                    cfg.strategy.local_batch_size)
    with pytest.raises(ValueError, match="strategy.guard must be one of"):
        small_config(guard="always")


def test_crippled_method_falls_back_to_the_label_holder_alone(tmp_path: Path) -> None:
    # Prepare: the crippled method (absurd pull, a passive party of pure noise) with the guard, and the
    # label holder trained alone
    cfg = small_config(**CRIPPLED)
    alone = dataclasses.replace(cfg, strategy=dataclasses.replace(cfg.strategy, split_learning=False,
                                                                  prototypes=False))
    # Execute
    res, parties = _run(cfg, noise_passive=True)
    alone_res, _ = _run(alone.validate())
    # Assert: the guard chose the baseline for both populations, which then score as the label holder alone
    guard = res["guard"]
    for population in ("aligned", "active_only"):
        assert guard[population]["chosen"] == "local", guard
        assert guard[population]["local_val"] > guard[population]["method_val"]
        assert guard[population]["local_val"] == pytest.approx(alone_res["val"]["aligned"])
        assert res["val"][population] == pytest.approx(guard[population]["local_val"])
        assert res["test"][population] == pytest.approx(alone_res["test"]["aligned"])
    # ... and the saved model predicts what the evaluation reported
    active, passive = parties[ACTIVE], parties["passive1"]
    active.handle("save", {"path": str(tmp_path / "active.pt")})
    passive.handle("save", {"path": str(tmp_path / "passive1.pt")})
    record = torch.load(tmp_path / "active.pt", weights_only=True)
    assert record["guard"] == {"aligned": "local", "active_only": "local"}
    feats = predict_saved(tmp_path / "passive1.pt", passive.data.test_x)
    preds = predict_saved(tmp_path / "active.pt", active.data.test_x, [feats["features"]])
    for population in ("aligned", "active_only"):
        assert np.mean(preds[population] == active.data.test_y) == pytest.approx(res["test"][population])


def test_normal_run_records_the_guard_and_keeps_it_through_state_and_save(tmp_path: Path) -> None:
    res, parties = _run(small_config())
    guard = res["guard"]
    assert set(guard) == {"aligned", "active_only"}
    for population, r in guard.items():
        assert r["chosen"] == ("local" if r["local_val"] > r["method_val"] else "method")
        assert res["val"][population] == pytest.approx(max(r["local_val"], r["method_val"]))
    active = parties[ACTIVE]
    assert isinstance(active, ActiveParty) and active.baseline is not None
    assert set(active.state()["baseline"]) == {"encoder", "head", "optimiser"}  # no top model, prototypes …
    clone = make_party(active.data, active.cfg, active.state_bytes())
    assert isinstance(clone, ActiveParty) and clone.guard == active.guard and clone.baseline is not None
    for a, b in zip(active.baseline.parameters(), clone.baseline.parameters(), strict=True):
        assert torch.equal(a, b)
    passive = parties["passive1"]
    active.handle("save", {"path": str(tmp_path / "active.pt")})
    passive.handle("save", {"path": str(tmp_path / "passive1.pt")})
    feats = predict_saved(tmp_path / "passive1.pt", passive.data.test_x)
    preds = predict_saved(tmp_path / "active.pt", active.data.test_x, [feats["features"]])
    for population in ("aligned", "active_only"):
        assert np.mean(preds[population] == active.data.test_y) == pytest.approx(res["test"][population])


def test_guard_off_trains_the_same_method_and_serves_it_unguarded() -> None:
    on, _ = _run(small_config(**CRIPPLED))
    off, parties = _run(small_config(**CRIPPLED, guard="off"))
    assert "guard" not in off and parties[ACTIVE].baseline is None  # type: ignore[union-attr]
    assert off["history"] == on["history"] and off["fusion"] == on["fusion"]  # the baseline changes nothing
    assert off["val"]["aligned"] == pytest.approx(on["guard"]["aligned"]["method_val"])
    assert off["val"]["active_only"] == pytest.approx(on["guard"]["active_only"]["method_val"])


def test_guard_with_fixed_fusion_and_no_guard_without_split_learning() -> None:
    fixed, _ = _run(small_config(fusion_selection="fixed", **CRIPPLED))
    assert fixed["fusion"] == [1.0, 1.0, 1.0] and "fusion_candidates" not in fixed
    assert fixed["guard"]["active_only"]["chosen"] == "local"
    alone, parties = _run(small_config(split_learning=False, prototypes=False))
    assert "guard" not in alone and parties[ACTIVE].baseline is None  # type: ignore[union-attr]


def test_a_head_answering_one_class_for_everyone_never_serves() -> None:
    # Prepare: a skewed validation set where "always class 0" is more accurate than the baseline
    labels = torch.tensor([0] * 14 + [1, 2])
    always_zero = torch.zeros(16, dtype=torch.long)  # 14/16 right
    local = torch.tensor([0] * 8 + [1] * 6 + [1, 2])  # 10/16 right, recalls every class
    # Execute
    defaults = population_sigmas(VerticalStrategyConfig())
    record = choose_predictors({"aligned": always_zero, "active_only": always_zero}, local, labels, defaults)
    # Assert: the one-class head loses although it is more accurate; a baseline collapsed too does not count
    assert {r["chosen"] for r in record.values()} == {"local"}
    assert record["aligned"]["method_val"] == 0.875 and record["aligned"]["local_val"] == 0.625
    both = choose_predictors({"aligned": always_zero, "active_only": always_zero},
                             torch.ones(16, dtype=torch.long), labels, defaults)
    assert {r["chosen"] for r in both.values()} == {"method"}
