"""The state of :class:`strategies.privacy_ledger.PrivacyLedger`, declared once for the ledger and its
mixins (:mod:`strategies.ledger_views`, :mod:`strategies.ledger_release`, :mod:`strategies.ledger_restore`),
and the methods the mixins call on the ledger (:class:`LedgerHost`).

Declarations only: the ledger's ``__init__`` sets every field.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from strategies.ledger_journal import JournalSpec
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


class LedgerHost(Protocol):
    """What the ledger's mixins call on :class:`strategies.privacy_ledger.PrivacyLedger` besides its fields:
    its own helpers, and :class:`strategies.ledger_views.LedgerViews`'s ``_state`` and ``_payload``."""

    def _config(self) -> dict[str, Any]:
        """The settings a stored ledger must match to be reloaded (its parameters by their current names)."""

    def _described(self, written_names: dict[str, str] | None = None) -> dict[str, Any]:
        """:meth:`_config` as the file records it (a renamed parameter by ``written_names``' earlier name)."""

    def _spec(self, written_names: dict[str, str] | None = None) -> JournalSpec:
        """What the journal checks need of this ledger (``written_names``: as :meth:`_described`)."""

    def _curve(self, rdp: FloatArray) -> FloatArray:
        """ε at every order (along the last axis) by this ledger's conversion."""

    def _best(self, rdp: FloatArray, checked: int) -> tuple[float, float]:
        """(ε, best order) of a total RDP curve after ``checked`` queries, without warning."""

    def _refresh(self) -> None:
        """Adopt the ledger file's state (another process may have charged it since my last write)."""

    def _state(self) -> dict[str, Any]:
        """The current state as :meth:`_payload` keywords."""

    def _payload(
        self,
        *,
        rdp_dd: FloatArray,
        rdp_di: FloatArray,
        checked: int,
        answered: int,
        exhausted: bool,
        history: Sequence[dict[str, Any]],
        eps_released: float | None,
        release: dict[str, Any] | None,
    ) -> dict[str, Any]:
        """The JSON document for a ledger state (the totals in it are derived from ``history``)."""


if TYPE_CHECKING:
    class LedgerBase(LedgerFields, LedgerHost):
        """Type checkers see the ledger's fields and :class:`LedgerHost`'s methods on a mixin's ``self``."""
else:
    LedgerBase = LedgerFields  # at run time the mixins stay on LedgerFields: the ledger's MRO is unchanged
