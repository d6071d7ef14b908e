"""Tests for clients.psi (the façade) and its modules: the Paillier FNP protocol with bins, its soundness
rules and its faults.

Small keys appear only behind the test-only flag ``allow_insecure_key_size=True``; two tests use the
real 2048-bit default.
"""

from __future__ import annotations

import dataclasses
import random
import warnings
from collections.abc import Sequence
from fractions import Fraction

import gmpy2
import mpmath
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from clients import psi
from clients.psi import (
    Alignment,
    InsecureParameterWarning,
    IntersectionMessage,
    PSIError,
    PSIReceiver,
    PSISender,
    ResponseMessage,
    SessionMismatchError,
    align,
    canonical_id_bytes,
    canonical_order,
    choose_bins,
    decode_ciphertexts,
    fnp_receiver,
    id_from_canonical_bytes,
    intersect,
    order_key,
    padded_degree,
    paillier,
    prepare_ids,
)

pytestmark = pytest.mark.filterwarnings("ignore::clients.psi.InsecureParameterWarning")

SMALL = {"key_bits": 512, "allow_insecure_key_size": True}  # test-only


def small_intersect(a: Sequence[object], b: Sequence[object], **options: object) -> list[object]:
    return intersect(a, b, **{**SMALL, **options})  # type: ignore[arg-type]


def canonical_sorted(ids: set[object]) -> list[object]:
    """The canonical order, computed independently of the protocol."""
    return sorted(ids, key=lambda identifier: order_key(canonical_id_bytes(identifier)))


def run_pair(
    receiver_ids: Sequence[object], sender_ids: Sequence[object], **options: object
) -> tuple[PSIReceiver, PSISender, ResponseMessage]:
    """Receiver and sender after one full exchange (no pool)."""
    receiver = PSIReceiver(receiver_ids, **{**SMALL, **options})  # type: ignore[arg-type]
    sender = PSISender(sender_ids, allow_insecure_key_size=True)
    responses = sender.evaluate_all(receiver.setup_message())
    receiver.finish(responses)
    return receiver, sender, responses


def full_decrypt(receiver: PSIReceiver, ciphertext: int) -> int:
    """Test oracle: complete Paillier decryption with phe (not the protocol's mod-p shortcut)."""
    return receiver._key.phe.raw_decrypt(int(ciphertext))


# --------------------------------------------------------------------------------------------------
# Exact intersection
# --------------------------------------------------------------------------------------------------

EDGE_CASES = {
    "both_empty": ([], []),
    "receiver_empty": ([], ["a", "b"]),
    "sender_empty": (["a", "b"], []),
    "disjoint": ([f"a{i}" for i in range(30)], [f"b{i}" for i in range(30)]),
    "identical": ([f"x{i}" for i in range(40)], [f"x{i}" for i in range(39, -1, -1)]),
    "one_element_shared": (["only"], ["only"]),
    "one_element_apart": (["only"], ["other"]),
    "tiny_vs_large": (["k7", "nope"], [f"k{i}" for i in range(1500)]),
    "large_vs_tiny": ([f"k{i}" for i in range(1500)], ["k1499", "nope"]),
    "str_and_int_differ": ([7, "7", 8], ["7", 9, 8]),
    "huge_and_negative_ints": ([-(2**100), 2**200, 0, -1], [2**200, -1, 1]),
    "unicode": (["é", "e\u0301", "日本", "\u00a0"], ["日本", "é", "\u00a0"]),
}


@pytest.mark.parametrize("case", list(EDGE_CASES), ids=list(EDGE_CASES))
def test_intersection_matches_python_sets(case: str) -> None:
    a, b = EDGE_CASES[case]
    # Execute
    got_a, got_b = align(a, b, **SMALL)  # type: ignore[arg-type]
    # Assert: exact set, canonical order, same IDs at both parties, rows that point at them
    expected = canonical_sorted(set(a) & set(b))
    assert list(got_a.ids) == list(got_b.ids) == expected
    assert [a[row] for row in got_a.rows] == expected
    assert [b[row] for row in got_b.rows] == expected
    assert got_a.num_rows == len(a) and got_b.num_rows == len(b)


def test_random_sets_with_half_overlap() -> None:
    rng = random.Random(4)
    shared = {rng.getrandbits(48) for _ in range(150)}
    a = list(shared | {f"a-{rng.random()}" for _ in range(150)})
    b = list(shared | {f"b-{rng.random()}" for _ in range(90)})
    rng.shuffle(a)
    rng.shuffle(b)
    assert small_intersect(a, b) == canonical_sorted(shared)


def test_default_2048_bit_key() -> None:
    a = [f"id{i}" for i in range(12)]
    b = [f"id{i}" for i in range(6, 20)]
    with warnings.catch_warnings():
        warnings.simplefilter("error", InsecureParameterWarning)  # no test flag involved
        got = intersect(a, b)
    assert got == canonical_sorted(set(a) & set(b))


@pytest.mark.slow
def test_3072_bit_key() -> None:
    a, b = [f"id{i}" for i in range(8)], [f"id{i}" for i in range(4, 12)]
    assert intersect(a, b, key_bits=3072) == canonical_sorted(set(a) & set(b))


def test_process_pool_gives_the_same_result() -> None:
    a = [f"id{i}" for i in range(200)]
    b = [f"id{i}" for i in range(100, 260)]
    assert small_intersect(a, b, workers=2) == canonical_sorted(set(a) & set(b))


ids_strategy = st.one_of(st.integers(min_value=-(10**30), max_value=10**30), st.text(min_size=1, max_size=6))


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(a=st.lists(ids_strategy, max_size=25, unique=True), b=st.lists(ids_strategy, max_size=25, unique=True))
def test_property_equals_set_intersection_in_canonical_order(a: list[object], b: list[object]) -> None:
    alignment_a, alignment_b = align(a, b, key_bits=256, id_bits=64, allow_insecure_key_size=True)
    expected = canonical_sorted(set(a) & set(b))
    assert list(alignment_a.ids) == list(alignment_b.ids) == expected
    assert [a[row] for row in alignment_a.rows] == [b[row] for row in alignment_b.rows] == expected


@settings(max_examples=15, deadline=None)
@given(ids=st.lists(ids_strategy, min_size=1, max_size=30, unique=True), data=st.data())
def test_property_subset_is_found_whole(ids: list[object], data: st.DataObject) -> None:
    subset = data.draw(st.lists(st.sampled_from(ids), unique=True))
    assert set(small_intersect(ids, subset)) == set(subset)


# --------------------------------------------------------------------------------------------------
# IDs
# --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("identifier", "expected"),
    [("abc", b"sabc"), (" ", b"s "), (7, b"i7"), (-12, b"i-12"), (np.int64(5), b"i5"), ("7", b"s7")],
)
def test_canonical_bytes_round_trip(identifier: object, expected: bytes) -> None:
    assert canonical_id_bytes(identifier) == expected
    assert id_from_canonical_bytes(expected) == identifier


@pytest.mark.parametrize("bad", [True, 1.5, None, b"bytes", ("t",), ["l"], {"d": 1}])
def test_non_id_types_are_rejected(bad: object) -> None:
    with pytest.raises(TypeError, match="IDs must be str or int"):
        canonical_id_bytes(bad)


@pytest.mark.parametrize("blob", [b"", b"x1", b"i07", b"i1.0", b"s\xff"])
def test_bad_canonical_bytes_are_rejected(blob: bytes) -> None:
    with pytest.raises(ValueError, match="not a canonical ID"):
        id_from_canonical_bytes(blob)


def test_lone_surrogate_is_rejected_with_its_row() -> None:
    with pytest.raises(ValueError, match="row 1: string IDs must be valid Unicode"):
        prepare_ids(["ok", "\ud800"])


def test_unhashable_id_names_the_row_not_the_value() -> None:
    with pytest.raises(TypeError, match=r"ID at row 2: IDs must be str or int, got dict") as info:
        prepare_ids(["a", "b", {"secret": 1}])
    assert "secret" not in str(info.value)


def test_duplicates_rejected_by_default() -> None:
    with pytest.raises(ValueError, match=r"2 duplicate ID row\(s\) \(first: row 2 repeats row 0\)"):
        prepare_ids(["x", "y", "x", "y"])


def test_duplicates_keep_first_with_a_warning() -> None:
    with pytest.warns(UserWarning, match="dropped 1 row"):
        got_a, got_b = align(["x", "y", "x"], ["x"], duplicates="keep_first", **SMALL)  # type: ignore[arg-type]
    assert got_a.ids == ("x",) and got_a.rows == (0,) and got_a.num_rows == 3
    assert got_a.non_aligned_rows() == [1, 2]


def test_unknown_duplicate_policy() -> None:
    with pytest.raises(ValueError, match="duplicates must be"):
        prepare_ids(["a"], duplicates="merge")  # type: ignore[arg-type]


def test_alignment_check_ids_detects_changed_data() -> None:
    got_a, _ = align(["a", "b"], ["b"], **SMALL)  # type: ignore[arg-type]
    got_a.check_ids(["a", "b"])
    with pytest.raises(ValueError, match="IDs changed"):
        got_a.check_ids(["b", "a"])


def test_canonical_order_is_sorted_salted_hash() -> None:
    ids = [canonical_id_bytes(i) for i in range(50)]
    order = canonical_order(ids)
    assert [order_key(ids[i]) for i in order] == sorted(order_key(data) for data in ids)


# --------------------------------------------------------------------------------------------------
# Soundness rules (FNP 2004 with bins; docs/psi.md, "Soundness")
# --------------------------------------------------------------------------------------------------


def test_bins_are_monic_padded_to_one_public_degree() -> None:
    # Prepare
    ids = [f"u{i}" for i in range(120)]
    receiver = PSIReceiver(ids, **SMALL)  # type: ignore[arg-type]
    setup = receiver.setup_message(chunk_bytes=8000)
    header = setup.header
    key = receiver._key
    coeffs = [
        full_decrypt(receiver, c)
        for chunk in setup.chunks
        for c in decode_ciphertexts(chunk, header.modulus, "test")
    ]
    # Assert: B·M coefficients (the leading 1 is never sent), M from public values only
    assert len(coeffs) == header.num_bins * header.degree
    assert (header.num_bins, header.degree) == choose_bins(len(ids))
    assert len(setup.chunks) > 1 and all(len(chunk) <= 8000 for chunk in setup.chunks)
    n = int(key.n)
    members: dict[int, list[int]] = {}
    for data in receiver.prepared.canonical:
        value, bin_ = psi.hash_id(header.salt, data, header.id_bits, header.num_bins)
        members.setdefault(bin_, []).append(value)

    def evaluate(poly: list[int], x: int) -> int:
        return sum(c * pow(x, j, n) for j, c in enumerate(poly)) % n

    rng = random.Random(0)
    for b in range(header.num_bins):
        poly = [*coeffs[b * header.degree : (b + 1) * header.degree], 1]  # monic: leading 1 implied
        assert all(evaluate(poly, x) == 0 for x in members.get(b, []))  # the bin's IDs are roots
        assert all(evaluate(poly, rng.getrandbits(64)) != 0 for _ in range(20))  # dummies lie >= 2^64


def test_setup_size_depends_only_on_the_set_size() -> None:
    first = PSIReceiver([f"a{i}" for i in range(80)], **SMALL).setup_message()  # type: ignore[arg-type]
    second = PSIReceiver(list(range(80)), **SMALL).setup_message()  # type: ignore[arg-type]
    assert (first.header.num_bins, first.header.degree) == (second.header.num_bins, second.header.degree)
    assert [len(c) for c in first.chunks] == [len(c) for c in second.chunks]


def test_overflow_rehashes_with_a_new_salt(monkeypatch: pytest.MonkeyPatch) -> None:
    # Prepare: under the first salt every ID lands in bin 0; later salts hash normally
    salts: list[bytes] = []
    real_hash = psi.hash_id

    def skewed(salt: bytes, data: bytes, id_bits: int, num_bins: int) -> tuple[int, int]:
        if salt not in salts:
            salts.append(salt)
        value, bin_ = real_hash(salt, data, id_bits, num_bins)
        return (value, 0) if salt == salts[0] else (value, bin_)

    monkeypatch.setattr(fnp_receiver, "hash_id", skewed)  # the receiver draws the salts
    ids = [f"u{i}" for i in range(200)]
    # Execute
    receiver, sender, _ = run_pair(ids, ids[::2])
    # Assert
    assert len(salts) >= 2 and receiver.header is not None and receiver.header.salt == salts[-1]
    assert receiver.alignment().ids == tuple(canonical_sorted(set(ids[::2])))


def test_persistent_overflow_is_an_error() -> None:
    receiver = PSIReceiver([f"u{i}" for i in range(50)], num_bins=1, **SMALL)  # type: ignore[arg-type]
    receiver.degree = 10  # below the 50 IDs that must share the single bin
    with pytest.raises(PSIError, match="no salt without bin overflow in 8 attempts"):
        receiver.setup()


def test_non_members_decrypt_to_full_size_values_and_replies_are_fresh() -> None:
    # Prepare
    receiver_ids = [f"r{i}" for i in range(40)]
    sender_ids = [f"r{i}" for i in range(20)] + [f"s{i}" for i in range(40)]
    receiver = PSIReceiver(receiver_ids, **SMALL)  # type: ignore[arg-type]
    setup = receiver.setup_message()
    # Execute: two evaluations of the same set against the same setup
    first = PSISender(sender_ids, allow_insecure_key_size=True).evaluate_all(setup)
    second_sender = PSISender(sender_ids, allow_insecure_key_size=True)
    second = second_sender.evaluate_all(setup)
    # Assert: members decrypt to their hash, non-members to values far above 2^64 (r uniform in Z_n)
    width = psi.ciphertext_width(setup.header.modulus)
    replies = decode_ciphertexts(b"".join(first.chunks), setup.header.modulus, "test")
    plain = [full_decrypt(receiver, c) for c in replies]
    assert sum(value < 2**64 for value in plain) == 20
    assert all(value < 2**64 or value > 2**400 for value in plain)
    # Re-randomised: no ciphertext repeats across runs; shuffled: positions differ
    assert not set(b"".join(first.chunks)[i : i + width] for i in range(0, 60 * width, width)) & set(
        b"".join(second.chunks)[i : i + width] for i in range(0, 60 * width, width)
    )
    assert second_sender.indices_at(range(60)) != list(range(60))


def test_salt_is_fresh_per_session() -> None:
    ids = ["a", "b", "c"]
    one, two = PSIReceiver(ids, **SMALL), PSIReceiver(ids, **SMALL)  # type: ignore[arg-type]
    one.setup(), two.setup()
    assert one.header is not None and two.header is not None
    assert one.header.salt != two.header.salt and one._values != two._values
    assert one.session_id != two.session_id


@pytest.mark.parametrize("id_bits", [32, 48, 128])
def test_id_width_is_a_parameter(id_bits: int) -> None:
    a, b = [f"a{i}" for i in range(30)], [f"a{i}" for i in range(15, 45)]
    got, _ = align(a, b, id_bits=id_bits, key_bits=512, allow_insecure_key_size=True)
    assert set(got.ids) == set(a) & set(b)


@pytest.mark.parametrize(("id_bits", "key_bits"), [(31, 512), (129, 2048), (128, 256)])
def test_id_width_out_of_range(id_bits: int, key_bits: int) -> None:
    with pytest.raises(ValueError, match="id_bits"):
        PSIReceiver(["a"], id_bits=id_bits, key_bits=key_bits, allow_insecure_key_size=True)


# --------------------------------------------------------------------------------------------------
# Keys
# --------------------------------------------------------------------------------------------------


def test_small_key_refused_without_the_test_flag() -> None:
    with pytest.raises(ValueError, match=r"key_bits must be >= 2048 \(NIST SP 800-57\), got 1024"):
        PSIReceiver(["a"], key_bits=1024)


def test_small_key_with_the_flag_warns() -> None:
    with pytest.warns(InsecureParameterWarning, match="insecure 512-bit"):
        PSIReceiver(["a"], key_bits=512, allow_insecure_key_size=True)


@pytest.mark.parametrize("bits", [128, 255, 511])
def test_tiny_or_odd_keys_refused_even_with_the_flag(bits: int) -> None:
    with pytest.raises(ValueError, match="even number >= 256"):
        PSIReceiver(["a"], key_bits=bits, allow_insecure_key_size=True)


def test_sender_refuses_a_small_public_key_without_the_flag() -> None:
    setup = PSIReceiver(["a"], **SMALL).setup_message()  # type: ignore[arg-type]
    with pytest.raises(PSIError, match="received public key: key_bits must be >= 2048"):
        PSISender(["a"]).evaluate_all(setup)


@pytest.mark.parametrize("modulus", [2**511 * 2, (2**255 + 51) ** 2])
def test_sender_refuses_an_invalid_modulus(modulus: int) -> None:
    with pytest.raises(PSIError, match="not a valid Paillier modulus"):
        psi.check_public_modulus(modulus, allow_insecure_key_size=True)


# --------------------------------------------------------------------------------------------------
# Malformed messages, sessions, step order
# --------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def exchange() -> tuple[PSIReceiver, psi.SetupMessage]:
    receiver = PSIReceiver([f"r{i}" for i in range(30)], **SMALL)  # type: ignore[arg-type]
    return receiver, receiver.setup_message()


def test_ciphertexts_outside_z_star_n2_are_rejected(exchange: tuple[PSIReceiver, psi.SetupMessage]) -> None:
    receiver, setup = exchange
    n = int(receiver._key.n)
    width = psi.ciphertext_width(n)
    cases = {
        "zero": 0,
        "n_squared": n * n,
        "above": n * n + 5,
        "shares_p": int(receiver._key.p) * 3,
    }
    for name, value in cases.items():
        blob = value.to_bytes(width, "big")
        with pytest.raises(PSIError, match=r"ciphertext 0 of the chunk is not in Z\*_\(n\^2\)"):
            decode_ciphertexts(blob, n, name)
    with pytest.raises(PSIError, match="not a multiple"):
        decode_ciphertexts(b"\x01" * (width + 3), n, "short")


def test_sender_rejects_chunks_out_of_order_missing_or_resized(
    exchange: tuple[PSIReceiver, psi.SetupMessage],
) -> None:
    _, setup = exchange
    sender = PSISender(["r1"], allow_insecure_key_size=True)
    sender.receive_setup(setup.header)
    session = setup.header.session_id
    with pytest.raises(PSIError, match="out of order"):
        sender.evaluate(session, 1, setup.chunks[0])
    with pytest.raises(PSIError, match=r"coefficient chunk 0: \d+ bytes, expected \d+"):
        sender.evaluate(session, 0, setup.chunks[0][:-128])
    with pytest.raises(PSIError, match=r"evaluated 0 of \d+ coefficient chunks"):
        sender.respond()
    with pytest.raises(SessionMismatchError):
        sender.evaluate("other", 0, setup.chunks[0])


def test_receiver_rejects_wrong_session_extra_and_missing_replies() -> None:
    receiver = PSIReceiver(["a", "b"], **SMALL)  # type: ignore[arg-type]
    setup = receiver.setup_message()
    responses = PSISender(["a", "c", "d"], allow_insecure_key_size=True).evaluate_all(setup, chunk_bytes=128)
    with pytest.raises(SessionMismatchError):
        receiver.expect_responses("other", responses.count)
    receiver.expect_responses(responses.session_id, 2)  # under-announced
    with pytest.raises(PSIError, match="more replies than the 2 announced"):
        for index, chunk in enumerate(responses.chunks):
            receiver.receive_responses(responses.session_id, index, chunk)
    fresh = PSIReceiver(["a", "b"], **SMALL)  # type: ignore[arg-type]
    fresh_responses = PSISender(["a"], allow_insecure_key_size=True).evaluate_all(fresh.setup_message())
    fresh.expect_responses(fresh_responses.session_id, 3)
    with pytest.raises(PSIError, match="received 0 of 3 replies"):
        fresh.finish()


def test_setup_twice_and_steps_before_setup() -> None:
    receiver = PSIReceiver(["a"], **SMALL)  # type: ignore[arg-type]
    with pytest.raises(PSIError, match="has not run setup"):
        receiver.expect_responses(receiver.session_id, 1)
    receiver.setup()
    with pytest.raises(PSIError, match="already ran"):
        receiver.setup()
    with pytest.raises(PSIError, match="no setup header"):
        PSISender(["a"]).respond()


def test_tampered_intersection_order_is_detected() -> None:
    receiver, sender, _ = run_pair([f"x{i}" for i in range(20)], [f"x{i}" for i in range(10)])
    message = receiver.intersection_message()
    reversed_message = IntersectionMessage(message.session_id, message.positions[::-1])
    with pytest.raises(PSIError, match="not in canonical order"):
        sender.conclude(reversed_message)
    with pytest.raises(PSIError, match="out of range"):
        sender.conclude(IntersectionMessage(message.session_id, (10**6,)))
    with pytest.raises(SessionMismatchError):
        sender.conclude(IntersectionMessage("other", message.positions))
    assert sender.conclude(message).ids == receiver.alignment().ids


def test_state_round_trip_mid_protocol() -> None:
    # Prepare: save both roles between every step, as the Flower handlers do
    receiver = PSIReceiver([f"x{i}" for i in range(40)], **SMALL)  # type: ignore[arg-type]
    receiver = PSIReceiver.from_state(receiver.to_state())
    header = receiver.setup(chunk_bytes=4000)
    sender = PSISender([f"x{i}" for i in range(20, 70)], allow_insecure_key_size=True)
    sender.receive_public_key(header.modulus)
    sender.precompute()
    sender = PSISender.from_state(sender.to_state())
    sender.receive_setup(header)
    assert header.num_chunks > 1
    for index in range(header.num_chunks):
        receiver = PSIReceiver.from_state(receiver.to_state())
        chunk = receiver.coefficient_chunk(index)
        sender = PSISender.from_state(sender.to_state())
        sender.evaluate(header.session_id, index, chunk)
    responses = PSISender.from_state(sender.to_state()).respond(chunk_bytes=512)
    # Execute
    receiver.expect_responses(responses.session_id, responses.count)
    for index, chunk in enumerate(responses.chunks):
        receiver = PSIReceiver.from_state(receiver.to_state())
        receiver.receive_responses(responses.session_id, index, chunk)
    # Assert
    assert receiver.finish() == sorted(range(20, 40), key=lambda i: order_key(canonical_id_bytes(f"x{i}")))


def test_chunk_too_small_for_one_bin() -> None:
    receiver = PSIReceiver([f"x{i}" for i in range(40)], num_bins=1, **SMALL)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"chunk_bytes=1000 cannot hold one bin \(40 ciphertexts"):
        receiver.setup(chunk_bytes=1000)


def test_coefficient_chunk_out_of_range_or_before_setup() -> None:
    receiver = PSIReceiver(["a"], **SMALL)  # type: ignore[arg-type]
    with pytest.raises(PSIError, match="has not run setup"):
        receiver.coefficient_chunk(0)
    receiver.setup()
    with pytest.raises(PSIError, match=r"coefficient chunk 1 does not exist \(1 chunks\)"):
        receiver.coefficient_chunk(1)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        pytest.param({"num_bins": 0}, r"setup header: num_bins must be >= 1, got 0", id="num_bins"),
        pytest.param({"degree": 0}, r"setup header: degree must be >= 1, got 0", id="degree"),
        pytest.param(
            {"receiver_size": -1}, r"setup header: receiver_size must be >= 0, got -1", id="receiver_size"
        ),
        pytest.param(
            {"bins_per_chunk": 0}, r"setup header: bins_per_chunk must be >= 1, got 0", id="bins_per_chunk"
        ),
        pytest.param({"salt": b"short"}, r"setup header: salt must be 16 bytes, got 5", id="salt"),
        pytest.param(
            {"id_bits": 20}, r"setup header: id_bits must be in \[32, 128\] .* got 20", id="id_bits"
        ),
        pytest.param(
            {"num_bins": 10**9}, r"must fit in 64 GiB, got \d+ bytes \(num_bins=1000000000", id="too_large"
        ),
    ],
)
def test_bad_setup_header_names_the_field_and_value(
    exchange: tuple[PSIReceiver, psi.SetupMessage], change: dict[str, object], message: str
) -> None:
    # Prepare
    _, setup = exchange
    header = dataclasses.replace(setup.header, **change)  # type: ignore[arg-type]
    sender = PSISender(["a"], allow_insecure_key_size=True)
    # Execute / Assert
    with pytest.raises(PSIError, match=message):
        sender.receive_setup(header)
    assert sender.header is None  # nothing was kept


def test_sender_key_change_is_rejected(exchange: tuple[PSIReceiver, psi.SetupMessage]) -> None:
    _, setup = exchange
    sender = PSISender(["a"], allow_insecure_key_size=True)
    other = PSIReceiver(["a"], **SMALL)  # type: ignore[arg-type]
    sender.receive_public_key(other.modulus)
    with pytest.raises(PSIError, match="public key changed"):
        sender.receive_setup(setup.header)


# --------------------------------------------------------------------------------------------------
# Public parameters: bins and degree
# --------------------------------------------------------------------------------------------------


def exact_log2_overflow(n: int, bins: int, degree: int) -> float:
    """Independent oracle: log2(B · P(Bin(n, 1/B) > M)) with exact rationals and mpmath."""
    p = Fraction(1, bins)
    tail = sum(
        Fraction(int(mpmath.binomial(n, k))) * p**k * (1 - p) ** (n - k) for k in range(degree + 1, n + 1)
    )
    return (
        float(mpmath.log(mpmath.mpf(tail.numerator) / tail.denominator, 2) + mpmath.log(bins, 2))
        if tail
        else -1e9
    )


@pytest.mark.parametrize(("n", "bins"), [(100, 10), (300, 30), (1000, 125), (200, 200)])
def test_padded_degree_is_the_smallest_safe_degree(n: int, bins: int) -> None:
    degree = padded_degree(n, bins)
    assert exact_log2_overflow(n, bins, degree) <= -40
    assert exact_log2_overflow(n, bins, degree - 1) > -40


@pytest.mark.parametrize(
    ("sizes", "expected"),
    [
        ((0, None), (1, 1)),
        ((1, None), (1, 1)),
        ((5, None), (1, 5)),
        ((1000, None), (500, 21)),
        ((10_000, None), (5000, 22)),
    ],
)
def test_choose_bins_reference_values(sizes: tuple[int, int | None], expected: tuple[int, int]) -> None:
    assert choose_bins(*sizes) == expected


@pytest.mark.parametrize(("weight", "expected"), [(0.15, (5000, 22)), (0.5, (1667, 34)), (1.0, (1250, 39))])
def test_precompute_weight_trades_online_for_offline_work(weight: float, expected: tuple[int, int]) -> None:
    assert choose_bins(10_000, 10_000, precompute_weight=weight) == expected


@pytest.mark.parametrize(
    ("call", "message"),
    [
        pytest.param(lambda: choose_bins(-1), r"receiver_size must be >= 0, got -1", id="receiver_size"),
        pytest.param(lambda: choose_bins(5, -2), r"sender_size must be >= 0, got -2", id="sender_size"),
        pytest.param(lambda: padded_degree(-1, 2), r"num_items must be >= 0, got -1", id="num_items"),
        pytest.param(lambda: padded_degree(3, 0), r"num_bins must be >= 1, got 0", id="num_bins"),
    ],
)
def test_size_errors_name_the_field_and_value(call: object, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        call()  # type: ignore[operator]


@pytest.mark.parametrize("weight", [0.0, -0.1, 1.5, float("nan")])
def test_precompute_weight_out_of_range_is_refused(weight: float) -> None:
    with pytest.raises(ValueError, match="precompute_weight"):
        choose_bins(10, precompute_weight=weight)


def test_choose_bins_cost_is_about_linear() -> None:
    costs = []
    for n in (1000, 10_000, 100_000):
        bins, degree = choose_bins(n)
        costs.append(
            (n * (degree - 1) + psi.PRECOMPUTED_WEIGHT * psi.COEFFICIENT_TO_HORNER_COST * bins * degree) / n
        )
    assert max(costs) / min(costs) < 1.15  # per-ID cost grows only with the log of the bin count


def test_receiver_keys_satisfy_the_crt_condition() -> None:
    key = PSIReceiver(["a"], **SMALL)._key  # type: ignore[arg-type]
    assert gmpy2.gcd(key.q, key.p - 1) == 1 and gmpy2.gcd(key.p, key.q - 1) == 1


def test_crt_randomisers_are_nth_residues_and_encrypt_correctly() -> None:
    receiver = PSIReceiver(["a"], **SMALL)  # type: ignore[arg-type]
    key = receiver._key
    for rho in paillier.crt_randomisers((key.p, key.q, 5)):
        # an n-th residue decrypts to 0 and ρ·(1 + m n) to m
        assert full_decrypt(receiver, rho) == 0
        assert full_decrypt(receiver, rho * (1 + 12345 * key.n) % key.nsq) == 12345


def test_alignment_is_a_frozen_value() -> None:
    alignment = Alignment("id", ("a",), (0,), 2, "digest")
    with pytest.raises(AttributeError):
        alignment.rows = (1,)  # type: ignore[misc]
    assert alignment.non_aligned_rows() == [1]


def test_crowded_bin_is_split_across_pool_tasks() -> None:
    class TwoWorkers:  # stands in for an executor: only its size matters here
        _max_workers = 2

    groups = [(b"coeffs-a", list(range(10)), None), (b"coeffs-b", [10, 11], [gmpy2.mpz(1), gmpy2.mpz(2)])]
    tasks = paillier.group_tasks(gmpy2.mpz(35), 1, groups, TwoWorkers())  # type: ignore[arg-type]
    # 12 IDs over at most 4 tasks per worker: 6 tasks of 2 IDs, the crowded bin cut into 5
    assert [sum(len(ys) for _, ys, _ in task_groups) for _, _, task_groups in tasks] == [2] * 6
    pieces = [piece for _, _, task_groups in tasks for piece in task_groups]
    assert [y for _, ys, _ in pieces for y in ys] == list(range(12))
    assert [r for _, _, r in pieces] == [None] * 5 + [[gmpy2.mpz(1), gmpy2.mpz(2)]]
