"""Paillier for the PSI: keys, the fixed-width ciphertext codec, and the hot loops the pool runs.

References
----------
- P. Paillier, "Public-Key Cryptosystems Based on Composite Degree Residuosity Classes", EUROCRYPT 1999
  ("Paillier 1999"): Scheme 1, c = g^m · ρ^n mod n² with g = n + 1, so g^m = 1 + m·n mod n²; and the
  Chinese-remainder decryption (m mod p = L_p(c^(p-1) mod p²) · h_p mod p) from its section on efficiency.
- M. J. Freedman, K. Nissim, B. Pinkas, "Efficient Private Matching and Set Intersection", EUROCRYPT
  2004 ("FNP 2004"): the encrypted polynomial per bin and the sender's reply E(r·P(y) + y), evaluated
  with Horner's rule on plaintext y.
- python-paillier (``phe``) generates the keys; gmpy2 integers carry every hot loop.

Speed-ups (``docs/psi.md``, "Speed"): the key owner draws encryption randomness by CRT as t_p^p mod p²
and t_q^q mod q² (:func:`crt_randomisers`); the membership test decrypts modulo p only
(:func:`decrypt_mod_p`); encryption, evaluation and decryption run in a process pool
(:func:`clients.psi.pool.process_pool`). The raw-integer layer (``mpz`` values) stays here; the byte
layer is :func:`ciphertext_width`, :func:`decode_ciphertexts` (checked) and :func:`encode_fixed_width` /
:func:`decode_fixed_width` (unchecked, for the FNP roles' own streams).
"""

from __future__ import annotations

import math
import secrets
import warnings
from collections.abc import Iterable
from concurrent.futures import Executor

import gmpy2
from gmpy2 import mpz
from phe import paillier

from clients.psi.ids import MAX_ID_BITS, MIN_ID_BITS
from clients.psi.pool import TASKS_PER_WORKER, pool_size
from protocol.psi import DEFAULT_KEY_BITS, PSIError

MIN_SECURE_KEY_BITS = 2048
"""Smallest accepted modulus: 2048-bit factoring moduli give about 112-bit security (NIST SP 800-57
Part 1 Rev. 5, Table 2), acceptable until 2030; use 3072 bits (phe's ``DEFAULT_KEYSIZE``) beyond."""
MIN_TEST_KEY_BITS = 256
"""Smallest modulus accepted even with ``allow_insecure_key_size=True`` (tests only)."""

__all__ = [
    "DEFAULT_KEY_BITS",
    "MIN_SECURE_KEY_BITS",
    "MIN_TEST_KEY_BITS",
    "EvaluationGroup",
    "InsecureParameterWarning",
    "PrivateKey",
    "bin_coefficients",
    "check_id_bits",
    "check_key_bits",
    "check_public_modulus",
    "ciphertext_width",
    "crt_randomisers",
    "decode_ciphertexts",
    "decode_fixed_width",
    "decrypt_mod_p",
    "encode_fixed_width",
    "encrypt_bins",
    "evaluate_bins",
    "group_tasks",
    "reencryption_randomisers",
]


class InsecureParameterWarning(UserWarning):
    """A key below 2048 bits was allowed through the test-only flag."""


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


def check_id_bits(id_bits: int, key_bits: int) -> None:
    """Refuse an ID hash width outside the allowed range or too wide for the key's prime p.

    Raises
    ------
    ValueError
        Naming the rule and the value.
    """
    if not MIN_ID_BITS <= id_bits <= MAX_ID_BITS:
        raise ValueError(f"id_bits must be in [{MIN_ID_BITS}, {MAX_ID_BITS}], got {id_bits}")
    if id_bits > key_bits // 2 - 64:
        raise ValueError(f"id_bits={id_bits} too large for a {key_bits}-bit key (needs id_bits < |p| - 64)")


class PrivateKey:
    """A phe key pair with the gmpy2 constants the hot loops need."""

    def __init__(self, private_key: paillier.PaillierPrivateKey) -> None:
        self.phe = private_key
        self.n = mpz(private_key.public_key.n)
        self.nsq = self.n * self.n
        self.p, self.q = mpz(private_key.p), mpz(private_key.q)
        self.psq, self.qsq = mpz(private_key.psquare), mpz(private_key.qsquare)
        self.hp = mpz(private_key.hp)
        # The CRT randomness of crt_randomisers covers all n-th residues only if gcd(q, p-1) =
        # gcd(p, q-1) = 1; this holds for primes of equal length (phe's keys) and is checked here.
        if gmpy2.gcd(self.q, self.p - 1) != 1 or gmpy2.gcd(self.p, self.q - 1) != 1:
            raise ValueError("Paillier key needs gcd(q, p-1) = gcd(p, q-1) = 1")

    @classmethod
    def generate(cls, key_bits: int) -> PrivateKey:
        _, private_key = paillier.generate_paillier_keypair(n_length=key_bits)
        return cls(private_key)

    @classmethod
    def from_primes(cls, p: int, q: int) -> PrivateKey:
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


def encode_fixed_width(values: Iterable[mpz], width: int) -> bytes:
    """Big-endian ``width``-byte encodings of ``values``, concatenated."""
    return b"".join(value.to_bytes(width, "big") for value in values)


def decode_fixed_width(blob: bytes, width: int) -> list[mpz]:
    """The values of a stream :func:`encode_fixed_width` wrote (no range checks)."""
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
    values = decode_fixed_width(blob, width)
    for index, value in enumerate(values):
        if not 0 < value < nsq or gmpy2.gcd(value, n) != 1:
            raise PSIError(f"{what}: ciphertext {index} of the chunk is not in Z*_(n^2)")
    return values


# --------------------------------------------------------------------------------------------------
# Hot loops (top-level so that the pool can pickle them)
# --------------------------------------------------------------------------------------------------


def crt_randomisers(task: tuple[mpz, mpz, int]) -> list[mpz]:
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


def reencryption_randomisers(task: tuple[mpz, int]) -> list[mpz]:
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


def bin_coefficients(task: tuple[mpz, int, int, list[list[int]]]) -> list[mpz]:
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


def encrypt_bins(task: tuple[mpz, mpz, int, int, list[list[int]], list[mpz] | None]) -> bytes:
    """Encrypted coefficients of a run of bins, as fixed-width bytes.

    E(a) = (1 + a·n) · ρ mod n² (Paillier 1999 with g = n + 1), ρ from the precomputed list or, when
    it is ``None``, drawn here with :func:`crt_randomisers`.
    """
    p, q, degree, id_bits, bins, randomisers = task
    n = p * q
    nsq = n * n
    coeffs = bin_coefficients((n, degree, id_bits, bins))
    if randomisers is None:
        randomisers = crt_randomisers((p, q, len(coeffs)))
    return encode_fixed_width(
        ((1 + a * n) * rho % nsq for a, rho in zip(coeffs, randomisers, strict=True)), ciphertext_width(n)
    )


EvaluationGroup = tuple[bytes, list[int], list[mpz] | None]
"""One bin's work for the sender: its M encrypted coefficients, its IDs y, their re-randomisers."""


def evaluate_bins(task: tuple[mpz, int, list[EvaluationGroup]]) -> bytes:
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
        coeffs = decode_fixed_width(coeff_blob, width)
        top = coeffs[-1]
        if randomisers is None:
            randomisers = reencryption_randomisers((n, len(ys)))
        for y_int, rerandomiser in zip(ys, randomisers, strict=True):
            y = mpz(y_int)
            g_y = 1 + y * n
            acc = top * g_y % nsq
            for coeff in reversed(coeffs[:-1]):
                acc = gmpy2.powmod(acc, y, nsq) * coeff % nsq
            r = mpz(1 + secrets.randbelow(int(n) - 1))
            out.append(gmpy2.powmod(acc, r, nsq) * g_y % nsq * rerandomiser % nsq)
    return encode_fixed_width(out, width)


def decrypt_mod_p(task: tuple[mpz, mpz, list[mpz]]) -> list[int]:
    """m mod p = L_p(c^(p-1) mod p²) · h_p mod p (Paillier 1999, CRT decryption, p half only).

    Enough for the membership test: a matching reply decrypts to a hashed ID < 2^id_bits < p.
    """
    p, hp, ciphertexts = task
    psq = p * p
    return [int((gmpy2.powmod(c, p - 1, psq) - 1) // p * hp % p) for c in ciphertexts]


def group_tasks(
    n: mpz, width: int, groups: list[EvaluationGroup], pool: Executor | None
) -> list[tuple[mpz, int, list[EvaluationGroup]]]:
    """Cut the per-bin work into tasks of about equal numbers of IDs (a crowded bin is split)."""
    total = sum(len(ys) for _, ys, _ in groups)
    pieces = 1 if pool is None else pool_size(pool) * TASKS_PER_WORKER
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
