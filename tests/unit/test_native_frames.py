"""The native transport's frames, read back by websockets' own frame parser."""

from __future__ import annotations

import asyncio
import time

import pytest
from websockets.frames import Frame, Opcode
from websockets.streams import StreamReader

from hubbub.transports.native import _Flusher, _FrameCache, frame


def parse(data: bytes) -> Frame:
    reader = StreamReader()
    reader.feed_data(data)
    reader.feed_eof()
    parser = Frame.parse(reader.read_exact, mask=False, max_size=None, extensions=[])
    try:
        next(parser)
    except StopIteration as done:
        parsed: Frame = done.value
        assert reader.at_eof(), "bytes left over after the frame"
        return parsed
    raise AssertionError("the parser wanted more bytes than the frame has")


@pytest.mark.parametrize("size", [0, 1, 125, 126, 127, 65535, 65536, 200_000])
@pytest.mark.parametrize("opcode", [Opcode.TEXT, Opcode.BINARY])
def test_frames_round_trip(size: int, opcode: Opcode) -> None:
    payload = bytes(range(256)) * (size // 256) + bytes(range(size % 256))
    if opcode is Opcode.TEXT:
        payload = b"x" * size
    parsed = parse(frame(opcode.value, payload))
    assert (parsed.opcode, parsed.fin, parsed.data) == (opcode, True, payload)


def test_the_cache_frames_one_payload_once() -> None:
    cache = _FrameCache()
    payload = b'{"push":{"channel":"news","pub":{"data":{"n":1}}}}'
    first = cache.get(payload, Opcode.TEXT.value)
    assert cache.get(payload, Opcode.TEXT.value) is first  # the same object, not a rebuild
    assert cache.get(payload, Opcode.BINARY.value) is not first  # another opcode, another frame
    equal_but_other = bytes(bytearray(payload))
    assert cache.get(equal_but_other, Opcode.BINARY.value) == frame(2, payload)


class SlowConnection:
    """Stands in for a connection: its flush takes ``cost`` seconds of CPU, like writing to
    thousands of sockets does."""

    def __init__(self, cost: float) -> None:
        self.cost = cost
        self.flushes: list[float] = []

    def flush(self) -> None:
        self.flushes.append(time.monotonic())
        time.sleep(self.cost)


async def test_a_long_flush_makes_the_next_one_gather() -> None:
    loop = asyncio.get_running_loop()
    flusher = _Flusher(loop, 0.0)
    conn = SlowConnection(0.2)
    flusher.mark(conn)  # type: ignore[arg-type]
    await asyncio.sleep(0)  # the first flush runs at the end of the iteration
    await asyncio.sleep(0)
    assert len(conn.flushes) == 1
    marked = time.monotonic()
    flusher.mark(conn)  # type: ignore[arg-type]
    await asyncio.sleep(0.002)
    assert len(conn.flushes) == 1, "flushed again at once after a 200 ms flush"
    await asyncio.sleep(0.1)
    assert len(conn.flushes) == 2
    # A tenth of the 200 ms flush, counted from the first message after it.
    assert 0.015 <= conn.flushes[1] - marked <= 0.09


async def test_a_short_flush_does_not_delay_the_next() -> None:
    loop = asyncio.get_running_loop()
    flusher = _Flusher(loop, 0.0)
    conn = SlowConnection(0.0)
    for _ in range(3):
        flusher.mark(conn)  # type: ignore[arg-type]
        await asyncio.sleep(0)
        await asyncio.sleep(0)
    assert len(conn.flushes) == 3
