"""A new mechanism is one class: a toy vote release defined here runs through the strategy and is charged
by the one ledger, whose file reloads with the toy's costs (no other module names it)."""

from __future__ import annotations

import dataclasses
import warnings
from typing import ClassVar

import numpy as np
import numpy.typing as npt
import pytest

from protocol.pate import DataSpec, ModelSpec, StudentSettings
from simulations.app import client_app
from strategies.ensemble_distillation import EnsembleDistillation
from strategies.privacy_ledger import PrivacyLedger
from strategies.rdp_analysis import PrivacyWarning
from strategies.rdp_conversion import epsilon_curve
from strategies.vote_release import CentralRelease, FusionResult, register
from tests.fake_grid import InProcessGrid, simulation_nodes


@register
@dataclasses.dataclass(frozen=True)
class ToyGaussianMax(CentralRelease):
    """Gaussian noise of scale ``spread`` on every count, then argmax, charged only data-independently:
    the Gaussian mechanism of L2 sensitivity √2, RDP ``α/spread²`` ([M17] Mironov 2017, Table II)."""

    spread: float
    name: ClassVar[str] = "toy_gaussian_max"
    budget_bases: ClassVar[tuple[str, ...]] = ("data_independent",)
    ledger_params: ClassVar[tuple[str, ...]] = ("spread",)

    def privacy_params(self) -> dict[str, float]:
        return {"spread": float(self.spread)}

    def fuse(self, votes: np.ndarray, rng: np.random.Generator) -> FusionResult:
        labels = np.argmax(votes + rng.normal(0.0, self.spread, size=votes.shape), axis=1).astype(np.int64)
        return FusionResult(labels, np.ones(len(labels), dtype=bool))

    def rdp_costs(self, votes: np.ndarray, answered: npt.NDArray[np.bool_],
                  orders: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        cost = answered[:, None] * (orders / self.spread**2)[None, :]
        return cost, cost.copy()


def test_a_toy_mechanism_runs_through_the_strategy_and_is_charged(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    toy = ToyGaussianMax(spread=2.0)
    ledger = PrivacyLedger.for_mechanism(toy, tmp_path / "ledger.json", delta=1e-5, epsilon_budget=1e4)
    assert ledger.budget_on == "data_independent"  # the toy's only basis
    strategy = EnsembleDistillation(
        mechanism=toy, ledger=ledger, data=DataSpec(dataset="digits", num_teachers=6, seed=3),
        teacher_model=ModelSpec(epochs=15, batch_size=32), student_model=ModelSpec(epochs=15, batch_size=32),
        query_batch_size=40, max_queries=80, seed=0, student=StudentSettings(method="supervised", model_name=""))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", PrivacyWarning)
        report = strategy.start(InProcessGrid(client_app, simulation_nodes(3))).report
    assert report["mechanism"] == "toy_gaussian_max" and report["queries_checked"] == 80
    orders = ledger.orders
    expected = float(np.min(epsilon_curve(orders, 80 * orders / 4.0, 1e-5)))
    assert report["epsilon_data_independent"] == pytest.approx(expected, rel=1e-12)
    assert report["smooth_sensitivity"] is None  # not covered by [P18]'s release: none attempted
    reloaded = PrivacyLedger.load(tmp_path / "ledger.json")  # rebuilt from the registry by name
    assert reloaded.mechanism == "toy_gaussian_max" and reloaded.params == {"spread": 2.0}
    assert reloaded.epsilon() == ledger.epsilon()
    with pytest.raises(ValueError, match="budget_on='data_independent', got 'data_dependent'"):
        PrivacyLedger.for_mechanism(toy, None, delta=1e-5, epsilon_budget=5.0, budget_on="data_dependent")
