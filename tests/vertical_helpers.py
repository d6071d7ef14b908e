"""Shared setup of the vertical tests: small configurations, in-process parties, a grid of party nodes.

A helper module, not a test module: the vertical test modules import it and never each other.
"""

from __future__ import annotations

from typing import Any

from clients.vertical.active_party import ActiveParty
from clients.vertical.data import make_vertical_split
from clients.vertical.handlers import party_data
from clients.vertical.parties import make_party
from clients.vertical.passive_party import PassiveParty
from protocol.vertical import DatasetConfig, VerticalConfig, VerticalStrategyConfig
from simulations.app import build_client_app
from strategies.vertical_prototype import InProcessLink, VerticalPrototype
from tests.fake_grid import InProcessGrid, simulation_nodes

UNTUNED = {"tune": "off"}
"""The test configurations' ``strategy.tune`` unless a test gives one: the configured weights, as the numbers
the tests pin were trained (the schema's default tunes first: ``tests/test_vertical_tune.py``), and no
tuning trials in the default suite's runs."""

FIRST_NODE_ID = 100
"""Node IDs of :func:`party_grid`: party ``k`` is node ``100 + k``."""


def party_grid(n_nodes: int, fail: dict[int, str] | None = None, output_dir: str | None = None) -> InProcessGrid:
    """A grid of ``n_nodes`` vertical party nodes (test ClientApp: small PSI keys, plaintext IDs allowed).

    ``fail`` maps a node ID to ``"error"`` (it answers with an error reply) or ``"vanish"`` (no reply).
    """
    app = build_client_app(allow_insecure_psi_keys=True, allow_plaintext_ids=True, output_dir=output_dir)
    grid = InProcessGrid(app, simulation_nodes(n_nodes, first_id=FIRST_NODE_ID))
    for node, how in (fail or {}).items():
        if how == "vanish":
            grid.silent.add(node)
        elif how == "error":
            grid.broken[node] = "simulated failure"
        else:
            raise ValueError(f"fail must map nodes to 'error' or 'vanish', got {how!r}")
    return grid


def flower_config(n_parties: int = 2, dataset: str = "digits", epochs: int = 4, output_dir: str = "",
                  **strategy: Any) -> VerticalConfig:
    """A short run over Flower messages: insecure plaintext alignment unless ``alignment`` is given, the
    configured weights unless ``tune`` is given (:data:`UNTUNED`)."""
    settings = {"epochs": epochs, "warmup_epochs": 0, "alignment": "insecure_plaintext", **UNTUNED, **strategy}
    return VerticalConfig(dataset=DatasetConfig(name=dataset, n_parties=n_parties, aligned_fraction=0.1),
                          strategy=VerticalStrategyConfig(**settings), seed=0, output_dir=output_dir)


def run_in_process(cfg: VerticalConfig) -> dict:
    """``cfg`` run over an :class:`InProcessLink` of the parties a node would load, aligned directly."""
    parties = {p.name: make_party(p, cfg) for p in (party_data(cfg, k) for k in range(cfg.dataset.n_parties))}
    common = sorted(set.intersection(*(set(p.data.ids.tolist()) for p in parties.values())))
    return VerticalPrototype(cfg).run(InProcessLink(parties), lambda link: {n: {"aligned_ids": common}
                                                                            for n in link.parties})


def small_config(**strategy: Any) -> VerticalConfig:
    """Digits halves, 10 % aligned, 3 epochs without warm-up, ``tune`` off (:data:`UNTUNED`); ``strategy``
    overrides the rest."""
    return VerticalConfig(dataset=DatasetConfig(aligned_fraction=0.1),
                          strategy=VerticalStrategyConfig(**{"epochs": 3, "warmup_epochs": 0, **UNTUNED, **strategy}))


def split_parties(cfg: VerticalConfig) -> tuple[dict[str, ActiveParty | PassiveParty], list[str]]:
    """Every party of ``cfg``'s bundled split, and the aligned IDs in canonical (sorted) order."""
    split = make_vertical_split(cfg.dataset.name, n_parties=cfg.dataset.n_parties,
                                aligned_fraction=cfg.dataset.aligned_fraction, seed=cfg.seed)
    parties = {p.name: make_party(p, cfg) for p in split.parties}
    return parties, sorted(set.intersection(*(set(p.ids.tolist()) for p in split.parties)))
