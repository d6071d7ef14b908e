"""Diffie–Hellman PSI over the prime-order group of edwards25519: the fast alignment backend.

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
- RFC 9380, "Hashing to Elliptic Curves", §3 ``hash_to_curve``: a random-oracle hash into the group is
  the sum of two map-to-curve outputs of independent field elements (Brier, Coron, Icart, Madore,
  Randriam, Tibouchi, CRYPTO 2010); libsodium's ``crypto_core_ed25519_from_uniform`` is Elligator 2
  (Bernstein, Hamburg, Krasnova, Lange, CCS 2013) followed by cofactor clearing, so its outputs lie in
  the prime-order subgroup.
- libsodium through PyNaCl: ``crypto_scalarmult_ed25519_noclamp`` (refuses a point that is not a
  canonical encoding of a point of the prime-order subgroup, of small order, or the identity) and
  ``crypto_core_ed25519_scalar_reduce``.

Group, keys, hash (``docs/psi.md``, "ECDH backend")
--------------------------------------------------
- Group: the subgroup of prime order L = 2^252 + 27742317777372353535851937790883648493 of
  edwards25519 (about 126-bit security against discrete logarithms); points travel as 32-byte
  compressed encodings.
- Secret scalar: 64 uniform bytes from :mod:`secrets` reduced modulo L (bias below 2^-259), never 0,
  fresh for every session, kept in the node's state and never put in a message.
- Hash to the group: d = SHA-512(HASH_DOMAIN ‖ len(session_id) ‖ session_id ‖ canonical ID bytes),
  H(x) = from_uniform(d[:32]) + from_uniform(d[32:]). The session ID separates sessions.
- Checks: every point a party exponentiates comes from the other party and is refused (with its
  position) unless it is a valid point of the prime-order subgroup: a point with a small-order
  component would leak the secret scalar modulo 8. The points R only compares (its own, returned by S)
  are checked by length; a wrong value there cannot match.

Leakage (semi-honest parties): R learns |Y| and X ∩ Y; S learns |X| (and, in the second phase of the
Paillier machinery, the intersection through the positions R sends). Security: the decisional
Diffie–Hellman assumption in the prime-order group, with H modelled as a random oracle (HFH 1999).
**Not secure against malicious parties**: S could exponentiate R's points with another scalar, R could
send more points than its set holds (S refuses more than the announced ``peer_size``).
"""

from __future__ import annotations

import hashlib
import secrets
from collections.abc import Iterable
from concurrent.futures import Executor
from typing import Any

import nacl.bindings as sodium
import nacl.exceptions

from clients.psi.ids import (
    Alignment,
    DuplicatePolicy,
    PreparedIds,
    prepare_ids,
)
from clients.psi.matching import MatchingReceiver, ShuffledSender
from clients.psi.pool import pool_map, process_pool, split_chunks, work_slices
from clients.psi.state_codec import StateValue, new_session_id, prepared_from_state, prepared_to_state
from protocol.psi import DEFAULT_CHUNK_BYTES, PSIError, SessionMismatchError

POINT_BYTES = 32
"""Bytes of one compressed edwards25519 point (``crypto_core_ed25519_BYTES``)."""
HASH_DOMAIN = b"flwr-privkit/psi/ecdh/hash-to-group/v1"
"""Domain-separation tag of the hash into the group."""

__all__ = [
    "HASH_DOMAIN",
    "POINT_BYTES",
    "ECDHReceiver",
    "ECDHSender",
    "align_ecdh",
    "hash_to_group",
    "random_scalar",
]


# --------------------------------------------------------------------------------------------------
# Group operations and the hot loops (top-level so that the pool can pickle them)
# --------------------------------------------------------------------------------------------------


def random_scalar() -> bytes:
    """A secret scalar uniform in [1, L): 64 random bytes reduced modulo L (bias below 2^-259)."""
    while True:
        scalar = sodium.crypto_core_ed25519_scalar_reduce(secrets.token_bytes(64))
        if any(scalar):
            return scalar


def _hash_prefix(session_id: str) -> bytes:
    session = session_id.encode("utf-8")
    return HASH_DOMAIN + len(session).to_bytes(2, "big") + session


def hash_to_group(session_id: str, data: bytes) -> bytes:
    """H(x): the RFC 9380 random-oracle construction over libsodium's Elligator 2 map (module docstring)."""
    digest = hashlib.sha512(_hash_prefix(session_id) + data).digest()
    return sodium.crypto_core_ed25519_add(
        sodium.crypto_core_ed25519_from_uniform(digest[:32]),
        sodium.crypto_core_ed25519_from_uniform(digest[32:]),
    )


def _hash_and_blind(task: tuple[bytes, str, list[bytes]]) -> bytes:
    """H(x)^scalar for each canonical ID, as concatenated 32-byte points in input order."""
    scalar, session_id, canonical = task
    blind = sodium.crypto_scalarmult_ed25519_noclamp
    return b"".join(blind(scalar, hash_to_group(session_id, data)) for data in canonical)


def _exponentiate(task: tuple[bytes, bytes, int, str]) -> bytes:
    """point^scalar for each 32-byte point of ``blob``; a point outside the prime-order group is refused.

    Raises
    ------
    PSIError
        Naming the point (``offset`` + its index in ``blob``) that libsodium refused.
    """
    scalar, blob, offset, what = task
    out = []
    for start in range(0, len(blob), POINT_BYTES):
        try:
            out.append(sodium.crypto_scalarmult_ed25519_noclamp(scalar, blob[start : start + POINT_BYTES]))
        except nacl.exceptions.RuntimeError:
            index = offset + start // POINT_BYTES
            raise PSIError(
                f"{what}: point {index} is not a valid point of the prime-order edwards25519 group "
                "(non-canonical, off the curve, of small order or with a small-order component)"
            ) from None
    return b"".join(out)


def _exponentiate_all(
    scalar: bytes, blob: bytes, pool: Executor | None, what: str, first_index: int = 0
) -> bytes:
    if len(blob) % POINT_BYTES:
        raise PSIError(f"{what}: {len(blob)} bytes is not a whole number of {POINT_BYTES}-byte points")
    count = len(blob) // POINT_BYTES
    tasks = [
        (scalar, blob[a * POINT_BYTES : b * POINT_BYTES], first_index + a, what)
        for a, b in work_slices(count, pool, 64)
    ]
    return b"".join(pool_map(pool, _exponentiate, tasks))


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
    ) -> None:
        if peer_size < 0:
            raise ValueError(f"peer_size must be >= 0, got {peer_size}")
        self.prepared = ids if isinstance(ids, PreparedIds) else prepare_ids(ids, duplicates)
        self.peer_size = peer_size
        self.session_id = session_id or new_session_id()
        self._scalar = random_scalar()
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
        points = _points(b"".join(pool_map(pool, _hash_and_blind, tasks)))
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
        out = _exponentiate_all(self._scalar, chunk, pool, what, self._peer_received)
        self._peer_received += count
        self._peer_next += 1
        return out

    def _role_state(self) -> dict[str, StateValue]:
        return {
            "backend": "ecdh",
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
    """

    def __init__(
        self,
        ids: Iterable[object] | PreparedIds,
        *,
        peer_size: int,
        session_id: str | None = None,
        duplicates: DuplicatePolicy = "reject",
    ) -> None:
        super().__init__(ids, peer_size=peer_size, session_id=session_id, duplicates=duplicates)
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
            outside the prime-order group (named by its position).
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
) -> tuple[Alignment, Alignment]:
    """Run DH-PSI between two ID lists in this process; ``a`` is the receiver.

    Returns ``(alignment of a, alignment of b)``: same IDs, same canonical order, own rows.
    """
    prepared_a, prepared_b = prepare_ids(ids_a, duplicates), prepare_ids(ids_b, duplicates)
    session_id = new_session_id()
    receiver = ECDHReceiver(prepared_a, peer_size=len(prepared_b.canonical), session_id=session_id)
    sender = ECDHSender(prepared_b, peer_size=len(prepared_a.canonical), session_id=session_id)
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
