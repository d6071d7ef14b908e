"""Server side of secure vote aggregation: the server learns the sum of the nodes' vectors, nothing else.

Pairwise masking after Bonawitz et al., "Practical Secure Aggregation for Privacy-Preserving Machine
Learning", CCS 2017 ([BIK+17], Figure 4, the honest-but-curious variant without the consistency check
round), over the Flower Message API; the wire protocol is ``protocol.secagg``. The server relays keys and
encrypted shares, verifies each node's reply tag, and after a step reconstructs (t-out-of-n Shamir) the
self-masks of the nodes whose masked vector arrived and the step's mask keys of those that dropped, so the
pairwise masks cancel or are removed and only the sum is decoded.

Trust: honest-but-curious server and nodes; the node identities in ``Message.metadata`` are those Flower's
transport authenticates (SuperNode authentication in a deployment), and the server relays the public keys
unchanged. An actively malicious server could substitute keys (a man in the middle); [BIK+17]'s signed key
advertisements and consistency round are out of scope. Any ``threshold`` nodes together with the server
can reconstruct one node's secrets: the threshold must exceed the largest coalition to be tolerated.

Faults: a node that errors, does not reply or sends a reply that fails its tag (tampered, or replayed
from another step: the tag binds the session, the step and the server's fresh nonce) or is malformed is
dropped from the step and from the session; its masks are removed. Fewer than ``threshold`` valid masked
vectors or unmask replies stop the step with :class:`protocol.secagg_crypto.SecAggError`.
"""

from __future__ import annotations

import secrets
from collections.abc import Callable
from dataclasses import dataclass, field
from logging import WARNING
from typing import Any

import numpy as np
from flwr.app import ConfigRecord, Message
from flwr.common.logger import log
from flwr.serverapp import Grid

from protocol.secagg import (
    MASKED,
    MSG_SECAGG_KEYS,
    MSG_SECAGG_MASKED,
    MSG_SECAGG_SHARES,
    MSG_SECAGG_UNMASK,
    PEERS,
    SECAGG,
    SHARES,
    decode,
    mac_info,
    mask_sign,
    pair_info,
    pair_mask,
    self_mask,
    step_label,
)
from protocol.secagg_crypto import (
    SecAggError,
    agree,
    new_keypair,
    public_key,
    shamir_reconstruct,
    share_value,
    tag_ok,
)
from strategies.grid_utils import send_and_receive

MessageFn = Callable[..., Message]
"""``make_message(node, message_type, **records)``: the strategy's message builder."""


@dataclass
class StepResult:
    """One aggregation step: the decoded sum over ``survivors`` and why the others dropped."""

    total: np.ndarray  # float64, the decoded sum of the survivors' vectors
    survivors: list[int]
    dropped: dict[int, str] = field(default_factory=dict)  # left before their vector counted
    late: dict[int, str] = field(default_factory=dict)  # counted, but gave no unmask reply: leave the session


class SecAggServer:
    """Runs secure-aggregation steps over a fixed set of nodes; nodes only ever leave.

    Parameters
    ----------
    nodes : list of int
        The participating node ids (at least 2).
    threshold : int or None (default: None)
        Shamir threshold t in [2, len(nodes)]; None: ``len(nodes) // 2 + 1`` (a majority).
    timeout : float (default: 600.0)
        Seconds to wait for the replies of one message step.

    Raises
    ------
    ValueError
        If fewer than 2 nodes are given or the threshold is out of range.
    """

    def __init__(self, nodes: list[int], threshold: int | None = None, timeout: float = 600.0) -> None:
        nodes = sorted(int(n) for n in nodes)
        if len(nodes) < 2 or len(set(nodes)) != len(nodes):
            raise ValueError(f"secure aggregation needs >= 2 distinct nodes, got {nodes}")
        threshold = len(nodes) // 2 + 1 if threshold is None else int(threshold)
        if not 2 <= threshold <= len(nodes):
            raise ValueError(f"threshold must be in [2, {len(nodes)}] (the number of nodes), got {threshold}")
        self.threshold = threshold
        self.timeout = timeout
        self.active = nodes
        self.session = secrets.token_bytes(16)
        self.step = 0
        self._sk, self._pk = new_keypair()
        self._c_pk: dict[int, bytes] = {}
        self._mac: dict[int, bytes] = {}
        self._s_pk: dict[int, bytes] = {}  # this step's mask public keys
        self._s_shares: dict[int, dict[int, bytes]] = {}  # owner -> receiver -> this step's encrypted share
        self.ready = False

    # -- setup --------------------------------------------------------------------------------------

    def setup(self, grid: Grid, make_message: MessageFn) -> dict[int, str]:
        """Key advertisement and sharing of the first mask keys; returns the nodes that dropped (reason).

        Raises
        ------
        SecAggError
            If fewer than ``threshold`` nodes complete it.
        """
        dropped: dict[int, str] = {}
        request = {"session": self.session, "server_pk": self._pk, "participants": self.active,
                   "threshold": self.threshold}
        replies = self._send(grid, make_message, MSG_SECAGG_KEYS, {n: {SECAGG: ConfigRecord(request)}
                                                                  for n in self.active}, dropped)
        for node, reply in replies.items():
            try:
                keys = reply.content[SECAGG]
                self._c_pk[node], self._s_pk[node] = bytes(keys["c_pk"]), bytes(keys["s_pk"])
                self._mac[node] = agree(self._sk, self._c_pk[node], mac_info(self.session))
            except (KeyError, TypeError, SecAggError) as err:
                dropped[node] = f"malformed key advertisement: {err!r}"
        self._leave(dropped)
        peers = ConfigRecord({f"{k}.{v}": keys[v] for k, keys in (("c_pk", self._c_pk), ("s_pk", self._s_pk))
                              for v in self.active})
        info = ConfigRecord({"session": self.session, "participants": self.active})
        replies = self._send(grid, make_message, MSG_SECAGG_SHARES,
                             {n: {SECAGG: info, PEERS: peers} for n in self.active}, dropped)
        for node, reply in replies.items():
            body = reply.content[SECAGG] if SECAGG in reply.content.config_records else ConfigRecord()
            blobs = {v: body.get(f"s.{v}") for v in self.active}
            order = sorted(self.active, key=lambda v: f"s.{v}")  # the node tags its shares in key order
            parts = [bytes(blobs[v]) for v in order if blobs[v] is not None]
            if None in blobs.values() or not tag_ok(self._mac[node], bytes(body.get("tag", b"")),
                                                    self.session, b"shares", *parts):
                dropped[node] = "share message fails its tag or misses a share"
                continue
            self._s_shares[node] = {v: bytes(b) for v, b in blobs.items()}  # type: ignore[arg-type]
        self._leave(dropped)
        self.ready = True
        return dropped

    # -- one aggregation step -----------------------------------------------------------------------

    def aggregate(self, grid: Grid, make_message: MessageFn, noise_std: dict[int, float],
                  shape: tuple[int, ...], records: dict[str, Any]) -> StepResult:
        """Securely sum one vector of ``shape`` per active node; each node adds ``N(0, noise_std[node]²)``.

        ``records`` go into every masked-input message (e.g. the query batch). Returns the decoded sum
        over the survivors; dropped nodes leave the session.

        Raises
        ------
        SecAggError
            If fewer than ``threshold`` valid masked vectors or unmask replies arrive, or a share is
            corrupt.
        ValueError
            If ``noise_std`` does not name exactly the active nodes.
        """
        if not self.ready:
            raise SecAggError("setup() has not run: no keys are shared")
        if set(noise_std) != set(self.active):
            raise ValueError(f"noise_std must name the active nodes {self.active}, got {sorted(noise_std)}")
        step, participants, nonce = self.step, list(self.active), secrets.token_bytes(16)
        dropped: dict[int, str] = {}
        peers = ConfigRecord({f"s_pk.{v}": self._s_pk[v] for v in participants})
        requests = {n: {**records, PEERS: peers, SECAGG: ConfigRecord({
            "session": self.session, "step": step, "nonce": nonce, "participants": participants,
            "n_parties": len(participants) + 1, "noise_std": float(noise_std[n])})} for n in participants}
        replies = self._send(grid, make_message, MSG_SECAGG_MASKED, requests, dropped)
        masked: dict[int, np.ndarray] = {}
        next_keys: dict[int, tuple[bytes, dict[int, bytes]]] = {}
        b_shares: dict[int, dict[int, bytes]] = {}
        for node, reply in replies.items():
            problem, y, parsed = self._check_masked(node, reply, step, nonce, shape, participants)
            if problem:
                dropped[node] = problem
                continue
            masked[node], b_shares[node], next_keys[node] = y, parsed[0], (parsed[1], parsed[2])
        survivors = sorted(masked)
        if len(survivors) < self.threshold:
            raise SecAggError(f"step {step}: only {len(survivors)} of {len(participants)} nodes sent a valid "
                              f"masked vector, fewer than the reconstruction threshold {self.threshold} "
                              f"(dropped: {dropped})")
        gone = sorted(dropped)
        late: dict[int, str] = {}
        requests = {v: {SECAGG: ConfigRecord({"session": self.session, "step": step, "survivors": survivors,
                                             "dropped": gone}),
                        SHARES: ConfigRecord({**{f"b.{u}": b_shares[u][v] for u in survivors},
                                              **{f"s.{u}": self._s_shares[u][v] for u in gone}})}
                    for v in survivors}
        replies = self._send(grid, make_message, MSG_SECAGG_UNMASK, requests, late)
        b_points: dict[int, dict[int, int]] = {u: {} for u in survivors}
        s_points: dict[int, dict[int, int]] = {u: {} for u in gone}
        for v, reply in replies.items():
            try:
                body = reply.content[SECAGG]
                out = {k: bytes(body[k]) for k in [*(f"b.{u}" for u in survivors), *(f"s.{u}" for u in gone)]}
                if not tag_ok(self._mac[v], bytes(body["tag"]), self.session, b"unmask", str(step).encode(),
                              *(out[k] for k in sorted(out))):
                    raise SecAggError("tag mismatch")
                values = {k: share_value(blob) for k, blob in out.items()}
            except (KeyError, TypeError, SecAggError) as err:
                late[v] = f"unmask reply rejected: {err!r}"
                continue
            for u in survivors:
                b_points[u][v + 1] = values[f"b.{u}"]
            for u in gone:
                s_points[u][v + 1] = values[f"s.{u}"]
        if len(replies) - len(set(late) & set(replies)) < self.threshold:
            raise SecAggError(f"step {step}: only {len(replies) - len(set(late) & set(replies))} of "
                              f"{len(survivors)} survivors returned valid shares, fewer than the "
                              f"reconstruction threshold {self.threshold} (failed: {late})")
        total = np.zeros(shape, dtype=np.uint64)
        for u in survivors:
            total = total + masked[u] - self_mask(shamir_reconstruct(b_points[u], self.threshold), shape)
        label = step_label(self.session, step)
        for u in gone:
            s_sk = shamir_reconstruct(s_points[u], self.threshold)
            if public_key(s_sk) != self._s_pk[u]:
                raise SecAggError(f"step {step}: the shares of node {u}'s mask key reconstruct a wrong key")
            for v in survivors:  # v added sign(v, u) · PRG(s_{v,u}): take it back out
                mask = pair_mask(agree(s_sk, self._s_pk[v], pair_info(self.session, step)), label, shape)
                total = total - mask if mask_sign(v, u) > 0 else total + mask
        for node, reason in {**dropped, **late}.items():
            log(WARNING, "secure aggregation step %d: node %d leaves the session: %s", step, node, reason)
        self._s_pk = {v: next_keys[v][0] for v in survivors}
        self._s_shares = {v: next_keys[v][1] for v in survivors}
        self.active = [v for v in survivors if v not in late]
        self.step += 1
        return StepResult(decode(total), survivors, dropped, late)

    def _check_masked(self, node: int, reply: Message, step: int, nonce: bytes, shape: tuple[int, ...],
                      participants: list[int]) -> tuple[str, np.ndarray, tuple]:
        """``("", y, (b_shares, next_pk, next_s_shares))`` for a valid masked reply, else the problem."""
        try:
            y = reply.content.array_records[MASKED]["y"].numpy()
            body = reply.content[SECAGG]
            b = {v: bytes(body[f"b.{v}"]) for v in participants}
            s = {v: bytes(body[f"s.{v}"]) for v in participants}
            next_pk, mac = bytes(body["s_pk_next"]), bytes(body["tag"])
        except (KeyError, TypeError, ValueError) as err:
            return f"malformed masked reply: {err!r}", np.zeros(0), ()
        if y.dtype != np.uint64 or y.shape != shape:
            return f"masked vector must be uint64 of shape {shape}, got {y.dtype} {y.shape}", y, ()
        blobs = {**{f"b.{v}": b[v] for v in participants}, **{f"s.{v}": s[v] for v in participants}}
        if not tag_ok(self._mac[node], mac, self.session, b"masked", str(step).encode(), nonce,
                      np.ascontiguousarray(y).tobytes(), next_pk, *(blobs[k] for k in sorted(blobs))):
            return ("masked vector rejected: its tag does not match (tampered, or replayed from another "
                    "step)"), y, ()
        return "", y.astype(np.uint64), (b, next_pk, s)

    # -- plumbing -----------------------------------------------------------------------------------

    def _send(self, grid: Grid, make_message: MessageFn, message_type: str,
              records: dict[int, dict[str, Any]], failed: dict[int, str]) -> dict[int, Message]:
        """One message per node; returns the good replies, records errors and silence in ``failed``."""
        msgs = [make_message(node, message_type, **records[node]) for node in sorted(records)]
        good: dict[int, Message] = {}
        for reply in send_and_receive(grid, msgs, timeout=self.timeout):
            node = reply.metadata.src_node_id
            if node not in records:
                continue
            if reply.has_error():
                failed[node] = f"error in {message_type}: {reply.error.reason}"
            else:
                good[node] = reply
        for node in set(records) - set(good) - set(failed):
            failed[node] = f"no reply to {message_type} within {self.timeout:.0f} s"
        return good

    def _leave(self, dropped: dict[int, str]) -> None:
        """Setup drops: the nodes leave before any mask exists; stop below the threshold."""
        self.active = [n for n in self.active if n not in dropped]
        if len(self.active) < self.threshold:
            raise SecAggError(f"only {len(self.active)} nodes completed the secure-aggregation setup, fewer "
                              f"than the reconstruction threshold {self.threshold} (dropped: {dropped})")
