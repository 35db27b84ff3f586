"""The native transport's frames, read back by websockets' own frame parser."""

from __future__ import annotations

import pytest
from websockets.frames import Frame, Opcode
from websockets.streams import StreamReader

from hubbub.transports.native import _FrameCache, frame


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
