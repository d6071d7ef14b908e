"""Server side of the ID-alignment phase: PSI between the label holder and each passive party.

:func:`run_alignment` drives the ``query.psi_*`` handlers that every party registers
(``clients.psi.handlers``) through a Flower ``Grid`` before the first vertical round, speaking only the
wire vocabulary of :mod:`protocol.psi`. Two backends, one interface (``docs/psi.md``):

- ``paillier`` (default): the private set intersection of Freedman, Nissim and Pinkas (EUROCRYPT
  2004) over Paillier encryption (EUROCRYPT 1999) with hashing into bins. The server relays the
  receiver's public key, encrypted coefficients and encrypted replies.
- ``ecdh``: Diffie–Hellman PSI (Meadows 1986; Huberman, Franklin, Hogg 1999) over X25519 (RFC 7748;
  ``ecdh_group="edwards25519"``: the prime-order group of edwards25519), about 200× less CPU per ID.
  The server relays blinded points H(x)^a, H(y)^b and H(x)^(ab).

Either way it also relays reply positions (indices into a party's secret shuffle) and never holds a
private key or scalar, a plaintext ID or a hashed ID; what it learns is what :class:`AlignmentReport`
shows — set sizes, the public parameters B and M (Paillier), the size of each intermediate and of the
final intersection, byte counts and timings.

Multi-party (``docs/psi.md``, "Multi-party alignment"): the label holder intersects with each passive
party in turn, its own set shrinking to the running intersection; then it orders the final set
canonically and the server hands every passive party its reply positions in that order, so every
party stores the same IDs in the same order. The label holder thereby learns each running intersection
(X ∩ Y_1, X ∩ Y_1 ∩ Y_2, …); a passive party learns only the final set.

Faults: an error reply, a party that does not answer within ``timeout`` or a malformed reply raises
:class:`AlignmentError` naming the party and the step, after the server sent ``psi_abort`` to every
party (which clears the staging and undoes a commit of this alignment). Nodes write their stored
alignment only in the final ``psi_commit`` step.

The relay of one message per party and its faults are :mod:`strategies.alignment_relay`.
"""

from __future__ import annotations

import logging
import secrets
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Literal

from flwr.app import ConfigRecord, Message, RecordDict
from flwr.serverapp import Grid

from protocol.psi import (
    ALIGNMENT_ID_KEY,
    CONTENT_KEY,
    DEFAULT_CHUNK_BYTES,
    DEFAULT_ECDH_GROUP,
    DEFAULT_ID_BITS,
    DEFAULT_KEY_BITS,
    ECDH_GROUPS,
    PRECOMPUTED_WEIGHT,
    PSI_BACKENDS,
    SESSION_ID_KEY,
    header_fields,
    message_type,
    positions_key,
)
from strategies.alignment_relay import AlignmentError, Config, Relay, reply_field
from strategies.grid_utils import send_and_receive

logger = logging.getLogger(__name__)

RolePolicy = Literal["label_holder", "larger_set"]
Backend = Literal["paillier", "ecdh"]
ABORT_TIMEOUT_S = 30.0


@dataclass(frozen=True)
class PairReport:
    """One pairwise PSI session, as seen by the server (sizes and counts only).

    Paillier: ``seconds`` maps each step to its wall time: ``keygen``; ``setup`` (hashing into bins);
    ``evaluate`` (the receiver encrypts chunk 0 while the sender draws its re-randomisers, then
    encrypts chunk i + 1 while the sender evaluates chunk i); ``respond`` (shuffle); ``decrypt``
    (reply relay and decryption); ``finish``.

    ECDH: ``num_bins`` and ``degree`` are 0; ``coefficient_*`` count the receiver's blinded points
    (relayed twice: to the sender and back exponentiated), ``response_*`` the sender's. ``seconds``:
    ``blind`` (both parties hash and exponentiate their own sets at once), ``exponentiate`` (each raises
    the other's chunks, at once), ``finish``.
    """

    session_id: str
    receiver_node: int
    sender_node: int
    receiver_size: int
    sender_size: int
    num_bins: int
    degree: int
    coefficient_chunks: int
    coefficient_bytes: int
    response_chunks: int
    response_bytes: int
    intersection_size: int
    seconds: dict[str, float] = field(default_factory=dict)
    backend: str = "paillier"


def _step_clock(seconds: dict[str, float]) -> Callable[[str], None]:
    """``lap(step)``: record into ``seconds`` the wall time since the previous lap (or the call)."""
    last = time.monotonic()

    def lap(step: str) -> None:
        nonlocal last
        now = time.monotonic()
        seconds[step] = now - last
        last = now

    return lap


@dataclass(frozen=True)
class AlignmentReport:
    """Outcome of :func:`run_alignment`.

    Attributes
    ----------
    alignment_id : str
        Stored with every party's alignment (``Alignment.alignment_id``).
    label_holder : int
        Node ID of the label holder.
    set_sizes : dict[int, int]
        Distinct IDs per party (node ID → size).
    pairs : tuple[PairReport, ...]
        The pairwise sessions in order.
    aligned_size : int
        Size of the final intersection that every party stored.
    bytes_relayed : int
        Ciphertext and position bytes the server relayed.
    wall_s : float
        Wall time of the whole phase.
    backend : str
        ``"paillier"`` or ``"ecdh"``.
    """

    alignment_id: str
    label_holder: int
    set_sizes: dict[int, int]
    pairs: tuple[PairReport, ...]
    aligned_size: int
    bytes_relayed: int
    wall_s: float
    backend: str = "paillier"


def run_alignment(
    grid: Grid,
    *,
    receiver_node: int,
    sender_nodes: Sequence[int],
    timeout: float,
    key_bits: int = DEFAULT_KEY_BITS,
    id_bits: int = DEFAULT_ID_BITS,
    chunk_bytes: int = DEFAULT_CHUNK_BYTES,
    precompute_weight: float = PRECOMPUTED_WEIGHT,
    roles: RolePolicy = "label_holder",
    allow_empty: bool = False,
    backend: Backend = "paillier",
    ecdh_group: str = DEFAULT_ECDH_GROUP,
) -> AlignmentReport:
    """Align the parties' IDs by PSI; every party commits the same canonical alignment.

    Parameters
    ----------
    grid : Grid
        The ServerApp's grid.
    receiver_node : int
        Node ID of the label holder (the active party). It receives every intersection.
    sender_nodes : Sequence[int]
        Node IDs of the passive parties, intersected in this order.
    timeout : float
        Seconds to wait for the replies of each step (one message exchange). The heavy Paillier steps
        are ``psi_setup`` (about 20 ms per ID of the receiver with 2048-bit keys on one core) and
        ``psi_evaluate`` (about 30 ms per ID of the sender); the heavy ECDH steps ``psi_ecdh_blind``
        (about 0.08 ms per own ID over X25519, 0.2 ms over edwards25519, on one core) and
        ``psi_ecdh_exponentiate`` (about 0.05 ms, resp. 0.15 ms, per point of a chunk); set it
        accordingly.
    key_bits : int (default: 2048)
        Paillier modulus size. Nodes refuse < 2048 unless their handlers allow insecure test keys.
        Unused by ``ecdh``.
    id_bits : int (default: 64)
        Hashed-ID width (false-match probability ≈ |X|·|Y| / 2^id_bits). Unused by ``ecdh`` (its
        points are 256-bit: no false match in practice).
    chunk_bytes : int (default: 4 MiB)
        Bound on the ciphertext (or point) payload of each message.
    precompute_weight : float (default: 0.15)
        How the receiver weighs its precomputable randomness against the sender's online Horner
        steps when it chooses the bins (``clients.psi.ids.choose_bins``); 1.0 minimises total work.
        Unused by ``ecdh``.
    roles : {"label_holder", "larger_set"} (default: "label_holder")
        Who plays the FNP receiver in each pair. ``"label_holder"``: always the label holder.
        ``"larger_set"``: the party with the larger set (faster: the sender's IDs are the expensive
        side), but a passive receiver then learns the running intersection, not just the final set.
    allow_empty : bool (default: False)
        Accept an empty ID set or an empty intersection (then every party stores an empty
        alignment) instead of raising.
    backend : {"paillier", "ecdh"} (default: "paillier")
        The PSI protocol (see the module docstring). Both end in the same committed alignment.
    ecdh_group : {"x25519", "edwards25519"} (default: "x25519")
        The group of the ECDH backend, sent to both parties of every session (``docs/psi.md``).

    Returns
    -------
    AlignmentReport
        Sizes, counts and timings; no IDs.

    Raises
    ------
    ValueError
        On invalid arguments (no passive party, repeated nodes, unknown ``roles``).
    AlignmentError
        If a party is not connected, replies with an error, does not reply within ``timeout``, or
        sends a malformed reply; or on an empty set / intersection without ``allow_empty``. All
        parties were sent ``psi_abort`` first.
    """
    parties = [receiver_node, *sender_nodes]
    if not sender_nodes:
        raise ValueError("sender_nodes must name at least one passive party")
    if len(set(parties)) != len(parties):
        raise ValueError(f"receiver_node and sender_nodes must be distinct nodes, got {parties}")
    if roles not in ("label_holder", "larger_set"):
        raise ValueError(f"roles must be 'label_holder' or 'larger_set', got {roles!r}")
    if backend not in PSI_BACKENDS:
        raise ValueError(f"backend must be one of {PSI_BACKENDS}, got {backend!r}")
    if ecdh_group not in ECDH_GROUPS:
        raise ValueError(f"ecdh_group must be one of {ECDH_GROUPS}, got {ecdh_group!r}")
    if timeout <= 0:
        raise ValueError(f"timeout must be > 0, got {timeout}")
    if not 0.0 < precompute_weight <= 1.0:
        raise ValueError(f"precompute_weight must be in (0, 1], got {precompute_weight}")
    started = time.monotonic()
    relay = Relay(grid, secrets.token_hex(16), timeout)
    try:
        connected = set(grid.get_node_ids())
        for node_id in parties:
            if node_id not in connected:
                raise AlignmentError(f"party {node_id} is not connected", step="connect", node_id=node_id)
        begun = relay.exchange({node_id: ("psi_begin", {}) for node_id in parties})
        sizes = {
            node_id: reply_field(begun[node_id], "size", int, "psi_begin", node_id) for node_id in parties
        }
        for node_id in parties:
            if sizes[node_id] == 0 and not allow_empty:
                raise AlignmentError(f"party {node_id} has no IDs", step="psi_begin", node_id=node_id)
        pairs = []
        running = sizes[receiver_node]
        for peer in sender_nodes:
            leader_receives = roles == "label_holder" or running >= sizes[peer]
            pair_sizes = {receiver_node: running, peer: sizes[peer]}
            if backend == "ecdh":
                pair = _run_ecdh_pair(
                    relay,
                    leader=receiver_node,
                    peer=peer,
                    leader_receives=leader_receives,
                    sizes=pair_sizes,
                    chunk_bytes=chunk_bytes,
                    group=ecdh_group,
                )
            else:
                pair = _run_pair(
                    relay,
                    leader=receiver_node,
                    peer=peer,
                    leader_receives=leader_receives,
                    sizes=pair_sizes,
                    key_bits=key_bits,
                    id_bits=id_bits,
                    chunk_bytes=chunk_bytes,
                    precompute_weight=precompute_weight,
                )
            pairs.append(pair)
            running = pair.intersection_size
            if running == 0 and not allow_empty:
                finish = "psi_ecdh_finish" if backend == "ecdh" else "psi_finish"
                raise AlignmentError(
                    f"empty intersection after the session with party {peer}", step=finish, node_id=peer
                )
        aligned = _commit_everywhere(relay, receiver_node, pairs)
    except Exception as exc:
        _abort_everywhere(relay, parties)
        if isinstance(exc, AlignmentError):
            raise
        raise AlignmentError(f"alignment failed: {exc}", step="server") from exc
    return AlignmentReport(
        alignment_id=relay.alignment_id,
        label_holder=receiver_node,
        set_sizes=sizes,
        pairs=tuple(pairs),
        aligned_size=aligned,
        bytes_relayed=relay.bytes_relayed,
        wall_s=time.monotonic() - started,
        backend=backend,
    )


def _run_pair(
    relay: Relay,
    *,
    leader: int,
    peer: int,
    leader_receives: bool,
    sizes: dict[int, int],
    key_bits: int,
    id_bits: int,
    chunk_bytes: int,
    precompute_weight: float,
) -> PairReport:
    """One FNP session between the label holder and one passive party."""
    receiver, sender = (leader, peer) if leader_receives else (peer, leader)
    session_id = secrets.token_hex(16)
    session = {SESSION_ID_KEY: session_id}
    seconds: dict[str, float] = {}
    lap = _step_clock(seconds)

    keys = relay.one(
        receiver,
        "psi_keygen",
        {
            **session,
            "key_bits": key_bits,
            "id_bits": id_bits,
            "peer_size": sizes[sender],
            "precompute_weight": float(precompute_weight),
        },
    )
    modulus = reply_field(keys, "modulus", bytes, "psi_keygen", receiver)
    lap("keygen")
    header = relay.one(receiver, "psi_setup", {**session, "chunk_bytes": chunk_bytes})
    num_chunks = reply_field(header, "num_chunks", int, "psi_setup", receiver)
    if reply_field(header, SESSION_ID_KEY, str, "psi_setup", receiver) != session_id or num_chunks < 1:
        raise AlignmentError(
            f"party {receiver} sent a malformed psi_setup reply", step="psi_setup", node_id=receiver
        )
    lap("setup")

    # The receiver encrypts chunk 0 while the sender draws its re-randomisers; then the receiver
    # encrypts chunk i + 1 while the sender evaluates chunk i.
    first = relay.exchange(
        {
            receiver: ("psi_coefficients", {**session, "index": 0}),
            sender: ("psi_precompute", {**session, "modulus": modulus}),
        }
    )
    chunk = reply_field(first[receiver], "chunk", bytes, "psi_coefficients", receiver)
    coefficient_bytes = 0
    for index in range(num_chunks):
        evaluate: Config = {**session, "index": index, "chunk": chunk}
        if index == 0:
            evaluate.update(header_fields(header))
        requests: dict[int, tuple[str, Config]] = {sender: ("psi_evaluate", evaluate)}
        if index + 1 < num_chunks:
            requests[receiver] = ("psi_coefficients", {**session, "index": index + 1})
        coefficient_bytes += len(chunk)
        replies = relay.exchange(requests)
        if index + 1 < num_chunks:
            chunk = reply_field(replies[receiver], "chunk", bytes, "psi_coefficients", receiver)
    lap("evaluate")

    responded = relay.one(sender, "psi_respond", {**session, "chunk_bytes": chunk_bytes})
    count = reply_field(responded, "count", int, "psi_respond", sender)
    response_chunks = reply_field(responded, "num_chunks", int, "psi_respond", sender)
    lap("respond")

    response_bytes = 0
    if response_chunks:
        reply = relay.one(sender, "psi_responses", {**session, "index": 0})
        chunk = reply_field(reply, "chunk", bytes, "psi_responses", sender)
    for index in range(response_chunks):
        requests = {receiver: ("psi_decrypt", {**session, "index": index, "count": count, "chunk": chunk})}
        if index + 1 < response_chunks:
            requests[sender] = ("psi_responses", {**session, "index": index + 1})
        response_bytes += len(chunk)
        replies = relay.exchange(requests)
        if index + 1 < response_chunks:
            chunk = reply_field(replies[sender], "chunk", bytes, "psi_responses", sender)
    lap("decrypt")

    size = _finish_pair(relay, receiver, sender, leader_receives, "psi_finish", {**session, "count": count})
    lap("finish")
    relay.bytes_relayed += coefficient_bytes + response_bytes
    return PairReport(
        session_id=session_id,
        receiver_node=receiver,
        sender_node=sender,
        receiver_size=sizes[receiver],
        sender_size=sizes[sender],
        num_bins=reply_field(header, "num_bins", int, "psi_setup", receiver),
        degree=reply_field(header, "degree", int, "psi_setup", receiver),
        coefficient_chunks=num_chunks,
        coefficient_bytes=coefficient_bytes,
        response_chunks=response_chunks,
        response_bytes=response_bytes,
        intersection_size=size,
        seconds=seconds,
    )


def _finish_pair(
    relay: Relay, receiver: int, sender: int, leader_receives: bool, action: str, fields: Config
) -> int:
    """The receiver closes the session; if the sender is the label holder, it gets the matched positions."""
    finished = relay.one(
        receiver,
        action,
        {**fields, "receiver_is_leader": leader_receives, "sender_is_leader": not leader_receives},
    )
    size = reply_field(finished, "size", int, action, receiver)
    if not leader_receives:
        positions = reply_field(finished, "positions", list, action, receiver)
        relay.bytes_relayed += 8 * len(positions)
        relay.one(sender, "psi_matched", {SESSION_ID_KEY: fields[SESSION_ID_KEY], "positions": positions})
    return size


def _run_ecdh_pair(
    relay: Relay,
    *,
    leader: int,
    peer: int,
    leader_receives: bool,
    sizes: dict[int, int],
    chunk_bytes: int,
    group: str,
) -> PairReport:
    """One DH-PSI session between the label holder and one passive party.

    Both parties blind their sets at once; then, chunk by chunk, each raises the other's points to its
    scalar at once, and the sender's results for the receiver's points go back to the receiver.
    """
    receiver, sender = (leader, peer) if leader_receives else (peer, leader)
    session_id = secrets.token_hex(16)
    session = {SESSION_ID_KEY: session_id}
    seconds: dict[str, float] = {}
    lap = _step_clock(seconds)

    roles = {receiver: ("receiver", sender), sender: ("sender", receiver)}
    blinded = relay.exchange(
        {
            node: (
                "psi_ecdh_blind",
                {
                    **session,
                    "role": role,
                    "group": group,
                    "peer_size": sizes[other],
                    "chunk_bytes": chunk_bytes,
                },
            )
            for node, (role, other) in roles.items()
        }
    )
    chunks: dict[int, int] = {}
    for node in roles:
        count = reply_field(blinded[node], "count", int, "psi_ecdh_blind", node)
        chunks[node] = reply_field(blinded[node], "num_chunks", int, "psi_ecdh_blind", node)
        if count != sizes[node] or chunks[node] < (1 if count else 0):
            raise AlignmentError(
                f"party {node} blinded {count} IDs in {chunks[node]} chunks, announced {sizes[node]} IDs",
                step="psi_ecdh_blind",
                node_id=node,
            )
    lap("blind")

    sent = {receiver: 0, sender: 0}
    for index in range(max(chunks.values())):
        active = [node for node in roles if index < chunks[node]]
        fetched = relay.exchange({node: ("psi_ecdh_points", {**session, "index": index}) for node in active})
        work: dict[int, tuple[str, Config]] = {}
        for node in active:
            chunk = reply_field(fetched[node], "chunk", bytes, "psi_ecdh_points", node)
            sent[node] += len(chunk)
            work[roles[node][1]] = ("psi_ecdh_exponentiate", {**session, "index": index, "chunk": chunk})
        done = relay.exchange(work)
        if receiver in active:
            doubled = reply_field(done[sender], "chunk", bytes, "psi_ecdh_exponentiate", sender)
            sent[receiver] += len(doubled)
            relay.one(receiver, "psi_ecdh_doubled", {**session, "index": index, "chunk": doubled})
    lap("exponentiate")

    size = _finish_pair(relay, receiver, sender, leader_receives, "psi_ecdh_finish", session)
    lap("finish")
    relay.bytes_relayed += sent[receiver] + sent[sender]
    return PairReport(
        session_id=session_id,
        receiver_node=receiver,
        sender_node=sender,
        receiver_size=sizes[receiver],
        sender_size=sizes[sender],
        num_bins=0,
        degree=0,
        coefficient_chunks=chunks[receiver],
        coefficient_bytes=sent[receiver],
        response_chunks=chunks[sender],
        response_bytes=sent[sender],
        intersection_size=size,
        seconds=seconds,
        backend="ecdh",
    )


def _commit_everywhere(relay: Relay, leader: int, pairs: Iterable[PairReport]) -> int:
    """Order at the label holder, prepare at the others, then commit everywhere (two phases)."""
    ordered = relay.one(leader, "psi_order", {})
    size = reply_field(ordered, "size", int, "psi_order", leader)
    prepare: dict[int, tuple[str, Config]] = {}
    for pair in pairs:
        peer = pair.sender_node if pair.receiver_node == leader else pair.receiver_node
        positions = reply_field(ordered, positions_key(pair.session_id), list, "psi_order", leader)
        if len(positions) != size:
            raise AlignmentError(
                f"party {leader} sent a malformed psi_order reply", step="psi_order", node_id=leader
            )
        relay.bytes_relayed += 8 * len(positions)
        prepare[peer] = ("psi_prepare", {SESSION_ID_KEY: pair.session_id, "positions": positions})
    prepared = relay.exchange(prepare)
    for node_id, reply in prepared.items():
        if reply_field(reply, "size", int, "psi_prepare", node_id) != size:
            raise AlignmentError(
                f"party {node_id} prepared a different set size", step="psi_prepare", node_id=node_id
            )
    relay.exchange({node_id: ("psi_commit", {}) for node_id in (leader, *prepare)})
    return size


def _abort_everywhere(relay: Relay, parties: Sequence[int]) -> None:
    """Best effort: tell every party to drop this alignment's staging (and undo its commit)."""
    messages = [
        Message(
            RecordDict({CONTENT_KEY: ConfigRecord({ALIGNMENT_ID_KEY: relay.alignment_id})}),
            dst_node_id=node_id,
            message_type=message_type("psi_abort"),
        )
        for node_id in parties
    ]
    try:
        replies = list(send_and_receive(relay.grid, messages, timeout=min(relay.timeout, ABORT_TIMEOUT_S)))
    except Exception as exc:
        logger.warning("psi_abort could not be sent: %s", exc)
        return
    acknowledged = {reply.metadata.src_node_id for reply in replies if not reply.has_error()}
    for node_id in parties:
        if node_id not in acknowledged:
            logger.warning(
                "psi_abort not acknowledged by party %s; its staging stays until the next alignment", node_id
            )
