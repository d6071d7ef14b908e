"""Teacher-node side of secure vote aggregation ([BIK+17], Bonawitz et al. CCS 2017, Figure 4).

The node noises its own vote counts (its share of the mechanism's Gaussian noise, drawn from OS
entropy), encodes them in fixed point and masks them, so the server learns only the sum over the
nodes (``protocol.secagg`` describes the four messages). What the node keeps in ``context.state``
(ConfigRecord ``secagg.node``): the session, its long-term share-encryption key ``c``, the tag key
agreed with the server, the peers' ``c`` public keys, the private mask key of the next step only
(each step's mask key is deleted once used), the last step it masked and the steps it unmasked.

It refuses, with a ValueError naming the problem: a step it has masked before (a replay of a step
would let the server difference two masked vectors under one mask), an unmask request naming a node
both survivor and dropped (revealing both shares would unmask that node), a second unmask of a step,
fewer survivors than the threshold, and a request naming itself dropped.
"""

from __future__ import annotations

import secrets
from collections.abc import Callable

import numpy as np
from flwr.app import ConfigRecord, Context, Message, RecordDict
from flwr.clientapp import ClientApp

from clients.pate.teacher import hosted_votes
from protocol.pate import array_record
from protocol.secagg import (
    MASKED,
    PEERS,
    SECAGG,
    SHARES,
    cipher_info,
    encode,
    mac_info,
    mask_sign,
    pair_info,
    pair_mask,
    self_mask,
    share_aad,
    step_label,
)
from protocol.secagg_crypto import (
    SEED_BYTES,
    agree,
    new_keypair,
    seal,
    shamir_share,
    share_bytes,
    tag,
    unseal,
)

STATE = "secagg.node"
VotesFn = Callable[[Message, Context], np.ndarray]
RngFn = Callable[[Message, Context], np.random.Generator]
"""The noise source of one masked step, given the request and the node's context."""


def os_rng(msg: Message, context: Context) -> np.random.Generator:
    """The default noise source: a generator seeded from the operating system's entropy, per step."""
    return np.random.default_rng(secrets.randbits(128))


def _state(context: Context) -> dict:
    if STATE not in context.state:
        raise ValueError("secure aggregation was not set up on this node (no query.secagg_keys seen)")
    return dict(context.state[STATE])


def _save(context: Context, state: dict) -> None:
    context.state[STATE] = ConfigRecord(state)


def _share_blobs(state: dict, secret: bytes, what: str, step: int,
                 participants: list[int]) -> dict[str, bytes]:
    """Shamir shares of ``secret`` among ``participants``, each encrypted for its receiver."""
    me, session = int(state["node"]), bytes(state["session"])
    shares = shamir_share(secret, [v + 1 for v in participants], int(state["threshold"]))
    blobs = {}
    for v in participants:
        key = agree(bytes(state["c_sk"]), bytes(state[f"c_pk.{v}"]), cipher_info(session))
        blobs[f"{what}.{v}"] = seal(key, share_bytes(shares[v + 1]), share_aad(session, what, step, me, v))
    return blobs


def _reply(msg: Message, **records) -> Message:
    return Message(RecordDict(records), reply_to=msg)


def handle_keys(msg: Message, context: Context) -> Message:
    """``query.secagg_keys``: new key pairs ``c`` (share encryption) and ``s`` (masks of step 0)."""
    req = msg.content[SECAGG]
    me, participants = context.node_id, [int(v) for v in req["participants"]]
    threshold = int(req["threshold"])
    if me not in participants:
        raise ValueError(f"node {me} is not among the session's participants {participants}")
    if not 2 <= threshold <= len(participants):
        raise ValueError(f"threshold must be in [2, {len(participants)}], got {threshold}")
    c_sk, c_pk = new_keypair()
    s_sk, s_pk = new_keypair()
    session = bytes(req["session"])
    _save(context, {
        "node": me, "session": session, "threshold": threshold, "participants": participants,
        "c_sk": c_sk, "c_pk": c_pk, "s_sk.0": s_sk, "s_pk.0": s_pk, "last_masked": -1, "unmasked": [],
        "mac": agree(c_sk, bytes(req["server_pk"]), mac_info(session)),
    })
    return _reply(msg, **{SECAGG: ConfigRecord({"c_pk": c_pk, "s_pk": s_pk})})


def handle_shares(msg: Message, context: Context) -> Message:
    """``query.secagg_shares``: learn the peers' keys; reply encrypted shares of the step-0 mask key."""
    state = _state(context)
    me, participants = int(state["node"]), [int(v) for v in msg.content[SECAGG]["participants"]]
    if me not in participants or not set(participants) <= {int(v) for v in state["participants"]}:
        raise ValueError(f"participants {participants} must include node {me} and be session participants")
    if len(participants) < int(state["threshold"]):
        raise ValueError(f"{len(participants)} participants are fewer than the threshold "
                         f"{state['threshold']}")
    state["participants"] = participants
    peers = msg.content[PEERS]
    mine = (bytes(peers[f"c_pk.{me}"]), bytes(peers[f"s_pk.{me}"]))
    if mine != (bytes(state["c_pk"]), bytes(state["s_pk.0"])):
        raise ValueError(f"the server relayed other public keys for node {me} than the node advertised")
    for v in participants:
        state[f"c_pk.{v}"] = bytes(peers[f"c_pk.{v}"])
    blobs = _share_blobs(state, bytes(state["s_sk.0"]), "s", 0, participants)
    _save(context, state)
    body = tag(bytes(state["mac"]), bytes(state["session"]), b"shares", *(blobs[k] for k in sorted(blobs)))
    return _reply(msg, **{SECAGG: ConfigRecord({**blobs, "tag": body})})


def masked_reply(msg: Message, context: Context, values: np.ndarray) -> Message:
    """The masked reply of one step for this node's already-noised ``values`` (``query.secagg_masked``).

    ``y = encode(values) + PRG(b) + Σ_{v > me} PRG(s_{me,v}) - Σ_{v < me} PRG(s_{me,v})`` over the step's
    other participants, modulo 2^64 ([BIK+17] Figure 4, round 2), with a fresh self-mask seed ``b``.

    Raises
    ------
    ValueError
        If the step is not newer than the last one masked, the node is not a participant, or a
        value exceeds the encoding's bound.
    """
    state = _state(context)
    req = msg.content[SECAGG]
    me, step, session = int(state["node"]), int(req["step"]), bytes(state["session"])
    participants = [int(v) for v in req["participants"]]
    if step <= int(state["last_masked"]):
        raise ValueError(f"step {step} is not newer than the last step masked ({state['last_masked']}): "
                         "refusing to reuse a step's masks")
    if me not in participants or not set(participants) <= {int(v) for v in state["participants"]}:
        raise ValueError(f"step {step}: participants {participants} must include node {me} and be session "
                         "participants")
    if f"s_sk.{step}" not in state:
        raise ValueError(f"node {me} holds no mask key for step {step}")
    s_sk = bytes(state.pop(f"s_sk.{step}"))
    state.pop(f"s_pk.{step}", None)
    values = np.asarray(values, dtype=np.float64)
    y = encode(values, int(req["n_parties"]))
    seed = secrets.token_bytes(SEED_BYTES)
    y = y + self_mask(seed, values.shape)
    peers = msg.content[PEERS]
    label = step_label(session, step)
    for v in participants:
        if v != me:
            pair = agree(s_sk, bytes(peers[f"s_pk.{v}"]), pair_info(session, step))
            mask = pair_mask(pair, label, values.shape)
            y = y + mask if mask_sign(me, v) > 0 else y - mask
    next_sk, next_pk = new_keypair()
    blobs = {**_share_blobs(state, seed, "b", step, participants),
             **_share_blobs(state, next_sk, "s", step + 1, participants)}
    state.update({f"s_sk.{step + 1}": next_sk, "last_masked": step})
    _save(context, state)
    y = np.ascontiguousarray(y, dtype=np.uint64)
    body = tag(bytes(state["mac"]), session, b"masked", str(step).encode(), bytes(req["nonce"]), y.tobytes(),
               next_pk, *(blobs[k] for k in sorted(blobs)))
    return _reply(msg, **{MASKED: array_record(y=y),
                          SECAGG: ConfigRecord({**blobs, "s_pk_next": next_pk, "tag": body})})


def make_masked_handler(votes_fn: VotesFn = hosted_votes, rng_fn: RngFn = os_rng) -> Callable[
        [Message, Context], Message]:
    """The ``query.secagg_masked`` handler: votes (``votes_fn``), plus ``N(0, noise_std²)`` per count,
    masked by :func:`masked_reply`. ``noise_std`` is this node's share ``σ·√w_i`` set by the server."""

    def handle_masked(msg: Message, context: Context) -> Message:
        std = float(msg.content[SECAGG]["noise_std"])
        if not np.isfinite(std) or std < 0:
            raise ValueError(f"noise_std must be a finite number >= 0, got {std}")
        votes = np.asarray(votes_fn(msg, context), dtype=np.float64)
        return masked_reply(msg, context, votes + rng_fn(msg, context).normal(0.0, std, size=votes.shape))

    return handle_masked


def handle_unmask(msg: Message, context: Context) -> Message:
    """``query.secagg_unmask``: my shares of the survivors' self-masks and of the dropped nodes' mask keys.

    Raises
    ------
    ValueError
        On a request that would let the server unmask one node (see the module docstring).
    SecAggError
        If an encrypted share fails authentication.
    """
    state = _state(context)
    req = msg.content[SECAGG]
    me, step, session = int(state["node"]), int(req["step"]), bytes(state["session"])
    survivors, dropped = [int(v) for v in req["survivors"]], [int(v) for v in req["dropped"]]
    if set(survivors) & set(dropped):
        both = sorted(set(survivors) & set(dropped))
        raise ValueError(f"step {step}: nodes {both} are named both survivor and dropped; revealing both "
                         "shares would unmask them")
    if me not in survivors:
        raise ValueError(f"step {step}: node {me} is not among the survivors {survivors}")
    if len(survivors) < int(state["threshold"]):
        raise ValueError(f"step {step}: {len(survivors)} survivors are fewer than the threshold "
                         f"{state['threshold']}")
    if step in [int(s) for s in state["unmasked"]] or step > int(state["last_masked"]):
        raise ValueError(f"step {step} was already unmasked or never masked by node {me}")
    shares = msg.content[SHARES]
    out: dict[str, bytes] = {}
    for what, nodes, key_step in (("b", survivors, step), ("s", dropped, step)):
        for u in nodes:
            key = agree(bytes(state["c_sk"]), bytes(state[f"c_pk.{u}"]), cipher_info(session))
            aad = share_aad(session, what, key_step, u, me)
            out[f"{what}.{u}"] = unseal(key, bytes(shares[f"{what}.{u}"]), aad)
    state["unmasked"] = [*[int(s) for s in state["unmasked"]], step]
    _save(context, state)
    body = tag(bytes(state["mac"]), session, b"unmask", str(step).encode(), *(out[k] for k in sorted(out)))
    return _reply(msg, **{SECAGG: ConfigRecord({**out, "tag": body})})



def register_secagg_handlers(app: ClientApp, votes_fn: VotesFn = hosted_votes,
                             rng_fn: RngFn = os_rng) -> None:
    """Register the four ``query.secagg_*`` handlers on ``app`` (votes from ``votes_fn``)."""
    app.query("secagg_keys")(handle_keys)
    app.query("secagg_shares")(handle_shares)
    app.query("secagg_masked")(make_masked_handler(votes_fn, rng_fn))
    app.query("secagg_unmask")(handle_unmask)
