"""The cryptographic primitives of secure vote aggregation, as both sides must compute them bit for bit.

Pairwise masking after Bonawitz et al., "Practical Secure Aggregation for Privacy-Preserving Machine
Learning", CCS 2017 ([BIK+17]), §4 and Figure 4, over ``cryptography``'s primitives:

- key agreement ``KA``: X25519 (RFC 7748), the shared secret expanded by HKDF-SHA256 (RFC 5869) with
  an ``info`` string that names the session, the purpose and the step, so no key serves two purposes;
- the pseudorandom generator ``PRG``: AES-256 in counter mode over zero bytes, read as ``uint64`` words
  (the masks live in the ring Z_{2^64}, :data:`RING_BITS`);
- authenticated encryption of the Shamir shares ``AE``: AES-256-GCM with associated data naming sender,
  receiver, session and step, so the relaying server can neither read nor swap them;
- t-out-of-n Shamir secret sharing ([BIK+17] §3.1) over the prime field GF(2^521 - 1), which holds a
  32-byte secret;
- the per-node message tag: HMAC-SHA256 under a key a node agrees with the server's session key.

This module holds the definitions both the teacher nodes (``clients/pate/secagg.py``) and the server
(``strategies/secagg.py``) need: the server recomputes the masks of dropped nodes and the self-masks it
recovers. Randomness comes from the operating system (``secrets``) only.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets

import numpy as np
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

RING_BITS = 64
"""Masked values live in Z_{2^64}: numpy ``uint64`` arithmetic wraps exactly modulo 2^64."""
SHAMIR_PRIME = 2**521 - 1
"""A Mersenne prime: GF(p) holds any 32-byte secret (a key or a seed) as one field element."""
SEED_BYTES = 32


class SecAggError(RuntimeError):
    """A secure-aggregation step cannot go on: too few parties, a bad share, a rejected message."""


def new_keypair() -> tuple[bytes, bytes]:
    """A fresh X25519 key pair as ``(private, public)`` raw 32-byte strings."""
    private = X25519PrivateKey.generate()
    return private.private_bytes_raw(), private.public_key().public_bytes_raw()


def public_key(private: bytes) -> bytes:
    """The raw X25519 public key of a raw private key."""
    return X25519PrivateKey.from_private_bytes(private).public_key().public_bytes_raw()


def agree(private: bytes, peer_public: bytes, info: bytes) -> bytes:
    """``KA.agree`` of [BIK+17] §3.2: X25519 then HKDF-SHA256 to 32 bytes bound to ``info``.

    Raises
    ------
    SecAggError
        If ``peer_public`` is not a 32-byte X25519 key or gives the all-zero shared secret.
    """
    if len(peer_public) != 32:
        raise SecAggError(f"an X25519 public key has 32 bytes, got {len(peer_public)}")
    try:
        shared = X25519PrivateKey.from_private_bytes(private).exchange(
            X25519PublicKey.from_public_bytes(peer_public))
    except ValueError as err:  # a low-order point gives the all-zero secret
        raise SecAggError(f"key agreement failed: {err}") from err
    return derive(shared, info)


def derive(secret: bytes, info: bytes) -> bytes:
    """HKDF-SHA256 (RFC 5869) of ``secret`` to 32 bytes, bound to ``info`` (no salt)."""
    return HKDF(algorithm=hashes.SHA256(), length=SEED_BYTES, salt=None, info=info).derive(secret)


def prg_words(seed: bytes, n: int) -> np.ndarray:
    """``PRG(seed)`` of [BIK+17]: ``n`` pseudorandom ``uint64`` words (AES-256-CTR, zero IV, over zeros).

    A seed is used for one mask only: callers derive it per step with :func:`derive` or draw it fresh.
    """
    if len(seed) != SEED_BYTES:
        raise ValueError(f"a PRG seed has {SEED_BYTES} bytes, got {len(seed)}")
    if n < 0:
        raise ValueError(f"the number of words must be >= 0, got {n}")
    encryptor = Cipher(algorithms.AES(seed), modes.CTR(bytes(16))).encryptor()
    stream = encryptor.update(bytes(8 * n)) + encryptor.finalize()
    return np.frombuffer(stream, dtype="<u8").astype(np.uint64)


def seal(key: bytes, plaintext: bytes, aad: bytes) -> bytes:
    """``AE.enc``: AES-256-GCM with a random 96-bit nonce, returned as ``nonce | ciphertext``."""
    nonce = secrets.token_bytes(12)
    return nonce + AESGCM(key).encrypt(nonce, plaintext, aad)


def unseal(key: bytes, blob: bytes, aad: bytes) -> bytes:
    """``AE.dec`` of :func:`seal`.

    Raises
    ------
    SecAggError
        If the ciphertext or its associated data was altered (or the key is wrong).
    """
    try:
        return AESGCM(key).decrypt(blob[:12], blob[12:], aad)
    except (InvalidTag, ValueError) as err:
        raise SecAggError(f"an encrypted share failed authentication ({len(blob)} bytes)") from err


def tag(key: bytes, *parts: bytes) -> bytes:
    """HMAC-SHA256 over length-prefixed ``parts`` (unambiguous concatenation)."""
    mac = hmac.new(key, digestmod=hashlib.sha256)
    for part in parts:
        mac.update(len(part).to_bytes(8, "big") + part)
    return mac.digest()


def tag_ok(key: bytes, expected: bytes, *parts: bytes) -> bool:
    """Constant-time check of a :func:`tag`."""
    return hmac.compare_digest(tag(key, *parts), expected)


def shamir_share(secret: bytes, xs: list[int], threshold: int) -> dict[int, int]:
    """t-out-of-n Shamir shares ([BIK+17] §3.1) of a 32-byte ``secret``: ``{x: f(x)}`` for each x in ``xs``.

    ``f`` is a uniformly random polynomial of degree ``threshold - 1`` over GF(:data:`SHAMIR_PRIME`)
    with ``f(0) = secret``; any ``threshold`` shares determine it, fewer reveal nothing.

    Raises
    ------
    ValueError
        If ``threshold`` is not in [1, len(xs)], or an x is not a distinct integer in [1, p).
    """
    if not 1 <= threshold <= len(xs):
        raise ValueError(f"threshold must be in [1, {len(xs)}] (the number of shares), got {threshold}")
    if len(set(xs)) != len(xs) or any(not 0 < x < SHAMIR_PRIME for x in xs):
        raise ValueError(f"share points must be distinct integers in [1, p), got {xs}")
    coefficients = [int.from_bytes(secret, "big")] + [secrets.randbelow(SHAMIR_PRIME)
                                                      for _ in range(threshold - 1)]
    shares = {}
    for x in xs:
        y = 0
        for c in reversed(coefficients):  # Horner
            y = (y * x + c) % SHAMIR_PRIME
        shares[x] = y
    return shares


def shamir_reconstruct(shares: dict[int, int], threshold: int) -> bytes:
    """The 32-byte secret of :func:`shamir_share` from at least ``threshold`` shares (Lagrange at 0).

    Raises
    ------
    SecAggError
        If fewer than ``threshold`` shares are given, or the result is not a 32-byte secret.
    """
    if len(shares) < threshold:
        raise SecAggError(f"{len(shares)} shares cannot reconstruct a secret shared with threshold "
                          f"{threshold}")
    points = sorted(shares.items())[:threshold]
    secret = 0
    for i, (xi, yi) in enumerate(points):
        num, den = 1, 1
        for j, (xj, _) in enumerate(points):
            if i != j:
                num = num * -xj % SHAMIR_PRIME
                den = den * (xi - xj) % SHAMIR_PRIME
        secret = (secret + yi * num * pow(den, -1, SHAMIR_PRIME)) % SHAMIR_PRIME
    if secret >= 2 ** (8 * SEED_BYTES):
        raise SecAggError("the shares do not reconstruct a 32-byte secret (a share is corrupt)")
    return secret.to_bytes(SEED_BYTES, "big")


def share_bytes(value: int) -> bytes:
    """A share's field element as fixed-width bytes (66 bytes hold GF(2^521 - 1))."""
    return value.to_bytes(66, "big")


def share_value(blob: bytes) -> int:
    """Inverse of :func:`share_bytes`.

    Raises
    ------
    SecAggError
        If ``blob`` is not a field element.
    """
    value = int.from_bytes(blob, "big")
    if len(blob) != 66 or value >= SHAMIR_PRIME:
        raise SecAggError(f"a Shamir share is a 66-byte element of GF(2^521 - 1), got {len(blob)} bytes")
    return value
