"""The typed configuration of an ensemble-label distillation (PATE) run.

This schema is the single source of truth: Hydra composes it from ``conf/pate/`` (registered in the
ConfigStore as ``pate_schema``), :func:`protocol.codec.to_flat` turns it into Flower
``run_config`` keys for ``flwr run`` (``[tool.flwr.app.config]`` holds the same defaults under
``pate.``), and a test keeps the three in step.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import ClassVar

from clients.data import DATASETS, PARTITION_SCHEMES, dataset_size, teacher_pool_size
from clients.encoders import ENCODER_KINDS
from protocol.pate import SITE_DATA, DataSpec, ModelSpec, StudentSettings, TeacherSettings
from protocol.privacy_noise import check_noise_seed
from strategies.fusion import MECHANISMS, NOISE_RATIOS, noise_misfit
from strategies.vote_release import RENAMED_PARAMS

TEACHER_EPOCHS = 200
TEACHER_LR = 1e-2


@dataclass
class PateStrategyConfig:
    """Fusion mechanism, its noise, the privacy budget and the query stream.

    The noise scales have the paper's names (Papernot et al. 2018, Algorithm 1): ``sigma2`` is the
    answer noise σ2 of GNMax and of Confident-GNMax; ``sigma1`` (the threshold check's noise σ1) and
    ``threshold`` are used by Confident-GNMax only, ``gamma`` by LNMax only. The earlier name
    ``strategy.sigma`` is refused, naming ``strategy.sigma2`` (:data:`PateConfig.renamed_keys`).
    ``max_queries`` 0 means the whole pool.
    The defaults are the paper's MNIST setting for 250 teachers (T=200, σ1=150, σ2=40; Papernot et
    al. 2018, Table 2) at ε ≤ 2; ``conf/pate/noise/`` scales it to the other datasets' teacher counts
    (T = 0.8 n, σ1 = 0.6 n, σ2 = 0.16 n: 20 teachers for digits, 50 for mnist5k).

    The noise must fit ``data.num_teachers`` (n), or the run is refused before any node starts
    (:func:`strategies.fusion.noise_misfit`): Confident-GNMax needs T < n + σ1 (a unanimous vote
    must pass the check with probability above Φ(-1) = 16 %) and σ1 < n; σ2 < n; LNMax's
    1/γ < n. Changing ``data.num_teachers`` does *not* rescale the noise group's values: a count that
    they do not fit is refused, naming the setting, the noise group it came from, and the values the
    groups' ratios give for n (set them on the command line). Noise parameters are privacy settings —
    the ledger charges for them and a resumed ledger must match them — so they change only where the
    user sees it, and the same rule holds whether the config comes from Hydra, ``flwr run`` or Python.
    The strategy checks the same rules again at ``describe`` against the teachers the nodes host.

    Numeric settings must be numbers of their type (a bool or a string is refused, naming the field),
    and finite. ``budget_on`` is
    "data_dependent", "data_independent" or
    "released" (the expected smooth-sensitivity released ε, [P18] Section 4.3); ``conversion`` is the
    RDP → (ε, δ) conversion: "mironov" ([M17] Proposition 3, as [P18]) or the tighter
    "dp_accounting" (Balle et al. 2020, Theorem 21).

    ``noise_at`` says who adds the noise: "server" (to the summed histogram, which it sees clean),
    "teachers" (each teacher node adds its share of GNMax / Confident-GNMax noise and the votes are summed
    under secure aggregation, ``strategies.distributed_noise``; needs ``budget_on="data_independent"``;
    ``secagg_threshold`` 0 = a majority of the teacher nodes), or "votes" (every teacher's vote through
    local randomised response at ``rr_epsilon`` per vote, ``strategies.local_rr``; mechanism "majority",
    the plurality of the randomised votes, and ``budget_on="data_independent"``).
    """

    mechanism: str = "confident_gnmax"
    sigma2: float = 40.0
    sigma1: float = 150.0
    threshold: float = 200.0
    gamma: float = 0.1
    epsilon_budget: float = 2.0
    delta: float = 1e-5
    budget_on: str = "data_dependent"
    conversion: str = "mironov"
    query_batch_size: int = 128
    max_queries: int = 0
    min_teachers: int = 0  # 0: a majority of data.num_teachers (majority_of); see PateConfig
    seed: int | None = None  # None: secret noise; an integer pins it (tests, benchmarks)
    noise_at: str = "server"
    rr_epsilon: float = 1.0
    secagg_threshold: int = 0


@dataclass
class FederationConfig:
    """Simulation layout: teachers are spread over ``teacher_nodes`` nodes, plus one student node.

    ``timeout_s`` bounds a training step (teachers, student); ``step_timeout_s`` a quick one (describe,
    a query batch, a batch of votes), after which a vanished node is dropped. ``pipeline_queries``: request
    the student's next batch (pool order) with the current batch's votes, one round trip per batch
    (``EnsembleDistillation``); false asks after each charge.
    """

    teacher_nodes: int = 2
    cpus_per_node: float = 1.0
    timeout_s: float = 1800.0
    step_timeout_s: float = 120.0
    pipeline_queries: bool = True


@dataclass
class RunConfig:
    """Where results go. ``ledger_path`` empty: ``<output_dir>/privacy_ledger.json``.

    ``resume``: continue the run whose ledger is there (its charged queries are not asked again and
    their stored labels are reused). Without it, a ledger that already holds charges is refused, never
    reset or silently extended.
    """

    output_dir: str = "runs/pate"
    ledger_path: str = ""
    verbose: bool = False
    resume: bool = False


MNIST1D_REGIME = DataSpec(dataset="mnist1d", num_teachers=250, mnist1d_samples=100_000, query_fraction=0.2,
                          validation_fraction=0.02, test_fraction=0.1, teacher_samples=60_000)
"""MNIST-1D, 100 000 generated: teachers on 60 000 (250 shards × 240), pool 20 000, validation 2 000,
test 10 000."""

CONVBASE_1D = ModelSpec(encoder="convbase1d", epochs=TEACHER_EPOCHS, batch_size=32, lr=TEACHER_LR,
                        augment_shift=6)
"""The MNIST-1D paper's ConvBase, trained on randomly shifted signals (settings chosen on validation)."""

class NoiseScaleError(ValueError):
    """A noise setting that does not fit ``data.num_teachers``; ``field`` is its ``strategy.*`` key."""

    def __init__(self, message: str, field: str) -> None:
        super().__init__(message)
        self.field = field


STRATEGY_FLOATS = ("sigma2", "sigma1", "threshold", "gamma", "epsilon_budget", "delta", "rr_epsilon")
STRATEGY_INTS = ("query_batch_size", "max_queries", "min_teachers", "secagg_threshold")


def _type_problem(value: object, kind: type) -> str:
    """What is wrong with ``value`` as a setting of type ``kind`` (int or float), or ""."""
    if isinstance(value, bool) or not isinstance(value, (int, float) if kind is float else int):
        return f"a{'n integer' if kind is int else ' finite number'}, got {value!r} ({type(value).__name__})"
    if kind is float and not math.isfinite(value):
        return f"a finite number, got {value!r}"
    return ""


def noise_fits(s: PateStrategyConfig, n_teachers: int) -> None:
    """Refuse noise settings of ``s`` that do not fit an ensemble of ``n_teachers`` (NoiseScaleError).

    The rules are :func:`strategies.fusion.noise_misfit`'s; the message adds what to set for n teachers.
    Majority (noise at the votes: randomised response per vote) has no noise scale relative to n.
    """
    params = {"confident_gnmax": {"sigma2": s.sigma2, "sigma1": s.sigma1, "threshold": s.threshold},
              "gnmax": {"sigma2": s.sigma2}, "lnmax": {"gamma": s.gamma}}.get(s.mechanism)
    misfit = None if params is None else noise_misfit(s.mechanism, n_teachers, params)
    if misfit is None:
        return
    name, why = misfit
    n = n_teachers
    scaled = {k: round(r * n, 4) for k, r in NOISE_RATIOS.items()}
    if s.mechanism == "confident_gnmax":
        hint = (f"set strategy.threshold, strategy.sigma1 and strategy.sigma2 for {n} teachers (the noise "
                f"groups' ratios T = 0.8 n, σ1 = 0.6 n, σ2 = 0.16 n give {scaled['threshold']:g}, "
                f"{scaled['sigma1']:g}, {scaled['sigma2']:g})")
    elif s.mechanism == "gnmax":
        hint = f"set strategy.sigma2 for {n} teachers (the noise groups' σ2 = 0.16 n is {scaled['sigma2']:g})"
    else:
        hint = (f"set strategy.gamma above {1 / n:.4g} for {n} teachers (a Laplace scale 1/γ = 0.16 n is "
                f"γ = {1 / scaled['sigma2']:.4g})")
    raise NoiseScaleError(f"strategy.{name}={getattr(s, name)!r} does not fit data.num_teachers={n}: {why}; "
                          f"{hint}", f"strategy.{name}")


BUDGET_BASES = ("data_dependent", "data_independent", "released")
NOISE_AT = ("server", "teachers", "votes")
CONVERSIONS = ("mironov", "dp_accounting")


def majority_of(num_teachers: int) -> int:
    """The default ``strategy.min_teachers``: more than half of the run's teachers, ⌊n/2⌋ + 1.

    Why a majority: every answer the run buys is the ensemble's plurality, and the noise was chosen for
    ``data.num_teachers`` voters; once half of them are gone (nodes that erred, vanished or sent malformed
    votes) the labels speak for a minority of the private data while each query costs as much ε or more,
    so the run stops rather than keep spending. Set ``strategy.min_teachers`` to allow more loss (1: any).
    """
    return num_teachers // 2 + 1


@dataclass
class PateConfig:
    """A whole PATE run; validated on construction (Hydra, ``run_config`` decoding), before any node starts.

    Raises
    ------
    ValueError
        On the first setting out of range or of the wrong type, naming the field and the value;
        :class:`NoiseScaleError` (a ValueError) for noise that does not fit ``data.num_teachers``.
    """

    data: DataSpec = field(default_factory=lambda: dataclasses.replace(MNIST1D_REGIME))
    teacher: ModelSpec = field(default_factory=lambda: dataclasses.replace(CONVBASE_1D))
    teacher_training: TeacherSettings = field(default_factory=TeacherSettings)
    student_model: ModelSpec = field(
        default_factory=lambda: dataclasses.replace(CONVBASE_1D, encoder="convbase1d_wide"))  # +5 points
    student: StudentSettings = field(default_factory=lambda: StudentSettings(method="fixmatch"))
    strategy: PateStrategyConfig = field(default_factory=PateStrategyConfig)
    federation: FederationConfig = field(default_factory=FederationConfig)
    run: RunConfig = field(default_factory=RunConfig)
    renamed_keys: ClassVar[dict[str, tuple[str, str]]] = {
        f"strategy.{old}": (f"strategy.{new}", what) for old, (new, what) in RENAMED_PARAMS.items()}
    """Settings of earlier versions, ``old: (new, what it is)``: refused with a message naming the new key
    (:func:`protocol.codec.renamed_key`) by the ``run_config`` decoding, the Hydra command line and
    :func:`compose_config` alike."""

    def __post_init__(self) -> None:
        s, d, f = self.strategy, self.data, self.federation
        for names, kind in ((STRATEGY_FLOATS, float), (STRATEGY_INTS, int)):
            for name in names:  # before the range rules, which compare them with numbers
                problem = _type_problem(getattr(s, name), kind)
                if problem:
                    raise ValueError(f"strategy.{name} must be {problem}")
        check_noise_seed(s.seed, "strategy.seed", unset="null")
        rules: list[tuple[str, object, bool, str]] = [
            ("data.dataset", d.dataset, d.dataset in (*DATASETS, SITE_DATA),
             f"one of {DATASETS}, or {SITE_DATA!r} (every node brings its own data-file)"),
            ("data.partition", d.partition, d.partition in PARTITION_SCHEMES, f"one of {PARTITION_SCHEMES}"),
            ("data.num_teachers", d.num_teachers, d.num_teachers >= 1, ">= 1"),
            ("strategy.mechanism", s.mechanism, s.mechanism in MECHANISMS, f"one of {MECHANISMS}"),
            ("strategy.budget_on", s.budget_on, s.budget_on in BUDGET_BASES, f"one of {BUDGET_BASES}"),
            ("strategy.conversion", s.conversion, s.conversion in CONVERSIONS, f"one of {CONVERSIONS}"),
            ("strategy.sigma2", s.sigma2, s.sigma2 > 0, "> 0"),
            ("strategy.sigma1", s.sigma1, s.sigma1 > 0, "> 0"),
            ("strategy.threshold", s.threshold, s.threshold >= 0, ">= 0"),
            ("strategy.gamma", s.gamma, s.gamma > 0, "> 0"),
            ("strategy.epsilon_budget", s.epsilon_budget, s.epsilon_budget > 0, "> 0"),
            ("strategy.delta", s.delta, 0 < s.delta < 1, "in (0, 1)"),
            ("strategy.query_batch_size", s.query_batch_size, s.query_batch_size >= 1, ">= 1"),
            ("strategy.max_queries", s.max_queries, s.max_queries >= 0, ">= 0 (0: the whole pool)"),
            ("strategy.min_teachers", s.min_teachers, 0 <= s.min_teachers <= d.num_teachers,
             f"in [0, data.num_teachers = {d.num_teachers}] (0: a majority, {majority_of(d.num_teachers)})"),
            ("strategy.noise_at", s.noise_at, s.noise_at in NOISE_AT, f"one of {NOISE_AT}"),
            ("strategy.mechanism", s.mechanism,
             s.noise_at != "teachers" or s.mechanism in ("gnmax", "confident_gnmax"),
             "gnmax or confident_gnmax with strategy.noise_at='teachers'"),
            ("strategy.mechanism", s.mechanism, s.noise_at != "votes" or s.mechanism == "majority",
             "majority (the plurality of the randomised votes) with strategy.noise_at='votes'"),
            ("strategy.budget_on", s.budget_on, s.noise_at == "server" or s.budget_on == "data_independent",
             f"data_independent with strategy.noise_at={s.noise_at!r} (no one sees the clean votes)"),
            ("strategy.rr_epsilon", s.rr_epsilon, s.rr_epsilon > 0, "> 0"),
            ("strategy.secagg_threshold", s.secagg_threshold, s.secagg_threshold >= 0,
             ">= 0 (0: a majority of the teacher nodes)"),
            ("federation.teacher_nodes", f.teacher_nodes, f.teacher_nodes >= 1, ">= 1"),
            ("federation.cpus_per_node", f.cpus_per_node, f.cpus_per_node > 0, "> 0"),
            ("federation.timeout_s", f.timeout_s, f.timeout_s > 0, "> 0"),
            ("federation.step_timeout_s", f.step_timeout_s, f.step_timeout_s > 0, "> 0"),
        ]
        for name, spec in (("teacher", self.teacher), ("student_model", self.student_model)):
            rules.append((f"{name}.encoder", spec.encoder, spec.encoder in ENCODER_KINDS,
                          f"one of {ENCODER_KINDS}"))
        for name, value, ok, rule in rules:
            if not ok:
                raise ValueError(f"{name} must be {rule}, got {value!r}")
        noise_fits(s, d.num_teachers)
        self._check_data_fits()

    def _check_data_fits(self) -> None:
        """Refuse teacher counts and sample budgets the dataset cannot supply (before any node starts).

        With ``data.dataset='sites'`` the nodes' own files decide (each node checks its shards)."""
        d = self.data
        if d.dataset == SITE_DATA:
            return
        pool = teacher_pool_size(dataset_size(d.dataset, d.mnist1d_samples), d.query_fraction,
                                 d.validation_fraction, d.test_fraction)
        if d.teacher_samples > pool:
            raise ValueError(f"data.teacher_samples={d.teacher_samples}: must be <= the {pool} samples "
                             f"{d.dataset} leaves after the student's query, validation and test sets")
        per_teacher = (d.teacher_samples or pool) // d.num_teachers
        if per_teacher < 1:
            raise ValueError(f"data.num_teachers={d.num_teachers}: the {d.teacher_samples or pool} teacher "
                             f"samples of {d.dataset} leave none per teacher; use fewer teachers or more data"
                             )
        if d.query_fraction * dataset_size(d.dataset, d.mnist1d_samples) < 1:
            raise ValueError(f"data.query_fraction={d.query_fraction}: leaves the student no query samples")


def compose_config(*hydra_overrides: str) -> PateConfig:
    """The :class:`PateConfig` that ``python -m simulations.pate <hydra_overrides>`` runs (``conf/pate``).

    Raises
    ------
    ValueError
        For a setting by its earlier name (:data:`PateConfig.renamed_keys`), naming the new one.
    """
    from pathlib import Path

    from hydra import compose, initialize_config_dir
    from omegaconf import OmegaConf

    from protocol.codec import renamed_key

    for override in hydra_overrides:  # Hydra would only say there is no such key
        key, _, value = override.lstrip("+~").partition("=")
        refusal = renamed_key(PateConfig, key, value)
        if refusal is not None:
            raise ValueError(refusal)
    register_configs()
    conf_dir = Path(__file__).resolve().parents[1] / "conf" / "pate"
    with initialize_config_dir(config_dir=str(conf_dir), version_base="1.3"):
        composed = compose("config", overrides=["run.output_dir=runs/pate", *hydra_overrides])
    return OmegaConf.to_object(composed)  # type: ignore[return-value]


def run_config_overrides(*hydra_overrides: str) -> str:
    """``flwr run --run-config`` text equal to ``python -m simulations.pate <hydra_overrides>``.

    The ``pate.*`` keys of :func:`compose_config` whose values differ from the schema's defaults (the
    ``[tool.flwr.app.config]`` values), e.g. for ``"dataset=digits"``.
    """
    from protocol.codec import to_flat

    chosen, defaults = to_flat(compose_config(*hydra_overrides)), to_flat(PateConfig())
    parts = []
    for key, value in chosen.items():
        if value != defaults[key]:
            text = f'"{value}"' if isinstance(value, str) else str(value).lower() if isinstance(value, bool) \
                else repr(value)
            parts.append(f"pate.{key}={text}")
    return " ".join(parts)

SCHEMA_NAME = "pate_schema"


def register_configs() -> None:
    """Register :class:`PateConfig` as ``pate_schema`` in Hydra's ConfigStore (``conf/pate`` extends it)."""
    from hydra.core.config_store import ConfigStore

    ConfigStore.instance().store(name=SCHEMA_NAME, node=PateConfig)
