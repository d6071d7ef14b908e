"""Tests for strategies.alignment + clients.psi.handlers: the PSI alignment phase over Flower messages.

Most tests drive ``run_alignment`` through :class:`LoopbackGrid`, an in-process stand-in for a Flower
``Grid`` that runs every node's real ``ClientApp`` with Flower's semantics (a raising handler becomes
an error reply and leaves the node's context untouched) and can drop a node, fail a step or tamper
with a message in flight. The exact-intersection, multi-party and fault suite runs against both
backends (the ``backend`` fixture); backend-specific checks (ciphertexts, group points) follow.
"""

from __future__ import annotations

import copy
import secrets
import subprocess
import sys
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field

import nacl.bindings as sodium
import pytest
from flwr.app import ConfigRecord, Context, Error, Message, RecordDict
from flwr.clientapp import ClientApp
from flwr.supercore.task_identity import TaskIdentity

from clients.psi import canonical_id_bytes, choose_bins, hash_id
from clients.psi.ecdh_groups import FIELD_PRIME, hash_to_edwards, hash_to_x25519, montgomery_u
from clients.psi.handlers import (
    ALIGNMENT_STATE_KEY,
    CONTENT_KEY,
    PENDING_STATE_KEY,
    SESSION_STATE_KEY,
    STAGING_STATE_KEY,
    AlignmentNotFoundError,
    get_alignment,
    register_psi_handlers,
)
from protocol.psi import (
    ACTIONS,
    PSIError,
    SetupHeader,
    header_fields,
    message_type,
    positions_key,
    require_field,
    strip_header_fields,
)
from strategies.alignment import AlignmentError, AlignmentReport, run_alignment

pytestmark = pytest.mark.filterwarnings("ignore::clients.psi.InsecureParameterWarning")

TEST_KEY_BITS = 512  # test-only, accepted because the handlers set allow_insecure_key_size=True


# --------------------------------------------------------------------------------------------------
# Fixtures: a ClientApp per party and an in-process grid
# --------------------------------------------------------------------------------------------------


@pytest.fixture(autouse=True)
def _server_identity() -> Iterator[None]:
    """Outside a running ServerApp, Flower needs a task identity to create messages."""
    saved = (TaskIdentity._task_id, TaskIdentity._run_id, TaskIdentity._node_id)
    TaskIdentity.task_id, TaskIdentity.run_id, TaskIdentity.node_id = 1, 1, 1
    yield
    TaskIdentity._task_id, TaskIdentity._run_id, TaskIdentity._node_id = saved


def make_party_app(ids_by_partition: dict[int, Sequence[object]], **handler_options: object) -> ClientApp:
    """A tiny party ClientApp whose IDs come from ``node_config["partition-id"]``."""
    app = ClientApp()

    def load_ids(context: Context) -> Sequence[object]:
        return ids_by_partition[int(context.node_config["partition-id"])]

    options = {"workers": 1, "allow_insecure_key_size": True, **handler_options}
    register_psi_handlers(app, load_ids, **options)  # type: ignore[arg-type]
    return app


@dataclass
class LoopbackGrid:
    """Runs each message through ``app`` at once, one ``Context`` per node, with Flower's semantics.

    ``offline`` nodes never reply; ``drop_at`` takes a node offline when a given action reaches it;
    ``fail_at`` turns a (node, action) into an error reply; ``tamper`` may rewrite a message's
    ``psi`` fields in flight. ``log`` records ``(node, action)`` in sending order, ``traffic`` the
    fields of every message and reply that passed the server.
    """

    app: ClientApp
    num_nodes: int
    offline: set[int] = field(default_factory=set)
    drop_at: dict[int, str] = field(default_factory=dict)
    fail_at: set[tuple[int, str]] = field(default_factory=set)
    tamper: Callable[[int, str, dict[str, object]], None] | None = None
    log: list[tuple[int, str]] = field(default_factory=list)
    traffic: list[tuple[int, str, dict[str, object]]] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.contexts = {
            100 + pid: Context(
                run_id=1,
                node_id=100 + pid,
                node_config={"partition-id": pid, "num-partitions": self.num_nodes},
                state=RecordDict(),
                run_config={},
            )
            for pid in range(self.num_nodes)
        }

    def get_node_ids(self) -> list[int]:
        return sorted(set(self.contexts) - self.offline)

    def send_and_receive(self, messages: Iterable[Message], *, timeout: float | None = None) -> list[Message]:
        replies = []
        for message in messages:
            node_id = message.metadata.dst_node_id
            action = message.metadata.message_type.split(".", 1)[1]
            self.log.append((node_id, action))
            if self.drop_at.get(node_id) == action:
                self.offline.add(node_id)
            if node_id in self.offline or node_id not in self.contexts:
                continue
            message.metadata.__dict__["_message_id"] = secrets.token_hex(8)
            if self.tamper is not None:
                fields = dict(message.content.config_records[CONTENT_KEY])
                self.tamper(node_id, action, fields)
                message.content[CONTENT_KEY] = ConfigRecord(fields)
            if (node_id, action) in self.fail_at:
                replies.append(Message(Error(code=2, reason="injected fault"), reply_to=message))
                continue
            trial = copy.deepcopy(self.contexts[node_id])
            try:
                reply = self.app(message, trial)
            except Exception as exc:  # Flower turns a raising handler into an error reply
                replies.append(Message(Error(code=2, reason=f"{type(exc)}:<'{exc}'>"), reply_to=message))
                continue
            self.contexts[node_id] = trial  # the context is kept only on success
            self.traffic.append((node_id, action, dict(message.content.config_records[CONTENT_KEY])))
            self.traffic.append((node_id, action, dict(reply.content.config_records[CONTENT_KEY])))
            replies.append(reply)
        return replies

    def state(self, pid: int) -> RecordDict:
        return self.contexts[100 + pid].state

    def context(self, pid: int) -> Context:
        return self.contexts[100 + pid]


def align_loopback(
    grid: LoopbackGrid, senders: Sequence[int] = (1, 2), backend: str = "paillier", **options: object
) -> AlignmentReport:
    kwargs = {"timeout": 5.0, "key_bits": TEST_KEY_BITS, "backend": backend, **options}
    return run_alignment(grid, receiver_node=100, sender_nodes=[100 + s for s in senders], **kwargs)  # type: ignore[arg-type]


@pytest.fixture(params=["paillier", "ecdh"])
def backend(request: pytest.FixtureRequest) -> str:
    return request.param


THREE_PARTIES: dict[int, Sequence[object]] = {
    0: [f"user{i}" for i in range(0, 60)],  # label holder
    1: [f"user{i}" for i in range(50, 10, -1)] + ["p1-only"],  # rows in another order
    2: ["p2-only", *(f"user{i}" for i in range(0, 200, 3))],
}
SHARED = (
    {f"user{i}" for i in range(0, 60)}
    & {f"user{i}" for i in range(11, 51)}
    & {f"user{i}" for i in range(0, 200, 3)}
)


def assert_consistent(grid: LoopbackGrid, ids: dict[int, Sequence[object]], expected: set[object]) -> None:
    """Every party holds the same IDs in the same order, and rows point at those IDs."""
    alignments = [get_alignment(grid.context(pid)) for pid in ids]
    assert set(alignments[0].ids) == expected
    for pid, alignment in zip(ids, alignments, strict=True):
        assert alignment.ids == alignments[0].ids
        assert alignment.alignment_id == alignments[0].alignment_id
        assert [ids[pid][row] for row in alignment.rows] == list(alignment.ids)
        assert alignment.num_rows == len(ids[pid])


def assert_clean(grid: LoopbackGrid, pids: Iterable[int]) -> None:
    """No staging left behind and no alignment committed."""
    for pid in pids:
        state = grid.state(pid)
        for key in (ALIGNMENT_STATE_KEY, STAGING_STATE_KEY, SESSION_STATE_KEY, PENDING_STATE_KEY):
            assert key not in state, (pid, key)


# --------------------------------------------------------------------------------------------------
# Happy paths
# --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("weight", [0.15, 1.0])
def test_precompute_weight_reaches_the_receiver(weight: float) -> None:
    grid = LoopbackGrid(make_party_app(THREE_PARTIES), 2)
    report = align_loopback(grid, senders=(1,), precompute_weight=weight)
    assert (report.pairs[0].num_bins, report.pairs[0].degree) == choose_bins(60, 41, precompute_weight=weight)
    assert report.aligned_size == 40


def test_three_parties_store_the_same_canonical_alignment(backend: str) -> None:
    # Prepare
    grid = LoopbackGrid(make_party_app(THREE_PARTIES), 3)
    # Execute: chunks small enough that every stream takes several messages
    report = align_loopback(grid, backend=backend, chunk_bytes=4096 if backend == "paillier" else 320)
    # Assert
    assert_consistent(grid, THREE_PARTIES, SHARED)
    assert report.aligned_size == len(SHARED) and report.backend == backend
    assert report.set_sizes == {100: 60, 101: 41, 102: 68}
    assert [p.intersection_size for p in report.pairs] == [40, len(SHARED)]
    assert report.pairs[0].coefficient_chunks > 1 and report.pairs[0].response_chunks >= 1
    if backend == "ecdh":  # 10 points per chunk; the receiver's points cross twice
        assert [(p.coefficient_chunks, p.response_chunks) for p in report.pairs] == [(6, 5), (4, 7)]
        assert [(p.coefficient_bytes, p.response_bytes) for p in report.pairs] == [(2 * 60 * 32, 41 * 32), (2 * 40 * 32, 68 * 32)]
    for pid in range(3):  # staging cleared after commit
        assert STAGING_STATE_KEY not in grid.state(pid) and SESSION_STATE_KEY not in grid.state(pid)


def test_server_sees_no_id_no_hashed_id_and_no_private_key() -> None:
    # Prepare: record every field through the server, and each receiver's primes once generated
    primes: list[bytes] = []

    def grab_primes(node_id: int, action: str, fields: dict[str, object]) -> None:
        if action == "psi_setup":
            session = grid.contexts[node_id].state.config_records[SESSION_STATE_KEY]
            primes.extend([session["p"], session["q"]])  # type: ignore[list-item]

    grid = LoopbackGrid(make_party_app(THREE_PARTIES), 3, tamper=grab_primes)
    # Execute
    align_loopback(grid)
    # Assert
    values = [value for _, _, fields in grid.traffic for value in fields.values()]
    flat = [item for value in values for item in (value if isinstance(value, list) else [value])]
    blob = b"|".join(item if isinstance(item, bytes) else str(item).encode() for item in flat)
    salts = [
        fields["header.salt"]
        for _, action, fields in grid.traffic
        if action == "psi_evaluate" and "header.salt" in fields
    ]
    assert len(salts) == 2 and len(primes) == 4
    for ids in THREE_PARTIES.values():
        for identifier in ids:
            data = canonical_id_bytes(identifier)
            assert data not in blob and str(identifier).encode() not in blob
            for salt in salts:
                hashed, _ = hash_id(salt, data, 64, 1)  # type: ignore[arg-type]
                assert hashed.to_bytes(8, "big") not in blob and str(hashed).encode() not in blob
    assert not any(prime in blob for prime in primes)


def test_larger_set_policy_gives_the_same_result(backend: str) -> None:
    # Prepare: the label holder has the smaller set, so the passive party becomes the receiver
    ids = {0: [f"u{i}" for i in range(10)], 1: [f"u{i}" for i in range(5, 40)]}
    grid = LoopbackGrid(make_party_app(ids), 2)
    # Execute
    report = align_loopback(grid, senders=(1,), roles="larger_set", backend=backend)
    # Assert
    assert report.pairs[0].receiver_node == 101
    assert_consistent(grid, ids, {f"u{i}" for i in range(5, 10)})


def test_realigning_replaces_the_stored_alignment(backend: str) -> None:
    grid = LoopbackGrid(make_party_app(THREE_PARTIES), 3)
    first = align_loopback(grid, backend=backend)
    second = align_loopback(grid, backend="ecdh" if backend == "paillier" else "paillier")
    assert first.alignment_id != second.alignment_id
    assert get_alignment(grid.context(2)).alignment_id == second.alignment_id


def test_get_alignment_before_alignment_raises() -> None:
    grid = LoopbackGrid(make_party_app(THREE_PARTIES), 3)
    with pytest.raises(AlignmentNotFoundError, match="run_alignment"):
        get_alignment(grid.context(0))


def test_empty_intersection_is_an_error_unless_allowed(backend: str) -> None:
    ids = {0: ["a", "b"], 1: ["c"], 2: ["a"]}
    grid = LoopbackGrid(make_party_app(ids), 3)
    with pytest.raises(AlignmentError, match="empty intersection") as info:
        align_loopback(grid, backend=backend)
    assert info.value.node_id == 101
    assert info.value.step == ("psi_finish" if backend == "paillier" else "psi_ecdh_finish")
    assert_clean(grid, ids)
    align_loopback(grid, allow_empty=True, backend=backend)
    assert all(get_alignment(grid.context(pid)).ids == () for pid in ids)


def test_empty_set_is_an_error(backend: str) -> None:
    ids = {0: ["a"], 1: [], 2: ["a"]}
    grid = LoopbackGrid(make_party_app(ids), 3)
    with pytest.raises(AlignmentError, match="party 101 has no IDs") as info:
        align_loopback(grid, backend=backend)
    assert info.value.step == "psi_begin"
    assert_clean(grid, ids)
    align_loopback(grid, allow_empty=True, backend=backend)
    assert all(get_alignment(grid.context(pid)).ids == () for pid in ids)


# --------------------------------------------------------------------------------------------------
# Faults: each names the party and step and leaves nothing half-written
# --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("backend", "node", "action"),
    [
        ("paillier", 100, "psi_setup"),
        ("paillier", 101, "psi_evaluate"),
        ("paillier", 101, "psi_respond"),
        ("paillier", 100, "psi_decrypt"),
        ("paillier", 102, "psi_precompute"),
        ("paillier", 100, "psi_order"),
        ("paillier", 102, "psi_prepare"),
        ("ecdh", 100, "psi_ecdh_blind"),
        ("ecdh", 102, "psi_ecdh_blind"),
        ("ecdh", 101, "psi_ecdh_points"),
        ("ecdh", 101, "psi_ecdh_exponentiate"),
        ("ecdh", 100, "psi_ecdh_exponentiate"),
        ("ecdh", 100, "psi_ecdh_doubled"),
        ("ecdh", 100, "psi_ecdh_finish"),
        ("ecdh", 100, "psi_order"),
        ("ecdh", 102, "psi_prepare"),
    ],
)
def test_error_reply_aborts_everywhere(backend: str, node: int, action: str) -> None:
    # Prepare
    grid = LoopbackGrid(make_party_app(THREE_PARTIES), 3, fail_at={(node, action)})
    # Execute
    with pytest.raises(AlignmentError, match=f"party {node} failed at {action}: injected fault") as info:
        align_loopback(grid, backend=backend)
    # Assert
    assert (info.value.node_id, info.value.step) == (node, action)
    assert_clean(grid, THREE_PARTIES)
    assert [entry for entry in grid.log if entry[1] == "psi_abort"] == [
        (100, "psi_abort"),
        (101, "psi_abort"),
        (102, "psi_abort"),
    ]


@pytest.mark.parametrize(
    ("backend", "action"),
    [
        ("paillier", "psi_begin"),
        ("paillier", "psi_evaluate"),
        ("paillier", "psi_responses"),
        ("paillier", "psi_prepare"),
        ("paillier", "psi_commit"),
        ("ecdh", "psi_begin"),
        ("ecdh", "psi_ecdh_points"),
        ("ecdh", "psi_ecdh_exponentiate"),
        ("ecdh", "psi_prepare"),
        ("ecdh", "psi_commit"),
    ],
)
def test_party_dropping_mid_protocol(backend: str, action: str) -> None:
    # Prepare: party 2 (or 1 for the first session's steps) disappears when ``action`` reaches it
    node = 101 if action.startswith(("psi_evaluate", "psi_responses", "psi_ecdh")) else 102
    grid = LoopbackGrid(make_party_app(THREE_PARTIES), 3, drop_at={node: action})
    # Execute
    with pytest.raises(AlignmentError, match=f"party {node} did not reply to {action}") as info:
        align_loopback(grid, timeout=0.5, backend=backend)
    # Assert: the others hold nothing (a commit that happened is rolled back)
    assert (info.value.node_id, info.value.step) == (node, action)
    assert_clean(grid, [pid for pid in range(3) if 100 + pid != node])


def test_missing_party_is_named_before_anything_starts(backend: str) -> None:
    grid = LoopbackGrid(make_party_app(THREE_PARTIES), 3, offline={102})
    with pytest.raises(AlignmentError, match="party 102 is not connected"):
        align_loopback(grid, backend=backend)
    assert not any(action == "psi_begin" for _, action in grid.log)


def test_commit_failure_rolls_back_to_the_previous_alignment(backend: str) -> None:
    # Prepare: a first alignment succeeds
    grid = LoopbackGrid(make_party_app(THREE_PARTIES), 3)
    first = align_loopback(grid, backend=backend)
    # Execute: the second fails at party 2's commit, after parties 0 and 1 committed
    grid.fail_at.add((102, "psi_commit"))
    with pytest.raises(AlignmentError, match="psi_commit"):
        align_loopback(grid, backend=backend)
    # Assert: everyone is back on the first alignment
    for pid in range(3):
        assert get_alignment(grid.context(pid)).alignment_id == first.alignment_id


def test_out_of_range_ciphertext_is_rejected_by_the_sender() -> None:
    def corrupt(node_id: int, action: str, fields: dict[str, object]) -> None:
        if action == "psi_evaluate" and fields["index"] == 0:
            chunk = bytearray(fields["chunk"])  # type: ignore[arg-type]
            chunk[:64] = b"\xff" * 64  # first ciphertext >= n²
            fields["chunk"] = bytes(chunk)

    grid = LoopbackGrid(make_party_app(THREE_PARTIES), 3, tamper=corrupt)
    with pytest.raises(AlignmentError, match=r"psi_evaluate.*not in Z\*_\(n\^2\)"):
        align_loopback(grid)
    assert_clean(grid, THREE_PARTIES)


def test_zero_reply_is_rejected_by_the_receiver() -> None:
    def corrupt(node_id: int, action: str, fields: dict[str, object]) -> None:
        if action == "psi_decrypt":
            chunk = bytearray(fields["chunk"])  # type: ignore[arg-type]
            chunk[:128] = bytes(128)  # first reply = 0
            fields["chunk"] = bytes(chunk)

    grid = LoopbackGrid(make_party_app(THREE_PARTIES), 3, tamper=corrupt)
    with pytest.raises(AlignmentError, match="party 100 failed at psi_decrypt.*reply chunk 0"):
        align_loopback(grid)


SMALL_ORDER_POINT = bytes.fromhex("26e8958fc2b227b045c3f489f2ef98f0d5dfac05d3c63339b13802886d53fc05")  # order 8
X25519_ORDER_8 = montgomery_u(SMALL_ORDER_POINT)  # its u-coordinate on curve25519
TWIST_POINT = (2).to_bytes(32, "little")  # 2^3 + 486662·2^2 + 2 is not a square mod p: u = 2 is on the twist


def _mixed_order_point() -> bytes:
    """A curve point with a component of order 8: valid encoding, outside the prime-order group."""
    return sodium.crypto_core_ed25519_add(hash_to_edwards("s", b"x"), SMALL_ORDER_POINT)


EDWARDS_REFUSAL = "is not a valid point of the prime-order edwards25519 group"


@pytest.mark.parametrize(
    ("group", "node", "bad", "message"),
    [
        pytest.param("edwards25519", 101, b"\xff" * 32, EDWARDS_REFUSAL, id="edwards_sender_refuses_garbage"),
        pytest.param("edwards25519", 101, bytes(32), EDWARDS_REFUSAL, id="edwards_sender_refuses_zero"),
        pytest.param("edwards25519", 100, SMALL_ORDER_POINT, EDWARDS_REFUSAL, id="edwards_receiver_refuses_small_order"),
        pytest.param("edwards25519", 100, None, EDWARDS_REFUSAL, id="edwards_receiver_refuses_mixed_order"),
        pytest.param("x25519", 101, b"\xff" * 32, r"is not a canonical u-coordinate \(u >= 2\^255 - 19\)", id="x25519_sender_refuses_top_bit"),
        pytest.param("x25519", 101, FIELD_PRIME.to_bytes(32, "little"), "is not a canonical u-coordinate", id="x25519_sender_refuses_p"),
        pytest.param("x25519", 101, bytes(32), r"is of small order \(X25519 gives the all-zero output", id="x25519_sender_refuses_zero"),
        pytest.param("x25519", 100, X25519_ORDER_8, "is of small order", id="x25519_receiver_refuses_order_8"),
        pytest.param("x25519", 100, TWIST_POINT, r"is not on curve25519 \(it lies on the quadratic twist\)", id="x25519_receiver_refuses_twist"),
    ],
)
def test_malformed_point_is_refused(group: str, node: int, bad: bytes | None, message: str) -> None:
    # Prepare: replace point 3 of the first chunk of points on its way to ``node``
    point = _mixed_order_point() if bad is None else bad
    if group == "edwards25519":
        assert not sodium.crypto_core_ed25519_is_valid_point(point)

    def corrupt(node_id: int, action: str, fields: dict[str, object]) -> None:
        if action == "psi_ecdh_exponentiate" and node_id == node and fields["index"] == 0:
            chunk = bytearray(fields["chunk"])  # type: ignore[arg-type]
            chunk[3 * 32 : 4 * 32] = point
            fields["chunk"] = bytes(chunk)

    grid = LoopbackGrid(make_party_app(THREE_PARTIES), 3, tamper=corrupt)
    # Execute
    with pytest.raises(AlignmentError, match=rf"party {node} failed at psi_ecdh_exponentiate:.*peer point chunk 0: "
                       rf"point 3 \(.*{point.hex()}\) {message}") as info:
        align_loopback(grid, backend="ecdh", ecdh_group=group)
    # Assert
    assert (info.value.node_id, info.value.step) == (node, "psi_ecdh_exponentiate")
    assert_clean(grid, THREE_PARTIES)


def _with_order_8_component(u: bytes) -> bytes:
    """u(P + T) for the curve25519 point P of u-coordinate ``u`` and T of order 8 (RFC 7748 §4.1 map)."""
    value = int.from_bytes(u, "little")
    y = (value - 1) * pow(value + 1, -1, FIELD_PRIME) % FIELD_PRIME
    return montgomery_u(sodium.crypto_core_ed25519_add(y.to_bytes(32, "little"), SMALL_ORDER_POINT))


def test_x25519_kills_a_small_order_component_of_a_received_point() -> None:
    # Prepare: every receiver point gets a component of order 8 on its way to the sender
    def corrupt(node_id: int, action: str, fields: dict[str, object]) -> None:
        if action == "psi_ecdh_exponentiate" and node_id == 101:
            chunk: bytes = fields["chunk"]  # type: ignore[assignment]
            mixed = [_with_order_8_component(chunk[i : i + 32]) for i in range(0, len(chunk), 32)]
            assert all(point != chunk[i * 32 : i * 32 + 32] for i, point in enumerate(mixed))
            fields["chunk"] = b"".join(mixed)

    grid = LoopbackGrid(make_party_app(THREE_PARTIES), 3, tamper=corrupt)
    # Execute: the clamped scalar is a multiple of 8, so the sender's replies are unchanged
    report = align_loopback(grid, backend="ecdh")
    # Assert: the exact intersection, nothing refused, nothing lost
    assert report.aligned_size == len(SHARED)
    assert_consistent(grid, THREE_PARTIES, SHARED)


@pytest.mark.parametrize(
    ("node", "step", "edit", "message"),
    [
        pytest.param(101, "psi_ecdh_exponentiate", lambda c: c + c[:32], "more points than the 60 IDs it announced", id="extra_point"),
        pytest.param(101, "psi_ecdh_exponentiate", lambda c: c[:-5], "not a whole number of 32-byte points", id="torn_point"),
        pytest.param(100, "psi_ecdh_doubled", lambda c: c[:-32], "returned chunk 0: .* bytes, expected", id="short_return"),
        pytest.param(100, "psi_ecdh_doubled", lambda c: c[:32] * (len(c) // 32), "returned points repeat", id="repeated_return"),
        pytest.param(100, "psi_ecdh_exponentiate", lambda c: c[:32] * (len(c) // 32), "sender's points are equal", id="sender_duplicates"),
    ],
)
def test_tampered_point_streams_are_refused(node: int, step: str, edit: Callable[[bytes], bytes], message: str) -> None:
    def corrupt(node_id: int, action: str, fields: dict[str, object]) -> None:
        if action == step and node_id == node and fields["index"] == 0:
            fields["chunk"] = edit(fields["chunk"])  # type: ignore[arg-type]

    grid = LoopbackGrid(make_party_app(THREE_PARTIES), 3, tamper=corrupt)
    with pytest.raises(AlignmentError, match=f"party {node} failed at .*{message}"):
        align_loopback(grid, backend="ecdh")
    assert_clean(grid, THREE_PARTIES)


def test_ecdh_server_sees_no_id_no_hash_and_no_scalar() -> None:
    # Prepare: remember each party's secret scalar once drawn
    scalars: list[bytes] = []

    def grab_scalars(node_id: int, action: str, fields: dict[str, object]) -> None:
        if action == "psi_ecdh_points" and fields["index"] == 0:
            scalars.append(grid.contexts[node_id].state.config_records[SESSION_STATE_KEY]["scalar"])  # type: ignore[arg-type]

    grid = LoopbackGrid(make_party_app(THREE_PARTIES), 3, tamper=grab_scalars)
    # Execute
    report = align_loopback(grid, backend="ecdh")
    # Assert: no ID, no canonical bytes, no unblinded hash H(x), no scalar crosses the server
    values = [value for _, _, fields in grid.traffic for value in fields.values()]
    flat = [item for value in values for item in (value if isinstance(value, list) else [value])]
    blob = b"|".join(item if isinstance(item, bytes) else str(item).encode() for item in flat)
    assert len(scalars) == 4 and not any(scalar in blob for scalar in scalars)
    for ids in THREE_PARTIES.values():
        for identifier in ids:
            data = canonical_id_bytes(identifier)
            assert data not in blob and str(identifier).encode() not in blob
            for pair in report.pairs:
                assert hash_to_x25519(pair.session_id, data) not in blob
                assert hash_to_edwards(pair.session_id, data) not in blob


def test_a_step_of_the_other_backend_is_refused() -> None:
    # Prepare: an ECDH session in progress at the label holder
    grid = LoopbackGrid(make_party_app(THREE_PARTIES), 3, fail_at={(100, "psi_ecdh_finish")})
    with pytest.raises(AlignmentError):
        align_loopback(grid, backend="ecdh")
    context = grid.context(0)
    staging = {"alignment_id": "a", "digest": "", "running": [], "sessions": []}
    session = {"role": "receiver", "session_id": "s", "backend": "ecdh"}
    context.state[STAGING_STATE_KEY] = ConfigRecord(staging)  # type: ignore[arg-type]
    context.state[SESSION_STATE_KEY] = ConfigRecord(session)
    message = Message(
        RecordDict({CONTENT_KEY: ConfigRecord({"alignment_id": "a", "session_id": "s", "index": 0, "count": 1, "chunk": b""})}),
        dst_node_id=100,
        message_type=message_type("psi_decrypt"),
    )
    # Execute / Assert: a Paillier step cannot touch the ECDH session
    with pytest.raises(PSIError, match="uses the ecdh backend, not paillier"):
        grid.app(message, context)


@pytest.mark.parametrize(("backend", "step"), [("paillier", "psi_respond"), ("ecdh", "psi_ecdh_exponentiate")])
def test_mismatched_session_is_rejected(backend: str, step: str) -> None:
    def other_session(node_id: int, action: str, fields: dict[str, object]) -> None:
        if action == step:
            fields["session_id"] = "0" * 32

    grid = LoopbackGrid(make_party_app(THREE_PARTIES), 3, tamper=other_session)
    with pytest.raises(AlignmentError, match=f"{step}.*another PSI session"):
        align_loopback(grid, backend=backend)


@pytest.mark.parametrize(("backend", "step"), [("paillier", "psi_setup"), ("ecdh", "psi_ecdh_blind")])
def test_mismatched_alignment_is_rejected(backend: str, step: str) -> None:
    def other_alignment(node_id: int, action: str, fields: dict[str, object]) -> None:
        if action == step:
            fields["alignment_id"] = "stale"

    grid = LoopbackGrid(make_party_app(THREE_PARTIES), 3, tamper=other_alignment)
    with pytest.raises(AlignmentError, match=f"{step}.*another alignment"):
        align_loopback(grid, backend=backend)


def test_small_key_refused_by_a_node_without_the_test_flag() -> None:
    grid = LoopbackGrid(make_party_app(THREE_PARTIES, allow_insecure_key_size=False), 3)
    with pytest.raises(AlignmentError, match="party 100 failed at psi_keygen.*key_bits must be >= 2048"):
        align_loopback(grid)


def test_duplicate_ids_are_rejected_without_naming_them(backend: str) -> None:
    ids = {0: ["secret-a", "secret-b", "secret-a"], 1: ["secret-a"]}
    grid = LoopbackGrid(make_party_app(ids), 2)
    with pytest.raises(AlignmentError, match=r"party 100 failed at psi_begin.*row 2 repeats row 0") as info:
        align_loopback(grid, senders=(1,), backend=backend)
    assert "secret" not in str(info.value)


def test_duplicates_kept_first_align_on_the_first_row(backend: str) -> None:
    ids = {0: ["a", "b", "a", "c"], 1: ["c", "a", "d"]}
    grid = LoopbackGrid(make_party_app(ids, duplicates="keep_first"), 2)
    with pytest.warns(UserWarning, match="dropped 1 row"):
        align_loopback(grid, senders=(1,), backend=backend)
    alignments = [get_alignment(grid.context(pid)) for pid in ids]
    assert set(alignments[0].ids) == {"a", "c"} and alignments[0].ids == alignments[1].ids
    assert dict(zip(alignments[0].ids, alignments[0].rows, strict=True)) == {"a": 0, "c": 3}


def test_unhashable_id_is_rejected(backend: str) -> None:
    ids = {0: ["a", ["not", "an", "id"]], 1: ["a"]}
    grid = LoopbackGrid(make_party_app(ids), 2)
    with pytest.raises(AlignmentError, match=r"psi_begin.*row 1: IDs must be str or int, got list"):
        align_loopback(grid, senders=(1,), backend=backend)


def test_ids_changing_mid_alignment_are_detected(backend: str) -> None:
    ids: dict[int, list[object]] = {0: ["a", "b"], 1: ["a", "b"]}
    step = "psi_keygen" if backend == "paillier" else "psi_ecdh_blind"

    def mutate(node_id: int, action: str, fields: dict[str, object]) -> None:
        if action == step:
            ids[0].append("c")

    grid = LoopbackGrid(make_party_app(ids), 2, tamper=mutate)  # type: ignore[arg-type]
    with pytest.raises(AlignmentError, match=f"{step}.*IDs changed"):
        align_loopback(grid, senders=(1,), backend=backend)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"sender_nodes": []}, "at least one passive party"),
        ({"sender_nodes": [100]}, "distinct"),
        ({"roles": "anyone"}, "roles must be"),
        ({"timeout": 0.0}, "timeout must be > 0"),
        ({"precompute_weight": 0.0}, "precompute_weight must be in"),
        ({"backend": "rsa"}, r"backend must be one of \('paillier', 'ecdh'\), got 'rsa'"),
    ],
)
def test_invalid_arguments(kwargs: dict[str, object], message: str) -> None:
    grid = LoopbackGrid(make_party_app(THREE_PARTIES), 3)
    options = {"receiver_node": 100, "sender_nodes": [101], "timeout": 1.0, **kwargs}
    with pytest.raises(ValueError, match=message):
        run_alignment(grid, **options)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("options", "message"),
    [({"workers": 0}, "workers must be >= 1"), ({"duplicates": "merge"}, "duplicates must be")],
)
def test_register_rejects_bad_options(options: dict[str, object], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        register_psi_handlers(ClientApp(), lambda context: [], **options)  # type: ignore[arg-type]


def test_register_twice_on_one_app_is_refused() -> None:
    app = make_party_app(THREE_PARTIES)
    with pytest.raises(ValueError, match="already registered"):
        register_psi_handlers(app, lambda context: [])


# --------------------------------------------------------------------------------------------------
# The wire vocabulary (protocol.psi) and the import rule
# --------------------------------------------------------------------------------------------------


def test_every_handler_has_a_message_type() -> None:
    app = make_party_app(THREE_PARTIES)
    assert [message_type(action) for action in ACTIONS] == [f"query.{action}" for action in ACTIONS]
    assert set(app._registered_funcs) >= {message_type(action) for action in ACTIONS}
    with pytest.raises(ValueError, match="action must be one of the PSI actions, got 'psi_nothing'"):
        message_type("psi_nothing")


def test_setup_header_travels_as_prefixed_fields() -> None:
    # Prepare: a psi_setup reply (header fields + num_chunks)
    header = SetupHeader("s1", 2**511 + 1, bytes(16), 64, 10, 3, 25, 4)
    reply = {**header.to_config(), "num_chunks": header.num_chunks}
    # Execute: what the server relays with chunk 0, and what the sender reads back
    relayed = header_fields(reply)
    # Assert
    assert all(key.startswith("header.") for key in relayed) and "header.num_chunks" not in relayed
    assert SetupHeader.from_config(strip_header_fields({**relayed, "index": 0, "chunk": b""})) == header
    assert positions_key("s1") == "positions.s1"


@pytest.mark.parametrize(
    ("config", "kind", "message"),
    [
        pytest.param({}, int, "field 'size' missing or not int", id="missing"),
        pytest.param({"size": True}, int, "field 'size' missing or not int", id="bool_is_not_int"),
        pytest.param({"size": "3"}, int, "field 'size' missing or not int", id="wrong_type"),
    ],
)
def test_require_field_names_the_field(config: dict[str, object], kind: type, message: str) -> None:
    with pytest.raises(PSIError, match=message):
        require_field(config, "size", kind)


def test_server_imports_no_party_code() -> None:
    """strategies.alignment decodes the phase through protocol.psi only: no clients/, no crypto, no torch."""
    code = (
        "import sys, strategies.alignment; "
        "print(sorted({m.split('.')[0] for m in sys.modules} & "
        "{'clients', 'simulations', 'torch', 'phe', 'gmpy2', 'hydra'}))"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "[]"
