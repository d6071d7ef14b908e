"""Typed configuration of a vertical prototype-exchange run (the single source of truth).

Hydra composes :class:`VerticalConfig` from ``conf/vertical`` (the schema is registered in Hydra's
ConfigStore by :func:`register_configs`); Flower's ``run_config`` and the messages sent to parties carry
the same values as a flat dict of dotted keys (:meth:`VerticalConfig.to_flat` /
:meth:`VerticalConfig.from_flat`, built on :mod:`simulations.run_config`). This module imports no
Hydra at module level, so parties can use it.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from clients.prototype_privacy import PrototypeNoise
from simulations.run_config import Scalar, flatten, unflatten

ALIGNMENTS = ("psi", "insecure_plaintext")
PULL_FORMS = ("distance", "cross_entropy")
FUSION_SELECTIONS = ("fixed", "validation")


@dataclass
class DatasetConfig:
    """Which data and how it is cut (see :func:`clients.vertical_data.make_vertical_split`)."""

    name: str = "digits"
    n_parties: int = 2
    aligned_fraction: float = 0.1
    validation_fraction: float = 0.1
    test_fraction: float = 0.2


@dataclass
class ModelConfig:
    """Encoders (one per party), the active party's top model and local head."""

    encoder: str = "mlp"
    feature_dim: int = 64
    hidden: int = 128
    top_hidden: int = 128


@dataclass
class StrategyConfig:
    """The VerticalPrototype protocol and its protection.

    ``alignment`` is ``psi`` (Paillier PSI, issue 4) or ``insecure_plaintext`` (raw IDs to the server;
    tests only); ``psi_key_bits`` is the Paillier modulus (nodes refuse < 2048 unless built for tests)
    and ``psi_timeout`` bounds each PSI step. ``split_learning`` / ``local_head`` / ``prototypes``
    switch the method's parts on and off, which is how the benchmark's baselines are expressed:
    ``active_only`` (no split learning), ``vfl_aligned`` (neither head nor prototypes),
    ``vfl_head_fusion`` (head, no prototypes) and the prototype method.

    The prototype method's weights: ``lam`` (first loss: the active party's non-aligned rows pulled to
    the prototypes of their labels), ``lam_passive`` (third loss: passive non-aligned rows pulled to
    confident nearest-prototype pseudo-labels), ``pull_form`` (``distance``: squared distance to the
    class prototype; ``cross_entropy``: softmax over negative distances to every prototype),
    ``lam_aligned`` (nearest-prototype cross-entropy of the aligned users' features in every party's
    space, riding on the split-learning gradients), ``lam_impute`` (top model also trained on the
    active party's non-aligned rows, passive features imputed as the released prototypes weighted by
    the local head's class probabilities) and ``prototype_fusion`` (weight of the passive parties'
    nearest-prototype log-probabilities in the fused prediction). All of them act only with
    ``prototypes`` on.

    ``fusion_selection``: ``fixed`` predicts aligned users with the configured fusion (top model + local
    head + ``prototype_fusion`` × passive prototype scores); ``validation`` lets the active party pick,
    after training, the candidate fusion with the best accuracy on its validation users (the configured
    one, without the prototype scores, the local head alone, or head + prototype scores; ties keep the
    earlier one), so a passive side spoilt by strong prototype noise falls back to the active party's
    own prediction instead of dragging it down.
    """

    epochs: int = 40
    aligned_batch_size: int = 32
    local_batch_size: int = 64
    lr: float = 3e-3
    weight_decay: float = 1e-4
    split_learning: bool = True
    local_head: bool = True
    prototypes: bool = True
    lam: float = 0.25
    lam_passive: float = 0.25
    lam_aligned: float = 1.0
    pull_form: str = "distance"
    lam_impute: float = 1.0
    prototype_fusion: float = 1.0
    fusion_selection: str = "validation"
    pseudo_threshold: float = 0.5
    temperature_scale: float = 0.1
    ema: float = 0.5
    warmup_epochs: int = 2
    proto_every: int = 1
    dp_clip: float = 0.0
    dp_noise: float = 0.0
    dp_count_noise: float = 0.0
    dp_delta: float = 1e-5
    min_count: int = 1
    attack: bool = True
    alignment: str = "psi"
    psi_key_bits: int = 2048
    psi_timeout: float = 600.0
    timeout: float = 120.0

    def noise(self) -> PrototypeNoise:
        """The prototype-release protection these settings describe."""
        return PrototypeNoise(clip=self.dp_clip, noise_multiplier=self.dp_noise,
                              count_noise=self.dp_count_noise, min_count=self.min_count)


@dataclass
class VerticalConfig:
    """Everything one vertical run needs."""

    dataset: DatasetConfig = field(default_factory=DatasetConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    strategy: StrategyConfig = field(default_factory=StrategyConfig)
    seed: int = 0
    out_dir: str = ""

    def validate(self) -> VerticalConfig:
        """Check cross-field rules; return ``self``.

        Raises
        ------
        ValueError
            If a setting is out of range.
        """
        s, d = self.strategy, self.dataset
        if d.n_parties < 2:
            raise ValueError(f"dataset.n_parties must be >= 2, got {d.n_parties}")
        if s.epochs < 1 or s.aligned_batch_size < 1 or s.local_batch_size < 1:
            raise ValueError("strategy.epochs and the batch sizes must be >= 1")
        weights = (s.lam, s.lam_passive, s.lam_aligned, s.lam_impute, s.prototype_fusion)
        if s.lr <= 0 or s.weight_decay < 0 or min(weights) < 0:
            raise ValueError("strategy.lr must be > 0; weight_decay, lam, lam_passive, lam_aligned, "
                             "lam_impute and prototype_fusion >= 0")
        if not 0.0 <= s.pseudo_threshold <= 1.0 or not 0.0 <= s.ema < 1.0 or s.temperature_scale <= 0:
            raise ValueError("need pseudo_threshold in [0, 1], ema in [0, 1), temperature_scale > 0")
        if s.proto_every < 1 or s.timeout <= 0 or s.psi_timeout <= 0:
            raise ValueError("strategy.proto_every must be >= 1, strategy.timeout and psi_timeout > 0")
        if not s.split_learning and (s.prototypes or not s.local_head):
            raise ValueError("without split learning only the active-only baseline (local_head, no "
                             "prototypes) is defined")
        if s.pull_form not in PULL_FORMS:
            raise ValueError(f"strategy.pull_form must be one of {PULL_FORMS}, got {s.pull_form!r}")
        if s.fusion_selection not in FUSION_SELECTIONS:
            raise ValueError(f"strategy.fusion_selection must be one of {FUSION_SELECTIONS}, "
                             f"got {s.fusion_selection!r}")
        if s.alignment not in ALIGNMENTS:
            raise ValueError(f"strategy.alignment must be one of {ALIGNMENTS}, got {s.alignment!r}")
        s.noise()  # validates the protection settings
        return self

    def to_flat(self) -> dict[str, Scalar]:
        """Flatten to ``{"strategy.lam": 0.5, ...}`` (the form of Flower's run_config)."""
        return flatten(self)

    @classmethod
    def from_flat(cls, flat: Mapping[str, Any]) -> VerticalConfig:
        """Inverse of :meth:`to_flat`; missing keys keep their defaults. Validates the result.

        Raises
        ------
        ValueError
            On an unknown key, a value of the wrong type or a setting out of range.
        """
        return unflatten(cls, flat).validate()


def register_configs() -> None:
    """Register :class:`VerticalConfig` as ``vertical_schema`` in Hydra's ConfigStore.

    ``conf/vertical/config.yaml`` lists it first in its defaults, so every group file and override is
    type-checked against the schema.
    """
    from hydra.core.config_store import ConfigStore

    ConfigStore.instance().store(name="vertical_schema", node=VerticalConfig)
