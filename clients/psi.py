"""Paillier private set intersection: Freedman–Nissim–Pinkas (FNP) with hashing into bins.

References
----------
- M. J. Freedman, K. Nissim, B. Pinkas, "Efficient Private Matching and Set Intersection",
  EUROCRYPT 2004, LNCS 3027 ("FNP 2004"): the receiver's set X as the roots of an encrypted polynomial,
  the sender's reply E(r·P(y) + y) for each of its IDs y, and hashing into bins so that each y is
  evaluated only on the polynomial of its own bin.
- P. Paillier, "Public-Key Cryptosystems Based on Composite Degree Residuosity Classes", EUROCRYPT 1999
  ("Paillier 1999"): Scheme 1, c = g^m · ρ^n mod n² with g = n + 1, so g^m = 1 + m·n mod n²; and the
  Chinese-remainder decryption (m mod p = L_p(c^(p-1) mod p²) · h_p mod p) from its section on efficiency.

Protocol (semi-honest parties; ``shared/DESIGN.md`` §3, ``shared/PSI_NOTES.md``)
--------------------------------------------------------------------------------
1. Receiver (:class:`PSIReceiver`, owns the Paillier key, learns the intersection).
   ``setup()`` hashes each ID x to ``h(x) = SHA-256(salt ‖ canonical bytes)`` (first ``id_bits`` bits;
   the bin index from independent bits of the same digest), puts it in one of B bins, builds per bin
   the monic polynomial with those roots, pads every bin with dummy roots >= 2^id_bits (outside the
   range of hashed IDs) to one public degree M; ``coefficient_chunk(i)`` encrypts the M non-leading
   coefficients of the bins of chunk i (the leading 1 is implicit and never sent). M depends only on
   public values (|X|, B and a 2^-overflow_bits bound); if a bin overflows anyway (or two of the
   receiver's IDs hash alike), the receiver draws a new public salt and hashes again.
2. Sender (:class:`PSISender`). ``evaluate(i, chunk)`` computes for each own ID y of the chunk's
   bins, with Horner's rule on plaintext y, E(P_b(y)) for its bin b, then E(r·P_b(y) + y) with r
   uniform in Z_n \\ {0}, and re-randomises the reply (× s^n, s uniform in Z*_n); ``respond()``
   returns all replies in a random order once every chunk is evaluated.
3. Receiver. ``finish()`` decrypts each reply modulo p only; a value equal to one of its hashed IDs
   marks a shared ID (a non-member decrypts to a uniform value: a false match has probability
   |X|/p). It records, for each matched row, the reply's position.
4. Sharing. The receiver orders the intersection canonically (:func:`canonical_order`) and sends the
   positions in that order (:class:`IntersectionMessage`); the sender maps positions to its own rows
   through its secret shuffle. Both sides end with an :class:`Alignment`: the same IDs in the same
   order and the map to their own row indices. A third party relaying the positions learns only the
   size of the intersection.

Leakage: |X|, |Y|, B, M and, to the receiver, the intersection. Nothing else against semi-honest
parties; **not secure against malicious parties** (a receiver may encrypt any polynomial it likes, a
sender may reply with anything). False positives: two different IDs whose hashes agree on ``id_bits``
bits, probability about |X|·|Y| / 2^id_bits (≈ 5·10^-12 at 10^4 × 10^4 with 64 bits).

Speed (``shared/PSI_NOTES.md``, "where the time goes"): bins; the key owner draws encryption
randomness by CRT as t_p^p mod p² and t_q^q mod q² (:func:`_crt_randomisers`); the membership test
decrypts modulo p only; data-independent randomness is precomputed (:meth:`PSIReceiver.precompute`,
:meth:`PSISender.precompute`); gmpy2 integers in all hot loops; encryption, evaluation and
decryption run in a process pool (:func:`process_pool`); messages are cut into bounded chunks.

Canonical ID bytes
------------------
An ID is a ``str`` or an ``int`` (``bool`` is rejected; numpy integers are accepted as ``int``). Its
canonical byte form is ``b"s" + UTF-8(id)`` for a string and ``b"i" + ASCII decimal(id)`` for an
integer (:func:`canonical_id_bytes`), so the string ``"7"`` and the integer ``7`` are different IDs
and strings are compared code point by code point (no Unicode normalisation). The canonical order of
aligned IDs is ascending ``SHA-256(CANONICAL_ORDER_DOMAIN ‖ canonical bytes)``: reproducible, and
computable by every party from its own IDs.
"""

from __future__ import annotations

import hashlib
import logging
import math
import multiprocessing
import numbers
import os
import secrets
import warnings
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import Executor, ProcessPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Literal, TypeVar

import gmpy2
from gmpy2 import mpz
from phe import paillier

logger = logging.getLogger(__name__)

Identifier = str | int
DuplicatePolicy = Literal["reject", "keep_first"]
StateValue = int | str | bytes | bool | list[int] | list[bytes]

MIN_SECURE_KEY_BITS = 2048
"""Smallest accepted modulus: 2048-bit factoring moduli give about 112-bit security (NIST SP 800-57
Part 1 Rev. 5, Table 2), acceptable until 2030; use 3072 bits (phe's ``DEFAULT_KEYSIZE``) beyond."""
DEFAULT_KEY_BITS = 2048
MIN_TEST_KEY_BITS = 256
"""Smallest modulus accepted even with ``allow_insecure_key_size=True`` (tests only)."""
DEFAULT_ID_BITS = 64
"""Hashed-ID width: a false match has probability ≈ |X|·|Y| / 2^64 (PSI_NOTES: fine up to ≈ 10^7 IDs)."""
MIN_ID_BITS, MAX_ID_BITS = 32, 128
DEFAULT_OVERFLOW_BITS = 40
"""The public degree M bounds the probability that any bin overflows by 2^-40 (PSI_NOTES)."""
DEFAULT_CHUNK_BYTES = 4 * 1024 * 1024
SALT_BYTES = 16
MAX_RESALTS = 8
CANONICAL_ORDER_DOMAIN = b"flwr-privkit/psi/canonical-order/v1"
COEFFICIENT_TO_HORNER_COST = 8.0
"""Measured on the project machines: one coefficient encryption (CRT randomness, about 2.7 ms at 2048
bits) costs about eight Horner steps (ciphertext ^ 64-bit scalar, about 0.34 ms)."""
PRECOMPUTED_WEIGHT = 0.15
"""Default weight of the (data-independent, precomputable) encryption randomness against the online
Horner steps when choosing B. At 10^4 × 10^4 it picks B = |X| / 2 (M = 22): 12 fewer Horner steps per
sender ID than weight 0.5 (B = |X| / 6, M = 34), i.e. ≈ 20 % less online work, for about twice the
receiver's offline randomness (B·M = 110 000 instead of 56 678 encryptions). Pass
``precompute_weight=1.0`` to minimise total work instead (B = |X| / 8, M = 39)."""
_LAMBDA_GRID = (0.25, 0.5, 0.75, 1, 1.5, 2, 3, 4, 6, 8, 10, 12, 16, 24, 32, 48, 64)
_TASKS_PER_WORKER = 4

T = TypeVar("T")
R = TypeVar("R")


class PSIError(Exception):
    """A PSI protocol step cannot proceed (malformed input from the other party, wrong order of steps)."""


class SessionMismatchError(PSIError):
    """A message belongs to another PSI session than the one in progress."""


class InsecureParameterWarning(UserWarning):
    """A key below 2048 bits was allowed through the test-only flag."""


# --------------------------------------------------------------------------------------------------
# IDs: canonical bytes, hashing, canonical order
# --------------------------------------------------------------------------------------------------


def canonical_id_bytes(identifier: object) -> bytes:
    """Return the canonical byte form of one ID (see the module docstring).

    Raises
    ------
    TypeError
        If the ID is not a ``str`` or an integer (``bool`` is rejected).
    ValueError
        If a string cannot be encoded as UTF-8 (lone surrogates).
    """
    if isinstance(identifier, str):
        try:
            return b"s" + identifier.encode("utf-8")
        except UnicodeEncodeError as exc:
            raise ValueError("string IDs must be valid Unicode (no lone surrogates)") from exc
    if isinstance(identifier, numbers.Integral) and not isinstance(identifier, bool):
        return b"i" + str(int(identifier)).encode("ascii")
    raise TypeError(f"IDs must be str or int, got {type(identifier).__name__}")


def id_from_canonical_bytes(data: bytes) -> Identifier:
    """Invert :func:`canonical_id_bytes`.

    Raises
    ------
    ValueError
        If ``data`` is not a canonical ID encoding.
    """
    tag, body = data[:1], data[1:]
    try:
        if tag == b"s":
            return body.decode("utf-8")
        if tag == b"i":
            value = int(body.decode("ascii"))
            if str(value).encode("ascii") == body:
                return value
    except (UnicodeDecodeError, ValueError):
        pass
    raise ValueError("not a canonical ID encoding")


@dataclass(frozen=True)
class PreparedIds:
    """A party's validated IDs.

    Attributes
    ----------
    canonical : list[bytes]
        Canonical bytes of each distinct ID (:func:`canonical_id_bytes`).
    rows : list[int]
        ``rows[i]`` is the row of ``canonical[i]`` in the party's list.
    num_rows : int
        Length of the party's list (duplicates included).
    digest : str
        :func:`ids_digest` of the party's whole list, to detect a changed data set later.
    """

    canonical: list[bytes]
    rows: list[int]
    num_rows: int
    digest: str


def prepare_ids(ids: Iterable[object], duplicates: DuplicatePolicy = "reject") -> PreparedIds:
    """Validate a party's IDs: canonical bytes, row of each distinct ID, digest of the list.

    Parameters
    ----------
    ids : Iterable[object]
        The party's IDs, one per row.
    duplicates : {"reject", "keep_first"} (default: "reject")
        A repeated ID makes the row map ambiguous, so by default it is an error. ``"keep_first"``
        keeps the first row of each ID and warns with the number of rows dropped.

    Raises
    ------
    TypeError
        If an ID is not a ``str`` or ``int``. The message names the row, never the ID: errors raised at
        a node travel to the server.
    ValueError
        On duplicates with ``duplicates="reject"``, or an unknown policy.
    """
    if duplicates not in ("reject", "keep_first"):
        raise ValueError(f"duplicates must be 'reject' or 'keep_first', got {duplicates!r}")
    canonical: list[bytes] = []
    rows: list[int] = []
    first_row: dict[bytes, int] = {}
    repeated: list[tuple[int, int]] = []
    digest = hashlib.sha256()
    num_rows = 0
    for row, identifier in enumerate(ids):
        num_rows += 1
        try:
            data = canonical_id_bytes(identifier)
        except TypeError as exc:
            raise TypeError(f"ID at row {row}: {exc}") from None
        except ValueError as exc:
            raise ValueError(f"ID at row {row}: {exc}") from None
        _digest_update(digest, data)
        if data in first_row:
            repeated.append((first_row[data], row))
            continue
        first_row[data] = row
        canonical.append(data)
        rows.append(row)
    if repeated:
        first, again = repeated[0]
        if duplicates == "reject":
            raise ValueError(
                f"{len(repeated)} duplicate ID row(s) (first: row {again} repeats row {first}); "
                "de-duplicate the data or pass duplicates='keep_first'"
            )
        warnings.warn(
            f"dropped {len(repeated)} row(s) whose ID repeats an earlier row (first: row {again} "
            f"repeats row {first}); the first row of each ID is kept",
            UserWarning,
            stacklevel=2,
        )
    return PreparedIds(canonical, rows, num_rows, digest.hexdigest())


def _digest_update(digest: Any, data: bytes) -> None:
    digest.update(len(data).to_bytes(4, "big"))
    digest.update(data)


def ids_digest(ids: Iterable[object]) -> str:
    """SHA-256 over a party's whole ID list (length-prefixed canonical bytes, in row order)."""
    digest = hashlib.sha256()
    for identifier in ids:
        _digest_update(digest, canonical_id_bytes(identifier))
    return digest.hexdigest()


def order_key(data: bytes) -> bytes:
    """Canonical-order key of one ID: ``SHA-256(CANONICAL_ORDER_DOMAIN ‖ canonical bytes)``."""
    return hashlib.sha256(CANONICAL_ORDER_DOMAIN + data).digest()


def canonical_order(canonical: Sequence[bytes]) -> list[int]:
    """Indices of ``canonical`` sorted into the canonical order (ascending :func:`order_key`)."""
    keys = [order_key(data) for data in canonical]
    return sorted(range(len(canonical)), key=keys.__getitem__)


def hash_id(salt: bytes, data: bytes, id_bits: int, num_bins: int) -> tuple[int, int]:
    """Hashed value and bin of one ID: ``d = SHA-256(salt ‖ canonical bytes)``.

    The value is the first ``id_bits`` bits of ``d`` (``id_bits <= 128``), the bin is bytes 16..23 of
    ``d`` as an integer modulo ``num_bins`` (independent of the value's bits; bias < num_bins / 2^64).
    """
    digest = hashlib.sha256(salt + data).digest()
    value = int.from_bytes(digest[:16], "big") >> (128 - id_bits)
    return value, int.from_bytes(digest[16:24], "big") % num_bins


# --------------------------------------------------------------------------------------------------
# Public parameters: bins and the padded degree
# --------------------------------------------------------------------------------------------------


def _log_add(a: float, b: float) -> float:
    """log(e^a + e^b) without overflow."""
    if a == -math.inf:
        return b
    high, low = max(a, b), min(a, b)
    return high + math.log1p(math.exp(low - high))


def _log_binomial_tail(n: int, p: float, m: int) -> float:
    """log P(Bin(n, p) > m), summed in log space until the terms stop mattering."""
    if m >= n:
        return -math.inf
    log_p, log_q = math.log(p), math.log1p(-p)
    base = math.lgamma(n + 1)
    total = -math.inf
    for k in range(m + 1, n + 1):
        term = base - math.lgamma(k + 1) - math.lgamma(n - k + 1) + k * log_p + (n - k) * log_q
        total = _log_add(total, term)
        if k > n * p and term < total - 40.0:
            break
    return total


def padded_degree(num_items: int, num_bins: int, overflow_bits: int = DEFAULT_OVERFLOW_BITS) -> int:
    """Public per-bin degree M for ``num_items`` IDs hashed into ``num_bins`` bins.

    The smallest M >= 1 with ``num_bins · P(Bin(num_items, 1/num_bins) > M) <= 2^-overflow_bits``
    (union bound over bins), so that it depends only on public values.
    """
    if num_items < 0 or num_bins < 1:
        raise ValueError(f"need num_items >= 0 and num_bins >= 1, got {num_items} and {num_bins}")
    if num_items == 0:
        return 1
    if num_bins == 1:
        return num_items
    bound = -overflow_bits * math.log(2) - math.log(num_bins)
    degree = max(1, math.ceil(num_items / num_bins))
    while _log_binomial_tail(num_items, 1.0 / num_bins, degree) > bound:
        degree += 1
    return degree


def choose_bins(
    receiver_size: int,
    sender_size: int | None = None,
    overflow_bits: int = DEFAULT_OVERFLOW_BITS,
    precompute_weight: float = PRECOMPUTED_WEIGHT,
) -> tuple[int, int]:
    """Pick the number of bins B and the padded degree M from public sizes only.

    Minimises the modelled cost ``sender_size · (M - 1) + w · COEFFICIENT_TO_HORNER_COST · B · M``
    (Horner steps by the sender plus coefficient encryptions by the receiver, the latter weighted by
    ``w = precompute_weight`` because their randomness is precomputed, off the online path) over
    B = |X| / λ for λ on a grid. ``sender_size`` defaults to ``receiver_size``.
    """
    if receiver_size < 0 or (sender_size is not None and sender_size < 0):
        raise ValueError("set sizes must be >= 0")
    if not 0.0 < precompute_weight <= 1.0:
        raise ValueError(f"precompute_weight must be in (0, 1], got {precompute_weight}")
    if receiver_size == 0:
        return 1, 1
    peer = receiver_size if sender_size is None else sender_size
    best: tuple[float, int, int] | None = None
    for load in _LAMBDA_GRID:
        num_bins = max(1, math.ceil(receiver_size / load))
        degree = padded_degree(receiver_size, num_bins, overflow_bits)
        cost = peer * (degree - 1) + precompute_weight * COEFFICIENT_TO_HORNER_COST * num_bins * degree
        if best is None or cost < best[0]:
            best = (cost, num_bins, degree)
    assert best is not None  # the grid is not empty
    return best[1], best[2]


# --------------------------------------------------------------------------------------------------
# Keys
# --------------------------------------------------------------------------------------------------


def check_key_bits(key_bits: int, allow_insecure_key_size: bool = False) -> None:
    """Refuse moduli below :data:`MIN_SECURE_KEY_BITS` unless the test-only flag is set.

    Raises
    ------
    ValueError
        If ``key_bits < 2048`` without ``allow_insecure_key_size``, below :data:`MIN_TEST_KEY_BITS`
        in any case, or odd.
    """
    if key_bits < MIN_TEST_KEY_BITS or key_bits % 2:
        raise ValueError(f"key_bits must be an even number >= {MIN_TEST_KEY_BITS}, got {key_bits}")
    if key_bits < MIN_SECURE_KEY_BITS:
        if not allow_insecure_key_size:
            raise ValueError(
                f"key_bits must be >= {MIN_SECURE_KEY_BITS} (NIST SP 800-57), got {key_bits}; "
                "smaller keys are for tests only (allow_insecure_key_size=True)"
            )
        warnings.warn(
            f"insecure {key_bits}-bit Paillier key allowed by the test-only flag",
            InsecureParameterWarning,
            stacklevel=3,
        )


def _check_id_bits(id_bits: int, key_bits: int) -> None:
    if not MIN_ID_BITS <= id_bits <= MAX_ID_BITS:
        raise ValueError(f"id_bits must be in [{MIN_ID_BITS}, {MAX_ID_BITS}], got {id_bits}")
    if id_bits > key_bits // 2 - 64:
        raise ValueError(f"id_bits={id_bits} too large for a {key_bits}-bit key (needs id_bits < |p| - 64)")


class _PrivateKey:
    """A phe key pair with the gmpy2 constants the hot loops need."""

    def __init__(self, private_key: paillier.PaillierPrivateKey) -> None:
        self.phe = private_key
        self.n = mpz(private_key.public_key.n)
        self.nsq = self.n * self.n
        self.p, self.q = mpz(private_key.p), mpz(private_key.q)
        self.psq, self.qsq = mpz(private_key.psquare), mpz(private_key.qsquare)
        self.hp = mpz(private_key.hp)
        # The CRT randomness of _crt_randomisers covers all n-th residues only if gcd(q, p-1) =
        # gcd(p, q-1) = 1; this holds for primes of equal length (phe's keys) and is checked here.
        if gmpy2.gcd(self.q, self.p - 1) != 1 or gmpy2.gcd(self.p, self.q - 1) != 1:
            raise ValueError("Paillier key needs gcd(q, p-1) = gcd(p, q-1) = 1")

    @classmethod
    def generate(cls, key_bits: int) -> _PrivateKey:
        _, private_key = paillier.generate_paillier_keypair(n_length=key_bits)
        return cls(private_key)

    @classmethod
    def from_primes(cls, p: int, q: int) -> _PrivateKey:
        return cls(paillier.PaillierPrivateKey(paillier.PaillierPublicKey(p * q), p, q))


def check_public_modulus(modulus: int, allow_insecure_key_size: bool = False) -> None:
    """Check a received Paillier modulus: size (:func:`check_key_bits`), odd, not a perfect square.

    Raises
    ------
    PSIError
        If the modulus cannot be a Paillier modulus or is too small.
    """
    bits = int(modulus).bit_length()
    try:
        check_key_bits(bits + bits % 2, allow_insecure_key_size)
    except ValueError as exc:
        raise PSIError(f"received public key: {exc}") from None
    if modulus % 2 == 0 or gmpy2.is_square(mpz(modulus)):
        raise PSIError("received public key is not a valid Paillier modulus")


# --------------------------------------------------------------------------------------------------
# Ciphertext encoding and checks
# --------------------------------------------------------------------------------------------------


def ciphertext_width(modulus: int) -> int:
    """Bytes per ciphertext: the byte length of n² (512 B at 2048 bits)."""
    return (2 * int(modulus).bit_length() + 7) // 8


def _encode(values: Iterable[mpz], width: int) -> bytes:
    return b"".join(value.to_bytes(width, "big") for value in values)


def _decode(blob: bytes, width: int) -> list[mpz]:
    return [mpz.from_bytes(blob[i : i + width], "big") for i in range(0, len(blob), width)]


def decode_ciphertexts(blob: bytes, modulus: int, what: str) -> list[mpz]:
    """Parse a chunk of fixed-width ciphertexts and check that each lies in Z*_{n²}.

    Raises
    ------
    PSIError
        If the chunk length is not a multiple of the width, or a value is 0, >= n² or shares a factor
        with n.
    """
    width = ciphertext_width(modulus)
    if len(blob) % width:
        raise PSIError(f"{what}: chunk of {len(blob)} bytes is not a multiple of {width}-byte ciphertexts")
    n = mpz(modulus)
    nsq = n * n
    values = _decode(blob, width)
    for index, value in enumerate(values):
        if not 0 < value < nsq or gmpy2.gcd(value, n) != 1:
            raise PSIError(f"{what}: ciphertext {index} of the chunk is not in Z*_(n^2)")
    return values


def _split(blob: bytes, width: int, chunk_bytes: int) -> list[bytes]:
    """Cut a ciphertext stream into chunks of at most ``chunk_bytes`` (whole ciphertexts)."""
    per_chunk = max(1, chunk_bytes // width) * width
    return [blob[i : i + per_chunk] for i in range(0, len(blob), per_chunk)]


# --------------------------------------------------------------------------------------------------
# Process pool
# --------------------------------------------------------------------------------------------------


def resolve_workers(workers: int | None) -> int:
    """``None`` → one worker per core (``os.cpu_count()``); otherwise ``workers`` (>= 1)."""
    if workers is None:
        return os.cpu_count() or 1
    if workers < 1:
        raise ValueError(f"workers must be >= 1, got {workers}")
    return workers


@contextmanager
def process_pool(workers: int | None = None) -> Iterator[Executor | None]:
    """A process pool for the PSI hot loops, or ``None`` (work in this process) for one worker.

    Uses the ``forkserver`` start method: the pool may be opened inside threaded hosts (Ray actors,
    Flower's SuperNode) where ``fork`` is unsafe. Every function of this module that takes ``pool``
    accepts ``None``.
    """
    count = resolve_workers(workers)
    if count == 1:
        yield None
        return
    context = multiprocessing.get_context("forkserver")
    with ProcessPoolExecutor(max_workers=count, mp_context=context) as pool:
        yield pool


def _pool_size(pool: Executor | None) -> int:
    return getattr(pool, "_max_workers", 1) if pool is not None else 1


def _map(pool: Executor | None, fn: Callable[[T], R], tasks: Sequence[T]) -> list[R]:
    """Apply ``fn`` to every task, in the pool if there is one and more than one task; keep the order."""
    if pool is None or len(tasks) <= 1:
        return [fn(task) for task in tasks]
    return list(pool.map(fn, tasks))


def _flat(parts: Iterable[list[R]]) -> list[R]:
    return [item for part in parts for item in part]


def _slices(count: int, pool: Executor | None, minimum: int = 1) -> list[tuple[int, int]]:
    """Split ``range(count)`` into about four slices per worker (one slice without a pool)."""
    pieces = 1 if pool is None else _pool_size(pool) * _TASKS_PER_WORKER
    size = max(minimum, math.ceil(count / max(1, pieces)))
    return [(start, min(count, start + size)) for start in range(0, count, size)]


# --------------------------------------------------------------------------------------------------
# Hot loops (top-level so that the pool can pickle them)
# --------------------------------------------------------------------------------------------------


def _crt_randomisers(task: tuple[mpz, mpz, int]) -> list[mpz]:
    """``count`` uniform n-th residues mod n², drawn by the key owner with the CRT.

    ρ^n mod p² for ρ uniform in Z*_{n²} is uniform on the subgroup of order p-1 of Z*_{p²} (when
    gcd(q, p-1) = 1), which is also the image of t ↦ t^p; so ``t_p^p mod p²`` and ``t_q^q mod q²``
    for uniform units t_p, t_q, joined by the CRT, have exactly the distribution of Paillier 1999's
    ρ^n mod n², at a quarter of the cost (exponent |p| instead of |n|, moduli p², q² instead of n²).
    """
    p, q, count = task
    psq, qsq = p * p, q * q
    psq_inv = gmpy2.invert(psq, qsq)
    out = []
    for _ in range(count):
        while True:
            tp, tq = mpz(secrets.randbelow(int(psq))), mpz(secrets.randbelow(int(qsq)))
            if tp % p and tq % q:
                break
        rp, rq = gmpy2.powmod(tp, p, psq), gmpy2.powmod(tq, q, qsq)
        out.append(rp + psq * ((rq - rp) * psq_inv % qsq))
    return out


def _reencryption_randomisers(task: tuple[mpz, int]) -> list[mpz]:
    """``count`` values s^n mod n² for s uniform in Z*_n (the sender has no factorisation)."""
    n, count = task
    nsq = n * n
    out = []
    for _ in range(count):
        while True:
            s = mpz(secrets.randbelow(int(n)))
            if s and gmpy2.gcd(s, n) == 1:
                break
        out.append(gmpy2.powmod(s, n, nsq))
    return out


def _bin_coefficients(task: tuple[mpz, int, int, list[list[int]]]) -> list[mpz]:
    """Non-leading coefficients a_0..a_{M-1} mod n of each bin's monic polynomial Π (x - root).

    Bins with fewer than M roots are padded with dummy roots uniform in [2^id_bits, n): a sender's
    hashed ID is < 2^id_bits, so a dummy root never makes P vanish on it (FNP 2004 pads bins to a
    common degree so that the polynomials hide the bin loads).
    """
    n, degree, id_bits, bins = task
    low = 1 << id_bits
    out: list[mpz] = []
    for roots in bins:
        all_roots = [mpz(root) for root in roots]
        all_roots += [mpz(low + secrets.randbelow(int(n) - low)) for _ in range(degree - len(roots))]
        coeffs = [mpz(1)]  # low → high; the leading 1 stays implicit on the wire
        for root in all_roots:
            shifted = [mpz(0), *coeffs]
            for j in range(len(coeffs)):
                shifted[j] = (shifted[j] - root * coeffs[j]) % n
            coeffs = shifted
        out.extend(coeffs[:-1])
    return out


def _encrypt_bins(task: tuple[mpz, mpz, int, int, list[list[int]], list[mpz] | None]) -> bytes:
    """Encrypted coefficients of a run of bins, as fixed-width bytes.

    E(a) = (1 + a·n) · ρ mod n² (Paillier 1999 with g = n + 1), ρ from the precomputed list or, when
    it is ``None``, drawn here with :func:`_crt_randomisers`.
    """
    p, q, degree, id_bits, bins, randomisers = task
    n = p * q
    nsq = n * n
    coeffs = _bin_coefficients((n, degree, id_bits, bins))
    if randomisers is None:
        randomisers = _crt_randomisers((p, q, len(coeffs)))
    return _encode(
        ((1 + a * n) * rho % nsq for a, rho in zip(coeffs, randomisers, strict=True)), ciphertext_width(n)
    )


EvaluationGroup = tuple[bytes, list[int], list[mpz] | None]
"""One bin's work for the sender: its M encrypted coefficients, its IDs y, their re-randomisers."""


def _evaluate_bins(task: tuple[mpz, int, list[EvaluationGroup]]) -> bytes:
    """Sender's replies E(r·P_b(y) + y) · s^n for each group, as fixed-width bytes in group order.

    Horner's rule on plaintext y (FNP 2004): acc = E(a_{M-1}) · g^y = E(y + a_{M-1}), then
    acc ← acc^y · E(a_j) for j = M-2 … 0, giving E(P_b(y)) in M - 1 short exponentiations; with
    g = n + 1, g^y = 1 + y·n mod n² (Paillier 1999). Then × r (uniform in Z_n \\ {0}), + y, and the
    re-randomiser s^n (precomputed, or drawn here when the group has ``None``).
    """
    n, width, groups = task
    nsq = n * n
    out: list[mpz] = []
    for coeff_blob, ys, randomisers in groups:
        coeffs = _decode(coeff_blob, width)
        top = coeffs[-1]
        if randomisers is None:
            randomisers = _reencryption_randomisers((n, len(ys)))
        for y_int, rerandomiser in zip(ys, randomisers, strict=True):
            y = mpz(y_int)
            g_y = 1 + y * n
            acc = top * g_y % nsq
            for coeff in reversed(coeffs[:-1]):
                acc = gmpy2.powmod(acc, y, nsq) * coeff % nsq
            r = mpz(1 + secrets.randbelow(int(n) - 1))
            out.append(gmpy2.powmod(acc, r, nsq) * g_y % nsq * rerandomiser % nsq)
    return _encode(out, width)


def _decrypt_mod_p(task: tuple[mpz, mpz, list[mpz]]) -> list[int]:
    """m mod p = L_p(c^(p-1) mod p²) · h_p mod p (Paillier 1999, CRT decryption, p half only).

    Enough for the membership test: a matching reply decrypts to a hashed ID < 2^id_bits < p.
    """
    p, hp, ciphertexts = task
    psq = p * p
    return [int((gmpy2.powmod(c, p - 1, psq) - 1) // p * hp % p) for c in ciphertexts]


# --------------------------------------------------------------------------------------------------
# Messages
# --------------------------------------------------------------------------------------------------


def _require(config: dict[str, Any], key: str, kind: type, what: str) -> Any:
    value = config.get(key)
    if not isinstance(value, kind) or isinstance(value, bool) and kind is not bool:
        raise PSIError(f"{what}: field {key!r} missing or not {kind.__name__}")
    return value


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
        The public hashing salt (:func:`hash_id`).
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
            "modulus": int(self.modulus).to_bytes((int(self.modulus).bit_length() + 7) // 8, "big"),
            "salt": self.salt,
            "id_bits": self.id_bits,
            "num_bins": self.num_bins,
            "degree": self.degree,
            "receiver_size": self.receiver_size,
            "bins_per_chunk": self.bins_per_chunk,
        }

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> SetupHeader:
        """Inverse of :meth:`to_config`.

        Raises
        ------
        PSIError
            If a field is missing or has the wrong type.
        """
        what = "setup header"
        header = cls(
            session_id=_require(config, "session_id", str, what),
            modulus=int.from_bytes(_require(config, "modulus", bytes, what), "big"),
            salt=_require(config, "salt", bytes, what),
            id_bits=_require(config, "id_bits", int, what),
            num_bins=_require(config, "num_bins", int, what),
            degree=_require(config, "degree", int, what),
            receiver_size=_require(config, "receiver_size", int, what),
            bins_per_chunk=_require(config, "bins_per_chunk", int, what),
        )
        return header


@dataclass(frozen=True)
class SetupMessage:
    """Receiver → sender: the public header and the encrypted coefficients, in bounded chunks.

    Coefficient k = b·M + j of the stream is E(a_j) of bin b (a_0 … a_{M-1}); each chunk holds whole
    bins (:meth:`SetupHeader.chunk_bins`) as fixed-width big-endian ciphertexts
    (:func:`ciphertext_width`).
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


@dataclass(frozen=True)
class Alignment:
    """What one party holds after alignment.

    Attributes
    ----------
    alignment_id : str
        The alignment (or two-party session) that produced it.
    ids : tuple[str | int, ...]
        The aligned IDs in the canonical order shared by all parties.
    rows : tuple[int, ...]
        ``rows[i]`` is this party's own row index of ``ids[i]``.
    num_rows : int
        Number of rows (IDs) the party had when aligning.
    ids_digest : str
        :func:`ids_digest` of the party's ID list at alignment time.
    """

    alignment_id: str
    ids: tuple[Identifier, ...]
    rows: tuple[int, ...]
    num_rows: int
    ids_digest: str

    def non_aligned_rows(self) -> list[int]:
        """The party's rows that no other party shares, ascending."""
        aligned = set(self.rows)
        return [row for row in range(self.num_rows) if row not in aligned]

    def check_ids(self, ids: Sequence[object]) -> None:
        """Raise ``ValueError`` if ``ids`` is not the ID list this alignment was computed on."""
        if ids_digest(ids) != self.ids_digest:
            raise ValueError(
                f"the party's IDs changed since alignment {self.alignment_id!r} was computed; re-align"
            )


def make_alignment(alignment_id: str, prepared: PreparedIds, selected: Sequence[int]) -> Alignment:
    """Build a party's :class:`Alignment` from the indices of its aligned IDs.

    Parameters
    ----------
    alignment_id : str
        Stored in the result.
    prepared : PreparedIds
        The party's whole prepared ID list (:func:`prepare_ids`).
    selected : Sequence[int]
        Indices into ``prepared.canonical`` of the aligned IDs, in the order received.

    Raises
    ------
    PSIError
        If ``selected`` repeats an index, is out of range or is not in canonical order (the other
        party's order disagrees with this party's IDs).
    """
    canonical = prepared.canonical
    if len(set(selected)) != len(selected) or any(not 0 <= i < len(canonical) for i in selected):
        raise PSIError("aligned positions repeat or fall outside the party's set")
    keys = [order_key(canonical[i]) for i in selected]
    if any(a >= b for a, b in zip(keys, keys[1:], strict=False)):
        raise PSIError("aligned IDs are not in canonical order: the parties' views disagree")
    return Alignment(
        alignment_id=alignment_id,
        ids=tuple(id_from_canonical_bytes(canonical[i]) for i in selected),
        rows=tuple(prepared.rows[i] for i in selected),
        num_rows=prepared.num_rows,
        ids_digest=prepared.digest,
    )


# --------------------------------------------------------------------------------------------------
# Receiver
# --------------------------------------------------------------------------------------------------


def _new_session_id() -> str:
    return secrets.token_hex(16)


def _int_bytes(value: int | mpz) -> bytes:
    return int(value).to_bytes((int(value).bit_length() + 7) // 8, "big")


def _prepared_to_state(prepared: PreparedIds) -> dict[str, StateValue]:
    return {
        "canonical": list(prepared.canonical),
        "rows": list(prepared.rows),
        "num_rows": prepared.num_rows,
        "digest": prepared.digest,
    }


def _prepared_from_state(state: dict[str, Any]) -> PreparedIds:
    return PreparedIds(
        list(state["canonical"]), list(state["rows"]), int(state["num_rows"]), str(state["digest"])
    )


def _header_to_state(header: SetupHeader | None) -> dict[str, StateValue]:
    if header is None:
        return {"has_header": False}
    return {"has_header": True, **{f"header.{key}": value for key, value in header.to_config().items()}}


def _header_from_state(state: dict[str, Any]) -> SetupHeader | None:
    if not state["has_header"]:
        return None
    return SetupHeader.from_config(
        {key[7:]: value for key, value in state.items() if key.startswith("header.")}
    )


def _values_to_bytes(values: Sequence[int], id_bits: int) -> bytes:
    size = (id_bits + 7) // 8
    return b"".join(value.to_bytes(size, "big") for value in values)


def _values_from_bytes(blob: bytes, id_bits: int) -> list[int]:
    size = (id_bits + 7) // 8
    return [int.from_bytes(blob[i : i + size], "big") for i in range(0, len(blob), size)]


class PSIReceiver:
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
        _check_id_bits(id_bits, key_bits)
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
        self.session_id = session_id or _new_session_id()
        self._key = _PrivateKey.generate(key_bits)
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
            tasks = [(self._key.p, self._key.q, stop - start) for start, stop in _slices(missing, pool)]
            self._randomisers.extend(_flat(_map(pool, _crt_randomisers, tasks)))

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
        for a, b in _slices(len(bins), pool):
            own = randomisers[a * self.degree : b * self.degree]
            complete = len(own) == (b - a) * self.degree
            tasks.append(
                (self._key.p, self._key.q, self.degree, self.id_bits, roots[a:b], own if complete else None)
            )
        return b"".join(_map(pool, _encrypt_bins, tasks))

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
        if count < 0 or self._expected is not None and count != self._expected:
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
        tasks = [(self._key.p, self._key.hp, values[a:b]) for a, b in _slices(len(values), pool, 64)]
        plain = _flat(_map(pool, _decrypt_mod_p, tasks))
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

    def matched_indices(self) -> list[int]:
        """Indices (into the prepared IDs) of the matched IDs, in canonical order."""
        matched = sorted(self._matches)
        return [matched[k] for k in canonical_order([self.prepared.canonical[i] for i in matched])]

    def positions(self, indices: Sequence[int]) -> list[int]:
        """Reply positions (the sender's shuffled order) of matched prepared-ID ``indices``."""
        try:
            return [self._matches[i] for i in indices]
        except KeyError:
            raise PSIError("an aligned ID was not matched in this session") from None

    def intersection_message(self) -> IntersectionMessage:
        """Step 4: the positions of the shared IDs in canonical order, for the sender."""
        return IntersectionMessage(self.session_id, tuple(self.positions(self.matched_indices())))

    def alignment(self, alignment_id: str | None = None) -> Alignment:
        """This party's :class:`Alignment` after :meth:`finish`."""
        return make_alignment(alignment_id or self.session_id, self.prepared, self.matched_indices())

    # -- persistence between Flower messages -------------------------------------------------------

    def to_state(self) -> dict[str, StateValue]:
        """Plain values for a node-local Flower ``ConfigRecord`` (includes the private key).

        Precomputed randomness is not kept (chunks encrypted after a reload draw fresh randomness).
        """
        matched = sorted(self._matches)
        return {
            "session_id": self.session_id,
            "p": _int_bytes(self._key.p),
            "q": _int_bytes(self._key.q),
            "id_bits": self.id_bits,
            "num_bins": self.num_bins,
            "degree": self.degree,
            **_header_to_state(self.header),
            **_prepared_to_state(self.prepared),
            "values": _values_to_bytes(self._values, self.id_bits),
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
        self.header = _header_from_state(state)
        self.session_id = str(state["session_id"])
        self.prepared = _prepared_from_state(state)
        self.id_bits, self.num_bins, self.degree = (
            int(state["id_bits"]),
            int(state["num_bins"]),
            int(state["degree"]),
        )
        self._key = _PrivateKey.from_primes(
            int.from_bytes(state["p"], "big"), int.from_bytes(state["q"], "big")
        )
        self._randomisers = []
        self._values = _values_from_bytes(state["values"], self.id_bits)
        self._bin_of = list(state["bin_of"])
        self._expected = None if state["expected"] < 0 else int(state["expected"])
        self._received = int(state["received"])
        self._next_chunk = int(state["next_chunk"])
        self._matches = dict(zip(state["matched"], state["matched_positions"], strict=True))
        return self


# --------------------------------------------------------------------------------------------------
# Sender
# --------------------------------------------------------------------------------------------------


class PSISender:
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
            tasks = [(n, b - a) for a, b in _slices(missing, pool)]
            self._randomisers.extend(_flat(_map(pool, _reencryption_randomisers, tasks)))

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
            raise PSIError(f"setup header: id_bits={header.id_bits} out of range")
        if header.num_bins < 1 or header.degree < 1 or header.receiver_size < 0 or header.bins_per_chunk < 1:
            raise PSIError("setup header: num_bins, degree, receiver_size or bins_per_chunk out of range")
        if len(header.salt) != SALT_BYTES:
            raise PSIError(f"setup header: salt must be {SALT_BYTES} bytes")
        if header.num_bins * header.degree * ciphertext_width(header.modulus) > 1 << 36:
            raise PSIError("setup header: more than 64 GiB of coefficients announced")
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
        replies = b"".join(_map(pool, _evaluate_bins, _group_tasks(mpz(header.modulus), width, groups, pool)))
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
            header.session_id, len(order), tuple(_split(shuffled, width, chunk_bytes))
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

    def indices_at(self, positions: Iterable[int]) -> list[int]:
        """Prepared-ID indices behind reply ``positions`` (through the secret shuffle).

        Raises
        ------
        PSIError
            If a position is out of range (or the sender has not responded).
        """
        positions = list(positions)
        if any(not 0 <= position < len(self._order) for position in positions):
            raise PSIError("a reply position is out of range")
        return [self._order[position] for position in positions]

    def conclude(self, message: IntersectionMessage, alignment_id: str | None = None) -> Alignment:
        """Step 4: the sender's :class:`Alignment` from the receiver's positions.

        Raises
        ------
        SessionMismatchError, PSIError
            On another session, bad positions, or an order that is not canonical for these IDs.
        """
        if message.session_id != self.session_id:
            raise SessionMismatchError("message for another PSI session")
        indices = self.indices_at(message.positions)
        return make_alignment(alignment_id or self.session_id, self.prepared, indices)

    # -- persistence between Flower messages -------------------------------------------------------

    def to_state(self) -> dict[str, StateValue]:
        """Plain values for a node-local Flower ``ConfigRecord``: randomisers, replies, shuffle."""
        responses = self._responses
        width = ciphertext_width(self.modulus) if self.modulus else 0
        id_bits = self.header.id_bits if self.header is not None else DEFAULT_ID_BITS
        return {
            "modulus": _int_bytes(self.modulus),
            **_header_to_state(self.header),
            **_prepared_to_state(self.prepared),
            "allow_insecure_key_size": self.allow_insecure_key_size,
            "randomisers": _encode(self._randomisers, width),
            "values": _values_to_bytes(self._values, id_bits),
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
        self.header = _header_from_state(state)
        self.prepared = _prepared_from_state(state)
        self.allow_insecure_key_size = bool(state["allow_insecure_key_size"])
        self._randomisers = (
            _decode(state["randomisers"], ciphertext_width(self.modulus)) if self.modulus else []
        )
        id_bits = self.header.id_bits if self.header is not None else DEFAULT_ID_BITS
        self._values = _values_from_bytes(state["values"], id_bits)
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


def _group_tasks(
    n: mpz, width: int, groups: list[EvaluationGroup], pool: Executor | None
) -> list[tuple[mpz, int, list[EvaluationGroup]]]:
    """Cut the per-bin work into tasks of about equal numbers of IDs (a crowded bin is split)."""
    total = sum(len(ys) for _, ys, _ in groups)
    pieces = 1 if pool is None else _pool_size(pool) * _TASKS_PER_WORKER
    target = max(1, math.ceil(total / pieces))
    tasks: list[tuple[mpz, int, list[EvaluationGroup]]] = []
    current: list[EvaluationGroup] = []
    load = 0
    for coeffs, ys, randomisers in groups:
        start = 0
        while start < len(ys):
            take = min(len(ys) - start, target - load)
            part = None if randomisers is None else randomisers[start : start + take]
            current.append((coeffs, ys[start : start + take], part))
            load += take
            start += take
            if load >= target:
                tasks.append((n, width, current))
                current, load = [], 0
    if current:
        tasks.append((n, width, current))
    return tasks


# --------------------------------------------------------------------------------------------------
# Both roles in one process
# --------------------------------------------------------------------------------------------------


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
) -> tuple[Alignment, Alignment]:
    """Run the whole protocol between two ID lists in this process; return both parties' alignments.

    The larger set takes the receiver role (PSI_NOTES: the sender's IDs are the expensive side).

    Parameters
    ----------
    ids_a, ids_b : Iterable[str | int]
        The two parties' IDs, one per row.
    key_bits, id_bits, duplicates, allow_insecure_key_size
        As for :class:`PSIReceiver`.
    workers : int or None (default: 1)
        Processes for the hot loops; ``None`` uses every core.
    chunk_bytes : int (default: 4 MiB)
        Bound on each message's ciphertext payload.

    Returns
    -------
    tuple[Alignment, Alignment]
        ``(alignment of a, alignment of b)``: same IDs, same canonical order, own rows.
    """
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
    )
    return list(alignment_a.ids)
