"""A party's side of the PSI alignment phase, as Flower ``query.psi_*`` message handlers.

:func:`register_psi_handlers` adds the handlers to a party's ``ClientApp``; the server drives them
with :func:`strategies.alignment.run_alignment`. After a successful alignment every party holds, in
``context.state[ALIGNMENT_STATE_KEY]``, the aligned IDs in the canonical order shared by all parties and
the map to its own rows; :func:`get_alignment` reads it back.

Node-local state (``context.state``, a ``RecordDict`` that persists per node for the run)
-----------------------------------------------------------------------------------------
- ``"psi.alignment"`` (:data:`ALIGNMENT_STATE_KEY`): the committed alignment (``ConfigRecord``):
  ``alignment_id``, ``ids`` (canonical ID bytes, :func:`clients.psi.ids.canonical_id_bytes`), ``rows``,
  ``num_rows``, ``ids_digest``. Written only by the final ``psi_commit`` step.
- ``"psi.previous"``: the alignment that ``psi_commit`` replaced, restored by ``psi_abort``.
- ``"psi.staging"``: alignment-wide working state (alignment id, digest of the party's IDs, the
  running set of the label holder, per-session maps from reply positions to the party's IDs).
- ``"psi.session"``: the current pairwise session, with its ``role`` and ``backend`` (the receiver's
  private key or a party's secret ECDH scalar stays here: it is never put in a reply).
- ``"psi.pending"``: the alignment prepared by ``psi_order`` / ``psi_prepare``, awaiting commit.

Everything but ``psi.alignment`` and ``psi.previous`` is cleared by ``psi_commit``, by ``psi_abort``
and by the next ``psi_begin``. A handler that raises leaves ``context.state`` as it was (Flower keeps
the previous context on an error reply). Error messages travel to the server, so they name rows,
counts and steps, never an ID.

Handlers (message type ``query.<action>``; every message carries the ``alignment_id``)
----------------------------------------------------------------------------------------
``psi_begin`` (all parties) → set size; ``psi_keygen`` / ``psi_setup`` / ``psi_coefficients`` /
``psi_decrypt`` / ``psi_finish`` (the FNP receiver of a pairwise session); ``psi_precompute`` /
``psi_evaluate`` / ``psi_respond`` / ``psi_responses`` (the FNP sender); ``psi_ecdh_*`` (a pairwise
session of the ECDH backend, :mod:`clients.psi.ecdh_handlers`); ``psi_matched`` (a sender that is the
label holder, either backend);
``psi_order`` (the label holder: canonical order of the final set, positions for every peer);
``psi_prepare`` (the other parties); ``psi_commit`` / ``psi_abort`` (all parties). The message types,
record keys and fields of every action are the wire vocabulary in :mod:`protocol.psi`, shared with the
server.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from flwr.app import ConfigRecord, Context, Message, RecordDict
from flwr.clientapp import ClientApp

from clients.psi.ecdh_handlers import ECDH_HANDLERS
from clients.psi.fnp_receiver import PSIReceiver
from clients.psi.fnp_sender import PSISender
from clients.psi.ids import (
    Alignment,
    DuplicatePolicy,
    PreparedIds,
    canonical_order,
    id_from_canonical_bytes,
    make_alignment,
    prepare_ids,
)
from clients.psi.node_state import (
    ALIGNMENT_STATE_KEY,
    PENDING_STATE_KEY,
    PREVIOUS_STATE_KEY,
    SESSION_STATE_KEY,
    STAGING_STATE_KEY,
    WORKERS_NODE_CONFIG_KEY,
    Config,
    PartyPolicy,
    checked_ids,
    clear_staging,
    pair_map,
    record_pair,
    session_record,
    staging_record,
    subset_ids,
)
from clients.psi.pool import process_pool, resolve_workers
from clients.psi.state_codec import int_bytes
from protocol.psi import (
    ACTIONS,
    ALIGNMENT_ID_KEY,
    CONTENT_KEY,
    SESSION_ID_KEY,
    PSIError,
    SessionMismatchError,
    SetupHeader,
    positions_key,
    require_field,
    strip_header_fields,
)

__all__ = [
    "ACTIONS",
    "ALIGNMENT_STATE_KEY",
    "CONTENT_KEY",
    "PENDING_STATE_KEY",
    "PREVIOUS_STATE_KEY",
    "SESSION_STATE_KEY",
    "STAGING_STATE_KEY",
    "WORKERS_NODE_CONFIG_KEY",
    "AlignmentNotFoundError",
    "get_alignment",
    "register_psi_handlers",
]


class AlignmentNotFoundError(LookupError):
    """No committed alignment at this node: run the alignment phase first."""


def get_alignment(context: Context) -> Alignment:
    """The alignment committed at this node by the last successful alignment phase.

    Raises
    ------
    AlignmentNotFoundError
        If no alignment was committed in this run (``context.state`` has no ``"psi.alignment"``).
    """
    if ALIGNMENT_STATE_KEY not in context.state:
        raise AlignmentNotFoundError(
            f"no PSI alignment at this node (context.state has no {ALIGNMENT_STATE_KEY!r}): "
            "run strategies.alignment.run_alignment before the vertical rounds"
        )
    return _alignment_from_record(context.state.config_records[ALIGNMENT_STATE_KEY])


def _alignment_to_record(alignment_id: str, prepared: PreparedIds, indices: Sequence[int]) -> ConfigRecord:
    alignment = make_alignment(alignment_id, prepared, indices)  # checks the canonical order
    return ConfigRecord(
        {
            "alignment_id": alignment.alignment_id,
            "ids": [prepared.canonical[i] for i in indices],
            "rows": list(alignment.rows),
            "num_rows": alignment.num_rows,
            "ids_digest": alignment.ids_digest,
        }
    )


def _alignment_from_record(record: ConfigRecord) -> Alignment:
    return Alignment(
        alignment_id=str(record["alignment_id"]),
        ids=tuple(id_from_canonical_bytes(data) for data in record["ids"]),  # type: ignore[union-attr]
        rows=tuple(record["rows"]),  # type: ignore[arg-type]
        num_rows=int(record["num_rows"]),  # type: ignore[arg-type]
        ids_digest=str(record["ids_digest"]),
    )


def register_psi_handlers(
    app: ClientApp,
    load_ids: Callable[[Context], Sequence[str | int]],
    *,
    workers: int | None = None,
    duplicates: DuplicatePolicy = "reject",
    allow_insecure_key_size: bool = False,
) -> None:
    """Add the party's PSI handlers (``query.psi_*``) to ``app``.

    Parameters
    ----------
    app : ClientApp
        The party's ClientApp (registered with ``@app.query(...)``; it must not use ``client_fn``).
    load_ids : Callable[[Context], Sequence[str | int]]
        Returns the party's IDs, one per data row, in row order (the map in :class:`Alignment`
        refers to these row indices). Called at several steps: it must return the same list each
        time (checked with a digest).
    workers : int, optional
        Processes for the hot loops. Default: ``node_config["psi-workers"]`` if set, else one per core.
    duplicates : {"reject", "keep_first"} (default: "reject")
        Policy for repeated IDs (:func:`clients.psi.ids.prepare_ids`); node-local.
    allow_insecure_key_size : bool (default: False)
        Test-only: let this node generate or accept Paillier keys below 2048 bits. A server cannot
        lower the key size at a node that did not set this.

    Raises
    ------
    ValueError
        If a ``query.psi_*`` handler is already registered on ``app``, ``workers < 1`` or the
        duplicates policy is unknown.
    """
    if workers is not None:
        resolve_workers(workers)
    prepare_ids([], duplicates)  # validates the policy
    party = PartyPolicy(load_ids, workers, duplicates, allow_insecure_key_size)
    for action in ACTIONS:
        app.query(action)(_make_handler(party, _HANDLERS[action]))


def _make_handler(
    party: PartyPolicy, step: Callable[[PartyPolicy, Config, Context], Config]
) -> Callable[[Message, Context], Message]:
    def handler(message: Message, context: Context) -> Message:
        if CONTENT_KEY not in message.content.config_records:
            raise PSIError(f"message has no {CONTENT_KEY!r} ConfigRecord")
        config = dict(message.content.config_records[CONTENT_KEY])
        reply = step(party, config, context)
        return Message(RecordDict({CONTENT_KEY: ConfigRecord(reply)}), reply_to=message)

    return handler


# --------------------------------------------------------------------------------------------------
# Steps
# --------------------------------------------------------------------------------------------------


def _begin(party: PartyPolicy, config: Config, context: Context) -> Config:
    """Start an alignment: validate the IDs, reset the staging, report the set size."""
    alignment_id = require_field(config, ALIGNMENT_ID_KEY, str)
    prepared = party.prepared(context)
    clear_staging(context)
    context.state[STAGING_STATE_KEY] = ConfigRecord(
        {
            "alignment_id": alignment_id,
            "digest": prepared.digest,
            "running": list(range(len(prepared.canonical))),
            "sessions": [],
        }
    )
    return {"size": len(prepared.canonical), "num_rows": prepared.num_rows}


def _keygen(party: PartyPolicy, config: Config, context: Context) -> Config:
    """Receiver: choose B and M, generate the key pair; reply the public modulus."""
    staging = staging_record(context, config)
    prepared = checked_ids(party, context, staging)
    subset = list(staging["running"])  # type: ignore[arg-type]
    receiver = PSIReceiver(
        subset_ids(prepared, subset),
        key_bits=require_field(config, "key_bits", int),
        id_bits=require_field(config, "id_bits", int),
        peer_size=require_field(config, "peer_size", int),
        precompute_weight=require_field(config, "precompute_weight", float),
        session_id=require_field(config, SESSION_ID_KEY, str),
        allow_insecure_key_size=party.allow_insecure_key_size,
    )
    context.state[SESSION_STATE_KEY] = ConfigRecord(
        {"role": "receiver", "subset": subset, **receiver.to_state()}
    )
    return {"modulus": int_bytes(receiver.modulus), "size": len(subset)}


def _setup(party: PartyPolicy, config: Config, context: Context) -> Config:
    """Receiver: hash the IDs into bins; reply the public header (and the number of chunks)."""
    session = session_record(context, config, "receiver", "paillier")
    receiver = PSIReceiver.from_state(session)
    header = receiver.setup(require_field(config, "chunk_bytes", int))
    session.update(receiver.to_state())
    return {**header.to_config(), "num_chunks": header.num_chunks}


def _coefficients(party: PartyPolicy, config: Config, context: Context) -> Config:
    """Receiver: encrypt and return one chunk of coefficients (fresh randomness, nothing stored)."""
    session = session_record(context, config, "receiver", "paillier")
    receiver = PSIReceiver.from_state(session)
    index = require_field(config, "index", int)
    with process_pool(party.pool_size(context)) as pool:
        chunk = receiver.coefficient_chunk(index, pool)
    return {"index": index, "chunk": chunk}


def _precompute(party: PartyPolicy, config: Config, context: Context) -> Config:
    """Sender: check the receiver's public key, draw the re-randomisers (data-independent)."""
    staging = staging_record(context, config)
    prepared = checked_ids(party, context, staging)
    subset = list(staging["running"])  # type: ignore[arg-type]
    sender = PSISender(subset_ids(prepared, subset), allow_insecure_key_size=party.allow_insecure_key_size)
    sender.receive_public_key(int.from_bytes(require_field(config, "modulus", bytes), "big"))
    with process_pool(party.pool_size(context)) as pool:
        sender.precompute(pool)
    context.state[SESSION_STATE_KEY] = ConfigRecord(
        {
            "role": "sender",
            "session_id": require_field(config, SESSION_ID_KEY, str),
            "subset": subset,
            **sender.to_state(),
        }
    )
    return {"size": len(subset)}


def _evaluate(party: PartyPolicy, config: Config, context: Context) -> Config:
    """Sender: evaluate one coefficient chunk (the setup header comes with chunk 0)."""
    session = session_record(context, config, "sender", "paillier")
    sender = PSISender.from_state(session)
    index = require_field(config, "index", int)
    if index == 0:
        header = SetupHeader.from_config(strip_header_fields(config))
        if header.session_id != session["session_id"]:
            raise SessionMismatchError("setup header for another PSI session")
        sender.receive_setup(header)
    with process_pool(party.pool_size(context)) as pool:
        sender.evaluate(str(session["session_id"]), index, require_field(config, "chunk", bytes), pool)
    session.update(sender.to_state())
    return {"index": index}


def _respond(party: PartyPolicy, config: Config, context: Context) -> Config:
    """Sender: shuffle all replies, keep them in chunks; remember the secret shuffle."""
    session = session_record(context, config, "sender", "paillier")
    staging = staging_record(context, config)
    sender = PSISender.from_state(session)
    responses = sender.respond(require_field(config, "chunk_bytes", int))
    session.update(sender.to_state())
    subset = list(session["subset"])  # type: ignore[arg-type]
    positions = range(responses.count)
    record_pair(staging, responses.session_id, positions, [subset[i] for i in sender.indices_at(positions)])
    return {"count": responses.count, "num_chunks": len(responses.chunks)}


def _responses(party: PartyPolicy, config: Config, context: Context) -> Config:
    """Sender: one chunk of shuffled replies."""
    session = session_record(context, config, "sender", "paillier")
    index = require_field(config, "index", int)
    chunks = session["responses"]
    if not session["responded"] or not 0 <= index < len(chunks):  # type: ignore[arg-type]
        raise PSIError(f"reply chunk {index} does not exist")
    return {"index": index, "chunk": chunks[index]}  # type: ignore[index]


def _decrypt(party: PartyPolicy, config: Config, context: Context) -> Config:
    """Receiver: decrypt one reply chunk modulo p and record the matches."""
    session = session_record(context, config, "receiver", "paillier")
    receiver = PSIReceiver.from_state(session)
    session_id = str(session["session_id"])
    receiver.expect_responses(session_id, require_field(config, "count", int))
    with process_pool(party.pool_size(context)) as pool:
        receiver.receive_responses(
            session_id, require_field(config, "index", int), require_field(config, "chunk", bytes), pool
        )
    session.update(receiver.to_state())
    return {"index": config["index"]}


def _finish(party: PartyPolicy, config: Config, context: Context) -> Config:
    """Receiver: close the session; the label holder's running set shrinks to the matches.

    Replies the intersection size and, if the sender is the label holder (``sender_is_leader``), the
    matched reply positions (random-looking indices into the sender's secret shuffle).
    """
    session = session_record(context, config, "receiver", "paillier")
    staging = staging_record(context, config)
    receiver = PSIReceiver.from_state(session)
    receiver.expect_responses(receiver.session_id, require_field(config, "count", int))
    receiver.finish()
    subset = list(session["subset"])  # type: ignore[arg-type]
    matched = receiver.matched_indices()
    positions = receiver.positions(matched)
    record_pair(staging, receiver.session_id, positions, [subset[i] for i in matched])
    if require_field(config, "receiver_is_leader", bool):
        staging["running"] = sorted(subset[i] for i in matched)
    del context.state[SESSION_STATE_KEY]
    reply: Config = {"size": len(matched)}
    if require_field(config, "sender_is_leader", bool):
        reply["positions"] = sorted(positions)
    return reply


def _matched(party: PartyPolicy, config: Config, context: Context) -> Config:
    """Sender that is the label holder: its running set shrinks to the matched positions."""
    session = session_record(context, config, "sender", None)
    staging = staging_record(context, config)
    pairs = pair_map(staging, str(session["session_id"]))
    positions = list(require_field(config, "positions", list))
    if any(position not in pairs for position in positions) or len(set(positions)) != len(positions):
        raise PSIError("matched positions repeat or fall outside the replies")
    staging["running"] = sorted(pairs[position] for position in positions)
    del context.state[SESSION_STATE_KEY]
    return {"size": len(positions)}


def _order(party: PartyPolicy, config: Config, context: Context) -> Config:
    """Label holder: order the final set canonically, stage its own alignment, and reply for every
    session the peer's reply positions in that order (``positions.<session_id>``)."""
    staging = staging_record(context, config)
    prepared = checked_ids(party, context, staging)
    running = list(staging["running"])  # type: ignore[arg-type]
    final = [running[k] for k in canonical_order([prepared.canonical[i] for i in running])]
    reply: Config = {"size": len(final)}
    for session_id in staging["sessions"]:  # type: ignore[union-attr]
        position_of = {index: position for position, index in pair_map(staging, session_id).items()}
        if any(index not in position_of for index in final):
            raise PSIError("the final set is not contained in a session's matches")
        reply[positions_key(session_id)] = [position_of[index] for index in final]
    context.state[PENDING_STATE_KEY] = _alignment_to_record(str(staging["alignment_id"]), prepared, final)
    return reply


def _prepare(party: PartyPolicy, config: Config, context: Context) -> Config:
    """Other parties: map the label holder's positions to own IDs, check the order, stage it."""
    staging = staging_record(context, config)
    prepared = checked_ids(party, context, staging)
    pairs = pair_map(staging, require_field(config, SESSION_ID_KEY, str))
    positions = list(require_field(config, "positions", list))
    if any(position not in pairs for position in positions):
        raise PSIError("an aligned position falls outside this party's replies or matches")
    indices = [pairs[position] for position in positions]
    context.state[PENDING_STATE_KEY] = _alignment_to_record(str(staging["alignment_id"]), prepared, indices)
    return {"size": len(indices)}


def _commit(party: PartyPolicy, config: Config, context: Context) -> Config:
    """All parties: make the staged alignment the node's alignment; clear the staging."""
    staging = staging_record(context, config)
    if PENDING_STATE_KEY not in context.state:
        raise PSIError("nothing to commit: the alignment was not prepared at this node")
    pending = context.state.config_records[PENDING_STATE_KEY]
    if ALIGNMENT_STATE_KEY in context.state:
        context.state[PREVIOUS_STATE_KEY] = context.state.config_records[ALIGNMENT_STATE_KEY]
    elif PREVIOUS_STATE_KEY in context.state:
        del context.state[PREVIOUS_STATE_KEY]
    context.state[ALIGNMENT_STATE_KEY] = pending
    clear_staging(context)
    return {"size": len(pending["rows"]), "alignment_id": str(staging["alignment_id"])}  # type: ignore[arg-type]


def _abort(party: PartyPolicy, config: Config, context: Context) -> Config:
    """All parties: drop the staging; undo this alignment's commit if it happened here."""
    alignment_id = require_field(config, ALIGNMENT_ID_KEY, str)
    rolled_back = False
    if (
        ALIGNMENT_STATE_KEY in context.state
        and context.state.config_records[ALIGNMENT_STATE_KEY]["alignment_id"] == alignment_id
    ):
        del context.state[ALIGNMENT_STATE_KEY]
        if PREVIOUS_STATE_KEY in context.state:
            context.state[ALIGNMENT_STATE_KEY] = context.state.config_records[PREVIOUS_STATE_KEY]
            del context.state[PREVIOUS_STATE_KEY]
        rolled_back = True
    if STAGING_STATE_KEY in context.state:
        staged_id = context.state.config_records[STAGING_STATE_KEY]["alignment_id"]
        if staged_id == alignment_id:
            clear_staging(context)
    return {"rolled_back": rolled_back}


_HANDLERS: dict[str, Callable[[PartyPolicy, Config, Context], Config]] = {
    "psi_begin": _begin,
    "psi_keygen": _keygen,
    "psi_setup": _setup,
    "psi_coefficients": _coefficients,
    "psi_precompute": _precompute,
    "psi_evaluate": _evaluate,
    "psi_respond": _respond,
    "psi_responses": _responses,
    "psi_decrypt": _decrypt,
    "psi_finish": _finish,
    "psi_matched": _matched,
    "psi_order": _order,
    "psi_prepare": _prepare,
    "psi_commit": _commit,
    "psi_abort": _abort,
    **ECDH_HANDLERS,
}
