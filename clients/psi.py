"""Private set intersection: Paillier FNP with hashing into bins (default) and Diffie–Hellman PSI.

This module runs both roles in one process (:func:`align`, :func:`intersect`; ``backend="paillier"``
or ``"ecdh"``, one interface, the same :class:`Alignment`) and is the façade of the PSI: every public
name of the implementation is importable from here. The Paillier backend is described below; the ECDH
backend (Meadows 1986; Huberman, Franklin, Hogg 1999; over edwards25519) in :mod:`clients.psi_ecdh`.

References
----------
- M. J. Freedman, K. Nissim, B. Pinkas, "Efficient Private Matching and Set Intersection",
  EUROCRYPT 2004, LNCS 3027 ("FNP 2004"): the receiver's set X as the roots of an encrypted polynomial,
  the sender's reply E(r·P(y) + y) for each of its IDs y, and hashing into bins so that each y is
  evaluated only on the polynomial of its own bin.
- P. Paillier, "Public-Key Cryptosystems Based on Composite Degree Residuosity Classes", EUROCRYPT 1999
  ("Paillier 1999"): Scheme 1, c = g^m · ρ^n mod n² with g = n + 1, so g^m = 1 + m·n mod n²; and the
  Chinese-remainder decryption (m mod p = L_p(c^(p-1) mod p²) · h_p mod p) from its section on efficiency.
- python-paillier (``phe``) for key generation.

Modules (one concept each; ``docs/psi.md`` walks through the protocol, its leakage and its costs)
--------------------------------------------------------------------------------------------------
- :mod:`protocol.psi`: the wire vocabulary (message types, record keys, public defaults, the setup
  header and the in-process messages, :class:`PSIError`), shared with the server;
- :mod:`clients.psi_ids`: canonical ID bytes, salted hashing into bins, the canonical order, the public
  degree and the choice of B, :class:`Alignment`;
- :mod:`clients.psi_paillier`: keys, the ciphertext codec, the hot loops and their process pool;
- :mod:`clients.psi_receiver`, :mod:`clients.psi_sender`: the two roles; :mod:`clients.psi_state`:
  their node-local persistence between Flower messages;
- :mod:`clients.psi_ecdh`: the ECDH backend (group, hash, both roles);
- :mod:`clients.psi_party`, :mod:`clients.psi_ecdh_party`, :mod:`clients.psi_node`: a party's Flower
  handlers (shared steps, ECDH session steps, their common state plumbing).

Protocol (semi-honest parties)
------------------------------
1. Receiver (:class:`PSIReceiver`, owns the Paillier key, learns the intersection): hashes its IDs
   into B bins, builds per bin the monic polynomial with those roots, pads every bin with dummy roots
   to one public degree M and sends the encrypted non-leading coefficients in chunks.
2. Sender (:class:`PSISender`): for each own ID y, E(r·P_b(y) + y), re-randomised; all replies in a
   random order once every chunk is evaluated.
3. Receiver: decrypts each reply modulo p only; a value equal to one of its hashed IDs marks a shared
   ID, and it records the reply's position.
4. Sharing: the receiver sends the positions of the shared IDs in canonical order
   (:func:`canonical_order`, :class:`IntersectionMessage`); the sender maps positions to its own rows
   through its secret shuffle. Both sides end with an :class:`Alignment`: the same IDs in the same
   order and the map to their own row indices. A third party relaying the positions learns only the
   size of the intersection.

Leakage: |X|, |Y|, B, M and, to the receiver, the intersection. Nothing else against semi-honest
parties; **not secure against malicious parties** (a receiver may encrypt any polynomial it likes, a
sender may reply with anything). False positives: two different IDs whose hashes agree on ``id_bits``
bits, probability about |X|·|Y| / 2^id_bits (≈ 5·10^-12 at 10^4 × 10^4 with 64 bits).

Speed (``docs/psi.md``, "Speed"): bins; CRT encryption randomness drawn by the key owner; decryption
modulo p only; data-independent randomness precomputed (:meth:`PSIReceiver.precompute`,
:meth:`PSISender.precompute`); gmpy2 integers in all hot loops; a process pool
(:func:`process_pool`); messages cut into bounded chunks.
"""

from __future__ import annotations

from collections.abc import Iterable

from clients.psi_ecdh import ECDHReceiver, ECDHSender, align_ecdh, hash_to_group, random_scalar
from clients.psi_ids import (
    CANONICAL_ORDER_DOMAIN,
    COEFFICIENT_TO_HORNER_COST,
    DEFAULT_OVERFLOW_BITS,
    MAX_ID_BITS,
    MIN_ID_BITS,
    SALT_BYTES,
    Alignment,
    DuplicatePolicy,
    Identifier,
    PreparedIds,
    canonical_id_bytes,
    canonical_order,
    check_not_one_string,
    choose_bins,
    hash_id,
    id_from_canonical_bytes,
    ids_digest,
    make_alignment,
    order_key,
    padded_degree,
    prepare_ids,
)
from clients.psi_paillier import (
    MIN_SECURE_KEY_BITS,
    MIN_TEST_KEY_BITS,
    EvaluationGroup,
    InsecureParameterWarning,
    check_key_bits,
    check_public_modulus,
    ciphertext_width,
    decode_ciphertexts,
    process_pool,
    resolve_workers,
)
from clients.psi_receiver import MAX_RESALTS, PSIReceiver
from clients.psi_sender import PSISender
from clients.psi_state import StateValue
from protocol.psi import (
    DEFAULT_CHUNK_BYTES,
    DEFAULT_ID_BITS,
    DEFAULT_KEY_BITS,
    PRECOMPUTED_WEIGHT,
    PSI_BACKENDS,
    IntersectionMessage,
    PSIError,
    ResponseMessage,
    SessionMismatchError,
    SetupHeader,
    SetupMessage,
)

__all__ = [
    "CANONICAL_ORDER_DOMAIN",
    "COEFFICIENT_TO_HORNER_COST",
    "DEFAULT_CHUNK_BYTES",
    "DEFAULT_ID_BITS",
    "DEFAULT_KEY_BITS",
    "DEFAULT_OVERFLOW_BITS",
    "MAX_ID_BITS",
    "MAX_RESALTS",
    "MIN_ID_BITS",
    "MIN_SECURE_KEY_BITS",
    "MIN_TEST_KEY_BITS",
    "PRECOMPUTED_WEIGHT",
    "PSI_BACKENDS",
    "SALT_BYTES",
    "Alignment",
    "DuplicatePolicy",
    "ECDHReceiver",
    "ECDHSender",
    "EvaluationGroup",
    "Identifier",
    "InsecureParameterWarning",
    "IntersectionMessage",
    "PSIError",
    "PSIReceiver",
    "PSISender",
    "PreparedIds",
    "ResponseMessage",
    "SessionMismatchError",
    "SetupHeader",
    "SetupMessage",
    "StateValue",
    "align",
    "align_ecdh",
    "canonical_id_bytes",
    "canonical_order",
    "check_key_bits",
    "check_public_modulus",
    "choose_bins",
    "ciphertext_width",
    "decode_ciphertexts",
    "hash_id",
    "hash_to_group",
    "id_from_canonical_bytes",
    "ids_digest",
    "intersect",
    "make_alignment",
    "order_key",
    "padded_degree",
    "prepare_ids",
    "process_pool",
    "random_scalar",
    "resolve_workers",
]


def align(
    ids_a: Iterable[object],
    ids_b: Iterable[object],
    *,
    key_bits: int = DEFAULT_KEY_BITS,
    id_bits: int = DEFAULT_ID_BITS,
    workers: int | None = 1,
    duplicates: DuplicatePolicy = "reject",
    chunk_bytes: int = DEFAULT_CHUNK_BYTES,
    allow_insecure_key_size: bool = False,
    backend: str = "paillier",
) -> tuple[Alignment, Alignment]:
    """Run the whole protocol between two ID lists in this process; return both parties' alignments.

    Paillier: the larger set takes the receiver role (the sender's IDs are the expensive side,
    ``docs/psi.md``, "Speed"). ECDH (:func:`clients.psi_ecdh.align_ecdh`): ``a`` receives; the
    Paillier parameters are unused.

    Parameters
    ----------
    ids_a, ids_b : Iterable[str | int]
        The two parties' IDs, one per row.
    key_bits, id_bits, duplicates, allow_insecure_key_size
        As for :class:`PSIReceiver`.
    workers : int or None (default: 1)
        Processes for the hot loops; ``None`` uses every core.
    chunk_bytes : int (default: 4 MiB)
        Bound on each message's ciphertext (or point) payload.
    backend : {"paillier", "ecdh"} (default: "paillier")
        The PSI protocol; both give the same alignments.

    Raises
    ------
    ValueError
        On an unknown backend (and invalid IDs or parameters).

    Returns
    -------
    tuple[Alignment, Alignment]
        ``(alignment of a, alignment of b)``: same IDs, same canonical order, own rows.
    """
    if backend not in PSI_BACKENDS:
        raise ValueError(f"backend must be one of {PSI_BACKENDS}, got {backend!r}")
    check_not_one_string(ids_a)
    check_not_one_string(ids_b)
    if backend == "ecdh":
        return align_ecdh(ids_a, ids_b, workers=workers, duplicates=duplicates, chunk_bytes=chunk_bytes)
    list_a, list_b = list(ids_a), list(ids_b)
    a_receives = len(list_a) >= len(list_b)
    receiver_ids, sender_ids = (list_a, list_b) if a_receives else (list_b, list_a)
    receiver = PSIReceiver(
        receiver_ids,
        key_bits=key_bits,
        id_bits=id_bits,
        peer_size=len(sender_ids),
        duplicates=duplicates,
        allow_insecure_key_size=allow_insecure_key_size,
    )
    sender = PSISender(sender_ids, duplicates=duplicates, allow_insecure_key_size=allow_insecure_key_size)
    with process_pool(workers) as pool:
        setup = receiver.setup_message(pool, chunk_bytes)
        responses = sender.evaluate_all(setup, pool, chunk_bytes)
        receiver.finish(responses, pool)
    receiver_alignment = receiver.alignment()
    sender_alignment = sender.conclude(receiver.intersection_message())
    if a_receives:
        return receiver_alignment, sender_alignment
    return sender_alignment, receiver_alignment


def intersect(
    ids_a: Iterable[object],
    ids_b: Iterable[object],
    key_bits: int = DEFAULT_KEY_BITS,
    *,
    id_bits: int = DEFAULT_ID_BITS,
    workers: int | None = 1,
    duplicates: DuplicatePolicy = "reject",
    allow_insecure_key_size: bool = False,
    backend: str = "paillier",
) -> list[Identifier]:
    """The IDs both lists share, in canonical order, by running the PSI protocol in this process.

    See :func:`align` for the parameters; this returns ``list(align(...)[0].ids)``.
    """
    alignment_a, _ = align(
        ids_a,
        ids_b,
        key_bits=key_bits,
        id_bits=id_bits,
        workers=workers,
        duplicates=duplicates,
        allow_insecure_key_size=allow_insecure_key_size,
        backend=backend,
    )
    return list(alignment_a.ids)
