"""``strategy.tune = auto`` (issue 26 §1): successive halving over a stated grid of short trials scored on
the label holder's validation users, the trials logged and charged, privacy noise refused; the schema's
default ``tune`` resolving to ``auto`` where it applies and to ``off``, logged, where it cannot."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import torch

from protocol.codec import from_flat
from protocol.vertical import (
    PRIVACY_NOISE_KEYS,
    RESET_KEYS,
    TUNE_DEFAULT,
    VerticalConfig,
    VerticalStrategyConfig,
    unpack_batch,
    with_settings,
)
from simulations.results import vertical_run_record
from simulations.vertical_config import register_configs
from strategies.vertical_flower import run_vertical
from strategies.vertical_prototype import CountingLink, InProcessLink, VerticalPrototype
from strategies.vertical_tune import (
    dominates,
    first_rung_epochs,
    halving_schedule,
    last_rung_trials,
    run_tuning,
    served_validation,
    trial_score,
    tune_grid,
)
from tests.fake_grid import task_identity
from tests.vertical_helpers import flower_config, party_grid, run_in_process, small_config, split_parties

torch.set_num_threads(1)  # tiny models: extra intra-op threads only contend on the shared cores
CONF = Path(__file__).resolve().parents[1] / "conf" / "vertical"
NOISE = {"label_rr_epsilon": 1.0, "dp_noise": 2.0, "dp_count_noise": 1.0, "grad_noise": 1.0}
"""A value of every key of :data:`protocol.vertical.PRIVACY_NOISE_KEYS`."""
CLIPS = {"dp_noise": {"dp_clip": 1.0}, "grad_noise": {"grad_clip": 0.01}}
"""The clip norm each noise needs (the noise scale is a multiple of it)."""


def _config(**strategy: Any) -> VerticalConfig:
    cfg = small_config(attack=False, **strategy)
    return dataclasses.replace(cfg, strategy=dataclasses.replace(cfg.strategy, epochs=4))


class SpyLink(InProcessLink):
    """An in-process link logging every call as ``(party, op, split)`` (``split`` of a batch's parts too)."""

    def __init__(self, parties: Any) -> None:
        super().__init__(parties)
        self.calls: list[tuple[str, str, str | None]] = []

    def request(self, calls):  # type: ignore[no-untyped-def]
        for name, (op, payload) in calls.items():
            for sub_op, sub in unpack_batch(payload) if op == "batch" else [(op, payload)]:
                self.calls.append((name, sub_op, sub.get("split")))
        return super().request(calls)


def _run(cfg: VerticalConfig) -> tuple[dict, SpyLink, dict]:
    parties, common = split_parties(cfg)
    link = SpyLink(parties)
    counted = CountingLink(link)
    res = VerticalPrototype(cfg).run(counted, lambda _: {n: {"aligned_ids": common} for n in link.parties})
    res["_total_round_trips"] = counted.round_trips
    return res, link, parties


def _compose(*overrides: str) -> VerticalConfig:
    """``conf/vertical`` composed with ``overrides`` and built, as ``python -m simulations.vertical`` does."""
    from hydra import compose, initialize_config_dir
    from omegaconf import OmegaConf

    register_configs()
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = OmegaConf.to_object(compose("config", overrides=list(overrides)))
    assert isinstance(cfg, VerticalConfig)
    return cfg


@pytest.fixture(scope="module")
def tuned() -> tuple[dict, SpyLink, dict]:
    """A run with the schema's default ``tune`` (which resolves to ``auto`` here)."""
    return _run(_config(tune=TUNE_DEFAULT))


def test_schedule_and_grid_are_the_stated_ones() -> None:
    # the last rung runs the run's epochs: the default (4 trials, 5 of 40 epochs) and longer grids
    assert halving_schedule(4, 5, 40) == [(4, 5), (2, 40)]
    assert halving_schedule(5, 1, 40) == [(5, 1), (3, 2), (2, 40)]
    assert halving_schedule(8, 5, 40) == [(8, 5), (4, 10), (2, 40)]
    assert halving_schedule(4, 3, 5) == [(4, 3), (2, 5)]  # the next rung reaches the run's epochs
    assert halving_schedule(4, 20, 40) == [(4, 20), (2, 40)]
    assert halving_schedule(4, 40, 40) == [(4, 40)]  # the first rung is already full length: the only one
    assert halving_schedule(1, 5, 40) == [(1, 40)]
    s = _config(tune="auto").strategy
    assert first_rung_epochs(s) == 1  # ceil(0.125 × 4); warm-up 0
    assert first_rung_epochs(dataclasses.replace(s, epochs=40, warmup_epochs=2)) == 5
    assert first_rung_epochs(dataclasses.replace(s, epochs=5, warmup_epochs=2)) == 3  # a prototype epoch
    grid = dict(tune_grid(s))
    assert list(grid) == ["configured", "vfl_head_fusion", "weights_x0.3", "weights_x3"]
    assert grid["vfl_head_fusion"] == {"lam": 0.0, "lam_passive": 0.0, "lam_aligned": 0.0, "lam_impute": 0.0}
    assert grid["weights_x3"]["lam_impute"] == s.lam_impute
    assert grid["weights_x3"]["lam"] == pytest.approx(3 * s.lam)
    assert grid["weights_x0.3"]["lam_aligned"] == pytest.approx(0.3 * s.lam_aligned)


@pytest.mark.parametrize(("args", "match"), [
    ((0, 5, 40), "n_trials >= 1, got 0"),
    ((4, 0, 40), "first_epochs >= 1, got 0"),
    ((4, 41, 40), "first_epochs <= epochs, got 41 > 40"),
])
def test_bad_schedule_arguments_are_named(args: tuple[int, int, int], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        halving_schedule(*args)


def test_last_rung_adds_the_baseline_the_halving_dropped() -> None:
    assert last_rung_trials([2, 1, 3, 0], 2, baseline=1) == [2, 1]  # already kept: not added twice
    assert last_rung_trials([2, 3, 1, 0], 2, baseline=1) == [2, 3, 1]  # dropped by the halving: added
    assert last_rung_trials([3, 0, 2, 1], 4, baseline=1) == [3, 0, 2, 1]


def test_served_validation_counts_the_guard_and_unserved_populations() -> None:
    val = {"aligned": 0.6, "active_only": 0.5, "passive_only_1": None}
    guard = {"aligned": {"chosen": "local", "method_val": 0.6, "local_val": 0.7},
             "active_only": {"chosen": "method", "method_val": 0.5, "local_val": 0.4}}
    served = served_validation(val, guard)
    assert served == {"aligned": 0.7, "active_only": 0.5, "passive_only_1": 0.0}
    assert trial_score(served) == pytest.approx(1.2 / 3)


def test_run_tuning_keeps_the_better_half_and_chooses_the_argmax() -> None:
    s = _config(tune="auto").strategy
    quality = {0.25: 0.5, 0.075: 0.7, 0.75: 0.6}  # by lam: configured, ×0.3, ×3; VFL + fusion: 0.65

    kept_as = []

    def trial(settings: dict, keep_as: int | None) -> dict:
        kept_as.append(keep_as)
        acc = 0.65 if not settings["lam"] else quality[round(settings["lam"], 3)]
        acc += 0.01 * settings["epochs"]  # longer trials score higher: only the same rung is compared
        return {"val": {"aligned": acc, "active_only": acc, "passive_only_1": acc}, "guard": None,
                "round_trips": 10 * settings["epochs"], "passive_view": {}, "prototype_releases": 0}

    record = run_tuning(s, trial)
    rungs = [[t["name"] for t in record["trials"] if t["rung"] == r] for r in (0, 1)]
    assert rungs[0] == ["configured", "vfl_head_fusion", "weights_x0.3", "weights_x3"]
    assert rungs[1] == ["weights_x0.3", "vfl_head_fusion"]  # the better half, best first
    assert kept_as == [None] * 5 + [4]  # each last-rung trial kept by the next one's reset
    assert [t["epochs"] for t in record["trials"]] == [1, 1, 1, 1, s.epochs, s.epochs]
    assert record["chosen"] == "weights_x0.3"
    assert record["settings"] == {"lam_impute": s.lam_impute, "lam": pytest.approx(0.075),
                                  "lam_passive": pytest.approx(0.075), "lam_aligned": pytest.approx(0.3),
                                  "epochs": s.epochs, "attack": s.attack}
    assert record["released"] == {"name": "weights_x0.3", "trial": 4, "round_trips": 10 * s.epochs}
    assert record["vfl_head_fusion"]["score"] == pytest.approx(0.65 + 0.01 * s.epochs)
    assert record["vfl_head_fusion"]["val"] == record["trials"][5]["val"]
    assert record["round_trips"] == sum(10 * t["epochs"] for t in record["trials"])


def test_the_baseline_dropped_by_the_halving_is_added_to_the_last_rung_and_can_win() -> None:
    s = dataclasses.replace(_config(tune="auto").strategy, attack=True)
    quality = {0.25: 0.5, 0.075: 0.7, 0.75: 0.6}

    def trial(settings: dict, keep_as: int | None) -> dict:  # VFL + head fusion: worst at 1 epoch, best at 4
        acc = (0.4 if settings["epochs"] < s.epochs else 0.9) if not settings["lam"] else \
            quality[round(settings["lam"], 3)]
        return {"val": {"aligned": acc}, "guard": None, "round_trips": settings["epochs"], "passive_view": {},
                "prototype_releases": 0}

    record = run_tuning(s, trial)
    final = [t for t in record["trials"] if t["rung"] == 1]
    assert [t["name"] for t in final] == ["weights_x0.3", "weights_x3", "vfl_head_fusion"]  # added
    assert [t["settings"]["attack"] for t in record["trials"]] == [False] * 4 + [True] * 3  # the run's, last
    assert record["chosen"] == "vfl_head_fusion"
    assert record["released"] == {"name": "vfl_head_fusion", "trial": 6, "round_trips": s.epochs}
    assert record["settings"] == {**dict(tune_grid(s))["vfl_head_fusion"], "epochs": s.epochs, "attack": True}


def test_a_trial_best_on_the_mean_but_below_the_baseline_on_a_population_is_passed_over() -> None:
    s = _config(tune="auto").strategy
    val = {0.25: {"aligned": 0.95, "active_only": 0.70},  # configured: best mean, loses active-only users
           0.075: {"aligned": 0.85, "active_only": 0.80},  # ×0.3: at least the baseline on both
           0.75: {"aligned": 0.60, "active_only": 0.60}}

    def trial(settings: dict, keep_as: int | None) -> dict:
        acc = {"aligned": 0.80, "active_only": 0.80} if not settings["lam"] else val[round(settings["lam"], 3)]
        return {"val": acc, "guard": None, "round_trips": 1, "passive_view": {}, "prototype_releases": 0}

    record = run_tuning(s, trial)
    final = [t["name"] for t in record["trials"] if t["rung"] == 1]
    assert final == ["configured", "weights_x0.3", "vfl_head_fusion"]  # ranked by the mean at rung 0
    assert record["chosen"] == "weights_x0.3" and record["released"]["trial"] == 5
    assert record["below_vfl_head_fusion"] == ["configured"]
    assert dominates({"aligned": 0.8, "active_only": 0.8}, {"aligned": 0.8, "active_only": 0.8})
    assert not dominates({"aligned": 0.95, "active_only": 0.7}, {"aligned": 0.8, "active_only": 0.8})
    # only the baseline dominates itself: it is released
    val[0.075] = {"aligned": 0.90, "active_only": 0.79}
    record = run_tuning(s, trial)
    assert record["chosen"] == "vfl_head_fusion"
    assert record["below_vfl_head_fusion"] == ["weights_x0.3", "configured"]  # best-scored first


def test_ties_keep_the_configured_weights() -> None:
    record = run_tuning(_config(tune="auto").strategy, lambda settings, keep_as: {
        "val": {"aligned": 0.5}, "guard": None, "round_trips": 1, "passive_view": {}, "prototype_releases": 0})
    assert record["chosen"] == "configured" and record["released"]["trial"] == 4


def test_chosen_trial_is_the_argmax_of_validation_at_the_last_rung(tuned) -> None:
    res, _, _ = tuned
    record = res["tune"]
    last = max(t["rung"] for t in record["trials"])
    final = [t for t in record["trials"] if t["rung"] == last]
    baseline = next(t for t in final if t["name"] == "vfl_head_fusion")
    eligible = [t for t in final if dominates(t["served_val"], baseline["served_val"])]
    best = max(eligible, key=lambda t: t["score"])
    assert record["chosen"] == best["name"]
    assert record["below_vfl_head_fusion"] == [t["name"] for t in final if t not in eligible]
    for t in record["trials"]:
        assert t["score"] == pytest.approx(trial_score(served_validation(t["val"], t["guard"])))
        assert set(t["val"]) == {"aligned", "active_only", "passive_only_1"}
    assert [t["epochs"] for t in record["trials"]] == [1, 1, 1, 1, 4, 4]  # the last rung at full length
    assert "vfl_head_fusion" in [t["name"] for t in final]


def test_trials_never_read_test_users(tuned) -> None:
    _, link, _ = tuned
    resets = [i for i, (_, op, _) in enumerate(link.calls) if op == "reset"]
    assert len(resets) == 2 * 7  # six trials and the winner's restore, two parties each
    before = link.calls[:resets[-1]]
    assert {split for _, op, split in before if op in ("predict", "evaluate")} == {"val"}
    assert any(split == "test" for _, _, split in link.calls[resets[-1]:])  # the released run's evaluation


def test_round_trips_of_the_trials_are_counted_in_the_totals(tuned) -> None:
    res, _, _ = tuned
    trips, record = res["round_trips"], res["tune"]
    # a trial: its reset, training, the validation features, the fusion / guard choice, the evaluation
    assert trips["training"] == record["released"]["round_trips"] - 4
    assert trips["tuning"] == record["round_trips"] == sum(t["round_trips"] for t in record["trials"]) + 1 - trips[
        "training"]  # the restore's reset; the released model's training, in the last rung, counted as training
    assert sum(trips.values()) == res["_total_round_trips"]
    for t in res["tune"]["trials"]:
        view = t["passive_view"]["passive1"]
        assert view["resets"] == 1 and view["validation_requests"] == 1
        assert view["feature_batches"] == view["gradient_batches"] > 0
        assert view["prototype_releases"] == t["prototype_releases"] == t["epochs"]  # proto_every 1


def test_released_run_is_the_tune_off_run_of_the_chosen_settings(tuned) -> None:
    res, _, parties = tuned
    settings = res["tune"]["settings"]
    assert set(settings) == set(RESET_KEYS)
    assert {k: getattr(parties["passive1"].cfg.strategy, k) for k in settings} == pytest.approx(settings)
    fixed, _, _ = _run(with_settings(_config(tune="auto"), settings))
    assert fixed["val"] == pytest.approx(res["val"]) and fixed["test"] == pytest.approx(res["test"])
    assert fixed["round_trips"]["training"] == res["round_trips"]["training"]
    assert "tune" not in fixed and "tuning" not in fixed["round_trips"]


def test_released_model_is_the_last_rung_winner_and_scores_at_least_vfl_head_fusion(tuned) -> None:
    res, _, _ = tuned
    record = res["tune"]
    winner = record["trials"][record["released"]["trial"]]
    assert winner["name"] == record["chosen"] and winner["epochs"] == res["history"][-1]["epoch"] + 1
    assert res["val"] == winner["val"] and res["guard"] == winner["guard"]  # exactly: the same model
    baseline = next(t for t in record["trials"] if t["name"] == "vfl_head_fusion" and t["rung"] == winner["rung"])
    assert record["vfl_head_fusion"]["served_val"] == baseline["served_val"]
    served = served_validation(res["val"], res["guard"])
    assert trial_score(served) >= record["vfl_head_fusion"]["score"]
    assert record["versus_vfl_head_fusion"] == {
        population: {"released": served[population], "vfl_head_fusion": baseline["served_val"][population],
                     "at_least": True}  # on every population: what the tuning guarantees
        for population in ("aligned", "active_only", "passive_only_1")}


def test_a_restored_winner_equals_its_tune_off_run_with_the_attack_logs() -> None:
    # the last rung trains with the attack logs on, and the winner (at seed 1 not the last trial run) is
    # restored
    cfg = _config(tune="auto")
    cfg = dataclasses.replace(cfg, seed=1, strategy=dataclasses.replace(cfg.strategy, attack=True))
    tuned, _, parties = _run(cfg)
    record = tuned["tune"]
    assert record["released"]["trial"] != len(record["trials"]) - 1
    assert all(not party.kept for party in parties.values())  # the restore drops the kept states
    fixed, _, _ = _run(with_settings(cfg, record["settings"]))
    for key in ("val", "test", "guard", "fusion", "history", "attack", "prototype_releases"):
        assert tuned[key] == fixed[key], key
    assert tuned["round_trips"]["training"] == fixed["round_trips"]["training"]


def test_reset_keeps_and_restores_a_trained_state_and_names_bad_slots() -> None:
    cfg = _config(tune="off")
    parties, common = split_parties(cfg)
    passive = parties["passive1"]
    passive.handle("align", {"aligned_ids": common})
    settings = {**dict(tune_grid(cfg.strategy))["configured"], "epochs": 4, "attack": False}
    with torch.no_grad():  # stands for training: a state fresh models do not have
        next(passive.encoder.parameters()).add_(1.0)
    trained = passive.model_state_bytes()
    passive.handle("reset", {**settings, "keep_as": 3})
    assert passive.model_state_bytes() != trained and set(passive.kept) == {3}
    clone = type(passive).from_state(passive.data, passive.cfg, passive.state_bytes())  # as a Flower node
    assert set(clone.kept) == {3} and clone.kept[3][0] == trained
    with pytest.raises(ValueError, match=r"restore=7: no such kept state \(kept: \[3\]\)"):
        passive.handle("reset", {**settings, "restore": 7})
    with pytest.raises(ValueError, match=r"restore=3: settings .* differ from the kept state's"):
        passive.handle("reset", {**settings, "epochs": 2, "restore": 3})
    clone.handle("reset", {**settings, "restore": 3})
    assert clone.model_state_bytes() == trained and clone.kept == {}


def test_released_model_is_never_below_the_local_baseline_on_validation(tuned) -> None:
    res, _, _ = tuned
    for population, record in res["guard"].items():
        served = record["local_val" if record["chosen"] == "local" else "method_val"]
        assert res["val"][population] == pytest.approx(served) and served >= record["local_val"]


@pytest.mark.parametrize(("setting", "match"), [
    ({"label_rr_epsilon": 1.0}, "strategy.label_rr_epsilon=1.0"),
    ({"dp_clip": 1.0, "dp_noise": 2.0}, "strategy.dp_noise=2.0"),
    ({"dp_count_noise": 1.0}, "strategy.dp_count_noise=1.0"),
    ({"grad_clip": 0.01, "grad_noise": 1.0}, r"strategy.grad_noise=1.0\).*; set strategy.tune=off$"),
    ({"guard": "off"}, "strategy.guard=validation"),
    ({"prototypes": False}, "strategy.prototypes true"),
    ({"tune_fraction": 0.0}, "strategy.tune_fraction"),
    ({"tune": "grid"}, "strategy.tune"),
])
def test_refused_settings_name_the_setting(setting: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        small_config(**({"tune": "auto"} | setting))


def test_privacy_noise_is_allowed_with_tune_off() -> None:
    small_config(tune="off", label_rr_epsilon=1.0, dp_clip=1.0, dp_noise=2.0)


def test_reset_settings_must_be_complete() -> None:
    cfg = _config()
    with pytest.raises(ValueError, match="exactly"):
        with_settings(cfg, {"lam": 1.0})
    assert with_settings(_config(tune="auto"), {**dict(tune_grid(cfg.strategy))["vfl_head_fusion"],
                                                 "epochs": 2, "attack": False}).strategy.tune == "off"


@pytest.fixture
def flower_task_identity() -> Iterator[None]:
    with task_identity():
        yield


def test_tune_over_flower_handlers_matches_the_in_process_run(flower_task_identity) -> None:
    cfg = flower_config(epochs=2, tune="auto", attack=False)
    over_flower = run_vertical(party_grid(2), cfg, node_wait_timeout=1)  # type: ignore[arg-type]
    direct = run_in_process(cfg)
    assert over_flower["tune"]["chosen"] == direct["tune"]["chosen"]
    assert [t["score"] for t in over_flower["tune"]["trials"]] == pytest.approx(
        [t["score"] for t in direct["tune"]["trials"]])
    assert over_flower["test"] == pytest.approx(direct["test"])
    phases = ("tuning", "training", "evaluation")  # alignment differs: plaintext IDs over Flower
    assert {k: over_flower["round_trips"][k] for k in phases} == {k: direct["round_trips"][k] for k in phases}


def test_the_vfl_head_fusion_trial_trains_as_that_baseline() -> None:
    # every prototype weight 0: same encoders, top model and head as prototypes off; prototypes only served
    runs = [_run(small_config(attack=False, guard="off", **settings))[0] for settings in (
        {"prototypes": False}, dict(tune_grid(small_config().strategy))["vfl_head_fusion"])]
    accuracies = [dict(zip(map(tuple, r["fusion_candidates"]), r["fusion_val_accuracies"], strict=True))
                  for r in runs]
    assert set(accuracies[0]) < set(accuracies[1])
    assert {c: accuracies[1][c] for c in accuracies[0]} == accuracies[0]
    assert runs[0]["val"]["passive_only_1"] is None and runs[1]["val"]["passive_only_1"] is not None


# --- the default: auto where it applies, else off with a logged reason (protocol.vertical.TUNE_DEFAULT) ---
def test_the_default_resolves_to_auto_and_the_run_records_auto(tuned) -> None:
    res, _, _ = tuned
    given = VerticalStrategyConfig(epochs=4, warmup_epochs=0, attack=False)
    cfg = VerticalConfig(strategy=given)
    assert given.tune == TUNE_DEFAULT and cfg.strategy.tune == "auto"  # resolved in a copy, not in place
    assert _config(tune=TUNE_DEFAULT) == _config(tune="auto")
    assert res["tune"]["chosen"] and res["round_trips"]["tuning"] > 0  # the fixture's default run tuned
    assert vertical_run_record(cfg, res)["config"]["strategy.tune"] == "auto"  # what results.json holds
    assert _compose().strategy.tune == "auto" == VerticalConfig().strategy.tune
    assert from_flat(VerticalConfig, {}, what="run_config").strategy.tune == "auto"


@pytest.mark.parametrize("preset", ["active_only", "vfl_aligned", "vfl_head_fusion", "proto_private"])
def test_presets_that_cannot_tune_say_off_and_still_run(preset: str, caplog: pytest.LogCaptureFixture) -> None:
    cfg = _compose(f"strategy={preset}", "strategy.epochs=1", "strategy.attack=false")
    assert cfg.strategy.tune == "off"
    assert not [r for r in caplog.records if r.name == "protocol.vertical"]  # stated by the preset: no warning
    res = run_in_process(cfg)
    assert "tune" not in res and "tuning" not in res["round_trips"] and res["test"]["active_only"] is not None
    assert vertical_run_record(cfg, res)["config"]["strategy.tune"] == "off"


@pytest.mark.parametrize(("setting", "named"), [
    *(({key: value, **CLIPS.get(key, {})}, f"strategy.{key}={value!r}") for key, value in NOISE.items()),
    ({"guard": "off"}, "strategy.guard=validation, got 'off'"),
    ({"prototypes": False}, "prototypes=False"),
])
def test_the_default_with_a_setting_auto_refuses_resolves_to_off_logged(
        setting: dict, named: str, caplog: pytest.LogCaptureFixture) -> None:
    assert set(NOISE) == set(PRIVACY_NOISE_KEYS)
    with caplog.at_level("WARNING", logger="protocol.vertical"):
        cfg = small_config(tune=TUNE_DEFAULT, **setting)
    assert cfg.strategy.tune == "off"
    assert vertical_run_record(cfg, {})["config"]["strategy.tune"] == "off"  # what results.json holds
    [record] = [r for r in caplog.records if r.name == "protocol.vertical"]
    assert record.levelname == "WARNING" and record.getMessage().startswith(
        "strategy.tune is not set and resolves to off, not auto: ")
    assert named in record.getMessage() and "set strategy.tune=off" in record.getMessage()
    with pytest.raises(ValueError, match="set strategy.tune=off$"):  # asked for by name: refused
        small_config(tune="auto", **setting)


def test_privacy_noise_on_the_default_config_from_hydra_and_run_config_trains_untuned() -> None:
    assert _compose("strategy.dp_clip=1.0", "strategy.dp_noise=4.0").strategy.tune == "off"
    assert _compose("strategy.tune=default", "strategy.label_rr_epsilon=2.0").strategy.tune == "off"
    flat = {"strategy.grad_clip": 0.01, "strategy.grad_noise": 1.0}
    assert from_flat(VerticalConfig, flat, what="run_config").strategy.tune == "off"
    with pytest.raises(Exception, match=r"refuses privacy noise \(strategy.dp_noise=4.0, strategy.dp_count_noise"):
        _compose("strategy=proto_private", "strategy.tune=auto")
    with pytest.raises(ValueError, match=r"refuses privacy noise \(strategy.grad_noise=1.0\)"):
        from_flat(VerticalConfig, {**flat, "strategy.tune": "auto"}, what="run_config")


def test_benchmarks_train_the_configured_weights_unless_a_run_says_tune() -> None:
    # their committed results were trained with tune off: the new default must not change a rerun
    from benchmarks.vertical import method_strategy

    assert {method_strategy(m).tune for m in ("proto", "active_only", "vfl_head_fusion")} == {"off"}
    assert method_strategy("proto", tune="auto").tune == "auto"
