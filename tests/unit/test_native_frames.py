"""The native transport's frames, read back by websockets' own frame parser."""

from __future__ import annotations

import asyncio
import time
from types import SimpleNamespace
from typing import Any

import pytest
from tests.conftest import suite_settings
from websockets.frames import Close, Frame, Opcode
from websockets.streams import StreamReader

from hubbub.app import create_app
from hubbub.node import Node
from hubbub.transports.flush import Flusher, FrameCache, frame
from hubbub.transports.native import NativeWebSocketProtocol
from hubbub.transports.reading import _SLICE, _TURN_FRAMES


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
    cache = FrameCache()
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
    flusher = Flusher(loop, 0.0)
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
    flusher = Flusher(loop, 0.0)
    conn = SlowConnection(0.0)
    for _ in range(3):
        flusher.mark(conn)  # type: ignore[arg-type]
        await asyncio.sleep(0)
        await asyncio.sleep(0)
    assert len(conn.flushes) == 3


class Socket:
    """Stands in for the event loop's transport: records writes and reading pauses."""

    def __init__(self) -> None:
        self.written = bytearray()
        self.reading = True
        self.closed = False
        self.eof = False

    def write(self, data: bytes) -> None:
        self.written += data

    def is_closing(self) -> bool:
        return self.closed

    def get_write_buffer_size(self) -> int:
        return 0  # the peer reads everything at once

    def get_extra_info(self, name: str) -> Any:
        return ("127.0.0.1", 5000) if name == "peername" else None

    def can_write_eof(self) -> bool:
        return True

    def write_eof(self) -> None:
        self.eof = True

    def pause_reading(self) -> None:
        self.reading = False

    def resume_reading(self) -> None:
        self.reading = True

    def close(self) -> None:
        self.closed = True

    def abort(self) -> None:
        self.closed = True


def opened(**limits: Any) -> tuple[NativeWebSocketProtocol, Socket]:
    """A native connection after its opening handshake, on a fake socket."""
    node = Node(suite_settings(limits=limits) if limits else suite_settings())
    conn = NativeWebSocketProtocol(
        SimpleNamespace(loaded_app=create_app(node=node)), SimpleNamespace(connections=set())
    )
    socket = Socket()
    conn.connection_made(socket)  # type: ignore[arg-type]
    conn.data_received(
        b"GET /connection/websocket HTTP/1.1\r\nhost: 127.0.0.1\r\nupgrade: websocket\r\n"
        b"connection: upgrade\r\nsec-websocket-key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
        b"sec-websocket-version: 13\r\n\r\n"
    )
    assert socket.written.startswith(b"HTTP/1.1 101 ")
    socket.written.clear()
    return conn, socket


def client_frame(opcode: int, payload: bytes = b"", fin: bool = True) -> bytes:
    """A masked client frame (zero mask: the payload goes as it is)."""
    return bytes(((0x80 if fin else 0) | opcode, 0x80 | len(payload))) + b"\0\0\0\0" + payload


def server_frames(data: bytes) -> list[Frame]:
    """The frames the server wrote, one after the other, each read back by :func:`parse`."""
    frames = []
    while data:
        size = data[1] & 0x7F
        end = 2 + size if size < 126 else 4 + int.from_bytes(data[2:4], "big")
        assert size < 127, "no test here makes frames that large"
        frames.append(parse(data[:end]))
        data = data[end:]
    return frames


async def test_one_read_parses_a_turn_of_frames_and_leaves_the_rest_for_later() -> None:
    conn, socket = opened(frame_rate=0, frame_byte_rate=0)
    pings = client_frame(Opcode.PING.value) * 40_000  # one 234 KiB read of empty pings
    conn.data_received(pings)
    answered = len(server_frames(bytes(socket.written)))
    # One turn: _TURN_FRAMES, give or take the slice that crossed it, not 40,000.
    assert _TURN_FRAMES <= answered <= _TURN_FRAMES + _SLICE // 6
    assert not socket.reading  # the rest waits in the connection, not in the kernel's buffer
    for _ in range(40_000 // _TURN_FRAMES + 2):
        await asyncio.sleep(0)  # other callbacks run between the turns
    frames = server_frames(bytes(socket.written))
    assert len(frames) == 40_000 and {f.opcode for f in frames} == {Opcode.PONG}
    assert socket.reading


async def test_a_flood_of_pings_is_closed_with_3013() -> None:
    conn, socket = opened(frame_rate=100, frame_burst=200)
    conn.data_received(client_frame(Opcode.PING.value) * 1000)
    for _ in range(10):
        await asyncio.sleep(0)
    frames = server_frames(bytes(socket.written))
    assert frames[-1].opcode is Opcode.CLOSE
    assert Close.parse(frames[-1].data).code == 3013
    assert 200 <= len(frames) - 1 <= 200 + _SLICE // 6  # the burst was answered, no more
    assert conn.node.counters["limit.frame_rate"] == 1
    written = len(socket.written)
    conn.data_received(client_frame(Opcode.PING.value) * 1000)
    assert len(socket.written) == written  # nothing more is parsed or answered


async def test_a_message_in_too_many_fragments_is_closed_with_1009() -> None:
    conn, socket = opened(frame_rate=0, frame_byte_rate=0)
    limit = conn.node.settings.client.max_fragments
    start = client_frame(Opcode.TEXT.value, b"{", fin=False)
    conn.data_received(start + client_frame(Opcode.CONT.value, fin=False) * (limit - 2))
    for _ in range(limit // _TURN_FRAMES + 2):
        await asyncio.sleep(0)
    assert socket.written == b""  # within the limit: nothing to say yet
    conn.data_received(client_frame(Opcode.CONT.value, fin=False) * 2)
    (close,) = server_frames(bytes(socket.written))
    assert close.opcode is Opcode.CLOSE and Close.parse(close.data).code == 1009
    assert conn.node.counters["limit.max_fragments"] == 1


async def test_a_client_close_is_echoed_then_the_socket_half_closed() -> None:
    conn, socket = opened()
    conn.data_received(client_frame(Opcode.CLOSE.value, b"\x03\xe8bye"))
    (close,) = server_frames(bytes(socket.written))
    assert close.opcode is Opcode.CLOSE and Close.parse(close.data) == Close(1000, "bye")
    assert socket.eof and conn.closing and not socket.closed
    conn.data_received(client_frame(Opcode.PING.value))
    assert len(server_frames(bytes(socket.written))) == 1  # nothing after the close
    conn.eof_received()  # the client closes its side: so do we
    assert socket.closed


async def test_a_server_close_waits_for_the_client_close() -> None:
    conn, socket = opened()
    conn.close(3001, "shutting down")
    (close,) = server_frames(bytes(socket.written))
    assert Close.parse(close.data) == Close(3001, "shutting down") and not socket.eof
    conn.data_received(client_frame(Opcode.PING.value))  # no pong after our close
    conn.data_received(client_frame(Opcode.CLOSE.value, b"\x0b\xb9"))
    assert len(server_frames(bytes(socket.written))) == 1  # not answered twice
    assert socket.eof


async def test_a_protocol_error_fails_the_connection_with_its_code() -> None:
    conn, socket = opened()
    conn.data_received(client_frame(Opcode.PING.value, b"1") + client_frame(3))
    pong, close = server_frames(bytes(socket.written))
    assert pong.opcode is Opcode.PONG and pong.data == b"1"
    assert Close.parse(close.data).code == 1002
    assert socket.eof and conn.closing


async def test_a_text_frame_on_a_protobuf_connection_is_closed_with_3506() -> None:
    conn, socket = opened()
    conn._binary = True  # as a protobuf handshake leaves it
    conn.data_received(client_frame(Opcode.TEXT.value, b"{}"))
    await asyncio.sleep(0)
    close = server_frames(bytes(socket.written))[-1]
    assert close.opcode is Opcode.CLOSE and Close.parse(close.data).code == 3506
