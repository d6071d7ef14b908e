"""Tests for clients.psi.ecdh: the group, the hash, both roles in one process, and the exact
intersection against the Paillier backend through the one interface (``clients.psi.align``)."""

from __future__ import annotations

import hashlib

import nacl.bindings as sodium
import pytest

from clients import psi
from clients.psi.ecdh import (
    HASH_DOMAIN,
    POINT_BYTES,
    ECDHReceiver,
    ECDHSender,
    align_ecdh,
    hash_to_group,
    random_scalar,
)
from protocol.psi import PSIError, SessionMismatchError

pytestmark = pytest.mark.filterwarnings("ignore::clients.psi.InsecureParameterWarning")

GROUP_ORDER = 2**252 + 27742317777372353535851937790883648493  # L, the prime order of the group


def test_hash_to_group_is_a_deterministic_point_of_the_prime_order_group_per_session() -> None:
    point = hash_to_group("s1", b"suser-1")
    assert len(point) == POINT_BYTES and sodium.crypto_core_ed25519_is_valid_point(point)
    assert hash_to_group("s1", b"suser-1") == point
    assert hash_to_group("s2", b"suser-1") != point  # the session separates the hashes
    assert hash_to_group("s1", b"suser-2") != point
    # H(x) is the documented construction: two Elligator maps of the halves of a domain-separated
    # SHA-512, added (RFC 9380 hash_to_curve), not one map of one half
    digest = hashlib.sha512(HASH_DOMAIN + (2).to_bytes(2, "big") + b"s1" + b"suser-1").digest()
    first, second = (sodium.crypto_core_ed25519_from_uniform(half) for half in (digest[:32], digest[32:]))
    assert point == sodium.crypto_core_ed25519_add(first, second) != first


def test_random_scalars_are_nonzero_reduced_and_fresh() -> None:
    scalars = [random_scalar() for _ in range(50)]
    assert len(set(scalars)) == 50
    assert all(0 < int.from_bytes(scalar, "little") < GROUP_ORDER for scalar in scalars)


def test_double_exponentiation_commutes() -> None:
    a, b = random_scalar(), random_scalar()
    point = hash_to_group("s", b"sx")
    via_a = sodium.crypto_scalarmult_ed25519_noclamp(b, sodium.crypto_scalarmult_ed25519_noclamp(a, point))
    via_b = sodium.crypto_scalarmult_ed25519_noclamp(a, sodium.crypto_scalarmult_ed25519_noclamp(b, point))
    assert via_a == via_b != point


CASES = {
    "overlap": ([f"u{i}" for i in range(40)], [f"u{i}" for i in range(55, 20, -1)]),
    "str_vs_int": (["7", 7, "x", 12], [7, "12", "x"]),
    "unicode": (["zoë", "zoe", "東京", " "], ["東京", "zoe\u0308", " "]),
    "disjoint": (["a", "b"], ["c"]),
    "subset": (list(range(30)), [3, 29, 0]),
}


@pytest.mark.parametrize("backend", ["paillier", "ecdh"])
@pytest.mark.parametrize("case", CASES)
def test_exact_intersection_in_canonical_order_with_own_rows(backend: str, case: str) -> None:
    # Prepare
    ids_a, ids_b = CASES[case]
    # Execute
    alignment_a, alignment_b = psi.align(
        ids_a, ids_b, backend=backend, key_bits=512, allow_insecure_key_size=True, chunk_bytes=4096
    )
    # Assert: exactly the shared IDs (str "7" and int 7 differ), canonical order, rows into own lists
    expected = {psi.canonical_id_bytes(x) for x in ids_a} & {psi.canonical_id_bytes(x) for x in ids_b}
    assert {psi.canonical_id_bytes(x) for x in alignment_a.ids} == expected
    assert alignment_a.ids == alignment_b.ids
    order = psi.canonical_order([psi.canonical_id_bytes(x) for x in alignment_a.ids])
    assert order == list(range(len(order)))
    assert [ids_a[row] for row in alignment_a.rows] == list(alignment_a.ids)
    assert [ids_b[row] for row in alignment_b.rows] == list(alignment_b.ids)


def test_both_backends_give_identical_alignments() -> None:
    ids_a, ids_b = CASES["overlap"]
    paillier = psi.align(ids_a, ids_b, key_bits=512, allow_insecure_key_size=True)
    ecdh = psi.align(ids_a, ids_b, backend="ecdh")
    assert [(x.ids, x.rows, x.num_rows, x.ids_digest) for x in paillier] == [
        (x.ids, x.rows, x.num_rows, x.ids_digest) for x in ecdh
    ]


def test_process_pool_and_small_chunks_give_the_same_alignment() -> None:
    ids_a, ids_b = [f"p{i}" for i in range(300)], [f"p{i}" for i in range(150, 500)]
    one, _ = align_ecdh(ids_a, ids_b)
    pooled, _ = align_ecdh(ids_a, ids_b, workers=2, chunk_bytes=3 * POINT_BYTES + 5)
    assert pooled.ids == one.ids and len(one.ids) == 150


def _pair(ids_a: list[object], ids_b: list[object]) -> tuple[ECDHReceiver, ECDHSender]:
    receiver = ECDHReceiver(ids_a, peer_size=len(set(ids_b)), session_id="s")
    sender = ECDHSender(ids_b, peer_size=len(set(ids_a)), session_id="s")
    receiver.blind(chunk_bytes=2 * POINT_BYTES)
    sender.blind(chunk_bytes=2 * POINT_BYTES)
    return receiver, sender


def test_roles_survive_a_state_round_trip_between_steps() -> None:
    # Prepare: every step on a role rebuilt from its state, as the Flower handlers do
    receiver, sender = _pair(["a", "b", "c", "d", "e"], ["e", "c", "x"])
    for index in range(receiver.num_chunks):
        sender = ECDHSender.from_state(sender.to_state())
        doubled = sender.exponentiate_peer("s", index, receiver.point_chunk(index))
        receiver = ECDHReceiver.from_state(receiver.to_state())
        receiver.receive_doubled("s", index, doubled)
    for index in range(sender.num_chunks):
        receiver = ECDHReceiver.from_state(receiver.to_state())
        receiver.exponentiate_peer("s", index, ECDHSender.from_state(sender.to_state()).point_chunk(index))
    # Execute
    receiver = ECDHReceiver.from_state(receiver.to_state())
    rows = receiver.finish()
    alignment = ECDHSender.from_state(sender.to_state()).conclude(receiver.intersection_message())
    # Assert
    assert sorted(rows) == [2, 4] and set(alignment.ids) == {"c", "e"}
    assert alignment.ids == receiver.alignment().ids


def test_role_errors_name_what_is_wrong() -> None:
    receiver, sender = _pair(["a", "b", "c"], ["a", "z"])
    with pytest.raises(PSIError, match="already blinded"):
        sender.blind()
    with pytest.raises(SessionMismatchError, match="another PSI session"):
        sender.exponentiate_peer("other", 0, receiver.point_chunk(0))
    with pytest.raises(PSIError, match="peer point chunk 1 out of order, expected chunk 0"):
        sender.exponentiate_peer("s", 1, receiver.point_chunk(1))
    with pytest.raises(PSIError, match="point chunk 5 does not exist"):
        receiver.point_chunk(5)
    with pytest.raises(PSIError, match="the sender returned 0 of 2 own chunks"):
        receiver.finish()
    with pytest.raises(PSIError, match="more points than the 3 IDs it announced"):
        sender.exponentiate_peer("s", 0, receiver.point_chunk(0) * 2)
    with pytest.raises(PSIError, match="position 2 is out of range"):
        sender.indices_at([2])
    with pytest.raises(ValueError, match="chunk_bytes must hold one point"):
        ECDHSender(["a"], peer_size=1).blind(chunk_bytes=31)
    with pytest.raises(ValueError, match="peer_size must be >= 0"):
        ECDHSender(["a"], peer_size=-1)
    with pytest.raises(ValueError, match="row 1 repeats row 0"):
        ECDHReceiver(["a", "a"], peer_size=1)


def test_receiver_refuses_too_few_sender_points() -> None:
    receiver, sender = _pair(["a", "b"], ["a", "b", "c"])
    receiver.receive_doubled("s", 0, sender.exponentiate_peer("s", 0, receiver.point_chunk(0)))
    receiver.exponentiate_peer("s", 0, sender.point_chunk(0))  # 2 of the sender's 3 points
    with pytest.raises(PSIError, match="received 2 of the sender's 3 points"):
        receiver.finish()


def test_unknown_backend_is_refused() -> None:
    with pytest.raises(ValueError, match=r"backend must be one of \('paillier', 'ecdh'\), got 'dh'"):
        psi.align(["a"], ["a"], backend="dh")
