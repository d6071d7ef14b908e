"""The FNP receiver: holds the Paillier private key, encrypts its set per bin, learns the intersection.

Protocol steps 1, 3 and 4 of Freedman, Nissim, Pinkas, "Efficient Private Matching and Set
Intersection", EUROCRYPT 2004 (with hashing into bins; semi-honest parties; ``docs/psi.md``):

1. ``setup()`` hashes each ID x to ``h(x) = SHA-256(salt ‖ canonical bytes)`` (first ``id_bits`` bits;
   the bin index from independent bits of the same digest), puts it in one of B bins, builds per bin
   the monic polynomial with those roots, pads every bin with dummy roots >= 2^id_bits (outside the
   range of hashed IDs) to one public degree M; ``coefficient_chunk(i)`` encrypts the M non-leading
   coefficients of the bins of chunk i (the leading 1 is implicit and never sent). M depends only on
   public values (|X|, B and a 2^-overflow_bits bound); if a bin overflows anyway (or two of the
   receiver's IDs hash alike), the receiver draws a new public salt and hashes again.
3. ``finish()`` decrypts each reply modulo p only (Paillier 1999, CRT decryption); a value equal to one
   of its hashed IDs marks a shared ID (a non-member decrypts to a uniform value: a false match has
   probability |X|/p). It records, for each matched row, the reply's position.
4. ``intersection_message()``: the positions of the shared IDs in canonical order.
"""

from __future__ import annotations

import logging
import secrets
from collections.abc import Iterable
from concurrent.futures import Executor
from typing import Any

from gmpy2 import mpz

from clients.psi.ids import (
    DEFAULT_OVERFLOW_BITS,
    SALT_BYTES,
    DuplicatePolicy,
    choose_bins,
    hash_id,
    padded_degree,
    prepare_ids,
)
from clients.psi.matching import MatchingReceiver
from clients.psi.paillier import (
    PrivateKey,
    check_id_bits,
    check_key_bits,
    ciphertext_width,
    crt_randomisers,
    decode_ciphertexts,
    decrypt_mod_p,
    encrypt_bins,
)
from clients.psi.pool import flatten, pool_map, work_slices
from clients.psi.state_codec import (
    StateValue,
    header_from_state,
    header_to_state,
    int_bytes,
    new_session_id,
    prepared_from_state,
    prepared_to_state,
    values_from_bytes,
    values_to_bytes,
)
from protocol.psi import (
    DEFAULT_CHUNK_BYTES,
    DEFAULT_ID_BITS,
    DEFAULT_KEY_BITS,
    PRECOMPUTED_WEIGHT,
    PSIError,
    ResponseMessage,
    SessionMismatchError,
    SetupHeader,
    SetupMessage,
)

logger = logging.getLogger(__name__)

MAX_RESALTS = 8
"""Salts the receiver draws before it gives up on a bin overflow (probability 2^-40 each)."""


class PSIReceiver(MatchingReceiver):
    """FNP receiver: holds the private key, encrypts its set, learns the intersection.

    Steps: ``precompute()`` (optional, data-independent) → ``setup()`` (public header) →
    ``coefficient_chunk(i)`` for every chunk → ``expect_responses()`` and ``receive_responses()`` per
    reply chunk → ``finish()`` → ``intersection_message()``. ``setup_message()`` and
    ``finish(responses)`` do the chunk loops in one call. Coefficients are encrypted chunk by chunk, so
    the receiver never holds more than one chunk of ciphertexts.

    Parameters
    ----------
    ids : Iterable[str | int]
        The receiver's IDs, one per row (:func:`prepare_ids`).
    key_bits : int (default: 2048)
        Paillier modulus size; >= 2048 unless ``allow_insecure_key_size``.
    id_bits : int (default: 64)
        Hashed-ID width in [32, 128].
    peer_size : int, optional
        The sender's set size (public), to balance bins against Horner steps; defaults to |X|.
    num_bins : int, optional
        Override B (public); the degree still follows from the overflow bound.
    precompute_weight : float (default: 0.15)
        Weight of the precomputable coefficient randomness when B is chosen (:func:`choose_bins`):
        lower favours the online phase, 1.0 minimises total work. Ignored with ``num_bins``.
    overflow_bits : int (default: 40)
        Bins overflow with probability <= 2^-overflow_bits (then the receiver re-hashes).
    duplicates : {"reject", "keep_first"} (default: "reject")
        See :func:`prepare_ids`.
    session_id : str, optional
        Defaults to a fresh random hex string.
    allow_insecure_key_size : bool (default: False)
        Test-only: accept ``key_bits`` below 2048 (with an :class:`InsecureParameterWarning`).

    Raises
    ------
    TypeError, ValueError
        On invalid IDs or parameters.
    """

    def __init__(
        self,
        ids: Iterable[object],
        *,
        key_bits: int = DEFAULT_KEY_BITS,
        id_bits: int = DEFAULT_ID_BITS,
        peer_size: int | None = None,
        num_bins: int | None = None,
        precompute_weight: float = PRECOMPUTED_WEIGHT,
        overflow_bits: int = DEFAULT_OVERFLOW_BITS,
        duplicates: DuplicatePolicy = "reject",
        session_id: str | None = None,
        allow_insecure_key_size: bool = False,
    ) -> None:
        check_key_bits(key_bits, allow_insecure_key_size)
        check_id_bits(id_bits, key_bits)
        if overflow_bits < 20:
            raise ValueError(f"overflow_bits must be >= 20, got {overflow_bits}")
        self.prepared = prepare_ids(ids, duplicates)
        size = len(self.prepared.canonical)
        if num_bins is None:
            self.num_bins, self.degree = choose_bins(size, peer_size, overflow_bits, precompute_weight)
        else:
            if num_bins < 1:
                raise ValueError(f"num_bins must be >= 1, got {num_bins}")
            self.num_bins, self.degree = num_bins, padded_degree(size, num_bins, overflow_bits)
        self.id_bits = id_bits
        self.session_id = session_id or new_session_id()
        self._key = PrivateKey.generate(key_bits)
        self._randomisers: list[mpz] = []  # precomputed, consumed in order, never reused
        self._values: list[int] = []  # hashed value of each prepared ID
        self._bin_of: list[int] = []  # bin of each prepared ID
        self.header: SetupHeader | None = None
        self._expected: int | None = None
        self._received = 0
        self._next_chunk = 0
        self._matches: dict[int, int] = {}  # index into prepared.canonical → reply position

    @property
    def modulus(self) -> int:
        """The public Paillier modulus n."""
        return int(self._key.n)

    def precompute(self, pool: Executor | None = None) -> None:
        """Draw the encryption randomness for all B·M coefficients (data-independent)."""
        missing = self.num_bins * self.degree - len(self._randomisers)
        if missing > 0:
            tasks = [(self._key.p, self._key.q, stop - start) for start, stop in work_slices(missing, pool)]
            self._randomisers.extend(flatten(pool_map(pool, crt_randomisers, tasks)))

    def _hash_into_bins(self) -> bytes:
        """Draw a salt under which no bin overflows and no two own IDs collide (re-hash otherwise)."""
        for attempt in range(MAX_RESALTS):
            salt = secrets.token_bytes(SALT_BYTES)
            hashed = [hash_id(salt, data, self.id_bits, self.num_bins) for data in self.prepared.canonical]
            loads = [0] * self.num_bins
            for _, index in hashed:
                loads[index] += 1
            if len({value for value, _ in hashed}) == len(hashed) and max(loads) <= self.degree:
                self._values = [value for value, _ in hashed]
                self._bin_of = [index for _, index in hashed]
                return salt
            logger.warning("PSI receiver: bin overflow or hash collision (attempt %d); new salt", attempt + 1)
        raise PSIError(
            f"no salt without bin overflow in {MAX_RESALTS} attempts; increase id_bits or num_bins"
        )

    def setup(self, chunk_bytes: int = DEFAULT_CHUNK_BYTES) -> SetupHeader:
        """Step 1: hash the IDs into bins (re-hashing on overflow); return the public header.

        Raises
        ------
        PSIError
            If setup already ran, or no salt avoids overflow in :data:`MAX_RESALTS` attempts.
        ValueError
            If ``chunk_bytes`` cannot hold one bin (M ciphertexts).
        """
        if self.header is not None:
            raise PSIError("setup() already ran for this session")
        bin_bytes = self.degree * ciphertext_width(self.modulus)
        if chunk_bytes < bin_bytes:
            raise ValueError(
                f"chunk_bytes={chunk_bytes} cannot hold one bin ({self.degree} ciphertexts, {bin_bytes} B)"
            )
        salt = self._hash_into_bins()
        self.header = SetupHeader(
            session_id=self.session_id,
            modulus=self.modulus,
            salt=salt,
            id_bits=self.id_bits,
            num_bins=self.num_bins,
            degree=self.degree,
            receiver_size=len(self.prepared.canonical),
            bins_per_chunk=chunk_bytes // bin_bytes,
        )
        return self.header

    def coefficient_chunk(self, index: int, pool: Executor | None = None) -> bytes:
        """Step 1, one chunk: the encrypted coefficients of the chunk's bins (padded to degree M).

        Uses precomputed randomness while it lasts (each value once), fresh CRT randomness after.

        Raises
        ------
        PSIError
            Before :meth:`setup`, or for a chunk index out of range.
        """
        header = self.header
        if header is None:
            raise PSIError("the receiver has not run setup()")
        if not 0 <= index < header.num_chunks:
            raise PSIError(f"coefficient chunk {index} does not exist ({header.num_chunks} chunks)")
        bins = header.chunk_bins(index)
        roots: list[list[int]] = [[] for _ in bins]
        for value, bin_index in zip(self._values, self._bin_of, strict=True):
            if bin_index in bins:
                roots[bin_index - bins.start].append(value)
        take = min(len(self._randomisers), len(bins) * self.degree)
        randomisers, self._randomisers = self._randomisers[:take], self._randomisers[take:]
        tasks = []
        for a, b in work_slices(len(bins), pool):
            own = randomisers[a * self.degree : b * self.degree]
            complete = len(own) == (b - a) * self.degree
            tasks.append(
                (self._key.p, self._key.q, self.degree, self.id_bits, roots[a:b], own if complete else None)
            )
        return b"".join(pool_map(pool, encrypt_bins, tasks))

    def setup_message(
        self, pool: Executor | None = None, chunk_bytes: int = DEFAULT_CHUNK_BYTES
    ) -> SetupMessage:
        """:meth:`setup` and every :meth:`coefficient_chunk`, for running both roles in one process."""
        header = self.setup(chunk_bytes)
        return SetupMessage(header, tuple(self.coefficient_chunk(i, pool) for i in range(header.num_chunks)))

    def expect_responses(self, session_id: str, count: int) -> None:
        """Record how many replies the sender announced (:attr:`ResponseMessage.count`).

        Raises
        ------
        SessionMismatchError, PSIError
            On another session, before setup, or a count that changes.
        """
        self._check_session(session_id)
        if count < 0:
            raise PSIError(f"the sender's reply count must be >= 0, got {count}")
        if self._expected is not None and count != self._expected:
            raise PSIError(f"sender announced {count} replies, expected {self._expected}")
        self._expected = count

    def _check_session(self, session_id: str) -> None:
        if self.header is None:
            raise PSIError("the receiver has not run setup()")
        if session_id != self.session_id:
            raise SessionMismatchError("message for another PSI session")

    def receive_responses(
        self, session_id: str, index: int, chunk: bytes, pool: Executor | None = None
    ) -> None:
        """Step 3, one chunk: check and decrypt replies modulo p, record the matches.

        Raises
        ------
        SessionMismatchError
            If ``session_id`` is not this session's.
        PSIError
            On a chunk out of order, more replies than announced, or a malformed ciphertext.
        """
        self._check_session(session_id)
        if self._expected is None:
            raise PSIError("reply count not announced (expect_responses)")
        if index != self._next_chunk:
            raise PSIError(f"reply chunk {index} out of order, expected chunk {self._next_chunk}")
        values = decode_ciphertexts(chunk, self.modulus, f"reply chunk {index}")
        if self._received + len(values) > self._expected:
            raise PSIError(f"more replies than the {self._expected} announced")
        tasks = [(self._key.p, self._key.hp, values[a:b]) for a, b in work_slices(len(values), pool, 64)]
        plain = flatten(pool_map(pool, decrypt_mod_p, tasks))
        lookup = {value: i for i, value in enumerate(self._values)}
        for offset, value in enumerate(plain):
            i = lookup.get(value)
            if i is not None:
                if i in self._matches:
                    raise PSIError("two replies decrypt to the same ID: the sender's set has duplicates")
                self._matches[i] = self._received + offset
        self._received += len(values)
        self._next_chunk += 1

    def finish(self, responses: ResponseMessage | None = None, pool: Executor | None = None) -> list[int]:
        """Step 3: (optionally receive all ``responses``, then) return the matched rows.

        Returns
        -------
        list[int]
            The receiver's rows that the sender shares, in canonical order.

        Raises
        ------
        PSIError
            If fewer replies arrived than the sender announced.
        """
        if responses is not None:
            self.expect_responses(responses.session_id, responses.count)
            for index, chunk in enumerate(responses.chunks):
                self.receive_responses(responses.session_id, index, chunk, pool)
        if self._expected is None or self._received != self._expected:
            raise PSIError(f"received {self._received} of {self._expected} replies")
        return [self.prepared.rows[i] for i in self.matched_indices()]

    # -- persistence between Flower messages -------------------------------------------------------

    def to_state(self) -> dict[str, StateValue]:
        """Plain values for a node-local Flower ``ConfigRecord`` (includes the private key).

        Precomputed randomness is not kept (chunks encrypted after a reload draw fresh randomness).
        """
        matched = sorted(self._matches)
        return {
            "session_id": self.session_id,
            "p": int_bytes(self._key.p),
            "q": int_bytes(self._key.q),
            "id_bits": self.id_bits,
            "num_bins": self.num_bins,
            "degree": self.degree,
            **header_to_state(self.header),
            **prepared_to_state(self.prepared),
            "values": values_to_bytes(self._values, self.id_bits),
            "bin_of": list(self._bin_of),
            "expected": -1 if self._expected is None else self._expected,
            "received": self._received,
            "next_chunk": self._next_chunk,
            "matched": matched,
            "matched_positions": [self._matches[i] for i in matched],
        }

    @classmethod
    def from_state(cls, state: dict[str, Any]) -> PSIReceiver:
        """Inverse of :meth:`to_state`."""
        self = cls.__new__(cls)
        self.header = header_from_state(state)
        self.session_id = str(state["session_id"])
        self.prepared = prepared_from_state(state)
        self.id_bits, self.num_bins, self.degree = (
            int(state["id_bits"]),
            int(state["num_bins"]),
            int(state["degree"]),
        )
        self._key = PrivateKey.from_primes(
            int.from_bytes(state["p"], "big"), int.from_bytes(state["q"], "big")
        )
        self._randomisers = []
        self._values = values_from_bytes(state["values"], self.id_bits)
        self._bin_of = list(state["bin_of"])
        self._expected = None if state["expected"] < 0 else int(state["expected"])
        self._received = int(state["received"])
        self._next_chunk = int(state["next_chunk"])
        self._matches = dict(zip(state["matched"], state["matched_positions"], strict=True))
        return self
