"""The groups of the ECDH PSI backend: X25519 (the default) and the prime-order group of edwards25519.

:mod:`clients.psi.ecdh` runs the Diffie–Hellman PSI (Meadows 1986; Huberman, Franklin, Hogg 1999)
over either group through a :class:`Group`: a secret scalar, a hash of an ID into the group followed
by a scalar multiplication (the own points H(x)^a), and a checked scalar multiplication of the
peer's points. The two hot loops (:meth:`Group.hash_and_blind`, :meth:`Group.exponentiate`) are
shared by both groups and call the group's encoder, multiplier and point check; a :class:`Group`
pickles as its name, so the process pool sends the workers the loop and the group's name.

References
----------
- RFC 7748, "Elliptic Curves for Security" (Langley, Hamburg, Turner, 2016): curve25519 in Montgomery
  form v^2 = u^3 + 486662 u^2 + u over GF(2^255 - 19), the X25519 function (§5: decodeScalar25519
  clamping, decodeUCoordinate, the Montgomery ladder), its all-zero output on small-order inputs
  (§6.1), and the birational map between curve25519 and edwards25519 (§4.1): u = (1 + y) / (1 - y).
- RFC 9380, "Hashing to Elliptic Curves" (2023), §3: ``encode_to_curve`` (one map-to-curve output of
  a hashed field element, then cofactor clearing: a nonuniform encoding) and ``hash_to_curve`` (the
  sum of two such outputs of independent field elements: indifferentiable from a random oracle, Brier,
  Coron, Icart, Madore, Randriam, Tibouchi, "Efficient Indifferentiable Hashing into Ordinary
  Elliptic Curves", CRYPTO 2010, which also defines the weak encodings used below); libsodium's
  ``crypto_core_ed25519_from_uniform`` is Elligator 2 (Bernstein, Hamburg, Krasnova, Lange, CCS 2013)
  followed by cofactor clearing.
- D. J. Bernstein, "Curve25519: new Diffie-Hellman speed records", PKC 2006: clamped scalars are
  multiples of the cofactor 8, and the curve is secure on its quadratic twist.
- OpenSSL's X25519 through ``cryptography`` (``X25519PrivateKey.exchange``, which refuses the
  all-zero output), libsodium through PyNaCl for edwards25519.

The two groups
--------------
Let F(r) = ``crypto_core_ed25519_from_uniform``(r) for 32 bytes r (Elligator 2 of r mod p, the top bit
choosing the sign of x, times the cofactor 8): a point of the prime-order subgroup of edwards25519, of
order L = 2^252 + 27742317777372353535851937790883648493. The hashes are keyed by the session:
d = SHA-512(domain ‖ len(session_id) ‖ session_id ‖ canonical ID bytes), with a domain tag per group.

- ``x25519`` (default). Hash: H(x) = u(F(d[:32])) with d under :data:`X25519_HASH_DOMAIN`: RFC 9380's
  ``encode_to_curve`` structure on edwards25519 (one Elligator 2 map, cofactor cleared), then the
  Montgomery u-coordinate by RFC 7748's birational map, 32 little-endian bytes. One map instead of
  ``hash_to_curve``'s two and a point addition: a third of the cost (≈ 28 µs against ≈ 80 µs per ID,
  ``docs/psi.md``), at the price of a nonuniform (but full-support) distribution on the group. The
  DH-PSI argument (HFH 1999, DDH with H a random oracle) only programs H(x) to points of known
  discrete logarithm; Elligator 2 with cofactor clearing is a weak encoding in the sense of Brier et
  al. 2010 (efficiently invertible, a bounded number of preimages per point), so with d a random oracle the
  reduction can sample d[:32] exactly from its real distribution given a point g^r (rejection on the
  number of preimages), and the DDH argument goes through unchanged. The edwards25519 group below keeps
  the two-map ``hash_to_curve``.
  Scalar multiplication: X25519(k, u), the Montgomery ladder on u-coordinates with the clamped scalar
  c = 2^254 + 8·k' (RFC 7748 §5 decodeScalar25519; k' < 2^251 from the 32 secret bytes; c mod L ≠ 0, so
  it is a bijection of the prime-order subgroup). Since every clamped scalar is a multiple of the
  cofactor 8, X25519(a, X25519(b, u)) = u([c_a c_b] P) = X25519(b, X25519(a, u)): exponentiations
  commute, and a small-order component of a received point is multiplied away (it cannot leak the
  scalar modulo 8, which is 0 for every party). The u-coordinate identifies a point up to sign
  (u(P) = u(-P)), all the protocol needs: H(x) = H(y) for x ≠ y has probability ≈ 2^-250 per pair.
  A received point is refused, named by its position and value, unless it is a canonical
  u-coordinate (u < 2^255 - 19; X25519 implementations would silently mask or reduce it), lies on
  curve25519 rather than its twist (u^3 + 486662 u^2 + u is not a non-square: Legendre symbol ≠ -1),
  and is not of small order (X25519 then gives the all-zero output, which OpenSSL refuses, RFC 7748
  §6.1). Points with a small-order component pass: the clamped scalar kills it. An honest party's own
  hash fails only if F(d[:32]) is the identity (Elligator 2 hit a point of order dividing 8), with
  probability below 2^-250.
- ``edwards25519``. Hash: H(x) = F(d[:32]) + F(d[32:]) with d under :data:`HASH_DOMAIN` (RFC 9380's
  random-oracle ``hash_to_curve``), 32-byte compressed points; scalars uniform in [1, L) (64 random
  bytes reduced modulo L); scalar multiplication ``crypto_scalarmult_ed25519_noclamp``, which refuses
  every point outside the prime-order subgroup (non-canonical, off the curve, small order, a
  small-order component: with unclamped scalars such a component would leak the scalar modulo 8).
  About 2.5 times the CPU per ID of ``x25519`` (``docs/psi.md``, measured).
"""

from __future__ import annotations

import functools
import hashlib
import pickle
import secrets
from collections.abc import Callable
from dataclasses import dataclass

import gmpy2
import nacl.bindings as sodium
import nacl.exceptions
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey

from protocol.psi import DEFAULT_ECDH_GROUP, ECDH_GROUPS, PSIError

POINT_BYTES = 32
"""Bytes of one point in either group (a u-coordinate or a compressed edwards25519 point)."""
HASH_DOMAIN = b"flwr-privkit/psi/ecdh/hash-to-group/v1"
"""Domain-separation tag of the hash into edwards25519."""
X25519_HASH_DOMAIN = b"flwr-privkit/psi/ecdh/encode-to-x25519/v1"
"""Domain-separation tag of the hash into X25519."""
FIELD_PRIME = 2**255 - 19
"""p of GF(p), the field of curve25519 and edwards25519 (RFC 7748 §4.1)."""
MONTGOMERY_A = 486662
"""A of curve25519, v^2 = u^3 + A u^2 + u (RFC 7748 §4.1)."""
_PRIME = gmpy2.mpz(FIELD_PRIME)
_Y_MASK = (1 << 255) - 1  # an edwards25519 encoding is y (255 bits) and the sign of x (bit 255)

BlindTask = tuple[bytes, str, list[bytes]]
"""(scalar, session_id, canonical IDs) for :attr:`Group.hash_and_blind`."""
ExponentiateTask = tuple[bytes, bytes, int, str]
"""(scalar, concatenated peer points, index of the first point, what to call the points in errors)."""

__all__ = [
    "DEFAULT_ECDH_GROUP",
    "ECDH_GROUPS",
    "FIELD_PRIME",
    "GROUPS",
    "HASH_DOMAIN",
    "MONTGOMERY_A",
    "POINT_BYTES",
    "X25519_HASH_DOMAIN",
    "Group",
    "ecdh_group",
    "hash_to_edwards",
    "hash_to_x25519",
    "montgomery_u",
]


# --------------------------------------------------------------------------------------------------
# The hash into the group (shared) and the birational map
# --------------------------------------------------------------------------------------------------


def _prefix(domain: bytes, session_id: str) -> bytes:
    """domain ‖ len(session_id) ‖ session_id: what SHA-512 hashes before the canonical ID bytes."""
    session = session_id.encode("utf-8")
    return domain + len(session).to_bytes(2, "big") + session


def _edwards_encoder(session_id: str) -> Callable[[bytes], bytes]:
    """x ↦ F(d[:32]) + F(d[32:]): RFC 9380 §3 ``hash_to_curve`` over libsodium's Elligator 2."""
    prefix, sha512 = _prefix(HASH_DOMAIN, session_id), hashlib.sha512
    from_uniform, add = sodium.crypto_core_ed25519_from_uniform, sodium.crypto_core_ed25519_add

    def encode(data: bytes) -> bytes:
        digest = sha512(prefix + data).digest()
        return add(from_uniform(digest[:32]), from_uniform(digest[32:]))

    return encode


def hash_to_edwards(session_id: str, data: bytes) -> bytes:
    """The edwards25519 group's H(x) (module docstring)."""
    return _edwards_encoder(session_id)(data)


def montgomery_u(point: bytes) -> bytes:
    """u = (1 + y) / (1 - y) mod p of a compressed edwards25519 point (RFC 7748 §4.1), 32 bytes LE.

    Raises
    ------
    ZeroDivisionError
        For the identity (y = 1), which the birational map sends to the point at infinity.
    """
    y = int.from_bytes(point, "little") & _Y_MASK
    return ((1 + y) * gmpy2.invert(1 - y, _PRIME) % _PRIME).to_bytes(POINT_BYTES, "little")


def _x25519_encoder(session_id: str) -> Callable[[bytes], bytes]:
    """x ↦ u(F(d[:32])): RFC 9380 ``encode_to_curve`` on edwards25519, then RFC 7748's birational map
    to curve25519's u-coordinate (module docstring)."""
    prefix, sha512 = _prefix(X25519_HASH_DOMAIN, session_id), hashlib.sha512
    from_uniform = sodium.crypto_core_ed25519_from_uniform
    return lambda data: montgomery_u(from_uniform(sha512(prefix + data).digest()[:32]))


def hash_to_x25519(session_id: str, data: bytes) -> bytes:
    """The X25519 group's H(x) (module docstring)."""
    return _x25519_encoder(session_id)(data)


# --------------------------------------------------------------------------------------------------
# X25519 (RFC 7748, OpenSSL through cryptography)
# --------------------------------------------------------------------------------------------------


def _x25519_scalar() -> bytes:
    """32 secret random bytes; X25519 clamps them to 2^254 + 8·k' (RFC 7748 §5, decodeScalar25519)."""
    return secrets.token_bytes(POINT_BYTES)


def _x25519_multiplier(scalar: bytes) -> Callable[[bytes], bytes]:
    """u ↦ X25519(scalar, u) (RFC 7748 §5) with the key loaded once; OpenSSL raises ``ValueError`` on
    the all-zero output (RFC 7748 §6.1) and checks nothing else."""
    exchange = X25519PrivateKey.from_private_bytes(scalar).exchange
    load = X25519PublicKey.from_public_bytes
    return lambda point: exchange(load(point))


def _x25519_check(point: bytes) -> str | None:
    """Why the 32-byte ``point`` is refused before X25519, or ``None``: it must be a canonical
    u-coordinate (u < p; X25519 would silently mask or reduce it, RFC 7748 §5) of a point of curve25519
    rather than of its twist (u^3 + A u^2 + u not a non-square mod p: Legendre symbol ≠ -1)."""
    u = int.from_bytes(point, "little")
    if u >= FIELD_PRIME:
        return "is not a canonical u-coordinate (u >= 2^255 - 19)"
    if gmpy2.jacobi(u * (u * u + MONTGOMERY_A * u + 1) % _PRIME, _PRIME) < 0:
        return "is not on curve25519 (it lies on the quadratic twist)"
    return None


# --------------------------------------------------------------------------------------------------
# edwards25519 (libsodium through PyNaCl)
# --------------------------------------------------------------------------------------------------


def _edwards_scalar() -> bytes:
    """A secret scalar uniform in [1, L): 64 random bytes reduced modulo L (bias below 2^-259)."""
    while True:
        scalar = sodium.crypto_core_ed25519_scalar_reduce(secrets.token_bytes(64))
        if any(scalar):
            return scalar


def _edwards_multiplier(scalar: bytes) -> Callable[[bytes], bytes]:
    """point ↦ point^scalar by ``crypto_scalarmult_ed25519_noclamp``, which raises
    ``nacl.exceptions.RuntimeError`` on a point outside the prime-order subgroup."""
    return functools.partial(sodium.crypto_scalarmult_ed25519_noclamp, scalar)


# --------------------------------------------------------------------------------------------------
# The groups, their two hot loops, and the registry
# --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Group:
    """One group of the ECDH backend: its name and operations (module docstring), and the two hot loops
    over them. Pickles as its name (:meth:`__reduce__`): the pool's workers look the group up in
    :data:`GROUPS`."""

    name: str
    random_scalar: Callable[[], bytes]
    """A fresh secret scalar (32 bytes)."""
    encoder: Callable[[str], Callable[[bytes], bytes]]
    """session_id ↦ the hash into the group of canonical ID bytes, as the hot loops call it (the
    primitive whose cost the benchmark's floor measures)."""
    multiplier: Callable[[bytes], Callable[[bytes], bytes]]
    """scalar ↦ the library's multiplication of one point by it, as the hot loops call it (unchecked;
    the primitive whose cost the benchmark's floor measures)."""
    check: Callable[[bytes], str | None] | None
    """point ↦ why a received point is refused before the multiplication, or ``None`` if it may be
    multiplied; ``None`` when the multiplication checks everything itself."""
    refused: type[Exception]
    """What the multiplication raises on a point it refuses."""
    refusal: str
    """Why, as :meth:`exponentiate`'s error states it."""
    point_label: str
    """What precedes a point's hex value in the errors (``"u = "`` for a u-coordinate)."""

    def __reduce__(self) -> tuple[Callable[[str], Group], tuple[str]]:
        if GROUPS.get(self.name) is not self:
            raise pickle.PicklingError(f"only the groups of GROUPS pickle (by name), not {self!r}")
        return ecdh_group, (self.name,)

    def hash_and_blind(self, task: BlindTask) -> bytes:
        """The blinding hot loop: H(x)^scalar for each canonical ID of a slice, as concatenated 32-byte
        points in input order."""
        scalar, session_id, canonical = task
        multiply = self.multiplier(scalar)
        encode = self.encoder(session_id)
        return b"".join([multiply(encode(data)) for data in canonical])

    def exponentiate(self, task: ExponentiateTask) -> bytes:
        """The checked hot loop on the peer's points: point^scalar for each 32-byte point of ``blob``,
        each first checked by :attr:`check`, then by the multiplication itself.

        Raises
        ------
        PSIError
            Naming the first refused point (``offset`` + its index in ``blob``), its value and why.
        """
        scalar, blob, offset, what = task
        multiply, check, refused = self.multiplier(scalar), self.check, self.refused
        out = []
        for start in range(0, len(blob), POINT_BYTES):
            point = blob[start : start + POINT_BYTES]
            reason = check(point) if check else None
            if reason is None:
                try:
                    out.append(multiply(point))
                    continue
                except refused:
                    reason = self.refusal
            index = offset + start // POINT_BYTES
            raise PSIError(f"{what}: point {index} ({self.point_label}{point.hex()}) {reason}")
        return b"".join(out)


GROUPS: dict[str, Group] = {
    "x25519": Group(
        "x25519",
        _x25519_scalar,
        _x25519_encoder,
        _x25519_multiplier,
        check=_x25519_check,
        refused=ValueError,  # OpenSSL's all-zero output
        refusal="is of small order (X25519 gives the all-zero output, RFC 7748 §6.1)",
        point_label="u = ",
    ),
    "edwards25519": Group(
        "edwards25519",
        _edwards_scalar,
        _edwards_encoder,
        _edwards_multiplier,
        check=None,  # crypto_scalarmult_ed25519_noclamp checks the prime-order subgroup itself
        refused=nacl.exceptions.RuntimeError,
        refusal=(
            "is not a valid point of the prime-order edwards25519 group (non-canonical, off the curve, of "
            "small order or with a small-order component)"
        ),
        point_label="",
    ),
}
"""Every group of :data:`protocol.psi.ECDH_GROUPS`, by name."""


def ecdh_group(name: str) -> Group:
    """The group called ``name``.

    Raises
    ------
    ValueError
        On a name outside :data:`protocol.psi.ECDH_GROUPS`.
    """
    if name not in ECDH_GROUPS:
        raise ValueError(f"ECDH group must be one of {ECDH_GROUPS}, got {name!r}")
    return GROUPS[name]
