"""What the vertical parties and the server both decode: the run's typed config, message types, payloads.

The configuration (:class:`VerticalConfig`) is the one schema of a vertical run: Hydra composes it
(``conf/vertical``, registered by ``simulations.vertical_config``), Flower's ``run_config`` carries it as
dotted ``vertical.*`` scalars and the ``describe`` message carries it to every party as a
``ConfigRecord``, all through :mod:`protocol.codec`. It is validated when it is built
(:meth:`VerticalConfig.__post_init__`), so at the server when Hydra or ``run_config`` is decoded, and
once per party when the ``describe`` message of a run arrives; building it also resolves the default
``strategy.tune`` to ``auto`` or ``off`` (:data:`TUNE_DEFAULT`), so the parties and ``results.json`` see
the value the run uses.

Wire format: a payload is a flat dict whose values are numpy arrays, lists of numpy arrays, scalars or
lists of strings. Arrays travel in the ``ArrayRecord`` :data:`ARRAYS_KEY` (a list ``key`` as ``key[0]``,
``key[1]``, … with its length under ``key[]`` in the config record, so empty lists survive), everything
else in the ``ConfigRecord`` :data:`PAYLOAD_KEY`. The ``describe`` message that starts a run also carries
the run's configuration in the ``ConfigRecord`` :data:`CONFIG_KEY`, so a ClientApp needs no
``run_config``. A ``batch`` payload chains several training operations for one party in one message
(:func:`pack_batch`): deployments pay one round trip per message, not per operation.

The fusion spec (:data:`Fusion`, :func:`configured_fusion`, :func:`fusion_candidates`) lives here too:
the server reports the configured fusion and the active party chooses among the candidates.
"""

from __future__ import annotations

import dataclasses
import logging
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from flwr.app import Array, ArrayRecord, ConfigRecord, RecordDict

from protocol.privacy_noise import check_noise_seed

ALIGNMENTS = ("psi", "insecure_plaintext")
PSI_BACKENDS = ("paillier", "ecdh")
PULL_FORMS = ("distance", "cross_entropy")
STALE_REFRESHES = ("off", "prototypes")
FUSION_SELECTIONS = ("fixed", "validation")
GUARDS = ("validation", "off")
TUNE_DEFAULT = "default"
"""The schema's ``strategy.tune``: resolved when a :class:`VerticalConfig` is built, to ``auto`` where
``auto`` applies and to ``off`` (with a logged warning saying why) where it cannot
(:meth:`VerticalStrategyConfig.resolve_tune`). A built configuration holds ``auto`` or ``off`` only."""
TUNES = (TUNE_DEFAULT, "auto", "off")
RESET_KEYS = ("epochs", "lam", "lam_passive", "lam_aligned", "lam_impute", "attack")
"""The settings a ``reset`` (one tuning trial, or the run after them) carries, all of them every time:
absolute values, so a party needs no memory of earlier trials (:func:`with_settings`). In the last rung
it may also carry ``keep_as`` and ``restore`` (``clients.vertical.party_base.Party.op_reset``)."""
PRIVACY_NOISE_KEYS = ("label_rr_epsilon", "dp_noise", "dp_count_noise", "grad_noise")
"""The settings that put privacy noise on what passive parties see; ``tune = auto`` refuses them (and
the default ``tune`` resolves to ``off`` when one is set)."""
GUARDED_POPULATIONS = ("aligned", "active_only")
"""The populations the guard serves: users with every party's features, users only the label holder holds."""

logger = logging.getLogger(__name__)

ACTIVE = "active"
PASSIVE = "passive"

CONFIG_KEY = "vfl_config"
ARRAYS_KEY = "vfl_arrays"
PAYLOAD_KEY = "vfl_payload"

MESSAGE_TYPES: dict[str, str] = {
    "describe": "query.vfl_describe",
    "ids": "query.vfl_ids",
    "align": "query.vfl_align",
    "step": "train.vfl_step",
    "snapshot": "query.vfl_snapshot",
    "prototypes": "query.vfl_prototypes",
    "receive": "train.vfl_receive",
    "local": "train.vfl_local",
    "select_fusion": "train.vfl_select_fusion",
    "predict": "query.vfl_predict",
    "evaluate": "evaluate.vfl_evaluate",
    "attack": "query.vfl_attack",
    "score": "query.vfl_score",
    "save": "query.vfl_save",
    "reset": "train.vfl_reset",
    "batch": "train.vfl_batch",
}
"""Every protocol operation and the Flower message type that carries it."""
BATCHABLE_OPS = ("step", "snapshot", "receive", "prototypes", "local", "predict")
"""Training operations a ``batch`` may chain in one message (see :func:`pack_batch`)."""

def _at_least(what: str, value: float, bound: float) -> None:
    if value < bound:
        raise ValueError(f"{what} must be >= {bound}, got {value!r}")


def _positive(what: str, value: float) -> None:
    if not value > 0:
        raise ValueError(f"{what} must be > 0, got {value!r}")


def _one_of(what: str, value: str, choices: tuple[str, ...]) -> None:
    if value not in choices:
        raise ValueError(f"{what} must be one of {choices}, got {value!r}")


@dataclass(frozen=True)
class PrototypeNoise:
    """Protection settings for released prototypes (``clip = 0`` means no protection).

    The mechanism (clipped class sums and class counts, each with Gaussian noise) is described in
    ``clients.vertical.prototype_privacy``, its label-DP accounting (Bun & Steinke, TCC 2016) in
    ``strategies.label_dp``.

    Attributes
    ----------
    clip : float
        Clip norm as a multiple of the median feature norm, ``C = clip × median ||f_i||`` (0 disables
        clipping and noise).
    noise_multiplier : float
        ``z``: std of the noise on each class-sum coordinate is ``z·C``.
    count_noise : float
        ``z_n``: std of the noise on each class count.
    min_count : int
        Classes whose (noisy) count is below this are not released.
    """

    clip: float = 0.0
    noise_multiplier: float = 0.0
    count_noise: float = 0.0
    min_count: int = 1

    def __post_init__(self) -> None:
        if self.clip < 0 or self.noise_multiplier < 0 or self.count_noise < 0:
            raise ValueError(f"clip, noise_multiplier and count_noise must be >= 0, got {self}")
        if self.min_count < 1:
            raise ValueError(f"min_count must be >= 1, got {self.min_count}")
        if self.noise_multiplier > 0 and self.clip == 0:
            raise ValueError("noise_multiplier > 0 needs clip > 0 (the noise scale is z·C)")

    @property
    def is_private(self) -> bool:
        """Whether a finite DP guarantee holds (noise on both the sums and the counts)."""
        return self.clip > 0 and self.noise_multiplier > 0 and self.count_noise > 0


@dataclass
class DatasetConfig:
    """Which data and how it is cut (see ``clients.vertical.data.make_vertical_split``)."""

    name: str = "digits"
    n_parties: int = 2
    aligned_fraction: float = 0.1
    validation_fraction: float = 0.1
    test_fraction: float = 0.2
    data_dir: str = ""  # non-empty: every party reads DIR/party{k}.npz or .csv instead of ``name``'s split

    def validate(self) -> None:
        """Check every field (the ranges ``make_vertical_split`` accepts).

        Raises
        ------
        ValueError
            If a field is out of range; the message names the field and the value.
        """
        _at_least("dataset.n_parties", self.n_parties, 2)
        if not 0.0 < self.aligned_fraction <= 1.0:
            raise ValueError(f"dataset.aligned_fraction must be in (0, 1], got {self.aligned_fraction!r}")
        for key in ("validation_fraction", "test_fraction"):
            value = getattr(self, key)
            if not 0.0 < value < 0.5:
                raise ValueError(f"dataset.{key} must be in (0, 0.5), got {value!r}")


@dataclass
class ModelConfig:
    """Encoders (one per party), the active party's top model and local head."""

    encoder: str = "mlp"
    feature_dim: int = 64
    hidden: int = 128
    top_hidden: int = 128

    def validate(self) -> None:
        """Check the sizes.

        Raises
        ------
        ValueError
            If a size is out of range; the message names the field and the value.
        """
        _at_least("model.feature_dim", self.feature_dim, 1)
        _at_least("model.hidden", self.hidden, 1)
        _at_least("model.top_hidden", self.top_hidden, 0)  # 0: a linear top model


@dataclass
class VerticalStrategyConfig:
    """The VerticalPrototype protocol and its protection.

    ``steps_per_exchange`` = K: a passive party sends its features of K aligned minibatches in one
    message and receives their K gradients in one reply, applied as K local updates on stale features
    (FedBCD, Liu et al. 2022); ``0`` puts the whole epoch in one exchange, ``1`` is plain split learning.
    ``stale_refresh`` (:data:`STALE_REFRESHES`): ``off`` applies the K gradients as received;
    ``prototypes`` has the passive party refresh their ``lam_aligned`` part (the nearest-prototype
    cross-entropy in its space) from its current encoder before each later update of an exchange, exactly
    and without labels (``PassiveParty.prototype_gradient_refresh``); with K = 1 both train bit for bit
    alike.

    ``alignment`` is ``psi`` (private set intersection, ``docs/psi.md``) or ``insecure_plaintext`` (raw IDs
    to the server; tests only); ``psi_backend`` picks the PSI protocol (``paillier``: FNP over Paillier,
    the default; ``ecdh``: Diffie–Hellman PSI over X25519, fast at 10^6 IDs; ``docs/psi.md``);
    ``psi_key_bits`` is the Paillier modulus (nodes refuse < 2048 unless built for tests; unused by
    ``ecdh``) and ``psi_timeout_s`` bounds each PSI step; ``timeout_s`` bounds every other round trip.
    ``split_learning`` / ``local_head`` / ``prototypes`` switch the method's parts on and off, which is
    how the benchmark's baselines are expressed: ``active_only`` (no split learning), ``vfl_aligned``
    (neither head nor prototypes), ``vfl_head_fusion`` (head, no prototypes) and the prototype method.

    The prototype method's weights: ``lam`` (first loss: the active party's non-aligned rows pulled to
    the prototypes of their labels), ``lam_passive`` (third loss: passive non-aligned rows pulled to
    confident nearest-prototype pseudo-labels), ``pull_form`` (``distance``: squared distance to the
    class prototype; ``cross_entropy``: softmax over negative distances to every prototype),
    ``lam_aligned`` (nearest-prototype cross-entropy of the aligned users' features in every party's
    space, riding on the split-learning gradients), ``lam_impute`` (top model also trained on the
    active party's non-aligned rows, passive features imputed as the released prototypes weighted by
    the local head's class probabilities) and ``prototype_fusion`` (weight of the passive parties'
    nearest-prototype log-probabilities in the fused prediction). All of them act only with
    ``prototypes`` on. ``pseudo_threshold`` is the confidence a pseudo-label needs,
    ``temperature_scale`` ties the nearest-prototype temperature to the mean squared distance between
    prototypes, ``ema`` smooths the prototypes across releases and ``warmup_epochs`` delays every
    prototype loss; prototypes are released every ``proto_every`` epochs. ``dp_clip``, ``dp_noise``,
    ``dp_count_noise`` and ``min_count`` protect the release (:class:`PrototypeNoise`), with the
    label-DP ε reported at ``dp_delta``; ``label_rr_epsilon`` > 0 trains on ε-randomised-response
    labels of the aligned users with forward-corrected losses (``clients.vertical.label_protection``),
    which makes everything a passive party receives ε-label-DP, gradients included (0: off);
    ``grad_clip`` > 0 clips every gradient row returned to a passive party to that L2 norm and
    ``grad_noise`` = z adds ``N(0, (z·grad_clip)²)`` to each coordinate
    (``clients.vertical.gradient_protection``: label-DP per released gradient batch, reported at
    ``dp_delta``); ``dcor_weight`` = α > 0 adds α × the distance correlation between each passive
    party's forward embeddings of a minibatch and its labels to the label holder's objective, so the
    returned gradients decorrelate the passive embeddings from the labels (Sun et al. 2022;
    ``clients.vertical.embedding_protection``: an empirical defence against the forward-embedding
    attack, no DP guarantee, 0: off); ``attack`` measures the label-inference attacks (prototype, gradient and
    forward-embedding). ``noise_seed``: ``None`` (the default) draws that privacy noise (randomised
    response, prototype noise, gradient noise) from a secret seed the label holder
    takes from OS entropy once per run and keeps in its node state; an integer pins it for tests and
    benchmarks, with a ``PrivacyWarning`` (:func:`protocol.privacy_noise.privacy_noise_seed`). Everything
    else random (initial weights, minibatch orders) follows ``seed``.

    ``fusion_selection``: ``fixed`` predicts aligned users with the configured fusion (top model + local
    head + ``prototype_fusion`` × passive prototype scores); ``validation`` lets the active party pick,
    after training, the candidate fusion with the best accuracy on its validation users (the configured
    one, without the prototype scores, the local head alone, or head + prototype scores; ties keep the
    earlier one), so a passive side spoilt by strong prototype noise falls back to the active party's
    own prediction instead of dragging it down.

    ``guard``: ``validation`` (the default) makes the label holder also train a local-only baseline (its
    encoder + head on all its labelled users, exactly the ``active_only`` baseline's training, riding in
    its local pass: no extra round trip, nothing sent to any party) and, after training, serve each
    population of :data:`GUARDED_POPULATIONS` (aligned users; users only it holds) with whichever of the
    method's predictor and that baseline is better on its validation users (ties: the baseline's), so the
    released model is never worse on validation than the label holder alone (``clients.vertical.guard``);
    ``off`` serves the method's predictors only. Runs without split learning (the ``active_only``
    baseline itself) have nothing to guard. ``guard_sigmas_aligned`` and ``guard_sigmas_active_only`` are
    how far the method must win to serve that population: by more than that many standard deviations of
    McNemar's paired comparison on the validation users (``clients.vertical.guard.wins_beyond_noise``; 0:
    any strict win). A method no better than the baseline serves about 16 % of the time at 1 σ and 2 %
    at 2 σ; the defaults ask 1 for aligned users, whose fused predictor reads every party's features,
    and 2 for users only the label holder holds, whose head differs from the baseline's only by the
    prototype pulls (``clients.vertical.guard.population_sigmas`` says why).

    ``tune``: ``off`` trains the configured weights; ``auto`` (the default wherever it applies: see below)
    lets the label holder choose them first by successive halving (Jamieson & Talwalkar, AISTATS 2016)
    over a stated grid of short runs from fresh models — the configured prototype weights, VFL + head
    fusion (every prototype weight 0: prototypes still released, so it serves passive-only users too) and
    the three weights ``lam``, ``lam_passive``, ``lam_aligned`` × 0.3 and × 3 — each scored on the label
    holder's validation users per population (never a test user), then trains the winner for ``epochs``
    (``strategies.vertical_tune`` states the schedule, the score and the cost). The first rung runs
    ``max(ceil(tune_fraction × epochs), warmup_epochs + 1)`` epochs.
    It needs split learning, prototypes and ``guard = validation`` (the local-only fallback stays the
    per-population last word), and refuses privacy noise (:data:`PRIVACY_NOISE_KEYS`): every trial
    releases gradients and prototypes of the same aligned users again, which the reported ε does not
    charge. It accepts ``dcor_weight``, which is no noise and has no ε to undercharge: every trial and
    the released run train with the configured weight (it is not tuned), and as without protection the
    trials give the passive parties more of the same gradients.

    The default is :data:`TUNE_DEFAULT` (``default``), resolved when the :class:`VerticalConfig` is built
    (Hydra composition, ``run_config`` decoding, code; :meth:`resolve_tune`): to ``auto`` where ``auto``
    applies, else to ``off`` with a logged warning naming the setting that rules it out (split learning
    or prototypes off, ``guard = off``, privacy noise). The built configuration — what every party
    receives and ``results.json`` records — holds the resolved value, never ``default``. An *explicit*
    ``auto`` that cannot apply is refused (``ValueError`` naming the setting and its value, ending "set
    strategy.tune=off"): whoever asked for tuning is not silently given none, while the default, which
    no one chose, falls back to the configured weights rather than stopping a run. Both fail closed on
    privacy: no noisy run is ever tuned, and the fallback only leaves trials out. The presets that
    cannot tune (``conf/vertical/strategy``: ``active_only``, ``vfl_aligned``, ``vfl_head_fusion``,
    ``proto_private``) set ``tune: off`` themselves, so they run without the warning.
    """

    epochs: int = 40
    aligned_batch_size: int = 32
    steps_per_exchange: int = 1
    stale_refresh: str = "off"
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
    guard: str = "validation"
    guard_sigmas_aligned: float = 1.0
    guard_sigmas_active_only: float = 2.0
    tune: str = TUNE_DEFAULT  # resolved to auto or off when the VerticalConfig is built
    tune_fraction: float = 0.125
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
    label_rr_epsilon: float = 0.0
    grad_clip: float = 0.0
    grad_noise: float = 0.0
    dcor_weight: float = 0.0
    noise_seed: int | None = None  # None: secret noise; an integer pins it (tests, benchmarks)
    attack: bool = True
    alignment: str = "psi"
    psi_backend: str = "paillier"
    psi_key_bits: int = 2048
    psi_timeout_s: float = 600.0
    timeout_s: float = 120.0

    def noise(self) -> PrototypeNoise:
        """The prototype-release protection these settings describe."""
        return PrototypeNoise(clip=self.dp_clip, noise_multiplier=self.dp_noise,
                              count_noise=self.dp_count_noise, min_count=self.min_count)

    def auto_refusal(self) -> str | None:
        """Why ``tune = auto`` cannot apply to these settings (the class docstring's rules), naming the
        settings and their values; ``None`` if it can."""
        if not (self.split_learning and self.prototypes):
            return ("strategy.tune=auto tunes the prototype method's weights: it needs "
                    "strategy.split_learning and strategy.prototypes true, got "
                    f"split_learning={self.split_learning}, prototypes={self.prototypes}")
        if self.guard != "validation":
            return ("strategy.tune=auto keeps the local-only baseline as the per-population fallback: it "
                    f"needs strategy.guard=validation, got {self.guard!r}")
        noisy = [f"strategy.{key}={getattr(self, key)!r}" for key in PRIVACY_NOISE_KEYS
                 if getattr(self, key) > 0]
        if noisy:
            return (f"strategy.tune=auto refuses privacy noise ({', '.join(noisy)}): every trial releases "
                    "gradients and prototypes of the same aligned users again, which the reported label-DP "
                    "epsilon does not charge")
        return None

    def resolve_tune(self) -> VerticalStrategyConfig:
        """These settings with the default ``tune`` (:data:`TUNE_DEFAULT`) resolved: ``auto`` if
        :meth:`auto_refusal` finds no reason against it, else ``off``, logged as a warning with the reason.
        An explicit ``auto`` or ``off`` is kept (``self`` is returned; never changed in place)."""
        if self.tune != TUNE_DEFAULT:
            return self
        reason = self.auto_refusal()
        if reason is not None:
            logger.warning("strategy.tune is not set and resolves to off, not auto: %s "
                           "(set strategy.tune=off to say so)", reason)
        return dataclasses.replace(self, tune="off" if reason else "auto")

    def validate(self) -> None:
        """Check every field and the cross-field rules.

        Raises
        ------
        ValueError
            If a setting is out of range; the message names the field and the value.
        """
        for key in ("epochs", "aligned_batch_size", "local_batch_size", "proto_every", "psi_key_bits"):
            _at_least(f"strategy.{key}", getattr(self, key), 1)
        _at_least("strategy.warmup_epochs", self.warmup_epochs, 0)
        _at_least("strategy.steps_per_exchange", self.steps_per_exchange, 0)
        for key in ("lr", "temperature_scale", "timeout_s", "psi_timeout_s"):
            _positive(f"strategy.{key}", getattr(self, key))
        for key in ("weight_decay", "lam", "lam_passive", "lam_aligned", "lam_impute", "prototype_fusion",
                    "dp_clip", "dp_noise", "dp_count_noise", "label_rr_epsilon", "grad_clip", "grad_noise"):
            _at_least(f"strategy.{key}", getattr(self, key), 0.0)
        for key in ("dcor_weight", "guard_sigmas_aligned", "guard_sigmas_active_only"):
            if not (math.isfinite(getattr(self, key)) and getattr(self, key) >= 0):
                raise ValueError(f"strategy.{key} must be finite and >= 0, got {getattr(self, key)!r}")
        _at_least("strategy.min_count", self.min_count, 1)
        check_noise_seed(self.noise_seed, "strategy.noise_seed", unset="null")
        if self.dp_noise > 0 and self.dp_clip == 0:
            raise ValueError(f"strategy.dp_noise > 0 needs strategy.dp_clip > 0 (the noise scale is "
                             f"dp_noise × clip norm), got dp_noise={self.dp_noise!r}, dp_clip=0")
        if self.grad_noise > 0 and self.grad_clip == 0:
            raise ValueError(f"strategy.grad_noise > 0 needs strategy.grad_clip > 0 (the noise scale is "
                             f"grad_noise × grad_clip), got grad_noise={self.grad_noise!r}, grad_clip=0")
        if not 0.0 <= self.pseudo_threshold <= 1.0:
            raise ValueError(f"strategy.pseudo_threshold must be in [0, 1], got {self.pseudo_threshold!r}")
        if not 0.0 <= self.ema < 1.0:
            raise ValueError(f"strategy.ema must be in [0, 1), got {self.ema!r}")
        if not 0.0 < self.dp_delta < 1.0:
            raise ValueError(f"strategy.dp_delta must be in (0, 1), got {self.dp_delta!r}")
        if not self.split_learning and (self.prototypes or not self.local_head):
            raise ValueError("without split learning only the active-only baseline is defined: "
                             f"strategy.local_head must be true and strategy.prototypes false, got "
                             f"local_head={self.local_head}, prototypes={self.prototypes}")
        _one_of("strategy.pull_form", self.pull_form, PULL_FORMS)
        _one_of("strategy.stale_refresh", self.stale_refresh, STALE_REFRESHES)
        _one_of("strategy.fusion_selection", self.fusion_selection, FUSION_SELECTIONS)
        _one_of("strategy.guard", self.guard, GUARDS)
        _one_of("strategy.tune", self.tune, TUNES)
        if not 0.0 < self.tune_fraction <= 1.0:
            raise ValueError(f"strategy.tune_fraction must be in (0, 1], got {self.tune_fraction!r}")
        if self.tune == "auto" and (refusal := self.auto_refusal()) is not None:
            raise ValueError(f"{refusal}; set strategy.tune=off")
        _one_of("strategy.alignment", self.alignment, ALIGNMENTS)
        _one_of("strategy.psi_backend", self.psi_backend, PSI_BACKENDS)


@dataclass
class VerticalConfig:
    """Everything one vertical run needs; validated when built (Hydra, ``run_config``, a message).

    ``output_dir``: where the results and every party's model go (empty: not saved by ``run_vertical``;
    Hydra's run directory for ``python -m simulations.vertical``). ``verbose``: ``python -m
    simulations.vertical`` keeps Flower's and Ray's logs and shows a refused or failed run's traceback
    (otherwise one ``error:`` line); the protocol ignores it.
    """

    dataset: DatasetConfig = field(default_factory=DatasetConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    strategy: VerticalStrategyConfig = field(default_factory=VerticalStrategyConfig)
    seed: int = 0
    output_dir: str = ""
    verbose: bool = False

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> VerticalConfig:
        """Check every setting and resolve the default ``strategy.tune``
        (:meth:`VerticalStrategyConfig.resolve_tune`: ``self.strategy`` is replaced, the object given is
        not changed); return ``self`` (for code that changed fields after construction).

        Raises
        ------
        ValueError
            If a setting is out of range; the message names the field and the value.
        """
        self.dataset.validate()
        self.model.validate()
        self.strategy.validate()
        self.strategy = self.strategy.resolve_tune()
        return self


# --- the fusion spec ---------------------------------------------------------------------------
Fusion = tuple[float, float, float]
"""Weights of (top model, local head, passive prototype scores) in the fused log-probabilities."""


def configured_fusion(strategy: VerticalStrategyConfig) -> Fusion:
    """The fusion the settings describe: the top model if split learning trains it, the local head if
    on, prototype scores if on (without split learning: the local head alone, ``(0, 1, 0)``)."""
    return (1.0 if strategy.split_learning else 0.0, 1.0 if strategy.local_head else 0.0,
            strategy.prototype_fusion if strategy.prototypes else 0.0)


def with_settings(cfg: VerticalConfig, settings: Mapping[str, Any]) -> VerticalConfig:
    """``cfg`` with the strategy's :data:`RESET_KEYS` set to ``settings`` (every one of them) and ``tune``
    off: the fixed settings of one tuning trial, or of the run trained after them (validated).

    Raises
    ------
    ValueError
        If ``settings`` lacks a key of :data:`RESET_KEYS` or holds another one, or a value is out of range.
    """
    if set(settings) != set(RESET_KEYS):
        raise ValueError(f"reset settings must be exactly {RESET_KEYS}, got {sorted(settings)}")
    s = cfg.strategy
    values = {key: type(getattr(s, key))(settings[key]) for key in RESET_KEYS}
    return dataclasses.replace(cfg, strategy=dataclasses.replace(s, **values, tune="off"))


def fusion_candidates(strategy: VerticalStrategyConfig) -> list[Fusion]:
    """The fusions the active party may choose from, the configured one first.

    ``fixed`` selection, and a run without split learning, have only the configured one; ``validation``
    adds the same without the prototype scores and, with a local head, the head alone and the head with
    the prototype scores.
    """
    configured = configured_fusion(strategy)
    if strategy.fusion_selection == "fixed" or not strategy.split_learning:  # no top model to weigh
        return [configured]
    candidates = [configured, (1.0, configured[1], 0.0)]
    if strategy.local_head:
        candidates += [(0.0, 1.0, 0.0), (0.0, 1.0, configured[2])]
    return list(dict.fromkeys(candidates))  # drops repeats, keeps the order


# --- payloads ------------------------------------------------------------------------------------
def pack_batch(ops: list[tuple[str, dict[str, Any]]]) -> dict[str, Any]:
    """One payload that runs ``ops`` (operation, payload) in order at one party (operation ``batch``).

    Sub-payload ``i``'s keys travel as ``"{i}/key"``; the operation names under ``ops``.

    Raises
    ------
    ValueError
        If an operation is not in :data:`BATCHABLE_OPS` or the list is empty.
    """
    if not ops:
        raise ValueError("a batch needs at least one operation")
    packed: dict[str, Any] = {"ops": [op for op, _ in ops]}
    for i, (op, payload) in enumerate(ops):
        if op not in BATCHABLE_OPS:
            raise ValueError(f"operation {op!r} cannot be batched; batchable: {BATCHABLE_OPS}")
        packed.update({f"{i}/{key}": value for key, value in payload.items()})
    return packed


def unpack_batch(packed: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    """Inverse of :func:`pack_batch` (also splits a batch's reply: :func:`pack_replies`).

    Raises
    ------
    ValueError
        If ``ops`` is missing or names an operation that cannot be batched.
    """
    if "ops" not in packed:
        raise ValueError("batch payload lacks its 'ops' list")
    ops = [str(op) for op in packed["ops"]]
    parts: list[dict[str, Any]] = [{} for _ in ops]
    for key, value in packed.items():
        index, sep, name = key.partition("/")
        if sep:
            parts[int(index)][name] = value
    for op in ops:
        if op not in BATCHABLE_OPS:
            raise ValueError(f"operation {op!r} cannot be batched; batchable: {BATCHABLE_OPS}")
    return list(zip(ops, parts, strict=True))


def pack_replies(ops: list[str], replies: list[dict[str, Any]]) -> dict[str, Any]:
    """A batch's reply: sub-reply ``i`` under ``"{i}/key"`` (read back with :func:`unpack_batch`)."""
    return pack_batch(list(zip(ops, replies, strict=True)))


def encode_payload(payload: dict[str, Any], config: Mapping[str, Any] | None = None) -> RecordDict:
    """Pack a payload (and optionally the run's flat configuration) into a ``RecordDict``.

    Raises
    ------
    TypeError
        On a value that is neither an array, a list of arrays, a scalar nor a list of strings.
    """
    arrays: dict[str, Array] = {}
    scalars: dict[str, Any] = {}
    for key, value in payload.items():
        if isinstance(value, np.ndarray):
            arrays[key] = Array(np.ascontiguousarray(value))
        elif isinstance(value, list) and all(isinstance(v, np.ndarray) for v in value):
            scalars[f"{key}[]"] = len(value)
            arrays.update({f"{key}[{i}]": Array(np.ascontiguousarray(v)) for i, v in enumerate(value)})
        elif isinstance(value, bool | int | float | str) or (
                isinstance(value, list) and all(isinstance(v, str) for v in value)):
            scalars[key] = value
        else:
            raise TypeError(f"payload value {key!r} of type {type(value).__name__} cannot be sent")
    content = RecordDict({ARRAYS_KEY: ArrayRecord(arrays), PAYLOAD_KEY: ConfigRecord(scalars)})
    if config is not None:
        content[CONFIG_KEY] = ConfigRecord(dict(config))
    return content


def decode_payload(content: RecordDict) -> dict[str, Any]:
    """Inverse of :func:`encode_payload` (without the config record)."""
    arrays = content.array_records.get(ARRAYS_KEY, ArrayRecord())
    scalars = dict(content.config_records.get(PAYLOAD_KEY, ConfigRecord()))
    out: dict[str, Any] = {}
    for key, value in scalars.items():
        if key.endswith("[]"):
            name = key[:-2]
            out[name] = [arrays[f"{name}[{i}]"].numpy() for i in range(int(value))]
        else:
            out[key] = value
    for key, array in arrays.items():
        if "[" not in key:
            out[key] = array.numpy()
    return out


def config_record(content: RecordDict) -> ConfigRecord:
    """The run's configuration record carried by a ``describe`` message.

    Raises
    ------
    ValueError
        If the message carries no configuration.
    """
    if CONFIG_KEY not in content.config_records:
        raise ValueError(f"vertical protocol message lacks its {CONFIG_KEY!r} config record")
    return content.config_records[CONFIG_KEY]
