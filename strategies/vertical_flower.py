"""The vertical protocol over Flower: :class:`FlowerLink` (one ``Message`` per party per call), party
discovery, the PSI alignment phase and :func:`run_vertical`, the ServerApp's server function.

:class:`strategies.vertical_prototype.VerticalPrototype` runs the protocol over any
:class:`strategies.vertical_prototype.PartyLink`; this module gives it the Flower one and the alignment
by private set intersection (:mod:`strategies.alignment`).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from flwr.app import Message
from flwr.serverapp import Grid

from protocol.codec import to_flat
from protocol.vertical import ACTIVE, MESSAGE_TYPES, VerticalConfig, decode_payload, encode_payload
from strategies.alignment import AlignmentError, run_alignment
from strategies.grid_utils import NODE_WAIT_TIMEOUT_S, node_error, send_and_receive, wait_for_nodes
from strategies.vertical_prototype import (
    AlignmentPhase,
    Calls,
    PartyLink,
    Payload,
    VerticalProtocolError,
    VerticalPrototype,
    passive_names,
)


class FlowerLink:
    """A :class:`PartyLink` over a Flower ``Grid``: one message per party per call, sent together.

    Parameters
    ----------
    grid : Grid
        The ServerApp's grid.
    node_of : Mapping[str, int]
        Party name → node ID (from :func:`discover_parties`).
    config : Mapping[str, Scalar]
        The run's flat configuration (:func:`protocol.codec.to_flat`), attached to the ``describe``
        message that starts the run; the parties keep it for the run's later messages.
    timeout : float
        Seconds to wait for all replies of one call; a party that has not replied by then has vanished.
    """

    def __init__(self, grid: Grid, node_of: Mapping[str, int], config: Mapping[str, Any], timeout: float):
        self.grid, self.node_of, self.config, self.timeout = grid, dict(node_of), dict(config), timeout
        self.parties = list(self.node_of)

    def request(self, calls: Calls) -> dict[str, Payload]:
        messages = [Message(encode_payload(payload, self.config if op == "describe" else None),
                            dst_node_id=self.node_of[name],
                            message_type=MESSAGE_TYPES[op]) for name, (op, payload) in calls.items()]
        received = send_and_receive(self.grid, messages, timeout=self.timeout)
        replies = {r.metadata.src_node_id: r for r in received}
        out = {}
        for name, (op, _) in calls.items():
            reply = replies.get(self.node_of[name])
            if reply is None:
                raise VerticalProtocolError(f"party {name} (node {self.node_of[name]}) did not reply to "
                                            f"{op!r} within {self.timeout:.0f} s: it has vanished")
            if reply.has_error():
                error = VerticalProtocolError(f"party {name} failed operation {op!r}: "
                                              f"{node_error(reply.error.reason)}")
                error.add_note(f"the node's error reply: {reply.error.reason}")  # its traceback, if any
                raise error
            out[name] = decode_payload(reply.content)
        return out


def discover_parties(
    grid: Grid, node_ids: list[int], config: Mapping[str, Any], timeout: float
) -> dict[str, int]:
    """Ask every node which party it is (``describe``); return party name → node ID.

    Raises
    ------
    VerticalProtocolError
        If a node fails, or the roles are not exactly one active party and parties ``1 … n-1``.
    """
    probe = FlowerLink(grid, {f"node{nid}": nid for nid in node_ids}, config, timeout)
    replies = probe.request({f"node{nid}": ("describe", {}) for nid in node_ids})
    node_of: dict[str, int] = {}
    for nid in node_ids:
        r = replies[f"node{nid}"]
        name = ACTIVE if r["role"] == ACTIVE else f"passive{int(r['index'])}"
        if name in node_of:
            raise VerticalProtocolError(f"nodes {node_of[name]} and {nid} both claim to be {name}")
        node_of[name] = nid
    expected = {ACTIVE, *passive_names(int(config["dataset.n_parties"]))}
    if set(node_of) != expected:
        raise VerticalProtocolError(f"nodes describe themselves as {sorted(node_of)}; "
                                    f"the run needs {sorted(expected)}")
    return node_of


def psi_alignment(
    grid: Grid, node_of: Mapping[str, int], timeout: float, key_bits: int, report: dict[str, Any],
    backend: str = "paillier",
) -> AlignmentPhase:
    """Alignment by PSI, ``backend`` ``paillier`` or ``ecdh`` (``docs/psi.md``,
    :func:`strategies.alignment.run_alignment`).

    The active party is the FNP receiver of every pairwise session; the passive parties send. The
    phase's report (set sizes, timings, no IDs) is stored in ``report``.
    """

    def phase(link: PartyLink) -> dict[str, Payload]:
        try:
            done = run_alignment(grid, receiver_node=node_of[ACTIVE], timeout=timeout, key_bits=key_bits,
                                 sender_nodes=[node_of[n] for n in passive_names(len(node_of))],
                                 backend=backend)  # type: ignore[arg-type]
        except AlignmentError as err:
            raise VerticalProtocolError(f"PSI alignment failed at step {err.step}: {err}") from err
        report.update(aligned_size=done.aligned_size, bytes_relayed=done.bytes_relayed, wall_s=done.wall_s,
                      set_sizes={str(k): v for k, v in done.set_sizes.items()}, key_bits=key_bits,
                      backend=backend)
        return {name: {"source": "psi"} for name in link.parties}

    return phase


def insecure_plaintext_alignment(link: PartyLink) -> dict[str, Payload]:
    """**Insecure** alignment for tests only: parties send their raw IDs to the server, which intersects.

    This reveals every party's full ID set to the server and is *not* private set intersection; use
    ``strategy.alignment=psi`` for anything but tests on synthetic or public data.
    """
    ids = link.request({name: ("ids", {}) for name in link.parties})
    common = sorted(set.intersection(*(set(r["ids"]) for r in ids.values())))
    return {name: {"aligned_ids": common} for name in link.parties}


def run_vertical(
    grid: Grid,
    cfg: VerticalConfig,
    *,
    on_epoch: Callable[[int, dict[str, float | None]], None] | None = None,
    node_wait_timeout: float = NODE_WAIT_TIMEOUT_S,
) -> dict[str, Any]:
    """Server function of a vertical run over Flower: discover parties, align, train, evaluate, save.

    Raises
    ------
    VerticalProtocolError
        If a party fails or vanishes; ``TimeoutError`` if the parties do not all connect in time.
    """
    s = cfg.strategy
    node_ids = wait_for_nodes(grid, cfg.dataset.n_parties, timeout=node_wait_timeout)
    flat = to_flat(cfg)
    node_of = discover_parties(grid, node_ids, flat, s.timeout_s)
    link = FlowerLink(grid, node_of, flat, s.timeout_s)
    psi_report: dict[str, Any] = {}
    alignment = (psi_alignment(grid, node_of, s.psi_timeout_s, s.psi_key_bits, psi_report, s.psi_backend)
                 if s.alignment == "psi" else insecure_plaintext_alignment)
    results = VerticalPrototype(cfg, on_epoch=on_epoch).run(link, alignment)
    results["alignment"] = {"method": s.alignment, **psi_report} if s.split_learning else {"method": "none"}
    if cfg.output_dir:
        saved = link.request({name: ("save", {"name": f"{name}.pt"}) for name in link.parties})
        results["models"] = {name: r["path"] for name, r in saved.items()}
    return results
