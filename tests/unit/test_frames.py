"""The server side's frame reader: bytes in, messages, control frames and refusals out."""

from __future__ import annotations

import os

import pytest
from websockets.frames import Close, Frame, Opcode
from websockets.streams import StreamReader

from hubbub.transports.frames import (
    BINARY,
    CLOSE,
    CONT,
    PING,
    PONG,
    TEXT,
    Event,
    FrameReader,
    close_frame,
    control_frame,
)

MAX_SIZE = 1000
MAX_FRAGMENTS = 10


def masked(opcode: int, payload: bytes = b"", fin: bool = True, head: int = 0) -> bytes:
    """A client frame, masked with a random key; ``head`` adds bits to the first byte."""
    size = len(payload)
    first = bytes(((0x80 if fin else 0) | opcode | head,))
    if size < 126:
        length = bytes((0x80 | size,))
    elif size < 65536:
        length = bytes((0x80 | 126,)) + size.to_bytes(2, "big")
    else:
        length = bytes((0x80 | 127,)) + size.to_bytes(8, "big")
    key = os.urandom(4)
    return first + length + key + bytes(b ^ key[i % 4] for i, b in enumerate(payload))


def read(
    data: bytes, *, max_size: int = MAX_SIZE, max_fragments: int = MAX_FRAGMENTS
) -> tuple[list[Event], FrameReader]:
    reader = FrameReader(max_size, max_fragments)
    events: list[Event] = []
    reader.feed(data, events)
    return events, reader


def refused(data: bytes, **limits: int) -> tuple[int, str]:
    """The close code and limit the reader fails ``data`` with."""
    _, reader = read(data, **limits)
    assert reader.done and reader.error is not None
    return reader.error.code, reader.error.limit


def test_a_text_and_a_binary_message() -> None:
    data = masked(TEXT, b'{"id":1}') + masked(BINARY, b"\x00\xff")
    reader = FrameReader(MAX_SIZE, MAX_FRAGMENTS)
    events: list[Event] = []
    assert reader.feed(data, events) == 2
    assert events == [(TEXT, b'{"id":1}'), (BINARY, b"\x00\xff")]
    assert not reader.done and reader.error is None


@pytest.mark.parametrize("size", [0, 125, 126, 65535, 65536])
def test_every_length_encoding(size: int) -> None:
    payload = bytes(range(256)) * (size // 256) + bytes(range(size % 256))
    events, _ = read(masked(BINARY, payload), max_size=size)
    assert events == [(BINARY, payload)]


def test_frames_split_at_every_byte_boundary() -> None:
    data = (
        masked(TEXT, b"hello")
        + masked(PING, b"p")
        + masked(BINARY, b"x" * 300, fin=False)
        + masked(PONG)
        + masked(CONT, b"y" * 200)
        + masked(TEXT, "héllo".encode(), fin=False)
        + masked(CONT, b"!")
        + masked(CLOSE, b"\x03\xe8bye")
    )
    expected = [
        (TEXT, b"hello"),
        (PING, b"p"),
        (PONG, b""),
        (BINARY, b"x" * 300 + b"y" * 200),
        (TEXT, "héllo!".encode()),
        (CLOSE, b"\x03\xe8bye"),
    ]
    for cut in range(len(data) + 1):
        reader = FrameReader(MAX_SIZE, MAX_FRAGMENTS)
        events: list[Event] = []
        frames = reader.feed(data[:cut], events) + reader.feed(data[cut:], events)
        assert events == expected, cut
        assert frames == 8
        assert reader.done and reader.error is None


def test_one_byte_at_a_time() -> None:
    data = masked(TEXT, "ü".encode() * 200) + masked(BINARY, b"z" * 70000)
    reader = FrameReader(100_000, MAX_FRAGMENTS)
    events: list[Event] = []
    for i in range(len(data)):
        reader.feed(data[i : i + 1], events)
    assert events == [(TEXT, "ü".encode() * 200), (BINARY, b"z" * 70000)]


def test_an_idle_reader_holds_no_buffer() -> None:
    reader = FrameReader(MAX_SIZE, MAX_FRAGMENTS)
    data = masked(TEXT, b"a" * 50)
    reader.feed(data[:10], [])
    assert reader._buffer is not None
    reader.feed(data[10:], [])
    assert reader._buffer is None and reader._parts is None and reader._decoder is None


def test_control_frames_between_fragments() -> None:
    data = (
        masked(TEXT, b"a", fin=False)
        + masked(PING, b"1")
        + masked(CONT, b"b", fin=False)
        + masked(PONG, b"2")
        + masked(CONT, b"c")
    )
    events, _ = read(data)
    assert events == [(PING, b"1"), (PONG, b"2"), (TEXT, b"abc")]


def test_a_close_between_fragments_ends_the_reading() -> None:
    data = masked(TEXT, b"a", fin=False) + masked(CLOSE, b"\x03\xe8") + masked(CONT, b"b")
    events, reader = read(data)
    assert events == [(CLOSE, b"\x03\xe8")] and reader.done and reader.error is None


def test_nothing_is_parsed_after_a_close() -> None:
    events, reader = read(masked(CLOSE) + masked(TEXT, b"late"))
    assert events == [(CLOSE, b"")]
    more: list[Event] = []
    assert reader.feed(masked(TEXT, b"later"), more) == 0 and more == []


def test_the_frames_before_a_violation_are_kept() -> None:
    events, reader = read(masked(TEXT, b"ok") + masked(PING, b"p") + masked(3))
    assert events == [(TEXT, b"ok"), (PING, b"p")]
    assert reader.error is not None and reader.error.code == 1002


@pytest.mark.parametrize(
    "data",
    [
        pytest.param(bytes((0x81, 0x02)) + b"hi", id="unmasked"),
        pytest.param(masked(TEXT, b"x", head=0x40), id="rsv1"),
        pytest.param(masked(TEXT, b"x", head=0x20), id="rsv2"),
        pytest.param(masked(TEXT, b"x", head=0x10), id="rsv3"),
        pytest.param(masked(PING, head=0x40), id="rsv1 on a control frame"),
        *(pytest.param(masked(op), id=f"opcode {op}") for op in (3, 4, 5, 6, 7, 11, 12, 15)),
        pytest.param(masked(PING, fin=False), id="fragmented ping"),
        pytest.param(masked(CLOSE, fin=False), id="fragmented close"),
        pytest.param(masked(PING, b"x" * 126), id="long ping"),
        pytest.param(masked(PONG, b"x" * 126), id="long pong"),
        pytest.param(masked(CONT, b"x"), id="continuation without a start"),
        pytest.param(masked(TEXT, b"a", fin=False) + masked(TEXT, b"b"), id="text in a message"),
        pytest.param(masked(BINARY, b"a", fin=False) + masked(BINARY), id="binary in a message"),
        pytest.param(bytes((0x82, 0xFF)) + (1 << 63).to_bytes(8, "big"), id="64-bit top bit"),
        pytest.param(masked(CLOSE, b"\x03"), id="close of one byte"),
        *(
            pytest.param(masked(CLOSE, code.to_bytes(2, "big")), id=f"close code {code}")
            for code in (0, 999, 1004, 1005, 1006, 1015, 1016, 1100, 2000, 2999, 5000, 65535)
        ),
    ],
)
def test_protocol_errors_fail_with_1002(data: bytes) -> None:
    assert refused(data) == (1002, "")


@pytest.mark.parametrize("code", [1000, 1001, 1002, 1003, 1007, 1008, 1009, 1010, 1011, 3000, 4999])
def test_valid_close_codes(code: int) -> None:
    payload = code.to_bytes(2, "big") + "fin ✓".encode()
    events, reader = read(masked(CLOSE, payload))
    assert events == [(CLOSE, payload)] and reader.error is None


@pytest.mark.parametrize(
    "data",
    [
        pytest.param(masked(TEXT, b"\xff"), id="one frame"),
        pytest.param(masked(TEXT, "é".encode()[:1]), id="cut sequence"),
        pytest.param(masked(TEXT, b"\xed\xa0\x80"), id="surrogate"),
        pytest.param(masked(TEXT, b"ok", fin=False) + masked(CONT, b"\xc3"), id="cut at the end"),
        pytest.param(masked(CLOSE, b"\x03\xe8\xff"), id="close reason"),
    ],
)
def test_invalid_utf8_fails_with_1007(data: bytes) -> None:
    assert refused(data) == (1007, "")


def test_invalid_utf8_in_a_fragment_fails_before_the_message_ends() -> None:
    _, reader = read(masked(TEXT, b"ok", fin=False) + masked(CONT, b"\xff", fin=False))
    assert reader.error is not None and reader.error.code == 1007


def test_utf8_split_across_fragments_is_valid() -> None:
    text = "日本".encode()
    data = masked(TEXT, text[:1], fin=False) + masked(CONT, text[1:4], fin=False)
    events, _ = read(data + masked(CONT, text[4:]))
    assert events == [(TEXT, text)]


def test_binary_is_not_checked_for_utf8() -> None:
    events, _ = read(masked(BINARY, b"\xff", fin=False) + masked(CONT, b"\xfe"))
    assert events == [(BINARY, b"\xff\xfe")]


def test_a_message_over_max_size_fails_with_1009() -> None:
    assert read(masked(TEXT, b"x" * MAX_SIZE))[1].error is None
    assert refused(masked(TEXT, b"x" * (MAX_SIZE + 1))) == (1009, "max_message_size")


def test_max_size_counts_all_the_fragments() -> None:
    half = MAX_SIZE // 2
    fits = masked(BINARY, b"x" * half, fin=False) + masked(CONT, b"y" * half)
    assert read(fits)[0] == [(BINARY, b"x" * half + b"y" * half)]
    over = masked(BINARY, b"x" * half, fin=False) + masked(CONT, b"y" * (half + 1))
    assert refused(over) == (1009, "max_message_size")


def test_an_oversized_frame_fails_from_its_header() -> None:
    header = masked(BINARY, b"x" * 70000)[:14]
    assert refused(header) == (1009, "max_message_size")


def test_a_message_in_too_many_fragments_fails_with_1009() -> None:
    start = masked(TEXT, b"a", fin=False)
    fits = start + masked(CONT, fin=False) * (MAX_FRAGMENTS - 2) + masked(CONT)
    assert read(fits)[0] == [(TEXT, b"a")]
    over = start + masked(CONT, fin=False) * (MAX_FRAGMENTS - 1) + masked(CONT)
    assert refused(over) == (1009, "max_fragments")


def test_a_stopped_reader_drops_what_is_pending() -> None:
    reader = FrameReader(MAX_SIZE, MAX_FRAGMENTS)
    reader.feed(masked(TEXT, b"a", fin=False) + masked(CONT, b"bc")[:3], [])
    reader.stop()
    assert reader.done and reader._buffer is None and reader._parts is None
    assert reader.feed(masked(TEXT, b"x"), []) == 0


def parse(data: bytes) -> Frame:
    """A server frame read back by websockets' own parser (client side: unmasked)."""
    stream = StreamReader()
    stream.feed_data(data)
    parser = Frame.parse(stream.read_exact, mask=False)
    try:
        next(parser)
    except StopIteration as done:
        frame: Frame = done.value
        return frame
    raise AssertionError("incomplete frame")


def test_control_frames_written() -> None:
    pong = parse(control_frame(PONG, b"abc"))
    assert pong.opcode is Opcode.PONG and pong.data == b"abc" and pong.fin
    assert parse(control_frame(PING)).opcode is Opcode.PING
    close = parse(close_frame(3013, "too many frames"))
    assert close.opcode is Opcode.CLOSE
    assert Close.parse(close.data) == Close(3013, "too many frames")


def test_a_long_close_reason_is_cut_to_fit() -> None:
    close = parse(close_frame(1000, "é" * 100))
    assert len(close.data) <= 125
    assert Close.parse(close.data).reason == "é" * 61
