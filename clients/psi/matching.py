"""What the two PSI backends' roles share once the matching is done: canonical order, positions, alignment.

Both backends end the same way (``docs/psi.md``): the receiver knows, for each of its matched IDs, the
position of the matching element in the sender's secretly shuffled stream; it sends those positions in
the canonical order of the shared IDs, and the sender maps them back through its shuffle. The Paillier
roles (:mod:`clients.psi.fnp_receiver`, :mod:`clients.psi.fnp_sender`) and the ECDH roles
(:mod:`clients.psi.ecdh`) mix these in.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from clients.psi.ids import Alignment, PreparedIds, canonical_order, make_alignment
from protocol.psi import IntersectionMessage, PSIError, SessionMismatchError


class MatchingReceiver:
    """The receiver's side: ``_matches`` maps a prepared-ID index to its position in the sender's order."""

    prepared: PreparedIds
    session_id: str
    _matches: dict[int, int]

    def matched_indices(self) -> list[int]:
        """Indices (into the prepared IDs) of the matched IDs, in canonical order."""
        matched = sorted(self._matches)
        return [matched[k] for k in canonical_order([self.prepared.canonical[i] for i in matched])]

    def positions(self, indices: Sequence[int]) -> list[int]:
        """Positions in the sender's shuffled order of matched prepared-ID ``indices``."""
        try:
            return [self._matches[i] for i in indices]
        except KeyError:
            raise PSIError("an aligned ID was not matched in this session") from None

    def intersection_message(self) -> IntersectionMessage:
        """The positions of the shared IDs in canonical order, for the sender."""
        return IntersectionMessage(self.session_id, tuple(self.positions(self.matched_indices())))

    def alignment(self, alignment_id: str | None = None) -> Alignment:
        """This party's :class:`Alignment` after the matching."""
        return make_alignment(alignment_id or self.session_id, self.prepared, self.matched_indices())


class ShuffledSender:
    """The sender's side: ``_order[position]`` is the prepared-ID index at a position of its stream."""

    prepared: PreparedIds
    session_id: str
    _order: list[int]

    def indices_at(self, positions: Iterable[int]) -> list[int]:
        """Prepared-ID indices behind positions of the shuffled stream (through the secret shuffle).

        Raises
        ------
        PSIError
            If a position is out of range (or the sender has not shuffled yet).
        """
        positions = list(positions)
        for position in positions:
            if not 0 <= position < len(self._order):
                raise PSIError(f"position {position} is out of range [0, {len(self._order)})")
        return [self._order[position] for position in positions]

    def conclude(self, message: IntersectionMessage, alignment_id: str | None = None) -> Alignment:
        """The sender's :class:`Alignment` from the receiver's positions.

        Raises
        ------
        SessionMismatchError, PSIError
            On another session, bad positions, or an order that is not canonical for these IDs.
        """
        if message.session_id != self.session_id:
            raise SessionMismatchError("message for another PSI session")
        indices = self.indices_at(message.positions)
        return make_alignment(alignment_id or self.session_id, self.prepared, indices)
