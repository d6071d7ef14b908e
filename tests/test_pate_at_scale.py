"""Ensemble-label distillation with 50 MNIST-1D teachers on 2 teacher nodes, through the Flower ClientApp.

The nodes train their hosted teachers as one batched ensemble; the test checks the student learns far
above chance and that the ledger's ε is exactly what the accounting functions give for the votes it was
charged.
"""

from __future__ import annotations

import warnings

import numpy as np
import pytest

from protocol.pate import DataSpec, ModelSpec, StudentSettings
from simulations.app import client_app
from strategies.accounting import (
    DEFAULT_ORDERS,
    PrivacyLedger,
    PrivacyWarning,
    rdp_gnmax_data_dependent,
    rdp_gnmax_data_independent,
    rdp_to_epsilon,
)
from strategies.ensemble_distillation import EnsembleDistillation
from strategies.fusion import GNMax
from tests.fake_grid import InProcessGrid, simulation_nodes

DATA = DataSpec(dataset="mnist1d", num_teachers=50, mnist1d_samples=20_000, query_fraction=0.2,
                validation_fraction=0.05, test_fraction=0.1, teacher_samples=12_000, seed=1)
TEACHER = ModelSpec(encoder="convbase1d", epochs=60, batch_size=32, lr=3e-3, augment_shift=6)
STUDENT = ModelSpec(encoder="convbase1d", epochs=40, batch_size=32, lr=3e-3, augment_shift=6)


def test_fifty_teachers_on_two_nodes_label_a_student_and_the_ledger_matches_the_analysis(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # the student node writes under ./privkit-output
    # Prepare: 2 teacher nodes (25 teachers each) + the student node
    grid = InProcessGrid(client_app, simulation_nodes(3))
    mechanism = GNMax(sigma2=4.0)
    ledger = PrivacyLedger.for_mechanism(mechanism, tmp_path / "ledger.json", delta=1e-5, epsilon_budget=500.0)
    strategy = EnsembleDistillation(
        mechanism=mechanism, ledger=ledger, data=DATA, teacher_model=TEACHER, student_model=STUDENT,
        student=StudentSettings(method="supervised", model_name="student"),
        query_batch_size=128, max_queries=512)
    # Execute
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", PrivacyWarning)
        report = strategy.start(grid).report
    # Assert: every teacher trained on its node, far above chance (10 classes)
    assert report["teachers_remaining"] == 50 and len(report["teachers"]) == 50
    assert {m["node"] for m in report["teachers"].values()} == {1000, 1001}
    assert np.mean([m["test_accuracy"] for m in report["teachers"].values()]) > 0.3
    assert report["answered"] == 512
    assert report["student"]["fused_label_accuracy"] > 0.4
    assert report["student"]["test_accuracy"] > 0.35
    # Assert: the ledger's ε is the analysis of exactly the charged histograms
    votes = ledger.votes
    assert votes.shape == (512, 10) and np.all(votes.sum(axis=1) == 50)
    expected_dd, _ = rdp_to_epsilon(DEFAULT_ORDERS, rdp_gnmax_data_dependent(votes, 4.0).sum(axis=0), 1e-5)
    expected_di, _ = rdp_to_epsilon(DEFAULT_ORDERS, 512 * rdp_gnmax_data_independent(4.0), 1e-5)
    assert report["epsilon_data_dependent"] == pytest.approx(expected_dd, rel=1e-9)
    assert report["epsilon_data_independent"] == pytest.approx(expected_di, rel=1e-9)
    assert report["epsilon_data_dependent"] < report["epsilon_data_independent"]
