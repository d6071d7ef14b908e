"""Secure vote aggregation ([BIK+17]) over the Message API: exact sums, uniform masked vectors, dropouts,
tampering and replay, and the reconstruction threshold."""

from __future__ import annotations

import numpy as np
import pytest
from flwr.app import ConfigRecord, Message, RecordDict
from flwr.clientapp import ClientApp
from scipy import stats

from clients.pate.secagg import handle_keys, handle_shares, handle_unmask, make_masked_handler
from protocol.pate import array_record
from protocol.secagg import MASKED, SCALE, decode, encode, party_bound
from protocol.secagg_crypto import SecAggError, shamir_reconstruct, shamir_share
from strategies.secagg import SecAggServer
from tests.fake_grid import InProcessGrid, task_identity

SHAPE = (64, 10)
NODES = [11, 12, 13, 14, 15]


@pytest.fixture(autouse=True)
def _identity():
    with task_identity():
        yield


def node_votes(node: int, step: int) -> np.ndarray:
    """Each node's (fake) vote counts at a step: integers that differ per node and step."""
    return np.random.default_rng(node * 100 + step).integers(0, 7, size=SHAPE).astype(np.float64)


def noise_of(node: int, step: int, std: float) -> np.ndarray:
    return np.random.default_rng([node, step, 7]).normal(0.0, std, size=SHAPE)


def build(unmask_fails: frozenset[int] = frozenset()) -> InProcessGrid:
    """Five nodes with fake votes and reproducible noise (so the test can recompute the noised sum)."""
    app = ClientApp()

    def votes_fn(msg, context):
        return node_votes(context.node_id, int(msg.content["secagg"]["step"]))

    def rng_fn(msg, context):
        return np.random.default_rng([context.node_id, int(msg.content["secagg"]["step"]), 7])

    def unmask(msg, context):
        if context.node_id in unmask_fails:
            raise RuntimeError("node went away before unmasking")
        return handle_unmask(msg, context)

    app.query("secagg_keys")(handle_keys)
    app.query("secagg_shares")(handle_shares)
    app.query("secagg_masked")(make_masked_handler(votes_fn, rng_fn))
    app.query("secagg_unmask")(unmask)
    return InProcessGrid(app, {n: {} for n in NODES})


def message(node: int, message_type: str, **records) -> Message:
    return Message(RecordDict(records), dst_node_id=node, message_type=message_type)


def ready_server(grid: InProcessGrid, threshold: int = 3) -> SecAggServer:
    server = SecAggServer(NODES, threshold=threshold)
    assert server.setup(grid, message) == {}
    return server


def test_the_recovered_sum_is_the_sum_of_the_noised_votes():
    grid = build()
    server = ready_server(grid)
    for step in range(2):  # fresh masks every step
        std = {n: 2.5 for n in NODES}
        result = server.aggregate(grid, message, std, SHAPE, {})
        expected = sum(node_votes(n, step) + noise_of(n, step, 2.5) for n in NODES)
        assert result.survivors == NODES and result.dropped == {}
        # each node rounds to 2^-16 of a vote: the sum is off by at most 5 half-units
        assert np.max(np.abs(result.total - expected)) <= len(NODES) / (2 * SCALE)
        assert np.max(np.abs(result.total - expected)) > 0  # the noise is really there, not rounded away


def test_what_the_server_sees_from_one_node_is_uniform():
    grid = build()
    server = ready_server(grid)
    seen: list[np.ndarray] = []
    grid.faulty[13] = lambda reply: (seen.append(reply.content.array_records[MASKED]["y"].numpy())
                                     if MASKED in reply.content.array_records else None) or reply
    for _ in range(4):
        server.aggregate(grid, message, {n: 1.0 for n in NODES}, SHAPE, {})
    words = np.concatenate([y.ravel() for y in seen])  # 2560 words, the votes are in [0, 7)
    assert stats.kstest(words.astype(np.float64) / 2.0**64, "uniform").pvalue > 1e-3
    low_bytes = (words & np.uint64(0xFF)).astype(int)  # where the encoded votes would show
    assert stats.chisquare(np.bincount(low_bytes, minlength=256)).pvalue > 1e-3
    assert abs(np.corrcoef(words[:640].astype(float), node_votes(13, 0).ravel())[0, 1]) < 0.15


def test_a_node_dropping_before_its_masked_vector_is_survived_and_leaves():
    grid = build()
    server = ready_server(grid)
    grid.silent.add(12)
    result = server.aggregate(grid, message, {n: 0.0 for n in NODES}, SHAPE, {})
    assert result.survivors == [11, 13, 14, 15]
    assert "no reply to query.secagg_masked" in result.dropped[12]
    np.testing.assert_array_equal(result.total, sum(node_votes(n, 0) for n in [11, 13, 14, 15]))
    assert server.active == [11, 13, 14, 15]
    result = server.aggregate(grid, message, {n: 0.0 for n in server.active}, SHAPE, {})
    np.testing.assert_array_equal(result.total, sum(node_votes(n, 1) for n in [11, 13, 14, 15]))


def test_a_node_dropping_before_unmasking_still_counts_then_leaves():
    grid = build(unmask_fails={14})
    server = ready_server(grid)
    result = server.aggregate(grid, message, {n: 0.0 for n in NODES}, SHAPE, {})
    assert result.survivors == NODES and "node went away" in result.late[14]
    np.testing.assert_array_equal(result.total, sum(node_votes(n, 0) for n in NODES))
    assert 14 not in server.active


def _flip_one_bit(reply: Message) -> Message:
    if MASKED in reply.content.array_records:
        y = reply.content.array_records[MASKED]["y"].numpy().copy()
        y[0, 0] ^= np.uint64(1)
        reply.content.array_records[MASKED] = array_record(y=y)
    return reply


def test_a_tampered_masked_vector_is_rejected_and_its_node_dropped():
    grid = build()
    server = ready_server(grid)
    grid.faulty[15] = _flip_one_bit
    result = server.aggregate(grid, message, {n: 0.0 for n in NODES}, SHAPE, {})
    assert "tag does not match" in result.dropped[15]
    np.testing.assert_array_equal(result.total, sum(node_votes(n, 0) for n in NODES[:4]))


def test_a_replayed_masked_vector_is_rejected():
    grid = build()
    server = ready_server(grid)
    old: dict[str, RecordDict] = {}

    def replay(reply: Message) -> Message:
        if MASKED in reply.content.array_records:
            if "content" in old:
                reply.content = old["content"]  # step 0's reply, resent at step 1
            else:
                old["content"] = reply.content
        return reply

    grid.faulty[11] = replay
    server.aggregate(grid, message, {n: 0.0 for n in NODES}, SHAPE, {})
    result = server.aggregate(grid, message, {n: 0.0 for n in NODES}, SHAPE, {})
    assert "replayed" in result.dropped[11]
    np.testing.assert_array_equal(result.total, sum(node_votes(n, 1) for n in NODES[1:]))


def test_fewer_nodes_than_the_threshold_stops_with_a_clear_error():
    grid = build()
    server = ready_server(grid, threshold=4)
    grid.silent.update({12, 13})
    with pytest.raises(SecAggError, match=r"only 3 of 5 nodes sent a valid masked vector, fewer than the "
                                          r"reconstruction threshold 4"):
        server.aggregate(grid, message, {n: 0.0 for n in NODES}, SHAPE, {})


def test_setup_below_the_threshold_stops():
    grid = build()
    grid.broken.update({11: "down", 12: "down", 13: "down"})
    with pytest.raises(SecAggError, match="only 2 nodes completed the secure-aggregation setup"):
        SecAggServer(NODES, threshold=3).setup(grid, message)


def test_a_node_refuses_to_mask_a_step_twice_or_unmask_one_node_twice():
    grid = build()
    server = ready_server(grid)
    server.aggregate(grid, message, {n: 0.0 for n in NODES}, SHAPE, {})
    server.step = 0  # a server that tries to reuse step 0's masks
    with pytest.raises(SecAggError, match="only 0 of 5"):
        server.aggregate(grid, message, {n: 0.0 for n in NODES}, SHAPE, {})
    request = message(11, "query.secagg_unmask", secagg=ConfigRecord(
        {"session": server.session, "step": 0, "survivors": [11, 12, 13], "dropped": [13]}))
    reply = grid.send_and_receive([request])[0]
    assert reply.has_error() and "named both survivor and dropped" in reply.error.reason


@pytest.mark.parametrize("name, kwargs, error", [
    ("one node", {"nodes": [1]}, ">= 2 distinct nodes"),
    ("threshold above n", {"nodes": [1, 2, 3], "threshold": 4}, r"threshold must be in \[2, 3\]"),
    ("threshold 1", {"nodes": [1, 2, 3], "threshold": 1}, r"threshold must be in \[2, 3\]"),
])
def test_server_settings_are_checked(name, kwargs, error):
    with pytest.raises(ValueError, match=error):
        SecAggServer(**kwargs)


def test_encoding_is_exact_for_signed_sums_and_refuses_what_could_wrap():
    parts = [np.array([[1.5, -2.25]]), np.array([[-3.0, 0.125]]), np.array([[2**-16, -(2**20)]])]
    total = sum(encode(p, 3) for p in parts)
    np.testing.assert_array_equal(decode(total), sum(parts))
    with pytest.raises(ValueError, match="exceeds the per-party bound"):
        encode(np.array([party_bound(3) / SCALE * 1.01]), 3)
    with pytest.raises(ValueError, match="finite"):
        encode(np.array([np.nan]), 3)


def test_shamir_any_t_shares_reconstruct_and_fewer_refuse():
    secret = bytes(range(32))
    shares = shamir_share(secret, [1, 2, 3, 4, 5], 3)
    for subset in ([1, 2, 3], [2, 4, 5], [1, 3, 5]):
        assert shamir_reconstruct({x: shares[x] for x in subset}, 3) == secret
    with pytest.raises(SecAggError, match="2 shares cannot reconstruct"):
        shamir_reconstruct({1: shares[1], 2: shares[2]}, 3)
