"""One schema, three views: the typed dataclasses, the Hydra YAML and pyproject's flwr run_config."""

from __future__ import annotations

import dataclasses
import tomllib
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

import simulations.pate  # noqa: F401  (registers the schema in Hydra's ConfigStore)
from protocol.codec import from_flat, to_flat
from protocol.vertical import TUNE_DEFAULT, VerticalConfig, VerticalStrategyConfig
from simulations.pate_config import PateConfig, PateStrategyConfig, compose_config
from simulations.server_app import section

ROOT = Path(__file__).resolve().parents[1]


def flwr_app_config() -> dict:
    def walk(d, prefix=""):
        for k, v in d.items():
            if isinstance(v, dict):
                yield from walk(v, f"{prefix}{k}.")
            else:
                yield f"{prefix}{k}", v

    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    return dict(walk(pyproject["tool"]["flwr"]["app"]["config"]))


def compose_pate(*overrides: str) -> PateConfig:
    with initialize_config_dir(config_dir=str(ROOT / "conf" / "pate"), version_base="1.3"):
        cfg = compose("config", overrides=["run.output_dir=out", *overrides])
    return OmegaConf.to_object(cfg)


def test_pyproject_run_config_equals_the_schema_defaults():
    flat = flwr_app_config()
    assert flat["method"] == "pate"
    assert section(flat, "pate") == to_flat(PateConfig())
    # the one exception: strategy.tune states the schema's unresolved default, which building resolves
    assert flat["vertical.strategy.tune"] == VerticalStrategyConfig().tune == TUNE_DEFAULT
    assert section(flat, "vertical") == {**to_flat(VerticalConfig()), "strategy.tune": TUNE_DEFAULT}
    renamed = {f"pate.{k}" for k in PateConfig.renamed_keys}  # earlier names, kept unset: refused when set
    assert set(flat) == {"method"} | {f"pate.{k}" for k in to_flat(PateConfig())} | {
        f"vertical.{k}" for k in to_flat(VerticalConfig())} | renamed
    assert {flat[k] for k in renamed} == {""}


def test_default_hydra_composition_equals_the_schema_defaults():
    composed = compose_pate()
    assert dataclasses.replace(composed, run=PateConfig().run) == PateConfig()


@pytest.mark.parametrize(
    ("overrides", "check"),
    [
        (["strategy=gnmax", "strategy.sigma2=40"], lambda c: (c.strategy.mechanism, c.strategy.sigma2) == ("gnmax", 40)),
        (["dataset=mnist5k"], lambda c: (c.data.dataset, c.data.num_teachers, c.teacher.encoder) == ("mnist5k", 50, "cnn")),
        (["dataset=digits"], lambda c: (c.data.num_teachers, c.strategy.threshold, c.student.method) == (20, 16.0, "self_training")),
        (["dataset=digits", "model=cnn"], lambda c: c.teacher.encoder == "cnn"),
        (["dataset=mnist1d", "model=cnn1d"], lambda c: c.teacher.encoder == c.student_model.encoder == "cnn1d"),
        (["strategy=majority"], lambda c: c.strategy.mechanism == "majority"),
    ],
)
def test_hydra_overrides_reach_the_typed_config(overrides, check):
    assert check(compose_pate(*overrides))


def test_unknown_or_mistyped_keys_are_rejected():
    with pytest.raises(ValueError, match=r"unknown configuration keys \['data.colour'\]"):
        from_flat(PateConfig, {"data.colour": "red"}, what="run_config")
    with pytest.raises(ValueError, match="run_config data.num_teachers must be int, got 'many'"):
        from_flat(PateConfig, {"data.num_teachers": "many"}, what="run_config")
    with pytest.raises(Exception, match="sigma2"):
        compose_pate("strategy.sigma2=loud")


def test_flatten_unflatten_round_trip_with_overrides():
    flat = to_flat(PateConfig())
    flat["strategy.sigma2"] = 12.5
    flat["run.verbose"] = "true"
    cfg = from_flat(PateConfig, flat, what="run_config")
    assert cfg.strategy.sigma2 == 12.5 and cfg.run.verbose is True


def test_vertical_hydra_composition_equals_the_schema_and_group_files_hold_only_changes():
    from simulations.vertical_config import register_configs

    register_configs()
    conf = ROOT / "conf" / "vertical"
    with initialize_config_dir(config_dir=str(conf), version_base="1.3"):
        assert OmegaConf.to_object(compose("config")) == VerticalConfig()
    defaults = {"dataset": VerticalConfig().dataset, "model": VerticalConfig().model,
                "strategy": VerticalConfig().strategy}
    for group, schema in defaults.items():
        for path in sorted((conf / group).glob("*.yaml")):
            values = OmegaConf.to_container(OmegaConf.load(path))
            values.pop("defaults", None)
            restated = {k: v for k, v in values.items() if getattr(schema, k) == v}
            assert not restated, f"{path.name} restates schema defaults {restated}"


def test_pate_group_files_hold_only_changes_to_the_schema():
    flat_defaults = to_flat(PateConfig())
    conf = ROOT / "conf" / "pate"
    for group, package in {"dataset": "", "model": "", "noise": "strategy.", "strategy": "strategy."}.items():
        for path in sorted((conf / group).glob("*.yaml")):
            values = OmegaConf.to_container(OmegaConf.load(path)) or {}
            flat = {}
            for key, value in values.items():
                if isinstance(value, dict):
                    flat.update({f"{key}.{k}": v for k, v in value.items()})
                else:
                    flat[f"{package}{key}"] = value
            restated = {k: v for k, v in flat.items() if flat_defaults.get(k) == v and k != "strategy.mechanism"}
            assert not restated, f"{group}/{path.name} restates schema defaults {restated}"
            assert set(flat) <= set(flat_defaults), f"{group}/{path.name} sets unknown keys"


def test_an_unset_optional_setting_travels_as_a_missing_key_and_comes_back_none():
    flat = to_flat(PateConfig())
    assert "strategy.seed" not in flat  # Flower's records hold no null
    assert from_flat(PateConfig, flat, require_all=True).strategy.seed is None
    seeded = to_flat(PateConfig(strategy=PateStrategyConfig(seed=4)))
    assert from_flat(PateConfig, seeded, require_all=True).strategy.seed == 4
    with pytest.raises(ValueError, match="lacks keys \\['strategy.sigma2'\\]"):  # a required key still is
        from_flat(PateConfig, {k: v for k, v in flat.items() if k != "strategy.sigma2"}, require_all=True)


RENAMED_40 = ("strategy.sigma was renamed: set strategy.sigma2 (the answer noise σ2 of GNMax / Confident-GNMax); "
              "got 40")


def test_the_earlier_name_of_sigma2_is_refused_from_flwr_run_config_naming_the_new_key():
    # pyproject keeps pate.strategy.sigma unset (""), so that Flower, which refuses an override of a key its
    # table lacks with its own message, lets `--run-config "pate.strategy.sigma=40"` through to this refusal
    flat = flwr_app_config()
    assert "strategy.sigma" not in section(flat, "pate")  # unset: left out, the defaults decode
    from_flat(PateConfig, section(flat, "pate"), require_all=True, what="run_config")
    flat["pate.strategy.sigma"] = 40
    with pytest.raises(ValueError) as caught:
        from_flat(PateConfig, section(flat, "pate"), what="run_config")
    assert str(caught.value) == RENAMED_40
    with pytest.raises(ValueError) as caught:  # a record or a run_config without the sentinel alike
        from_flat(PateConfig, {"strategy.sigma": 40}, what="run_config")
    assert str(caught.value) == RENAMED_40


@pytest.mark.parametrize("override", ["strategy.sigma=40", "+strategy.sigma=40"])
def test_the_earlier_name_of_sigma2_is_refused_from_hydra_overrides_naming_the_new_key(override):
    with pytest.raises(ValueError) as caught:  # Hydra itself would say only that there is no such key
        compose_config("dataset=digits", override)
    assert str(caught.value) == RENAMED_40
    assert compose_config("dataset=digits", "strategy.sigma2=2.5").strategy.sigma2 == 2.5
