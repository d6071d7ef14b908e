"""Both roles of the PSI in one process: :func:`align` and :func:`intersect` (either backend).

The Paillier FNP backend runs a :class:`~clients.psi.fnp_receiver.PSIReceiver` and a
:class:`~clients.psi.fnp_sender.PSISender` step by step (the larger set receives); the ECDH backend is
:func:`clients.psi.ecdh.align_ecdh`. Both end with the same :class:`~clients.psi.ids.Alignment` on each
side. The protocol, its leakage and its costs: the package docstring of :mod:`clients.psi` and
``docs/psi.md``.
"""

from __future__ import annotations

from collections.abc import Iterable

from clients.psi.ecdh import align_ecdh
from clients.psi.fnp_receiver import PSIReceiver
from clients.psi.fnp_sender import PSISender
from clients.psi.ids import Alignment, DuplicatePolicy, Identifier, check_not_one_string
from clients.psi.pool import process_pool
from protocol.psi import (
    DEFAULT_CHUNK_BYTES,
    DEFAULT_ECDH_GROUP,
    DEFAULT_ID_BITS,
    DEFAULT_KEY_BITS,
    PSI_BACKENDS,
)

__all__ = ["align", "intersect"]


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
    ecdh_group: str = DEFAULT_ECDH_GROUP,
) -> tuple[Alignment, Alignment]:
    """Run the whole protocol between two ID lists in this process; return both parties' alignments.

    Paillier: the larger set takes the receiver role (the sender's IDs are the expensive side,
    ``docs/psi.md``, "Speed"). ECDH (:func:`clients.psi.ecdh.align_ecdh`): ``a`` receives; the
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
    ecdh_group : {"x25519", "edwards25519"} (default: "x25519")
        The ECDH backend's group (:mod:`clients.psi.ecdh_groups`).

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
        return align_ecdh(
            ids_a, ids_b, workers=workers, duplicates=duplicates, chunk_bytes=chunk_bytes, group=ecdh_group
        )
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
