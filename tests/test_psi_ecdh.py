"""Tests for clients.psi.ecdh and clients.psi.ecdh_groups: both groups, the hash, the checks of received
points, both roles in one process, and the exact intersection against the Paillier backend through
the one interface (``clients.psi.align``), on every group."""

from __future__ import annotations

import dataclasses
import hashlib
import pickle

import nacl.bindings as sodium
import pytest

from clients import psi
from clients.psi.ecdh import ECDHReceiver, ECDHSender, align_ecdh
from clients.psi.ecdh_groups import (
    FIELD_PRIME,
    GROUPS,
    HASH_DOMAIN,
    POINT_BYTES,
    X25519_HASH_DOMAIN,
    ecdh_group,
    hash_to_edwards,
    hash_to_x25519,
    montgomery_u,
)
from protocol.psi import ECDH_GROUPS, PSIError, SessionMismatchError

pytestmark = pytest.mark.filterwarnings("ignore::clients.psi.InsecureParameterWarning")

GROUP_ORDER = 2**252 + 27742317777372353535851937790883648493  # L, the prime order of the group


def test_hash_to_edwards_is_a_deterministic_point_of_the_prime_order_group_per_session() -> None:
    point = hash_to_edwards("s1", b"suser-1")
    assert len(point) == POINT_BYTES and sodium.crypto_core_ed25519_is_valid_point(point)
    assert hash_to_edwards("s1", b"suser-1") == point
    assert hash_to_edwards("s2", b"suser-1") != point  # the session separates the hashes
    assert hash_to_edwards("s1", b"suser-2") != point
    # H(x) is the documented construction: two Elligator maps of the halves of a domain-separated
    # SHA-512, added (RFC 9380 hash_to_curve), not one map of one half
    digest = hashlib.sha512(HASH_DOMAIN + (2).to_bytes(2, "big") + b"s1" + b"suser-1").digest()
    first, second = (sodium.crypto_core_ed25519_from_uniform(half) for half in (digest[:32], digest[32:]))
    assert point == sodium.crypto_core_ed25519_add(first, second) != first


def test_hash_to_x25519_is_one_elligator_map_then_the_birational_map() -> None:
    # H(x) = u(F(d[:32])) under its own domain; libsodium's Ed25519 -> X25519 conversion (which also
    # checks the prime-order subgroup) agrees with our birational map
    for data in (b"suser-1", b"i7", b"s"):
        digest = hashlib.sha512(X25519_HASH_DOMAIN + (2).to_bytes(2, "big") + b"s1" + data).digest()
        edwards = sodium.crypto_core_ed25519_from_uniform(digest[:32])
        u = hash_to_x25519("s1", data)
        assert u == montgomery_u(edwards) == sodium.crypto_sign_ed25519_pk_to_curve25519(edwards)
        assert int.from_bytes(u, "little") < FIELD_PRIME
        assert u != montgomery_u(hash_to_edwards("s1", data))  # not the edwards25519 group's hash
    assert hash_to_x25519("s2", b"suser-1") != hash_to_x25519("s1", b"suser-1")
    with pytest.raises(ZeroDivisionError):  # the identity has no u-coordinate
        montgomery_u((1).to_bytes(32, "little"))


def test_edwards_scalars_are_nonzero_reduced_and_fresh() -> None:
    scalars = [GROUPS["edwards25519"].random_scalar() for _ in range(50)]
    assert len(set(scalars)) == 50
    assert all(0 < int.from_bytes(scalar, "little") < GROUP_ORDER for scalar in scalars)


def test_x25519_scalars_are_fresh_32_byte_strings() -> None:
    scalars = [GROUPS["x25519"].random_scalar() for _ in range(50)]
    assert len(set(scalars)) == 50 and {len(scalar) for scalar in scalars} == {32}


@pytest.mark.parametrize("name", ECDH_GROUPS)
def test_double_exponentiation_commutes(name: str) -> None:
    group = ecdh_group(name)
    a, b = group.random_scalar(), group.random_scalar()
    point = group.encoder("s")(b"sx")
    via_a = group.multiplier(b)(group.multiplier(a)(point))
    via_b = group.multiplier(a)(group.multiplier(b)(point))
    assert via_a == via_b != point and group.multiplier(a)(point) != group.multiplier(b)(point)


@pytest.mark.parametrize("name", ECDH_GROUPS)
def test_hot_loops_agree_with_the_single_operations(name: str) -> None:
    group = ecdh_group(name)
    scalar, ids = group.random_scalar(), [b"sa", b"sb", b"i3"]
    blinded = group.hash_and_blind((scalar, "s", ids))
    assert blinded == b"".join(group.multiplier(scalar)(group.encoder("s")(data)) for data in ids)
    other = group.random_scalar()
    assert group.exponentiate((other, blinded, 0, "chunk")) == b"".join(
        group.multiplier(other)(blinded[i : i + 32]) for i in range(0, len(blinded), 32)
    )


@pytest.mark.parametrize("name", ECDH_GROUPS)
def test_the_hot_loops_pickle_as_the_group_name(name: str) -> None:
    # the process pool sends group.hash_and_blind / group.exponentiate: the group travels as its name
    group = ecdh_group(name)
    for loop in (group.hash_and_blind, group.exponentiate):
        data = pickle.dumps(loop)
        assert name.encode() in data and b"_scalar" not in data
        assert pickle.loads(data).__self__ is group
    with pytest.raises(pickle.PicklingError, match="only the groups of GROUPS pickle"):
        pickle.dumps(dataclasses.replace(group, point_label="?"))


X25519_REFUSALS = {
    "top bit": (b"\xff" * 32, "is not a canonical u-coordinate"),
    "p + 1": ((FIELD_PRIME + 1).to_bytes(32, "little"), "is not a canonical u-coordinate"),
    "twist": ((2).to_bytes(32, "little"), "is not on curve25519"),
    "zero": (bytes(32), "is of small order"),
    "order 8": (
        (325606250916557431795983626356110631294008115727848805560023387167927233504).to_bytes(32, "little"),
        "is of small order",
    ),
}


@pytest.mark.parametrize("case", X25519_REFUSALS)
def test_x25519_refuses_malformed_and_small_order_points_by_position_and_value(case: str) -> None:
    group, (bad, reason) = ecdh_group("x25519"), X25519_REFUSALS[case]
    good = group.encoder("s")(b"sx")
    with pytest.raises(PSIError, match=rf"^chunk 7: point 12 \(u = {bad.hex()}\) {reason}"):
        group.exponentiate((group.random_scalar(), good * 2 + bad + good, 10, "chunk 7"))


def test_unknown_group_is_refused() -> None:
    with pytest.raises(
        ValueError, match=r"ECDH group must be one of \('x25519', 'edwards25519'\), got 'p256'"
    ):
        ECDHReceiver(["a"], peer_size=1, group="p256")


CASES = {
    "overlap": ([f"u{i}" for i in range(40)], [f"u{i}" for i in range(55, 20, -1)]),
    "str_vs_int": (["7", 7, "x", 12], [7, "12", "x"]),
    "unicode": (["zoë", "zoe", "東京", " "], ["東京", "zoe\u0308", " "]),
    "disjoint": (["a", "b"], ["c"]),
    "subset": (list(range(30)), [3, 29, 0]),
}


BACKENDS = [("paillier", "x25519"), *(("ecdh", name) for name in ECDH_GROUPS)]


@pytest.mark.parametrize(("backend", "group"), BACKENDS, ids=["paillier", *ECDH_GROUPS])
@pytest.mark.parametrize("case", CASES)
def test_exact_intersection_in_canonical_order_with_own_rows(backend: str, group: str, case: str) -> None:
    # Prepare
    ids_a, ids_b = CASES[case]
    # Execute
    alignment_a, alignment_b = psi.align(
        ids_a,
        ids_b,
        backend=backend,
        ecdh_group=group,
        key_bits=512,
        allow_insecure_key_size=True,
        chunk_bytes=4096,
    )
    # Assert: exactly the shared IDs (str "7" and int 7 differ), canonical order, rows into own lists
    expected = {psi.canonical_id_bytes(x) for x in ids_a} & {psi.canonical_id_bytes(x) for x in ids_b}
    assert {psi.canonical_id_bytes(x) for x in alignment_a.ids} == expected
    assert alignment_a.ids == alignment_b.ids
    order = psi.canonical_order([psi.canonical_id_bytes(x) for x in alignment_a.ids])
    assert order == list(range(len(order)))
    assert [ids_a[row] for row in alignment_a.rows] == list(alignment_a.ids)
    assert [ids_b[row] for row in alignment_b.rows] == list(alignment_b.ids)


@pytest.mark.parametrize("group", ECDH_GROUPS)
def test_both_backends_give_identical_alignments(group: str) -> None:
    ids_a, ids_b = CASES["overlap"]
    paillier = psi.align(ids_a, ids_b, key_bits=512, allow_insecure_key_size=True)
    ecdh = psi.align(ids_a, ids_b, backend="ecdh", ecdh_group=group)
    assert [(x.ids, x.rows, x.num_rows, x.ids_digest) for x in paillier] == [
        (x.ids, x.rows, x.num_rows, x.ids_digest) for x in ecdh
    ]


@pytest.mark.parametrize("group", ECDH_GROUPS)
def test_process_pool_and_small_chunks_give_the_same_alignment(group: str) -> None:
    ids_a, ids_b = [f"p{i}" for i in range(300)], [f"p{i}" for i in range(150, 500)]
    one, _ = align_ecdh(ids_a, ids_b, group=group)
    pooled, _ = align_ecdh(ids_a, ids_b, workers=2, chunk_bytes=3 * POINT_BYTES + 5, group=group)
    assert pooled.ids == one.ids and len(one.ids) == 150


def _pair(ids_a: list[object], ids_b: list[object], group: str = "x25519") -> tuple[ECDHReceiver, ECDHSender]:
    receiver = ECDHReceiver(ids_a, peer_size=len(set(ids_b)), session_id="s", group=group)
    sender = ECDHSender(ids_b, peer_size=len(set(ids_a)), session_id="s", group=group)
    receiver.blind(chunk_bytes=2 * POINT_BYTES)
    sender.blind(chunk_bytes=2 * POINT_BYTES)
    return receiver, sender


@pytest.mark.parametrize("group", ECDH_GROUPS)
def test_roles_survive_a_state_round_trip_between_steps(group: str) -> None:
    # Prepare: every step on a role rebuilt from its state, as the Flower handlers do
    receiver, sender = _pair(["a", "b", "c", "d", "e"], ["e", "c", "x"], group)
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
    assert receiver.group.name == group == sender.to_state()["group"]


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
