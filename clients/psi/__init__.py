"""Private set intersection: Paillier FNP with hashing into bins (default) and Diffie–Hellman PSI.

This package is the PSI's public face: every public name of the implementation is importable from
``clients.psi``, among them :func:`align` and :func:`intersect`, which run both roles in one process
(:mod:`clients.psi.in_process`; ``backend="paillier"`` or ``"ecdh"``, one interface, the same
:class:`Alignment`). The Paillier backend is described below; the ECDH
backend (Meadows 1986; Huberman, Franklin, Hogg 1999; over X25519 or edwards25519) in
:mod:`clients.psi.ecdh` and :mod:`clients.psi.ecdh_groups`.

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
- :mod:`clients.psi.ids`: canonical ID bytes, salted hashing into bins, the canonical order, the public
  degree and the choice of B, :class:`Alignment`;
- :mod:`clients.psi.paillier`: keys, the ciphertext codec, the hot loops;
- :mod:`clients.psi.pool`: the hot loops' process pool, how work and payloads are cut;
- :mod:`clients.psi.fnp_receiver`, :mod:`clients.psi.fnp_sender`: the two FNP roles;
  :mod:`clients.psi.matching`: the end both backends' roles share (matched positions → alignment);
  :mod:`clients.psi.state_codec`: a role's parts as ``ConfigRecord`` values between Flower messages;
- :mod:`clients.psi.ecdh`: the ECDH backend's two roles; :mod:`clients.psi.ecdh_groups`: its groups
  (X25519, edwards25519), the hash into them and the checks of received points;
- :mod:`clients.psi.in_process`: both roles in one process (:func:`align`, :func:`intersect`);
- :mod:`clients.psi.handlers`, :mod:`clients.psi.ecdh_handlers`, :mod:`clients.psi.node_state`: a
  party's Flower handlers (shared steps, ECDH session steps, what they keep in ``context.state``).

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

from clients.psi.ecdh import ECDHReceiver, ECDHSender, align_ecdh
from clients.psi.ecdh_groups import GROUPS, Group, ecdh_group, hash_to_edwards, hash_to_x25519
from clients.psi.fnp_receiver import MAX_RESALTS, PSIReceiver
from clients.psi.fnp_sender import PSISender
from clients.psi.ids import (
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
    choose_bins,
    hash_id,
    id_from_canonical_bytes,
    ids_digest,
    make_alignment,
    order_key,
    padded_degree,
    prepare_ids,
)
from clients.psi.in_process import align, intersect
from clients.psi.paillier import (
    MIN_SECURE_KEY_BITS,
    MIN_TEST_KEY_BITS,
    EvaluationGroup,
    InsecureParameterWarning,
    check_key_bits,
    check_public_modulus,
    ciphertext_width,
    decode_ciphertexts,
)
from clients.psi.pool import process_pool, resolve_workers
from clients.psi.state_codec import StateValue
from protocol.psi import (
    DEFAULT_CHUNK_BYTES,
    DEFAULT_ECDH_GROUP,
    DEFAULT_ID_BITS,
    DEFAULT_KEY_BITS,
    ECDH_GROUPS,
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
    "DEFAULT_ECDH_GROUP",
    "DEFAULT_ID_BITS",
    "DEFAULT_KEY_BITS",
    "DEFAULT_OVERFLOW_BITS",
    "ECDH_GROUPS",
    "GROUPS",
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
    "Group",
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
    "ecdh_group",
    "hash_id",
    "hash_to_edwards",
    "hash_to_x25519",
    "id_from_canonical_bytes",
    "ids_digest",
    "intersect",
    "make_alignment",
    "order_key",
    "padded_degree",
    "prepare_ids",
    "process_pool",
    "resolve_workers",
]
