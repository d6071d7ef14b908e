"""A ledger with three charges, shared by the ledger integrity and rollback tests."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from strategies.accounting import PrivacyLedger
from strategies.local_rr import LocalRR

SETTINGS: dict[str, Any] = {"mechanism": "confident_gnmax", "delta": 1e-5, "epsilon_budget": 20.0,
                            "sigma2": 40.0, "sigma1": 150.0, "threshold": 200.0}
BATCHES = [  # (votes, answered): three charges of the journal every case starts from
    ([[240, 5, 5], [100, 90, 60], [250, 0, 0]], [True, False, True]),
    ([[5, 240, 5], [0, 0, 250]], [True, True]),
    ([[84, 83, 83], [10, 230, 10], [0, 250, 0], [249, 1, 0]], [False, True, True, True]),
]


def make_ledger(path: Path | None, **overrides: Any) -> PrivacyLedger:
    return PrivacyLedger(path, **{**SETTINGS, **overrides})


def batch(i: int, offset: int = 0) -> dict[str, Any]:
    """``charge`` keywords of batch ``i``: votes, answered, the fused labels and pool positions."""
    votes, answered = np.array(BATCHES[i][0], dtype=float), np.array(BATCHES[i][1])
    labels = np.where(answered, np.argmax(votes, axis=1), -1)
    return {"votes": votes, "answered": answered, "labels": labels,
            "query_ids": offset + np.arange(len(votes))}


def charge_all(ledger: PrivacyLedger, batches: range | list[int] = range(3)) -> None:
    offset = 0
    for i in batches:
        ledger.charge(**batch(i, offset))
        offset += len(BATCHES[i][0])


def local_rr_ledger(*, epsilon: float, path: Path | None = None, **settings: Any) -> PrivacyLedger:
    """The ledger of local randomised response at ε0 = ``epsilon`` (``delta``, ``epsilon_budget``, ``run``...)."""
    return PrivacyLedger.for_mechanism(LocalRR(epsilon=epsilon), path, **settings)
