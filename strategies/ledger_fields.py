"""The state of :class:`strategies.privacy_ledger.PrivacyLedger`, declared once for the ledger and its
mixins (:mod:`strategies.ledger_views`, :mod:`strategies.ledger_release`, :mod:`strategies.ledger_restore`).

Declarations only: the ledger's ``__init__`` sets every field.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from strategies.ledger_sidecar import LedgerRows
from strategies.rdp_analysis import FloatArray
from strategies.vote_release import VoteRelease


class LedgerFields:
    """The ledger's fields (annotations only; no behaviour)."""

    _path: Path | None
    _mechanism: str
    _model: VoteRelease
    _params: dict[str, float]
    _delta: float
    _budget: float
    _budget_on: str
    _conversion: str
    _run: dict[str, Any] | None
    _pool: str | None
    _orders: FloatArray
    _rdp_dd: FloatArray
    _rdp_di: FloatArray
    _checked: int
    _answered: int
    _exhausted: bool
    _history: list[dict[str, Any]]
    _rows: LedgerRows
    _eps_released: float | None
    _release: dict[str, Any] | None
    _head_entries: int
    _v1: bool
    _written_names: dict[str, str]
