"""IDs for the PSI: canonical bytes, salted hashing into bins, the canonical order, the public degree.

Hashing into bins and padding every bin to one public degree follow Freedman, Nissim, Pinkas,
"Efficient Private Matching and Set Intersection", EUROCRYPT 2004, LNCS 3027 ("FNP 2004"): each ID
is evaluated only on the polynomial of its own bin, and bins are padded to a common degree so that the
polynomials hide the bin loads. The overflow bound that fixes the degree and the cost model that picks
B are this project's (``docs/psi.md``, "Protocol" and "Speed").

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
import math
import numbers
import warnings
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from protocol.psi import DEFAULT_ID_BITS, PRECOMPUTED_WEIGHT, PSIError

Identifier = str | int
DuplicatePolicy = Literal["reject", "keep_first"]

MIN_ID_BITS, MAX_ID_BITS = 32, 128
DEFAULT_OVERFLOW_BITS = 40
"""The public degree M bounds the probability that any bin overflows by 2^-40 (``docs/psi.md``,
"Soundness")."""
SALT_BYTES = 16
CANONICAL_ORDER_DOMAIN = b"flwr-privkit/psi/canonical-order/v1"
COEFFICIENT_TO_HORNER_COST = 8.0
"""Measured on the project machines: one coefficient encryption (CRT randomness, about 2.7 ms at 2048
bits) costs about eight Horner steps (ciphertext ^ 64-bit scalar, about 0.34 ms)."""
_LAMBDA_GRID = (0.25, 0.5, 0.75, 1, 1.5, 2, 3, 4, 6, 8, 10, 12, 16, 24, 32, 48, 64)

__all__ = [
    "CANONICAL_ORDER_DOMAIN",
    "COEFFICIENT_TO_HORNER_COST",
    "DEFAULT_ID_BITS",
    "DEFAULT_OVERFLOW_BITS",
    "MAX_ID_BITS",
    "MIN_ID_BITS",
    "PRECOMPUTED_WEIGHT",
    "SALT_BYTES",
    "Alignment",
    "DuplicatePolicy",
    "Identifier",
    "PreparedIds",
    "canonical_id_bytes",
    "canonical_order",
    "choose_bins",
    "hash_id",
    "id_from_canonical_bytes",
    "ids_digest",
    "make_alignment",
    "order_key",
    "padded_degree",
    "prepare_ids",
]

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
        if not identifier:
            raise ValueError("string IDs must not be empty")
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


def check_not_one_string(ids: object) -> None:
    """Refuse a single ``str``/``bytes`` where a collection of IDs is expected.

    Raises
    ------
    TypeError
        If ``ids`` is a ``str`` or ``bytes`` (iterating it would give its characters as IDs).
    """
    if isinstance(ids, str | bytes):
        raise TypeError(f"ids must be a sequence of IDs, got one {type(ids).__name__} ({ids[:20]!r}); a "
                        "string would be read as its characters")


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
    check_not_one_string(ids)
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
    if num_items < 0:
        raise ValueError(f"num_items must be >= 0, got {num_items}")
    if num_bins < 1:
        raise ValueError(f"num_bins must be >= 1, got {num_bins}")
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
    if receiver_size < 0:
        raise ValueError(f"receiver_size must be >= 0, got {receiver_size}")
    if sender_size is not None and sender_size < 0:
        raise ValueError(f"sender_size must be >= 0, got {sender_size}")
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
# What a party holds after alignment
# --------------------------------------------------------------------------------------------------


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
