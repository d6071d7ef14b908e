"""A party's side of an ECDH PSI session, as Flower ``query.psi_ecdh_*`` handlers.

The Diffie–Hellman PSI of :mod:`clients.psi.ecdh` between the label holder and one passive party,
driven by :func:`strategies.alignment.run_alignment` with ``backend="ecdh"``. The alignment-wide
steps (``psi_begin``, ``psi_matched``, ``psi_order``, ``psi_prepare``, ``psi_commit``, ``psi_abort``)
are the Paillier backend's (:mod:`clients.psi.handlers`): a session only has to leave, in the staging
record, the map from positions in the sender's shuffled stream to the party's IDs.

Handlers (the fields are in :mod:`protocol.psi`)
------------------------------------------------
- ``psi_ecdh_blind`` (both parties, in one exchange): in the group the server names (an unknown group
  is refused), draw the secret scalar, hash the running set into the group, exponentiate and
  shuffle; the sender records its position map at once.
- ``psi_ecdh_points``: one chunk of the party's blinded points.
- ``psi_ecdh_exponentiate``: raise one chunk of the peer's points to the party's scalar (points the
  group refuses are named, :mod:`clients.psi.ecdh_groups`); the sender replies the result for the
  receiver.
- ``psi_ecdh_doubled`` (receiver): store one chunk of its own points as the sender returned them.
- ``psi_ecdh_finish`` (receiver): compare, record the matched positions, shrink the label holder's
  running set; reply the intersection size (and the positions if the sender is the label holder).

The session record (``context.state["psi.session"]``) holds the secret scalar: it never leaves the
node. A handler that raises leaves ``context.state`` as it was.
"""

from __future__ import annotations

from collections.abc import Callable

from flwr.app import ConfigRecord, Context

from clients.psi.ecdh import ECDHReceiver, ECDHSender
from clients.psi.node_state import (
    SESSION_STATE_KEY,
    Config,
    PartyPolicy,
    checked_ids,
    record_pair,
    session_record,
    staging_record,
    subset_ids,
)
from clients.psi.pool import process_pool
from protocol.psi import SESSION_ID_KEY, PSIError, require_field

__all__ = ["ECDH_HANDLERS"]

ROLES = ("receiver", "sender")


def _role(session: ConfigRecord) -> ECDHReceiver | ECDHSender:
    state = dict(session)
    return ECDHReceiver.from_state(state) if session["role"] == "receiver" else ECDHSender.from_state(state)


def _blind(party: PartyPolicy, config: Config, context: Context) -> Config:
    """Both parties: blind the running set under a fresh scalar, shuffled; reply count and chunks."""
    staging = staging_record(context, config)
    prepared = checked_ids(party, context, staging)
    role = require_field(config, "role", str)
    if role not in ROLES:
        raise PSIError(f"role must be 'receiver' or 'sender', got {role!r}")
    session_id = require_field(config, SESSION_ID_KEY, str)
    subset = list(staging["running"])  # type: ignore[arg-type]
    node_class = ECDHReceiver if role == "receiver" else ECDHSender
    node = node_class(
        subset_ids(prepared, subset),
        peer_size=require_field(config, "peer_size", int),
        session_id=session_id,
        group=require_field(config, "group", str),
    )
    with process_pool(party.pool_size(context)) as pool:
        count = node.blind(pool, require_field(config, "chunk_bytes", int))
    if isinstance(node, ECDHSender):
        positions = range(count)
        record_pair(staging, session_id, positions, [subset[i] for i in node.indices_at(positions)])
    context.state[SESSION_STATE_KEY] = ConfigRecord({"role": role, "subset": subset, **node.to_state()})
    return {"count": count, "num_chunks": node.num_chunks}


def _points(party: PartyPolicy, config: Config, context: Context) -> Config:
    """Either party: one chunk of its blinded points."""
    session = session_record(context, config, None, "ecdh")
    index = require_field(config, "index", int)
    return {"index": index, "chunk": _role(session).point_chunk(index)}


def _exponentiate(party: PartyPolicy, config: Config, context: Context) -> Config:
    """Either party: raise one chunk of the peer's points to the own scalar; the sender replies them."""
    session = session_record(context, config, None, "ecdh")
    node = _role(session)
    index = require_field(config, "index", int)
    chunk = require_field(config, "chunk", bytes)
    with process_pool(party.pool_size(context)) as pool:
        doubled = node.exponentiate_peer(str(session["session_id"]), index, chunk, pool)
    session.update(node.to_state())
    reply: Config = {"index": index}
    if doubled is not None:
        reply["chunk"] = doubled
    return reply


def _doubled(party: PartyPolicy, config: Config, context: Context) -> Config:
    """Receiver: one chunk of its own points as the sender returned them."""
    session = session_record(context, config, "receiver", "ecdh")
    node = ECDHReceiver.from_state(dict(session))
    index = require_field(config, "index", int)
    node.receive_doubled(str(session["session_id"]), index, require_field(config, "chunk", bytes))
    session.update(node.to_state())
    return {"index": index}


def _finish(party: PartyPolicy, config: Config, context: Context) -> Config:
    """Receiver: compare, close the session; the label holder's running set shrinks to the matches."""
    session = session_record(context, config, "receiver", "ecdh")
    staging = staging_record(context, config)
    node = ECDHReceiver.from_state(dict(session))
    node.finish()
    subset = list(session["subset"])  # type: ignore[arg-type]
    matched = node.matched_indices()
    positions = node.positions(matched)
    record_pair(staging, node.session_id, positions, [subset[i] for i in matched])
    if require_field(config, "receiver_is_leader", bool):
        staging["running"] = sorted(subset[i] for i in matched)
    del context.state[SESSION_STATE_KEY]
    reply: Config = {"size": len(matched)}
    if require_field(config, "sender_is_leader", bool):
        reply["positions"] = sorted(positions)
    return reply


ECDH_HANDLERS: dict[str, Callable[[PartyPolicy, Config, Context], Config]] = {
    "psi_ecdh_blind": _blind,
    "psi_ecdh_points": _points,
    "psi_ecdh_exponentiate": _exponentiate,
    "psi_ecdh_doubled": _doubled,
    "psi_ecdh_finish": _finish,
}
"""Handler of every ECDH action, registered by :func:`clients.psi.handlers.register_psi_handlers`."""
