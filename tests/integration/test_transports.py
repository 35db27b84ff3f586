"""Both transports serve the same protocol; the native one's own duties (handshake refusals,
header deadline, WebSocket-level pings) over real sockets."""

from __future__ import annotations

import asyncio
import base64
import json
import os
import socket
from typing import Any

import pytest
import websockets

from hubbub.auth import mint_connection_token
from hubbub.client import connect
from hubbub.transports.admission import JSON_SUBPROTOCOL
from hubbub.transports.native import NativeWebSocketProtocol
from tests.conftest import SECRET, UNIT, RunningServer, suite_settings

WAIT = 5 * UNIT


async def test_a_burst_arrives_whole_and_in_order(start_server: Any, transport: str) -> None:
    # (Protobuf over both transports: the centrifuge-python tests run in both formats.)
    running: RunningServer = await start_server(suite_settings(transport=transport))
    url = running.url
    tokens = [mint_connection_token(SECRET, f"u{n}") for n in range(5)]
    clients = [connect(url, token=t) for t in tokens]
    async with clients[0] as a, clients[1] as b, clients[2] as c, clients[3] as d, clients[4] as e:
        subs = [await x.subscribe("small:burst") for x in (a, b, c, d, e)]
        # Published in one go: the native transport batches them per connection.
        for n in range(300):
            await running.node.publish("live:burst", {"n": n})
            await running.node.publish("small:burst", {"n": n})
        for sub in subs:
            got = [(await asyncio.wait_for(anext(sub), WAIT)) for _ in range(300)]
            assert [p.data["n"] for p in got] == list(range(300))  # type: ignore[union-attr]
            assert [p.offset for p in got] == list(range(1, 301))  # type: ignore[union-attr]


async def test_other_websocket_routes_still_go_through_asgi(server: RunningServer) -> None:
    async with websockets.connect(f"ws://127.0.0.1:{server.port}/ws/alice") as ws:
        assert await asyncio.wait_for(ws.recv(), WAIT) == "alice joined the chat"
        await ws.send("hi")
        assert await asyncio.wait_for(ws.recv(), WAIT) == "You said: hi"


async def test_slow_request_headers_are_cut_off(start_server: Any) -> None:
    running: RunningServer = await start_server(suite_settings(limits={"header_timeout": 0.5}))
    reader, writer = await asyncio.open_connection("127.0.0.1", running.port)
    writer.write(b"GET /connection/websocket HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: ")
    await writer.drain()
    started = asyncio.get_running_loop().time()
    for _ in range(30):  # a byte every 100 ms: never finishing the headers
        writer.write(b"a")
        await writer.drain()
        if reader.at_eof():
            break
        try:
            if await asyncio.wait_for(reader.read(1), 0.1) == b"":
                break
        except TimeoutError:
            continue
    elapsed = asyncio.get_running_loop().time() - started
    assert elapsed < 2.5 * UNIT, f"still open after {elapsed:.1f} s"
    assert running.node.counters["http.header_timeout"] == 1
    writer.close()
    # A normal client is unaffected.
    async with websockets.connect(running.url) as ws:
        token = mint_connection_token(SECRET, "ok")
        await ws.send(json.dumps({"id": 1, "connect": {"token": token}}))
        assert "connect" in json.loads(await asyncio.wait_for(ws.recv(), WAIT))


async def test_websocket_level_pings_for_clients_that_ask(start_server: Any) -> None:
    running: RunningServer = await start_server(
        suite_settings(client={"ping_interval": 0.3, "pong_timeout": 0.1})
    )
    pings = 0

    async with websockets.connect(running.url + "?cf_ws_frame_ping_pong=true") as ws:
        original = ws.protocol.recv_frame  # count the server's pings as websockets sees them

        def counting(frame: Any) -> None:
            nonlocal pings
            if frame.opcode.name == "PING":
                pings += 1
            original(frame)

        ws.protocol.recv_frame = counting  # type: ignore[method-assign]
        token = mint_connection_token(SECRET, "frames")
        await ws.send(json.dumps({"id": 1, "connect": {"token": token}}))
        reply = json.loads(await asyncio.wait_for(ws.recv(), WAIT))
        assert "ping" not in reply["connect"]  # no application pings on this connection
        await asyncio.sleep(1.2 * UNIT)
        assert pings >= 2
        assert ws.state.name == "OPEN"  # websockets answered every ping: still open


async def test_pongs_are_answered_without_a_task(
    start_server: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    running: RunningServer = await start_server(
        suite_settings(client={"ping_interval": 0.2, "pong_timeout": 0.15})
    )
    readers = 0
    original = NativeWebSocketProtocol._read

    def counted(self: NativeWebSocketProtocol) -> Any:
        nonlocal readers
        readers += 1
        return original(self)

    monkeypatch.setattr(NativeWebSocketProtocol, "_read", counted)
    async with websockets.connect(running.url) as ws:
        token = mint_connection_token(SECRET, "beat")
        await ws.send(json.dumps({"id": 1, "connect": {"token": token}}))
        assert "connect" in json.loads(await asyncio.wait_for(ws.recv(), WAIT))
        assert readers == 1  # the connect
        for _ in range(5):
            assert await asyncio.wait_for(ws.recv(), WAIT) == "{}"
            await ws.send("{}")
        await ws.send(json.dumps({"id": 2, "presence_stats": {"channel": "chat:x"}}))
        reply = json.loads(await asyncio.wait_for(ws.recv(), WAIT))
        # Still connected after five pings (pong_timeout is shorter than the interval), and
        # only the commands took a task.
        assert reply["id"] == 2 and "presence_stats" in reply
        assert readers == 2


def _upgrade(port: int, *headers: str) -> bytes:
    """Send an upgrade request by hand; the server's whole answer (it closes after refusing)."""
    request = "\r\n".join(
        [
            "GET /connection/websocket HTTP/1.1",
            "Host: 127.0.0.1",
            "Upgrade: websocket",
            "Connection: Upgrade",
            *headers,
        ]
    )
    with socket.create_connection(("127.0.0.1", port), timeout=WAIT) as sock:
        sock.sendall((request + "\r\n\r\n").encode())
        answer = b""
        while chunk := sock.recv(4096):
            answer += chunk
    return answer


async def test_invalid_upgrades_are_refused_with_a_reason(server: RunningServer) -> None:
    key = base64.b64encode(os.urandom(16)).decode()
    old = await asyncio.to_thread(
        _upgrade, server.port, f"Sec-WebSocket-Key: {key}", "Sec-WebSocket-Version: 8"
    )
    assert old.startswith(b"HTTP/1.1 426 Upgrade Required\r\n")
    assert b"\r\nSec-WebSocket-Version: 13\r\n" in old and old.endswith(b"only 13\n")
    keyless = await asyncio.to_thread(_upgrade, server.port, "Sec-WebSocket-Version: 13")
    assert keyless.startswith(b"HTTP/1.1 400 Bad Request\r\n")
    assert b"Sec-WebSocket-Key" in keyless.split(b"\r\n\r\n")[1]
    assert server.node.counters["handshake.invalid"] == 2
    # And a good one still opens.
    async with websockets.connect(server.url, subprotocols=[JSON_SUBPROTOCOL]) as ws:  # type: ignore[list-item]
        assert ws.subprotocol == JSON_SUBPROTOCOL
        token = mint_connection_token(SECRET, "ok")
        await ws.send(json.dumps({"id": 1, "connect": {"token": token}}))
        assert "connect" in json.loads(await asyncio.wait_for(ws.recv(), WAIT))
