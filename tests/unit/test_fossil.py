"""The Fossil delta codec against the format's test vectors (PROTOCOL-EXTENSIONS.md §4.6)."""

from __future__ import annotations

import json
import random

import pytest

from hubbub.protocol import fossil
from hubbub.protocol.fossil import DeltaError

B = b"shared-body-payload-" * 64
R8 = b'{"user":"alice","status":"online","score":1200,"rank":"gold"}'
R9 = b'{"price":100,"item":"apple","qty":5,"note":"fresh fruit from the farm"}'

# Origin, target, delta of the reference encoder.
REFERENCE = {
    "R1": (b"", b"", b"0\n0:0;"),
    "R2": (B, b"", b"0\n0;"),
    "R3": (B, B, b"K0\nK0@0,3xzMQ0;"),
    "R4": (b"x" + B, b"y" + B, b"K1\n1:yJ4@y,x@IT,22~F_0;"),
    "R5": (B + b"x", B + b"y", b"K1\nK0@0,1:y1qzMQ0;"),
    "R6": (B, B[:640], b"A0\nA0@A0,3zVBD0;"),
    "R7": (B, B + B, b"d0\nK0@0,K0@0,3uxhp0;"),
    "R8": (R8, R8.replace(b"1200", b"1350"), b'y\ng@0,I:350,"rank":"gold"}1sTAu;'),
    "R9": (R9, R9.replace(b"100", b"101"), b'17\nC:{"price":101w@C,1ZiMrJ;'),
}

F1 = (
    b'{"42182fb2426340ac5fad4e511d8a2dc4":{"title":"New note"}}\n',
    b'{"42182fb2426340ac5fad4e511d8a2dc4":{"title":"First note"}}\n',
    bytes.fromhex("780a6a40302c453a4669727374206e6f7465227d7d0a354e7048413b"),
)
F2 = (b"tiny", b"little", bytes.fromhex("360a363a6c6974746c65334f6f6348703b"))


@pytest.mark.parametrize(
    ("value", "digits"), [(0, b"0"), (6246, b"1Xb"), (3193528526, b"2zMM3E"), (63, b"~")]
)
def test_integers_are_written_in_base_64_most_significant_first(value: int, digits: bytes) -> None:
    assert fossil.encode_int(value) == digits


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        (b"", 0),
        (b"a", 1627389952),
        (b"abc", 1633837824),
        (b"abcd", 0x61626364),
        (b"hello world", 1240614875),
        (bytes.fromhex("ffffffff00000002"), 1),  # wraps modulo 2**32
    ],
)
def test_checksum_sums_big_endian_words(data: bytes, expected: int) -> None:
    assert fossil.checksum(data) == expected


@pytest.mark.parametrize("vector", [F1, F2], ids=["F1", "F2"])
def test_fossil_generated_vectors_are_reproduced_byte_for_byte(
    vector: tuple[bytes, bytes, bytes],
) -> None:
    origin, target, delta = vector
    assert fossil.create(origin, target) == delta
    assert fossil.apply(origin, delta) == target


@pytest.mark.parametrize("name", sorted(REFERENCE))
def test_reference_deltas_apply_and_ours_are_no_larger(name: str) -> None:
    origin, target, reference = REFERENCE[name]
    assert fossil.apply(origin, reference) == target
    ours = fossil.create(origin, target)
    assert fossil.apply(origin, ours) == target
    assert len(ours) <= len(reference)


def test_hand_built_delta_with_copies_around_an_insert() -> None:
    assert fossil.apply(b"0123456789abcdef", b"6\n2@C,2:XY2@0,2JaLXP;") == b"cdXY01"


def test_spec_worked_example_parses_to_its_commands() -> None:
    # The source is not available: a source of the right length shows the commands parse
    # and add up (the checksum then differs, which is the last check made).
    delta = (
        b"1Xb\n4E@0,2:thFN@4C,6:scenda1B@Jd,6:scenda5x@Kt,6:pieces79@Qt,F: Example: eskil"
        b"~E@Y0,2zMM3E;"
    )
    with pytest.raises(DeltaError, match="checksum"):
        fossil.apply(bytes(6222), delta)


@pytest.mark.parametrize(
    ("source", "delta", "message"),
    [
        (b"abc", b"3", "newline"),
        (b"abc", b"3\n3@1,0;", "past the end of the source"),
        (b"abc", b"2\n3@0,0;", "output size"),
        (b"abc", b"3\n3@0;", "','"),
        (b"", b"2\n5:ab0;", "output size"),
        (b"", b"5\n5:ab", "size of the delta"),
        (b"abc", b"3\n3@0,1!", "operator"),
        (b"abc", b"4\n3@0,0;", "does not match the size"),
        (b"abc", b"3\n3@0,1;", "checksum"),
        (b"abc", b"3\n3@0,", "unterminated"),
        (b"", b"0\n", "unterminated"),
        (b"", b"~~~~~~~~~~~~\n0;", "too large"),
    ],
)
def test_malformed_deltas_are_refused(source: bytes, delta: bytes, message: str) -> None:
    with pytest.raises(DeltaError, match=message):
        fossil.apply(source, delta)


def test_text_after_the_terminator_is_ignored_and_zero_copies_copy_nothing() -> None:
    target = b"abc"
    delta = b"3\n0@0,3@0," + fossil.encode_int(fossil.checksum(target)) + b";trailing"
    assert fossil.apply(b"abc", delta) == target


def _ticker(rnd: random.Random, items: int) -> dict[str, object]:
    return {
        "seq": rnd.randint(0, 10**6),
        "quotes": [
            {"s": f"SYM{i}", "px": round(rnd.uniform(1, 500), 2), "v": rnd.randint(0, 10**7)}
            for i in range(items)
        ],
    }


def _mutate(rnd: random.Random, data: bytes) -> bytes:
    out = bytearray(data)
    for _ in range(rnd.randint(0, 5)):
        pos = rnd.randint(0, len(out))
        kind = rnd.random()
        if kind < 0.4 and out:
            out[min(pos, len(out) - 1)] = rnd.randint(0, 255)
        elif kind < 0.7:
            out[pos:pos] = rnd.randbytes(rnd.randint(1, 40))
        else:
            del out[pos : pos + rnd.randint(1, 40)]
    return bytes(out)


def test_round_trips_on_random_and_related_pairs() -> None:
    rnd = random.Random(7)
    for _ in range(300):
        source = rnd.randbytes(rnd.randint(0, 3000))
        target = _mutate(rnd, source) if rnd.random() < 0.7 else rnd.randbytes(rnd.randint(0, 300))
        assert fossil.apply(source, fossil.create(source, target)) == target


def test_json_tickers_give_small_deltas() -> None:
    rnd = random.Random(3)
    state = _ticker(rnd, 60)
    before = json.dumps(state).encode()
    quotes = state["quotes"]
    assert isinstance(quotes, list)
    for quote in rnd.sample(quotes, 3):
        quote["px"] = round(quote["px"] + 0.25, 2)
    after = json.dumps(state).encode()
    delta = fossil.create(before, after)
    assert fossil.apply(before, delta) == after
    assert len(delta) < len(after) // 20


def test_repetitive_sources_stay_correct() -> None:
    for source, target in [(b"a" * 5000, b"a" * 7000), (b"ab" * 3000, b"ba" * 3001)]:
        assert fossil.apply(source, fossil.create(source, target)) == target
