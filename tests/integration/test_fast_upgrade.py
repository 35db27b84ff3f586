"""The shorter way of an upgrade to the native transport: a well-formed head for its path goes
straight to the WebSocket protocol, however it arrives; everything else through httptools."""

from __future__ import annotations

import asyncio
import base64
import json
import os
from typing import Any

import pytest

from hubbub.auth import mint_connection_token
from hubbub.transports.http_guard import GuardedHTTPProtocol
from tests.conftest import SECRET, UNIT, RunningServer
from tests.integration.test_abuse import frame

WAIT = 5 * UNIT


def upgrade_head(path: str = "/connection/websocket", *extra: str) -> bytes:
    key = base64.b64encode(os.urandom(16)).decode()
    lines = [
        f"GET {path} HTTP/1.1",
        "Host: 127.0.0.1",
        "Upgrade: websocket",
        "Connection: Upgrade",
        f"Sec-WebSocket-Key: {key}",
        "Sec-WebSocket-Version: 13",
        *extra,
    ]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


def connect_frame(user: str) -> bytes:
    token = mint_connection_token(SECRET, user)
    return frame(0x1, json.dumps({"id": 1, "connect": {"token": token}}).encode())


@pytest.fixture(name="ways")
def ways_fixture(monkeypatch: pytest.MonkeyPatch) -> dict[str, int]:
    """How many upgrades took each way: "raw" (the shorter one) or "parsed" (httptools)."""
    counts = {"raw": 0, "parsed": 0}
    take_raw = GuardedHTTPProtocol._take_raw
    parsed = GuardedHTTPProtocol.handle_websocket_upgrade

    def counting_raw(self: GuardedHTTPProtocol, head: bytes, rest: bytes) -> None:
        counts["raw"] += 1
        take_raw(self, head, rest)

    def counting_parsed(self: GuardedHTTPProtocol) -> None:
        counts["parsed"] += 1
        parsed(self)

    monkeypatch.setattr(GuardedHTTPProtocol, "_take_raw", counting_raw)
    monkeypatch.setattr(GuardedHTTPProtocol, "handle_websocket_upgrade", counting_parsed)
    return counts


async def send_in_pieces(writer: asyncio.StreamWriter, data: bytes, size: int) -> None:
    for start in range(0, len(data), size):
        writer.write(data[start : start + size])
        await writer.drain()
        await asyncio.sleep(0)


async def read_head(reader: asyncio.StreamReader) -> bytes:
    return await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), WAIT)


async def read_frame(reader: asyncio.StreamReader) -> tuple[int, bytes]:
    """The opcode and payload of the server's next (unmasked) frame."""
    first, second = await asyncio.wait_for(reader.readexactly(2), WAIT)
    size = second & 0x7F
    if size == 126:
        size = int.from_bytes(await reader.readexactly(2), "big")
    elif size == 127:
        size = int.from_bytes(await reader.readexactly(8), "big")
    return first & 0x0F, await asyncio.wait_for(reader.readexactly(size), WAIT)


async def read_text_frame(reader: asyncio.StreamReader) -> dict[str, Any]:
    """The first message of the server's next (unmasked, text) frame."""
    opcode, payload = await read_frame(reader)
    assert opcode == 0x1
    message: dict[str, Any] = json.loads(payload.split(b"\n")[0])
    return message


async def open_and_connect(
    port: int, head: bytes, user: str, *, piece: int = 0, pipelined: bool = False
) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    """Open a connection with ``head`` (sent ``piece`` bytes at a time, or at once; with the
    connect frame in the same write when ``pipelined``), check the 101 and the connect reply."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        if pipelined:
            writer.write(head + connect_frame(user))
        else:
            await send_in_pieces(writer, head, piece or len(head))
        assert b" 101 " in (await read_head(reader)).split(b"\r\n")[0]
        if not pipelined:
            writer.write(connect_frame(user))
        reply = await read_text_frame(reader)
        assert reply["id"] == 1 and "connect" in reply
    except BaseException:
        writer.close()
        raise
    return reader, writer


# A header value outside plain ASCII: well-formed for httptools, not for the shorter way.
NOT_ASCII = upgrade_head("/connection/websocket", "X-Name: caf\xe9")


@pytest.mark.parametrize(
    ("head", "piece", "pipelined", "way"),
    [
        (upgrade_head(), 1, False, "raw"),
        (upgrade_head(), 7, False, "raw"),
        (upgrade_head(), 4096, False, "raw"),
        # The first frame right after the head, in the same write, is read too.
        (upgrade_head(), 0, True, "raw"),
        # A head the shorter way does not take is still upgraded.
        (NOT_ASCII, 5, False, "parsed"),
    ],
    ids=["raw-1", "raw-7", "raw-4096", "raw-pipelined", "parsed"],
)
async def test_an_upgrade_takes_its_way_however_it_arrives(
    server: RunningServer,
    ways: dict[str, int],
    head: bytes,
    piece: int,
    pipelined: bool,
    way: str,
) -> None:
    _, writer = await open_and_connect(server.port, head, way, piece=piece, pipelined=pipelined)
    writer.close()
    assert ways == {"raw": 0, "parsed": 0, way: 1}


async def test_a_malformed_head_is_answered_by_httptools_as_soon_as_it_is_malformed(
    server: RunningServer, ways: dict[str, int]
) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
    try:
        # No empty line: the answer cannot wait for the end of the head.
        await send_in_pieces(writer, b"GET /connection/websocket HTTP/1.1\r\nbad line\r\n", 3)
        reply = await asyncio.wait_for(reader.read(), WAIT)
    finally:
        writer.close()
    assert reply.startswith(b"HTTP/1.1 400 ") and b"Invalid HTTP request received." in reply
    assert ways == {"raw": 0, "parsed": 0}


async def test_plain_http_on_the_path_and_keep_alive_requests_go_through_httptools(
    server: RunningServer, ways: dict[str, int]
) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
    try:
        writer.write(b"GET /connection/websocket HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        first = await read_head(reader)
        status = first.split(b"\r\n")[0]
        assert not status.startswith(b"HTTP/1.1 101 ")
        length = next(
            int(line.split(b":")[1])
            for line in first.split(b"\r\n")
            if line.lower().startswith(b"content-length:")
        )
        await reader.readexactly(length)
        # The same connection, kept alive: an upgrade now is httptools' to read.
        writer.write(upgrade_head())
        assert b" 101 " in (await read_head(reader)).split(b"\r\n")[0]
    finally:
        writer.close()
    assert ways == {"raw": 0, "parsed": 1}
