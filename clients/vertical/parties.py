"""One party of the vertical prototype exchange by its role: :func:`make_party`.

Party 0 holds the labels (:class:`~clients.vertical.active_party.ActiveParty`); every other party is a
:class:`~clients.vertical.passive_party.PassiveParty`. The Flower handlers
(:mod:`clients.vertical.handlers`) and the in-process link of the benchmarks build their parties here.
"""

from __future__ import annotations

from clients.vertical.active_party import ActiveParty
from clients.vertical.data import PartyData
from clients.vertical.passive_party import PassiveParty
from protocol.vertical import ACTIVE, VerticalConfig

__all__ = ["make_party"]


def make_party(data: PartyData, cfg: VerticalConfig, blob: bytes | None = None) -> ActiveParty | PassiveParty:
    """The party object for ``data``'s role, restored from ``blob`` if given."""
    kind = ActiveParty if data.role == ACTIVE else PassiveParty
    return kind.from_state(data, cfg, blob)  # type: ignore[return-value]
