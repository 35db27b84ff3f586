"""Bad input over real WebSockets: each case gets its documented close code or error, and a
control client in the same channel keeps receiving throughout."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import socket
from collections.abc import AsyncIterator
from typing import Any

import pytest
import websockets
from websockets.asyncio.client import ClientConnection
from websockets.exceptions import ConnectionClosed

from hubbub.auth import mint_connection_token
from tests.conftest import SECRET, UNIT, RunningServer

WAIT = 5 * UNIT

# What a client sees over the wire: on both WebSocket transports (tests/conftest.py::transport).
pytestmark = pytest.mark.usefixtures("transport")


async def open_ws(server: RunningServer) -> ClientConnection:
    return await websockets.connect(server.url, max_size=None, open_timeout=WAIT)


async def connect_ws(server: RunningServer, user: str = "probe") -> ClientConnection:
    ws = await open_ws(server)
    token = mint_connection_token(SECRET, user)
    await ws.send(json.dumps({"id": 1, "connect": {"token": token}}))
    reply = json.loads(await asyncio.wait_for(ws.recv(), WAIT))
    assert "connect" in reply
    return ws


async def close_code(ws: ClientConnection) -> int | None:
    """Read until the server closes; the close code."""
    try:
        while True:
            await asyncio.wait_for(ws.recv(), WAIT)
    except ConnectionClosed as exc:
        return exc.rcvd.code if exc.rcvd else None


def parse(frame: str | bytes) -> list[dict[str, Any]]:
    """The messages of one server frame (several may share it, newline-joined)."""
    text = frame.decode() if isinstance(frame, bytes) else frame
    return [json.loads(line) for line in text.split("\n")]


async def replies(ws: ClientConnection, n: int) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    while len(out) < n:
        out.extend(parse(await asyncio.wait_for(ws.recv(), WAIT)))
    return out


class Control:
    """A subscribed client that must keep receiving whatever other clients do."""

    def __init__(self, server: RunningServer, ws: ClientConnection) -> None:
        self.server = server
        self.ws = ws
        self.sent = 0

    async def check(self) -> None:
        """Publish to the control channel and expect it next, promptly."""
        self.sent += 1
        loop = asyncio.get_running_loop()
        started = loop.time()
        await self.server.node.publish("live:control", {"n": self.sent})
        while True:
            for msg in parse(await asyncio.wait_for(self.ws.recv(), WAIT)):
                if "pub" in msg.get("push", {}):
                    assert msg["push"]["pub"]["data"] == {"n": self.sent}
                    latency = loop.time() - started
                    assert latency < 0.5 * UNIT, f"control latency {latency * 1000:.0f} ms"
                    return


def rss_bytes() -> int:
    """This process's resident memory (the server under test runs in it)."""
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


RSS_BOUND = 64 * 1024 * 1024
"""What one abuse case may add to the process's memory: an unbounded buffer (a flood kept in
memory, a huge message accepted) blows through this; ordinary allocator noise does not."""


@pytest.fixture
async def control(server: RunningServer) -> AsyncIterator[Control]:
    ws = await connect_ws(server, "control")
    await ws.send(json.dumps({"id": 2, "subscribe": {"channel": "live:control"}}))
    (reply,) = await replies(ws, 1)
    assert reply == {"id": 2, "subscribe": {}}
    ctl = Control(server, ws)
    await ctl.check()
    before = rss_bytes()
    yield ctl
    await ctl.check()
    await ws.close()
    grown = rss_bytes() - before
    assert grown < RSS_BOUND, f"the server grew by {grown / 2**20:.0f} MiB during the case"


CLOSE_CASES = [
    ("invalid JSON", "{not json", 3501),
    ("unknown command", '{"id": 2, "launch": {}}', 3501),
    ("command without id", '{"presence": {"channel": "news"}}', 3501),
    ("second connect", '{"id": 2, "connect": {}}', 3501),
    ("empty channel", '{"id": 2, "subscribe": {"channel": ""}}', 3501),
    ("blank line", '{"id": 2, "presence": {"channel": "news"}}\n\n{"id": 3}', 3501),
    ("wrong types", '{"id": 2, "subscribe": {"channel": 42}}', 3501),
]


@pytest.mark.parametrize(("case", "frame", "code"), CLOSE_CASES, ids=[c[0] for c in CLOSE_CASES])
async def test_bad_frame_closes(
    server: RunningServer, control: Control, case: str, frame: str, code: int
) -> None:
    ws = await connect_ws(server)
    await ws.send(frame)
    assert await close_code(ws) == code, case
    await control.check()


async def test_command_before_connect(server: RunningServer, control: Control) -> None:
    ws = await open_ws(server)
    await ws.send('{"id": 1, "subscribe": {"channel": "news"}}')
    assert await close_code(ws) == 3501
    await control.check()


async def test_pong_before_connect(server: RunningServer, control: Control) -> None:
    ws = await open_ws(server)
    await ws.send("{}")  # a pong with no ping: before connect it is a bad request
    assert await close_code(ws) == 3501
    await control.check()


async def test_over_long_channel_is_107(server: RunningServer, control: Control) -> None:
    ws = await connect_ws(server)
    await ws.send(json.dumps({"id": 2, "subscribe": {"channel": "x" * 256}}))
    (reply,) = await replies(ws, 1)
    assert reply == {"id": 2, "error": {"code": 107, "message": "bad request"}}
    await ws.send(json.dumps({"id": 3, "subscribe": {"channel": "nope:x"}}))
    assert (await replies(ws, 1))[0]["error"]["code"] == 102
    await control.check()
    await ws.close()


async def test_binary_frame_is_inappropriate_protocol(
    server: RunningServer, control: Control
) -> None:
    ws = await connect_ws(server)
    await ws.send(b'{"id": 2, "presence": {"channel": "news"}}')
    assert await close_code(ws) == 3506
    await control.check()


async def test_oversized_frame_is_1009(server: RunningServer, control: Control) -> None:
    ws = await connect_ws(server)
    limit = server.node.settings.client.max_message_size
    await ws.send(json.dumps({"id": 2, "publish": {"channel": "news", "data": "x" * limit}}))
    assert await close_code(ws) == 1009
    await control.check()


async def test_invalid_token_is_3500(server: RunningServer, control: Control) -> None:
    ws = await open_ws(server)
    await ws.send(json.dumps({"id": 1, "connect": {"token": "eyJhbGciOiJub25lIn0.e30."}}))
    assert await close_code(ws) == 3500
    await control.check()


async def test_garbage_flood_does_not_disturb_others(
    server: RunningServer, control: Control
) -> None:
    sockets = [await open_ws(server) for _ in range(5)]
    for i, ws in enumerate(sockets):
        await ws.send("\x00\xff garbage " * i)
    codes = await asyncio.gather(*(close_code(ws) for ws in sockets))
    assert set(codes) == {3501}
    await control.check()
    assert server.node.counters["bad_input.3501"] >= 5


async def test_server_keeps_serving_commands_after_errors(
    server: RunningServer, control: Control
) -> None:
    ws = await connect_ws(server)
    await ws.send(
        '{"id": 2, "publish": {"channel": "locked:x", "data": 1}}\n'
        '{"id": 3, "presence_stats": {"channel": "chat:a"}}'
    )
    got = {r["id"]: r for r in await replies(ws, 2)}
    assert got[2]["error"]["code"] == 103
    assert got[3]["presence_stats"] == {"num_clients": 0, "num_users": 0}
    await control.check()
    await ws.close()


async def test_slow_client_is_disconnected_3008(server: RunningServer, control: Control) -> None:
    # A client that stops reading, with a small kernel receive buffer so backpressure reaches
    # the server quickly.
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.connect(("127.0.0.1", server.port))
    slow = await websockets.connect(
        server.url, sock=sock, max_size=None, max_queue=1, open_timeout=WAIT
    )
    token = mint_connection_token(SECRET, "slow")
    await slow.send(json.dumps({"id": 1, "connect": {"token": token}}))
    await slow.send(json.dumps({"id": 2, "subscribe": {"channel": "live:control"}}))
    await replies(slow, 2)
    received: list[int] = []

    async def read_control() -> None:
        while True:
            for msg in parse(await control.ws.recv()):
                if "pub" in msg.get("push", {}):
                    received.append(msg["push"]["pub"]["data"]["i"])

    reader = asyncio.create_task(read_control())
    # The slow client stops reading; publications keep coming for everyone.
    blob = os.urandom(10_000).hex()
    sent = 0
    while server.node.counters["disconnect.3008"] == 0 and sent < 2000:
        await server.node.publish("live:control", {"blob": blob, "i": sent})
        sent += 1
        await asyncio.sleep(0)
    assert server.node.counters["disconnect.3008"] == 1, "the slow client was never cut off"
    # The control client got every publication, in order, while the slow one was cut off.
    for _ in range(int(500 * UNIT)):
        if len(received) >= sent:
            break
        await asyncio.sleep(0.01)
    reader.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await reader
    assert received == list(range(sent))
    assert await close_code(slow) == 3008
    control.sent = 0


async def test_connections_per_ip_and_per_node(start_server: Any) -> None:
    from tests.conftest import suite_settings

    running = await start_server(suite_settings(limits={"connections_per_ip": 2}))
    first, second = await open_ws(running), await open_ws(running)
    with pytest.raises(websockets.exceptions.InvalidStatus):
        await open_ws(running)
    await first.close()
    for _ in range(50):
        if running.node.admission.connections < 2:
            break
        await asyncio.sleep(0.02)
    third = await open_ws(running)  # room again
    await second.close()
    await third.close()
    assert running.node.counters["handshake.connection_limit"] == 1
