"""Diffie–Hellman PSI over X25519 (default) or edwards25519: the fast alignment backend.

The receiver R (learns the intersection first) and the sender S each draw a secret scalar (a, b),
hash their IDs into the group and exponentiate; each then exponentiates the other's points. Since
scalar multiplication commutes, an ID x of R and y of S meet as H(x)^(ab) = H(y)^(ab) exactly when
H(x) = H(y). S returns R's points H(x)^(ab) in the order received and sends its own H(y)^b in a secret
random order; R raises those to a and records, for each shared ID, its position in S's order. From
there the protocol is the Paillier backend's (:mod:`clients.psi.fnp_receiver`, :mod:`clients.psi.fnp_sender`):
R sends the positions of the shared IDs in the canonical order and S maps them to its rows through its
secret shuffle, so both end with the same :class:`~clients.psi.ids.Alignment`.

References
----------
- C. Meadows, "A More Efficient Cryptographic Matchmaking Protocol for Use in the Absence of a
  Continuously Available Third Party", IEEE Symposium on Security and Privacy 1986 ("Meadows 1986");
  B. A. Huberman, M. Franklin, T. Hogg, "Enhancing Privacy and Trust in Electronic Communities",
  ACM EC 1999 ("HFH 1999"): the double exponentiation H(x)^(ab) and the shuffles.
- The groups, the hash into them and the checks of received points: :mod:`clients.psi.ecdh_groups`
  (RFC 7748 for X25519, RFC 9380 for the hash, libsodium and OpenSSL for the arithmetic).

Keys and checks (``docs/psi.md``, "ECDH backend")
------------------------------------------------
- Secret scalar: drawn by the group from :mod:`secrets`, fresh for every session, kept in the node's
  state and never put in a message. Both parties of a session must use the same group.
- Hash to the group: keyed by the session ID, which separates sessions.
- Checks: every point a party exponentiates comes from the other party and is refused (with its
  position and value) if it is malformed or could leak the secret scalar (the group's rules). The
  points R only compares (its own, returned by S) are checked by length; a wrong value there cannot
  match.

Leakage (semi-honest parties): R learns |Y| and X ∩ Y; S learns |X| (and, in the second phase of the
Paillier machinery, the intersection through the positions R sends). Security: the decisional
Diffie–Hellman assumption in the group, with H modelled as a random oracle (HFH 1999).
**Not secure against malicious parties**: S could exponentiate R's points with another scalar, R could
send more points than its set holds (S refuses more than the announced ``peer_size``).
"""

from __future__ import annotations

import secrets
from collections.abc import Iterable
from concurrent.futures import Executor
from typing import Any

from clients.psi.ecdh_groups import POINT_BYTES, Group, ecdh_group
from clients.psi.ids import (
    Alignment,
    DuplicatePolicy,
    PreparedIds,
    prepare_ids,
)
from clients.psi.matching import MatchingReceiver, ShuffledSender
from clients.psi.pool import pool_map, process_pool, split_chunks, work_slices
from clients.psi.state_codec import StateValue, new_session_id, prepared_from_state, prepared_to_state
from protocol.psi import DEFAULT_CHUNK_BYTES, DEFAULT_ECDH_GROUP, PSIError, SessionMismatchError

__all__ = ["ECDHReceiver", "ECDHSender", "align_ecdh"]


# --------------------------------------------------------------------------------------------------
# The hot loops over slices, in the pool
# --------------------------------------------------------------------------------------------------


def _exponentiate_all(
    group: Group, scalar: bytes, blob: bytes, pool: Executor | None, what: str, first_index: int
) -> bytes:
    """The peer's points of ``blob`` raised to ``scalar``, checked by the group, over the pool's slices."""
    count = len(blob) // POINT_BYTES
    tasks = [
        (scalar, blob[a * POINT_BYTES : b * POINT_BYTES], first_index + a, what)
        for a, b in work_slices(count, pool, 64)
    ]
    return b"".join(pool_map(pool, group.exponentiate, tasks))


def _points(blob: bytes) -> list[bytes]:
    return [blob[i : i + POINT_BYTES] for i in range(0, len(blob), POINT_BYTES)]


# --------------------------------------------------------------------------------------------------
# The two roles
# --------------------------------------------------------------------------------------------------


class _ECDHRole:
    """What both roles do: prepare the IDs, blind them, shuffle, serve them in chunks."""

    def __init__(
        self,
        ids: Iterable[object] | PreparedIds,
        *,
        peer_size: int,
        session_id: str | None = None,
        duplicates: DuplicatePolicy = "reject",
        group: str = DEFAULT_ECDH_GROUP,
    ) -> None:
        if peer_size < 0:
            raise ValueError(f"peer_size must be >= 0, got {peer_size}")
        self.prepared = ids if isinstance(ids, PreparedIds) else prepare_ids(ids, duplicates)
        self.peer_size = peer_size
        self.session_id = session_id or new_session_id()
        self.group = ecdh_group(group)
        self._scalar = self.group.random_scalar()
        self._chunks: list[bytes] = []  # own blinded points, shuffled, chunked
        self._order: list[int] = []  # position in the shuffled stream → index into prepared.canonical
        self._blinded = False
        self._peer_next = 0  # next chunk of the peer's points
        self._peer_received = 0  # peer points exponentiated so far

    @property
    def size(self) -> int:
        """Distinct IDs of this party (public)."""
        return len(self.prepared.canonical)

    @property
    def num_chunks(self) -> int:
        """Chunks of this party's blinded points (after :meth:`blind`)."""
        return len(self._chunks)

    def blind(self, pool: Executor | None = None, chunk_bytes: int = DEFAULT_CHUNK_BYTES) -> int:
        """Hash every own ID into the group, raise it to the secret scalar, shuffle; return the count.

        Raises
        ------
        PSIError
            If the IDs were already blinded in this session.
        ValueError
            If ``chunk_bytes`` cannot hold one point.
        """
        if self._blinded:
            raise PSIError("the IDs were already blinded in this session")
        if chunk_bytes < POINT_BYTES:
            raise ValueError(f"chunk_bytes must hold one point ({POINT_BYTES} B), got {chunk_bytes}")
        canonical = self.prepared.canonical
        slices = work_slices(len(canonical), pool, 64)
        tasks = [(self._scalar, self.session_id, canonical[a:b]) for a, b in slices]
        points = _points(b"".join(pool_map(pool, self.group.hash_and_blind, tasks)))
        order = list(range(len(points)))
        secrets.SystemRandom().shuffle(order)
        self._order = order
        self._chunks = split_chunks(b"".join(points[k] for k in order), POINT_BYTES, chunk_bytes)
        self._blinded = True
        return len(order)

    def point_chunk(self, index: int) -> bytes:
        """Chunk ``index`` of the own blinded points, in the shuffled order.

        Raises
        ------
        PSIError
            Before :meth:`blind` or for a chunk that does not exist.
        """
        if not self._blinded or not 0 <= index < len(self._chunks):
            raise PSIError(f"point chunk {index} does not exist ({len(self._chunks)} chunks)")
        return self._chunks[index]

    def _check_session(self, session_id: str) -> None:
        if session_id != self.session_id:
            raise SessionMismatchError("message for another PSI session")

    def _exponentiate_peer(self, session_id: str, index: int, chunk: bytes, pool: Executor | None) -> bytes:
        """The peer's chunk ``index`` raised to the own scalar (checked: order, count, group)."""
        self._check_session(session_id)
        if index != self._peer_next:
            raise PSIError(f"peer point chunk {index} out of order, expected chunk {self._peer_next}")
        what = f"peer point chunk {index}"
        if len(chunk) % POINT_BYTES:
            raise PSIError(f"{what}: {len(chunk)} bytes is not a whole number of {POINT_BYTES}-byte points")
        count = len(chunk) // POINT_BYTES
        if self._peer_received + count > self.peer_size:
            raise PSIError(f"the peer sent more points than the {self.peer_size} IDs it announced")
        out = _exponentiate_all(self.group, self._scalar, chunk, pool, what, self._peer_received)
        self._peer_received += count
        self._peer_next += 1
        return out

    def _role_state(self) -> dict[str, StateValue]:
        return {
            "backend": "ecdh",
            "group": self.group.name,
            "session_id": self.session_id,
            "scalar": self._scalar,
            "peer_size": self.peer_size,
            **prepared_to_state(self.prepared),
            "blinded": self._blinded,
            "chunks": list(self._chunks),
            "order": list(self._order),
            "peer_next": self._peer_next,
            "peer_received": self._peer_received,
        }

    def _load_role_state(self, state: dict[str, Any]) -> None:
        self.session_id = str(state["session_id"])
        self.group = ecdh_group(str(state["group"]))
        self._scalar = bytes(state["scalar"])
        self.peer_size = int(state["peer_size"])
        self.prepared = prepared_from_state(state)
        self._blinded = bool(state["blinded"])
        self._chunks = list(state["chunks"])
        self._order = list(state["order"])
        self._peer_next = int(state["peer_next"])
        self._peer_received = int(state["peer_received"])


class ECDHReceiver(MatchingReceiver, _ECDHRole):
    """R: blinds its IDs, raises the sender's points to its scalar, learns the intersection.

    Steps: ``blind()`` → ``point_chunk(i)`` for the sender → ``exponentiate_peer(i, chunk)`` for every
    chunk of the sender's points and ``receive_doubled(i, chunk)`` for every own chunk the sender
    returned → ``finish()`` → ``intersection_message()`` / ``alignment()``.

    Parameters
    ----------
    ids : Iterable[str | int] or PreparedIds
        The receiver's IDs, one per row (:func:`prepare_ids`).
    peer_size : int
        The sender's number of distinct IDs (public): exactly that many points must arrive.
    session_id : str, optional
        Shared by both parties (it is part of the hash); defaults to a fresh random hex string.
    duplicates : {"reject", "keep_first"} (default: "reject")
        See :func:`prepare_ids`.
    group : {"x25519", "edwards25519"} (default: "x25519")
        The group (:mod:`clients.psi.ecdh_groups`); both parties must use the same one.
    """

    def __init__(
        self,
        ids: Iterable[object] | PreparedIds,
        *,
        peer_size: int,
        session_id: str | None = None,
        duplicates: DuplicatePolicy = "reject",
        group: str = DEFAULT_ECDH_GROUP,
    ) -> None:
        super().__init__(ids, peer_size=peer_size, session_id=session_id, duplicates=duplicates, group=group)
        self._peer_doubled: list[bytes] = []  # H(y)^(ba), in the sender's shuffled order
        self._doubled: list[bytes] = []  # own H(x)^(ab), chunk by chunk as the sender returned them
        self._matches: dict[int, int] = {}  # prepared index → position in the sender's order
        self._finished = False

    def exponentiate_peer(
        self, session_id: str, index: int, chunk: bytes, pool: Executor | None = None
    ) -> None:
        """Raise chunk ``index`` of the sender's points H(y)^b to a and keep the result.

        Raises
        ------
        SessionMismatchError, PSIError
            On another session, a chunk out of order, more points than ``peer_size``, or a point
            the group refuses (named by its position and value).
        """
        self._peer_doubled.append(self._exponentiate_peer(session_id, index, chunk, pool))

    def receive_doubled(self, session_id: str, index: int, chunk: bytes) -> None:
        """Own chunk ``index`` as returned by the sender, H(x)^(ab), in the order it was sent.

        Raises
        ------
        SessionMismatchError, PSIError
            On another session, a chunk out of order or beyond the last, or a length that differs from
            the chunk sent.
        """
        self._check_session(session_id)
        if index != len(self._doubled) or index >= len(self._chunks):
            raise PSIError(f"returned chunk {index} out of order or beyond the {len(self._chunks)} sent")
        if len(chunk) != len(self._chunks[index]):
            raise PSIError(
                f"returned chunk {index}: {len(chunk)} bytes, expected {len(self._chunks[index])} "
                "(one point per point sent)"
            )
        self._doubled.append(chunk)

    def finish(self) -> list[int]:
        """Compare H(x)^(ab) with H(y)^(ba); return the receiver's matched rows in canonical order.

        Raises
        ------
        PSIError
            If a chunk is missing either way, fewer than ``peer_size`` sender points arrived, or
            points repeat (the sender's set has duplicates, or its replies are not one per point).
        """
        if not self._blinded or len(self._doubled) != len(self._chunks):
            raise PSIError(f"the sender returned {len(self._doubled)} of {len(self._chunks)} own chunks")
        if self._peer_received != self.peer_size:
            raise PSIError(f"received {self._peer_received} of the sender's {self.peer_size} points")
        own = {point: position for position, point in enumerate(_points(b"".join(self._doubled)))}
        if len(own) != len(self._order):
            raise PSIError("the sender's returned points repeat: it did not exponentiate each point once")
        matches: dict[int, int] = {}
        seen: set[bytes] = set()
        for position, point in enumerate(_points(b"".join(self._peer_doubled))):
            if point in seen:
                raise PSIError("two of the sender's points are equal: the sender's set has duplicates")
            seen.add(point)
            mine = own.get(point)
            if mine is not None:
                matches[self._order[mine]] = position
        self._matches = matches
        self._finished = True
        return [self.prepared.rows[i] for i in self.matched_indices()]

    def to_state(self) -> dict[str, StateValue]:
        """Plain values for a node-local Flower ``ConfigRecord`` (includes the secret scalar)."""
        matched = sorted(self._matches)
        return {
            **self._role_state(),
            "peer_doubled": list(self._peer_doubled),
            "doubled": list(self._doubled),
            "finished": self._finished,
            "matched": matched,
            "matched_positions": [self._matches[i] for i in matched],
        }

    @classmethod
    def from_state(cls, state: dict[str, Any]) -> ECDHReceiver:
        """Inverse of :meth:`to_state`."""
        self = cls.__new__(cls)
        self._load_role_state(state)
        self._peer_doubled = list(state["peer_doubled"])
        self._doubled = list(state["doubled"])
        self._finished = bool(state["finished"])
        self._matches = dict(zip(state["matched"], state["matched_positions"], strict=True))
        return self


class ECDHSender(ShuffledSender, _ECDHRole):
    """S: blinds its IDs (shuffled), raises the receiver's points to its scalar and returns them.

    Steps: ``blind()`` → ``point_chunk(i)`` for the receiver → ``exponentiate_peer(i, chunk)`` for every
    chunk of the receiver's points (its reply goes back to the receiver) → after the receiver's
    :class:`IntersectionMessage`: ``conclude()``. Parameters as for :class:`ECDHReceiver`, with
    ``peer_size`` the receiver's number of distinct IDs: the sender exponentiates no more points.
    """

    def exponentiate_peer(
        self, session_id: str, index: int, chunk: bytes, pool: Executor | None = None
    ) -> bytes:
        """Chunk ``index`` of the receiver's points H(x)^a raised to b, in the order received.

        Raises
        ------
        SessionMismatchError, PSIError
            As :meth:`ECDHReceiver.exponentiate_peer`.
        """
        return self._exponentiate_peer(session_id, index, chunk, pool)

    def to_state(self) -> dict[str, StateValue]:
        """Plain values for a node-local Flower ``ConfigRecord`` (includes the secret scalar)."""
        return self._role_state()

    @classmethod
    def from_state(cls, state: dict[str, Any]) -> ECDHSender:
        """Inverse of :meth:`to_state`."""
        self = cls.__new__(cls)
        self._load_role_state(state)
        return self


def align_ecdh(
    ids_a: Iterable[object],
    ids_b: Iterable[object],
    *,
    workers: int | None = 1,
    duplicates: DuplicatePolicy = "reject",
    chunk_bytes: int = DEFAULT_CHUNK_BYTES,
    group: str = DEFAULT_ECDH_GROUP,
) -> tuple[Alignment, Alignment]:
    """Run DH-PSI between two ID lists in this process over ``group``; ``a`` is the receiver.

    Returns ``(alignment of a, alignment of b)``: same IDs, same canonical order, own rows.
    """
    prepared_a, prepared_b = prepare_ids(ids_a, duplicates), prepare_ids(ids_b, duplicates)
    session_id = new_session_id()
    common = {"session_id": session_id, "group": group}
    receiver = ECDHReceiver(prepared_a, peer_size=len(prepared_b.canonical), **common)
    sender = ECDHSender(prepared_b, peer_size=len(prepared_a.canonical), **common)
    with process_pool(workers) as pool:
        receiver.blind(pool, chunk_bytes)
        sender.blind(pool, chunk_bytes)
        for index in range(receiver.num_chunks):
            doubled = sender.exponentiate_peer(session_id, index, receiver.point_chunk(index), pool)
            receiver.receive_doubled(session_id, index, doubled)
        for index in range(sender.num_chunks):
            receiver.exponentiate_peer(session_id, index, sender.point_chunk(index), pool)
    receiver.finish()
    return receiver.alignment(), sender.conclude(receiver.intersection_message())
