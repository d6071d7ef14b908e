"""The typed configuration of an ensemble-label distillation (PATE) run.

This schema is the single source of truth: Hydra composes it from ``conf/pate/`` (registered in the
ConfigStore as ``pate_schema``), :func:`simulations.run_config.flatten` turns it into Flower
``run_config`` keys for ``flwr run`` (``[tool.flwr.app.config]`` holds the same defaults under
``pate.``), and a test keeps the three in step.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from protocol.pate import DataSpec, ModelSpec, StudentSettings


@dataclass
class StrategyConfig:
    """Fusion mechanism, its noise, the privacy budget and the query stream.

    ``sigma`` is GNMax's σ (σ2 for Confident-GNMax); ``sigma1`` and ``threshold`` are used by
    Confident-GNMax only, ``gamma`` by LNMax only. ``max_queries`` 0 means the whole pool.
    The defaults scale the paper's MNIST setting (T=200, σ1=150, σ2=40 for 250 teachers; Papernot
    et al. 2018, Table 2) to the default 20 teachers, and won the validation-split selection of
    ``benchmarks/pate.py`` on digits. ``budget_on`` is "data_dependent", "data_independent" or
    "released" (the expected smooth-sensitivity released ε, [P18] Section 4.3); ``conversion`` is the
    RDP → (ε, δ) conversion: "mironov" ([M17] Proposition 3, as [P18]) or the tighter
    "dp_accounting" (Balle et al. 2020, Theorem 21).
    """

    mechanism: str = "confident_gnmax"
    sigma: float = 3.2
    sigma1: float = 12.0
    threshold: float = 16.0
    gamma: float = 0.1
    epsilon_budget: float = 8.0
    delta: float = 1e-5
    budget_on: str = "data_dependent"
    conversion: str = "mironov"
    query_batch_size: int = 128
    max_queries: int = 0
    min_teachers: int = 1
    seed: int = 0


@dataclass
class FederationConfig:
    """Simulation layout: teachers are spread over ``teacher_nodes`` nodes, plus one student node."""

    teacher_nodes: int = 2
    cpus_per_node: float = 1.0
    timeout_s: float = 600.0


@dataclass
class RunConfig:
    """Where results go. ``ledger_path`` empty: ``<output_dir>/privacy_ledger.json``."""

    output_dir: str = "runs/pate"
    ledger_path: str = ""
    verbose: bool = False


@dataclass
class PateConfig:
    """A whole PATE run."""

    data: DataSpec = field(default_factory=lambda: DataSpec(num_teachers=20))
    teacher: ModelSpec = field(default_factory=lambda: ModelSpec(epochs=100))
    student_model: ModelSpec = field(default_factory=lambda: ModelSpec(epochs=100))
    student: StudentSettings = field(default_factory=StudentSettings)
    strategy: StrategyConfig = field(default_factory=StrategyConfig)
    federation: FederationConfig = field(default_factory=FederationConfig)
    run: RunConfig = field(default_factory=RunConfig)
