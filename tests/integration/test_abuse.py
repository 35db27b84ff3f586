"""Hostile input over real sockets: each case gets its documented code, and a control client in
the same channel keeps receiving everything (see the ``control`` fixture)."""

from __future__ import annotations

import asyncio
import base64
import json
import os
import socket
import struct
from typing import Any

import httpx
import pytest

from hubbub.auth import mint_connection_token, mint_subscription_token
from tests.conftest import API_KEY, SECRET, UNIT, RunningServer, suite_settings
from tests.integration.test_bad_input import (
    Control,
    close_code,
    connect_ws,
    control,  # noqa: F401 (fixture)
    open_ws,
    replies,
)

WAIT = 5 * UNIT

# What a client sees over the wire: on both WebSocket transports (tests/conftest.py::transport).
pytestmark = pytest.mark.usefixtures("transport")


def raw_handshake(port: int) -> socket.socket:
    """A WebSocket handshake done by hand, for frames no client library would send."""
    sock = socket.create_connection(("127.0.0.1", port), timeout=WAIT)
    key = base64.b64encode(os.urandom(16)).decode()
    sock.sendall(
        (
            "GET /connection/websocket HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\n"
            f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n"
        ).encode()
    )
    response = b""
    while b"\r\n\r\n" not in response:
        response += sock.recv(4096)
    assert b" 101 " in response.split(b"\r\n")[0]
    return sock


def frame(opcode: int, payload: bytes, fin: bool = True) -> bytes:
    mask = os.urandom(4)
    head = bytes([(0x80 if fin else 0) | opcode])
    size = len(payload)
    if size < 126:
        head += bytes([0x80 | size])
    elif size < 65536:
        head += bytes([0x80 | 126]) + struct.pack("!H", size)
    else:
        head += bytes([0x80 | 127]) + struct.pack("!Q", size)
    return head + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(payload))


def read_close_code(sock: socket.socket) -> int | None:
    data = b""
    try:
        while True:
            chunk = sock.recv(65536)
            if not chunk:
                break
            data += chunk
    except (TimeoutError, ConnectionResetError):
        pass
    pos = 0
    while pos + 2 <= len(data):  # walk the server's (unmasked) frames to the close frame
        opcode, size = data[pos] & 0x0F, data[pos + 1] & 0x7F
        pos += 2
        if size == 126:
            size = struct.unpack("!H", data[pos : pos + 2])[0]
            pos += 2
        elif size == 127:
            size = struct.unpack("!Q", data[pos : pos + 8])[0]
            pos += 8
        if opcode == 0x8 and size >= 2:
            code: int = struct.unpack("!H", data[pos : pos + 2])[0]
            return code
        pos += size
    return None


async def test_garbage_instead_of_http(server: RunningServer, control: Control) -> None:  # noqa: F811
    reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
    writer.write(b"\x16\x03\x01 definitely not HTTP\r\n\r\n" * 10)
    await writer.drain()
    reply = await asyncio.wait_for(reader.read(), WAIT)
    assert reply == b"" or b"400" in reply.split(b"\r\n")[0]
    writer.close()
    await control.check()


async def test_invalid_utf8_text_frame_is_1007(server: RunningServer, control: Control) -> None:  # noqa: F811
    sock = await asyncio.to_thread(raw_handshake, server.port)
    await asyncio.to_thread(sock.sendall, frame(0x1, b'{"id": 1, "connect": {"\xff\xfe": 1}}'))
    assert await asyncio.to_thread(read_close_code, sock) == 1007
    sock.close()
    await control.check()


async def test_deeply_nested_json_is_3501(server: RunningServer, control: Control) -> None:  # noqa: F811
    ws = await connect_ws(server)
    await ws.send('{"id": 2, "publish": {"channel": "news", "data": ' + "[" * 20000 + "]" * 20000)
    assert await close_code(ws) in (3501, 1009)  # too deep, or too big for the frame limit
    nested = '{"id": 2, "publish": {"channel": "news", "data": ' + "[" * 5000 + "]" * 5000 + "}}"
    ws = await connect_ws(server)
    await ws.send(nested)
    assert await close_code(ws) == 3501
    async with httpx.AsyncClient(base_url=server.http, headers={"X-API-Key": API_KEY}) as http:
        response = await http.post("/api/publish", content=nested.split('"publish": ')[1][:-1])
    assert response.status_code == 400
    await control.check()


async def test_fragmented_messages(server: RunningServer, control: Control) -> None:  # noqa: F811
    ws = await connect_ws(server)
    command = json.dumps({"id": 2, "presence_stats": {"channel": "chat:frag"}})
    await ws.send(iter([command[i : i + 1] for i in range(len(command))]))  # one byte a frame
    (reply,) = await replies(ws, 1)
    assert reply["presence_stats"] == {"num_clients": 0, "num_users": 0}
    huge = "x" * 4096
    await ws.send(iter([huge] * 40))  # 160 KiB in fragments: over the 64 KiB message limit
    assert await close_code(ws) == 1009
    await control.check()


async def test_ping_flood(server: RunningServer, control: Control) -> None:  # noqa: F811
    ws = await connect_ws(server)
    waiters = [await ws.ping() for _ in range(500)]
    await asyncio.wait_for(asyncio.gather(*waiters), WAIT)  # every ping answered
    await control.check()
    await ws.close()


@pytest.mark.slow
async def test_a_thousand_bad_tokens(server: RunningServer, control: Control) -> None:  # noqa: F811
    async def one(i: int) -> int | None:
        ws = await open_ws(server)
        forged = mint_connection_token("x" * 40, f"mallory{i}")
        await ws.send(json.dumps({"id": 1, "connect": {"token": forged}}))
        return await close_code(ws)

    for _ in range(5):
        codes = await asyncio.gather(*(one(i) for i in range(200)))
        assert set(codes) == {3500}
    await control.check()
    assert server.node.counters["disconnect.3500"] == 1000
    assert server.node.info()[0].num_clients == 1  # only the control client is left


@pytest.mark.parametrize(
    ("channel", "code"),
    [("chat:a\r\nb", 107), ("chat:\x00", 107), ("chat:" + "x" * 300, 107), ("nope:*", 102)],
)
async def test_channel_name_injection(
    server: RunningServer,
    control: Control,  # noqa: F811
    channel: str,
    code: int,
) -> None:
    ws = await connect_ws(server)
    await ws.send(json.dumps({"id": 2, "subscribe": {"channel": channel}}))
    (reply,) = await replies(ws, 1)
    assert reply["error"]["code"] == code
    await ws.close()
    await control.check()


async def test_cross_user_private_access(server: RunningServer, control: Control) -> None:  # noqa: F811
    alice = await connect_ws(server, "alice")
    for channel in ("#bob", "dialog:#bob,carol", "$locked:bob-only"):
        await alice.send(json.dumps({"id": 2, "subscribe": {"channel": channel}}))
        (reply,) = await replies(alice, 1)
        assert reply["error"]["code"] == 103, channel
    # Bob's subscription token does not open the channel for Alice.
    stolen = mint_subscription_token(SECRET, "bob", "$locked:bob-only")
    await alice.send(
        json.dumps({"id": 3, "subscribe": {"channel": "$locked:bob-only", "token": stolen}})
    )
    assert await close_code(alice) == 3500
    await control.check()


async def test_stale_sockets_are_closed_3502(start_server: Any) -> None:
    running: RunningServer = await start_server(suite_settings(client={"stale_close_delay": 0.5}))
    watcher = await connect_ws(running, "watcher")
    await watcher.send(json.dumps({"id": 2, "subscribe": {"channel": "live:watch"}}))
    await replies(watcher, 1)
    # Fifty sockets that complete the handshake and then say nothing at all.
    idle = [await open_ws(running) for _ in range(50)]
    codes = await asyncio.gather(*(close_code(ws) for ws in idle))
    assert set(codes) == {3502}
    for _ in range(int(100 * UNIT)):  # the sockets close right after their close frames
        if running.node.admission.connections == 1:
            break
        await asyncio.sleep(0.02)
    assert running.node.admission.connections == 1  # only the watcher is left
    await running.node.publish("live:watch", {"still": "here"})
    (push,) = await replies(watcher, 1)
    assert push["push"]["pub"]["data"] == {"still": "here"}
    await watcher.close()
