"""The FNP sender: evaluates the receiver's encrypted polynomials on its own IDs, replies shuffled.

Protocol step 2 of Freedman, Nissim, Pinkas, "Efficient Private Matching and Set Intersection",
EUROCRYPT 2004 (with hashing into bins; semi-honest parties; ``docs/psi.md``): ``evaluate(i, chunk)``
computes for each own ID y of the chunk's bins, with Horner's rule on plaintext y, E(P_b(y)) for its
bin b, then E(r·P_b(y) + y) with r uniform in Z_n \\ {0}, and re-randomises the reply (× s^n, s uniform
in Z*_n); ``respond()`` returns all replies in a random order once every chunk is evaluated. Step 4:
``conclude()`` maps the receiver's reply positions to the sender's rows through its secret shuffle.
"""

from __future__ import annotations

import secrets
from collections.abc import Iterable
from concurrent.futures import Executor
from typing import Any

from gmpy2 import mpz

from clients.psi.ids import (
    MAX_ID_BITS,
    MIN_ID_BITS,
    SALT_BYTES,
    DuplicatePolicy,
    hash_id,
    prepare_ids,
)
from clients.psi.matching import ShuffledSender
from clients.psi.paillier import (
    check_public_modulus,
    ciphertext_width,
    decode_ciphertexts,
    decode_fixed_width,
    encode_fixed_width,
    evaluate_bins,
    group_tasks,
    reencryption_randomisers,
)
from clients.psi.pool import flatten, pool_map, split_chunks, work_slices
from clients.psi.state_codec import (
    StateValue,
    header_from_state,
    header_to_state,
    int_bytes,
    prepared_from_state,
    prepared_to_state,
    values_from_bytes,
    values_to_bytes,
)
from protocol.psi import (
    DEFAULT_CHUNK_BYTES,
    DEFAULT_ID_BITS,
    PSIError,
    ResponseMessage,
    SessionMismatchError,
    SetupHeader,
    SetupMessage,
)


class PSISender(ShuffledSender):
    """FNP sender: evaluates the receiver's encrypted polynomials on its own IDs.

    Steps: ``receive_public_key(n)`` and ``precompute()`` (optional, data-independent) →
    ``receive_setup(header)`` → ``evaluate(i, chunk)`` for every coefficient chunk → ``respond()``
    (the shuffled replies); ``evaluate_all(setup_message)`` does it in one call. After the receiver's
    :class:`IntersectionMessage`: ``conclude()``.

    Each coefficient chunk is evaluated as it arrives (its bins' IDs), so the sender holds replies
    (|Y| ciphertexts), never the B·M coefficients. The replies are released only once all chunks are
    in, shuffled over the whole set: per-chunk replies would show the receiver how many of the
    sender's IDs fall in each bin.

    Parameters
    ----------
    ids : Iterable[str | int]
        The sender's IDs, one per row (:func:`prepare_ids`).
    duplicates : {"reject", "keep_first"} (default: "reject")
        See :func:`prepare_ids`.
    allow_insecure_key_size : bool (default: False)
        Test-only: accept a receiver modulus below 2048 bits.
    """

    def __init__(
        self,
        ids: Iterable[object],
        *,
        duplicates: DuplicatePolicy = "reject",
        allow_insecure_key_size: bool = False,
    ) -> None:
        self.prepared = prepare_ids(ids, duplicates)
        self.allow_insecure_key_size = allow_insecure_key_size
        self.modulus = 0  # the receiver's public key, once known
        self.header: SetupHeader | None = None
        self._randomisers: list[mpz] = []  # precomputed s^n, consumed in order
        self._values: list[int] = []
        self._bin_of: list[int] = []
        self._next_chunk = 0
        self._replies: list[bytes] = []  # one blob per evaluated chunk, before the shuffle
        self._owners: list[int] = []  # prepared index of each reply, before the shuffle
        self._order: list[int] = []  # reply position → prepared index, after the shuffle
        self._responses: ResponseMessage | None = None

    @property
    def session_id(self) -> str:
        """The session of the received header."""
        if self.header is None:
            raise PSIError("no setup header received")
        return self.header.session_id

    def receive_public_key(self, modulus: int) -> None:
        """Take the receiver's public key early, so that :meth:`precompute` can run before the header.

        Raises
        ------
        PSIError
            On a bad modulus (:func:`check_public_modulus`) or a key change.
        """
        if self.modulus and modulus != self.modulus:
            raise PSIError("the receiver's public key changed during the session")
        check_public_modulus(modulus, self.allow_insecure_key_size)
        self.modulus = modulus

    def precompute(self, pool: Executor | None = None) -> None:
        """Draw the |Y| re-randomisers s^n mod n² (data-independent; needs only the public key)."""
        if not self.modulus:
            raise PSIError("no public key received")
        missing = len(self.prepared.canonical) - len(self._randomisers)
        if missing > 0:
            n = mpz(self.modulus)
            tasks = [(n, b - a) for a, b in work_slices(missing, pool)]
            self._randomisers.extend(flatten(pool_map(pool, reencryption_randomisers, tasks)))

    def receive_setup(self, header: SetupHeader) -> None:
        """Check the public parameters and hash the own IDs with the session salt.

        Raises
        ------
        PSIError
            On a bad modulus (:func:`check_public_modulus`), another key than the one announced by
            :meth:`receive_public_key`, inconsistent parameters, or two own IDs that hash alike.
        """
        if self.header is not None:
            raise PSIError("a setup header was already received")
        self.receive_public_key(header.modulus)
        bits = header.modulus.bit_length()
        if not MIN_ID_BITS <= header.id_bits <= MAX_ID_BITS or header.id_bits > bits // 2 - 64:
            raise PSIError(
                f"setup header: id_bits must be in [{MIN_ID_BITS}, {MAX_ID_BITS}] and <= {bits // 2 - 64} "
                f"for a {bits}-bit modulus, got {header.id_bits}"
            )
        for name, value, low in (
            ("num_bins", header.num_bins, 1),
            ("degree", header.degree, 1),
            ("receiver_size", header.receiver_size, 0),
            ("bins_per_chunk", header.bins_per_chunk, 1),
        ):
            if value < low:
                raise PSIError(f"setup header: {name} must be >= {low}, got {value}")
        if len(header.salt) != SALT_BYTES:
            raise PSIError(f"setup header: salt must be {SALT_BYTES} bytes, got {len(header.salt)}")
        announced = header.num_bins * header.degree * ciphertext_width(header.modulus)
        if announced > 1 << 36:
            raise PSIError(
                f"setup header: num_bins · degree ciphertexts must fit in 64 GiB, got {announced} bytes "
                f"(num_bins={header.num_bins}, degree={header.degree})"
            )
        hashed = [
            hash_id(header.salt, data, header.id_bits, header.num_bins) for data in self.prepared.canonical
        ]
        if len({value for value, _ in hashed}) != len(hashed):
            raise PSIError("two of the sender's IDs hash alike under this salt; re-run with a larger id_bits")
        self._values = [value for value, _ in hashed]
        self._bin_of = [index for _, index in hashed]
        self.header = header

    def evaluate(self, session_id: str, index: int, chunk: bytes, pool: Executor | None = None) -> None:
        """Step 2, one coefficient chunk: check it (size, Z*_{n²}) and evaluate the IDs in its bins.

        Raises
        ------
        SessionMismatchError
            If ``session_id`` is not the header's.
        PSIError
            On a chunk out of order or beyond the last, a wrong size or a malformed ciphertext.
        """
        if session_id != self.session_id:
            raise SessionMismatchError("message for another PSI session")
        header = self.header
        assert header is not None  # checked by session_id
        if index != self._next_chunk or index >= header.num_chunks:
            raise PSIError(
                f"coefficient chunk {index} out of order or beyond the {header.num_chunks} announced"
            )
        bins = header.chunk_bins(index)
        width = ciphertext_width(header.modulus)
        bin_bytes = header.degree * width
        if len(chunk) != len(bins) * bin_bytes:
            raise PSIError(f"coefficient chunk {index}: {len(chunk)} bytes, expected {len(bins) * bin_bytes}")
        decode_ciphertexts(chunk, header.modulus, f"coefficient chunk {index}")
        members: dict[int, list[int]] = {}
        for i, bin_index in enumerate(self._bin_of):
            if bin_index in bins:
                members.setdefault(bin_index, []).append(i)
        groups: list[tuple[bytes, list[int], list[mpz] | None]] = []
        owners: list[int] = []
        for bin_index in sorted(members):
            ids = members[bin_index]
            offset = (bin_index - bins.start) * bin_bytes
            take = self._randomisers[: len(ids)] if len(self._randomisers) >= len(ids) else None
            if take is not None:
                self._randomisers = self._randomisers[len(ids) :]
            groups.append((chunk[offset : offset + bin_bytes], [self._values[i] for i in ids], take))
            owners.extend(ids)
        tasks = group_tasks(mpz(header.modulus), width, groups, pool)
        replies = b"".join(pool_map(pool, evaluate_bins, tasks))
        self._replies.append(replies)
        self._owners.extend(owners)
        self._next_chunk += 1

    def respond(self, chunk_bytes: int = DEFAULT_CHUNK_BYTES) -> ResponseMessage:
        """Step 2, the end: shuffle all replies (once) and cut them into chunks.

        Raises
        ------
        PSIError
            If a coefficient chunk is missing.
        """
        header = self.header
        if header is None:
            raise PSIError("no setup header received")
        if self._responses is not None:
            return self._responses
        if self._next_chunk != header.num_chunks:
            raise PSIError(f"evaluated {self._next_chunk} of {header.num_chunks} coefficient chunks")
        width = ciphertext_width(header.modulus)
        if chunk_bytes < width:
            raise ValueError(f"chunk_bytes must hold one ciphertext ({width} B), got {chunk_bytes}")
        blob = b"".join(self._replies)
        order = list(range(len(self._owners)))
        secrets.SystemRandom().shuffle(order)
        self._order = [self._owners[k] for k in order]
        shuffled = b"".join(blob[k * width : (k + 1) * width] for k in order)
        self._replies, self._owners = [], []
        self._responses = ResponseMessage(
            header.session_id, len(order), tuple(split_chunks(shuffled, width, chunk_bytes))
        )
        return self._responses

    def evaluate_all(
        self, setup: SetupMessage, pool: Executor | None = None, chunk_bytes: int = DEFAULT_CHUNK_BYTES
    ) -> ResponseMessage:
        """Step 2 in one call: check the header, evaluate every chunk, respond."""
        self.receive_setup(setup.header)
        for index, chunk in enumerate(setup.chunks):
            self.evaluate(setup.header.session_id, index, chunk, pool)
        return self.respond(chunk_bytes)

    # -- persistence between Flower messages -------------------------------------------------------

    def to_state(self) -> dict[str, StateValue]:
        """Plain values for a node-local Flower ``ConfigRecord``: randomisers, replies, shuffle."""
        responses = self._responses
        width = ciphertext_width(self.modulus) if self.modulus else 0
        id_bits = self.header.id_bits if self.header is not None else DEFAULT_ID_BITS
        return {
            "modulus": int_bytes(self.modulus),
            **header_to_state(self.header),
            **prepared_to_state(self.prepared),
            "allow_insecure_key_size": self.allow_insecure_key_size,
            "randomisers": encode_fixed_width(self._randomisers, width),
            "values": values_to_bytes(self._values, id_bits),
            "bin_of": list(self._bin_of),
            "next_chunk": self._next_chunk,
            "replies": list(self._replies),
            "owners": list(self._owners),
            "order": list(self._order),
            "responded": responses is not None,
            "response_count": responses.count if responses is not None else 0,
            "responses": list(responses.chunks) if responses is not None else [],
        }

    @classmethod
    def from_state(cls, state: dict[str, Any]) -> PSISender:
        """Inverse of :meth:`to_state`."""
        self = cls.__new__(cls)
        self.modulus = int.from_bytes(state["modulus"], "big")
        self.header = header_from_state(state)
        self.prepared = prepared_from_state(state)
        self.allow_insecure_key_size = bool(state["allow_insecure_key_size"])
        self._randomisers = (
            decode_fixed_width(state["randomisers"], ciphertext_width(self.modulus)) if self.modulus else []
        )
        id_bits = self.header.id_bits if self.header is not None else DEFAULT_ID_BITS
        self._values = values_from_bytes(state["values"], id_bits)
        self._bin_of = list(state["bin_of"])
        self._next_chunk = int(state["next_chunk"])
        self._replies = list(state["replies"])
        self._owners = list(state["owners"])
        self._order = list(state["order"])
        self._responses = (
            ResponseMessage(self.session_id, int(state["response_count"]), tuple(state["responses"]))
            if state["responded"]
            else None
        )
        return self
