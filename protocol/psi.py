"""What the parties and the server say to each other during the PSI alignment phase.

The wire vocabulary of both private-set-intersection backends (``docs/psi.md``): ``paillier``
(Freedman, Nissim, Pinkas, EUROCRYPT 2004, with hashing into bins) and ``ecdh`` (Diffie–Hellman PSI,
Meadows 1986 / Huberman, Franklin, Hogg 1999, over X25519 or edwards25519): message types, record keys, the
public defaults the server sends, the public setup header that it relays from the Paillier receiver
to the sender, and the messages two parties exchange when both roles run in one process. Pure Python
over plain values: no Paillier or group arithmetic (that is ``clients.psi.paillier`` and
``clients.psi.ecdh``), no torch, no phe, no gmpy2, no PyNaCl.

Messages
--------
Every message and reply of the phase is a Flower ``Message`` of type ``"query." + action``
(:func:`message_type`, :data:`ACTIONS`) whose content carries its fields in
``content[CONTENT_KEY]`` (a ``ConfigRecord``). Every request carries :data:`ALIGNMENT_ID_KEY`; the
steps of a pairwise session also carry :data:`SESSION_ID_KEY`. Fields per action (request → reply):

- ``psi_begin``: → ``size``, ``num_rows``
- ``psi_keygen``: ``key_bits``, ``id_bits``, ``peer_size``, ``precompute_weight`` → ``modulus``
  (big-endian bytes), ``size``
- ``psi_setup``: ``chunk_bytes`` → the :class:`SetupHeader` fields and ``num_chunks``
- ``psi_coefficients``: ``index`` → ``index``, ``chunk``
- ``psi_precompute``: ``modulus`` → ``size``
- ``psi_evaluate``: ``index``, ``chunk`` (and, with chunk 0, the header as ``header.*``,
  :func:`header_fields`) → ``index``
- ``psi_respond``: ``chunk_bytes`` → ``count``, ``num_chunks``
- ``psi_responses``: ``index`` → ``index``, ``chunk``
- ``psi_decrypt``: ``index``, ``count``, ``chunk`` → ``index``
- ``psi_finish``: ``count``, ``receiver_is_leader``, ``sender_is_leader`` → ``size`` (and
  ``positions`` if the sender is the label holder)
- ``psi_ecdh_blind`` (both parties of an ECDH session): ``role`` (``"receiver"`` / ``"sender"``),
  ``group`` (one of :data:`ECDH_GROUPS`), ``peer_size``, ``chunk_bytes`` → ``count``, ``num_chunks``
- ``psi_ecdh_points``: ``index`` → ``index``, ``chunk`` (the party's blinded points, 32 B each)
- ``psi_ecdh_exponentiate``: ``index``, ``chunk`` (the peer's points) → ``index`` (and, from the
  sender, ``chunk``: the receiver's points raised to its scalar, in the order received)
- ``psi_ecdh_doubled`` (receiver): ``index``, ``chunk`` (its own points as the sender returned them)
  → ``index``
- ``psi_ecdh_finish`` (receiver): ``receiver_is_leader``, ``sender_is_leader`` → as ``psi_finish``
- ``psi_matched``: ``positions`` → ``size``
- ``psi_order``: → ``size`` and, per session, ``positions.<session_id>`` (:func:`positions_key`)
- ``psi_prepare``: ``session_id``, ``positions`` → ``size``
- ``psi_commit``: → ``size``, ``alignment_id``
- ``psi_abort``: → ``rolled_back``

The server relays only public values: the receiver's modulus, ciphertext chunks, blinded group
points, counts, sizes and reply positions (indices into a party's secret shuffle).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

PSI_BACKENDS = ("paillier", "ecdh")
"""The alignment backends: FNP over Paillier (the default) and Diffie–Hellman PSI (``ECDH_GROUPS``)."""
ECDH_GROUPS = ("x25519", "edwards25519")
"""The groups of the ECDH backend (``clients.psi.ecdh_groups``): X25519 on curve25519's Montgomery
u-coordinate (RFC 7748) and the prime-order group of edwards25519."""
DEFAULT_ECDH_GROUP = "x25519"
"""The ECDH group unless told otherwise: about 2.5 times less CPU per ID than edwards25519."""
DEFAULT_KEY_BITS = 2048
"""Paillier modulus size: 2048-bit factoring moduli give about 112-bit security (NIST SP 800-57
Part 1 Rev. 5, Table 2), acceptable until 2030; use 3072 bits (python-paillier's ``DEFAULT_KEYSIZE``)
beyond."""
DEFAULT_ID_BITS = 64
"""Hashed-ID width: a false match has probability ≈ |X|·|Y| / 2^64, fine up to ≈ 10^7 IDs per side
(``docs/psi.md``, "Soundness")."""
DEFAULT_CHUNK_BYTES = 4 * 1024 * 1024
"""Bound on the ciphertext payload of one message."""
PRECOMPUTED_WEIGHT = 0.15
"""Default weight of the (data-independent, precomputable) encryption randomness against the online
Horner steps when choosing B. At 10^4 × 10^4 it picks B = |X| / 2 (M = 22): 12 fewer Horner steps per
sender ID than weight 0.5 (B = |X| / 6, M = 34), i.e. ≈ 20 % less online work, for about twice the
receiver's offline randomness (B·M = 110 000 instead of 56 678 encryptions). Pass
``precompute_weight=1.0`` to minimise total work instead (B = |X| / 8, M = 39)."""

CONTENT_KEY = "psi"
"""Every PSI message and reply carries its fields in ``content[CONTENT_KEY]`` (a ``ConfigRecord``)."""
ALIGNMENT_ID_KEY = "alignment_id"
"""Field of every request: the alignment phase it belongs to."""
SESSION_ID_KEY = "session_id"
"""Field of every request of a pairwise session."""
HEADER_PREFIX = "header."
"""The :class:`SetupHeader` travels with coefficient chunk 0 as fields ``header.<name>``."""
POSITIONS_PREFIX = "positions."
"""The label holder's ``psi_order`` reply holds, per session, ``positions.<session_id>``."""
MESSAGE_TYPE_PREFIX = "query."

ACTIONS = (
    "psi_begin",
    "psi_keygen",
    "psi_setup",
    "psi_coefficients",
    "psi_precompute",
    "psi_evaluate",
    "psi_respond",
    "psi_responses",
    "psi_decrypt",
    "psi_finish",
    "psi_ecdh_blind",
    "psi_ecdh_points",
    "psi_ecdh_exponentiate",
    "psi_ecdh_doubled",
    "psi_ecdh_finish",
    "psi_matched",
    "psi_order",
    "psi_prepare",
    "psi_commit",
    "psi_abort",
)
"""Message actions of the phase; the message type is ``"query." + action``."""


class PSIError(Exception):
    """A PSI protocol step cannot proceed (malformed input from the other party, wrong order of steps)."""


class SessionMismatchError(PSIError):
    """A message belongs to another PSI session than the one in progress."""


def message_type(action: str) -> str:
    """Flower message type of a PSI action (``"query.psi_begin"``).

    Raises
    ------
    ValueError
        If ``action`` is not one of :data:`ACTIONS`.
    """
    if action not in ACTIONS:
        raise ValueError(f"action must be one of the PSI actions, got {action!r}")
    return MESSAGE_TYPE_PREFIX + action


def has_field_type(value: object, kind: type) -> bool:
    """Whether a decoded field ``value`` is a ``kind`` (a ``bool`` never passes for an ``int``)."""
    return isinstance(value, kind) and not (isinstance(value, bool) and kind is not bool)


def require_field(config: Mapping[str, Any], key: str, kind: type, what: str = "") -> Any:
    """The field ``key`` of a received record, checked to be a ``kind``.

    Raises
    ------
    PSIError
        If the field is missing or has another type; the message names the field (prefixed by
        ``what``, e.g. ``"setup header"``), never its value: values may be ciphertexts.
    """
    value = config.get(key)
    if not has_field_type(value, kind):
        prefix = f"{what}: " if what else ""
        raise PSIError(f"{prefix}field {key!r} missing or not {kind.__name__}")
    return value


def positions_key(session_id: str) -> str:
    """Field of the ``psi_order`` reply holding a session's reply positions in canonical order."""
    return POSITIONS_PREFIX + session_id


def int_to_bytes(value: int) -> bytes:
    """Big-endian bytes of a non-negative integer (a modulus on the wire); ``b""`` for 0."""
    return int(value).to_bytes((int(value).bit_length() + 7) // 8, "big")


def header_fields(header: Mapping[str, Any]) -> dict[str, Any]:
    """Prefix the fields of a :meth:`SetupHeader.to_config` mapping for a ``psi_evaluate`` request.

    Keys other than the header's own (e.g. the ``num_chunks`` of the ``psi_setup`` reply) are dropped.
    """
    return {HEADER_PREFIX + key: value for key, value in header.items() if key in SETUP_HEADER_FIELDS}


def strip_header_fields(fields: Mapping[str, Any]) -> dict[str, Any]:
    """Inverse of :func:`header_fields`: the ``header.*`` fields of a record, without the prefix."""
    start = len(HEADER_PREFIX)
    return {key[start:]: value for key, value in fields.items() if key.startswith(HEADER_PREFIX)}


@dataclass(frozen=True)
class SetupHeader:
    """Public parameters of a session, sent by the receiver with its coefficients.

    Attributes
    ----------
    session_id : str
        Identifies the session; every later message must carry it.
    modulus : int
        The receiver's Paillier modulus n (g = n + 1).
    salt : bytes
        The public hashing salt (``clients.psi.ids.hash_id``).
    id_bits : int
        Width of the hashed IDs.
    num_bins : int
        B.
    degree : int
        M: every bin's polynomial is monic of degree M; M coefficients per bin are sent.
    receiver_size : int
        |X| (public leakage).
    bins_per_chunk : int
        Coefficient chunk i holds the M coefficients of bins i·bins_per_chunk … (i+1)·bins_per_chunk - 1
        (the last chunk may hold fewer).
    """

    session_id: str
    modulus: int
    salt: bytes
    id_bits: int
    num_bins: int
    degree: int
    receiver_size: int
    bins_per_chunk: int

    @property
    def num_chunks(self) -> int:
        """Number of coefficient chunks."""
        return -(-self.num_bins // self.bins_per_chunk)

    def chunk_bins(self, index: int) -> range:
        """The bins whose coefficients coefficient chunk ``index`` carries."""
        return range(index * self.bins_per_chunk, min(self.num_bins, (index + 1) * self.bins_per_chunk))

    @property
    def num_coefficients(self) -> int:
        """B · M ciphertexts in total."""
        return self.num_bins * self.degree

    def to_config(self) -> dict[str, int | str | bytes]:
        """Plain values for a Flower ``ConfigRecord`` (the modulus as big-endian bytes)."""
        return {
            "session_id": self.session_id,
            "modulus": int_to_bytes(self.modulus),
            "salt": self.salt,
            "id_bits": self.id_bits,
            "num_bins": self.num_bins,
            "degree": self.degree,
            "receiver_size": self.receiver_size,
            "bins_per_chunk": self.bins_per_chunk,
        }

    @classmethod
    def from_config(cls, config: Mapping[str, Any]) -> SetupHeader:
        """Inverse of :meth:`to_config`.

        Raises
        ------
        PSIError
            If a field is missing or has the wrong type.
        """
        what = "setup header"
        header = cls(
            session_id=require_field(config, "session_id", str, what),
            modulus=int.from_bytes(require_field(config, "modulus", bytes, what), "big"),
            salt=require_field(config, "salt", bytes, what),
            id_bits=require_field(config, "id_bits", int, what),
            num_bins=require_field(config, "num_bins", int, what),
            degree=require_field(config, "degree", int, what),
            receiver_size=require_field(config, "receiver_size", int, what),
            bins_per_chunk=require_field(config, "bins_per_chunk", int, what),
        )
        return header


SETUP_HEADER_FIELDS = (
    "session_id",
    "modulus",
    "salt",
    "id_bits",
    "num_bins",
    "degree",
    "receiver_size",
    "bins_per_chunk",
)
"""The record keys of :meth:`SetupHeader.to_config`."""


@dataclass(frozen=True)
class SetupMessage:
    """Receiver → sender: the public header and the encrypted coefficients, in bounded chunks.

    Coefficient k = b·M + j of the stream is E(a_j) of bin b (a_0 … a_{M-1}); each chunk holds whole
    bins (:meth:`SetupHeader.chunk_bins`) as fixed-width big-endian ciphertexts of the byte length of
    n² (``clients.psi.paillier.ciphertext_width``).
    """

    header: SetupHeader
    chunks: tuple[bytes, ...]


@dataclass(frozen=True)
class ResponseMessage:
    """Sender → receiver: |Y| shuffled, re-randomised replies in bounded chunks."""

    session_id: str
    count: int
    chunks: tuple[bytes, ...]


@dataclass(frozen=True)
class IntersectionMessage:
    """Receiver → sender: the reply positions of the shared IDs, in canonical order."""

    session_id: str
    positions: tuple[int, ...]
