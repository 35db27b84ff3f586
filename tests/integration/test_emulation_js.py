"""The npm ``centrifuge`` client under Node.js on the emulation transports alone (``transports``
with only ``http_stream``, JSON and Protobuf, then only ``sse``): connect, subscribe, publish,
presence, history, RPC, token refresh, and recovery after the stream is cut by a proxy."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any

import pytest

from hubbub.auth import mint_connection_token
from tests.conftest import SECRET, UNIT, RunningServer, suite_settings
from tests.integration.test_node_client import JS, _require_node

pytestmark = [pytest.mark.js, pytest.mark.slow]


class CuttingProxy:
    """A TCP proxy on loopback to the server whose connections the test can cut at once."""

    def __init__(self, target: int) -> None:
        self.target = target
        self.port = 0
        self.writers: list[asyncio.StreamWriter] = []
        self.server: asyncio.Server | None = None

    async def start(self) -> None:
        self.server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        self.port = self.server.sockets[0].getsockname()[1]

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.target)
        self.writers += [writer, up_writer]

        async def pipe(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
            try:
                while data := await src.read(65536):
                    dst.write(data)
                    await dst.drain()
            except (ConnectionError, OSError):
                pass
            finally:
                dst.close()

        await asyncio.gather(pipe(reader, up_writer), pipe(up_reader, writer))

    def cut(self) -> None:
        """Reset every open connection (a proxy or a network that drops them)."""
        for writer in self.writers:
            writer.transport.abort()
        self.writers.clear()

    async def close(self) -> None:
        if self.server is not None:
            self.server.close()


@pytest.fixture
async def token_url() -> AsyncIterator[str]:
    """An HTTP endpoint answering a fresh 2-second connection token (the client's getToken)."""

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        body = mint_connection_token(SECRET, "jsuser", ttl=2).encode()
        head = f"HTTP/1.1 200 OK\r\ncontent-length: {len(body)}\r\nconnection: close\r\n\r\n"
        writer.write(head.encode() + body)
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    yield f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}/token"
    server.close()


@pytest.mark.parametrize(
    ("transport_name", "wire_format"),
    [("http_stream", "json"), ("http_stream", "protobuf"), ("sse", "json")],
)
async def test_sdk_on_emulation_transport(
    start_server: Any, token_url: str, transport_name: str, wire_format: str
) -> None:
    # Expiry is checked a second after it passes: the client must refresh in the meantime.
    server: RunningServer = await start_server(suite_settings(client={"expired_close_delay": 1}))
    node = server.node

    @node.rpc("echo")
    async def echo(session: Any, data: Any) -> Any:
        return data

    proxy = CuttingProxy(server.port)
    await proxy.start()
    proc = await asyncio.create_subprocess_exec(
        _require_node(),
        str(JS / "emulation.mjs"),
        f"http://127.0.0.1:{proxy.port}",
        transport_name,
        wire_format,
        token_url,
        "chat:js",
        cwd=JS,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    assert proc.stdout is not None
    events: list[dict[str, Any]] = []

    async def until(kind: str, count: int = 1) -> dict[str, Any]:
        assert proc.stdout is not None
        while sum(e["event"] == kind for e in events) < count:
            line = await proc.stdout.readline()
            assert line, f"driver ended before {kind}: {events}"
            events.append(json.loads(line))
        return [e for e in events if e["event"] == kind][count - 1]

    try:
        async with asyncio.timeout(40 * UNIT):
            connected = await until("connected")
            assert connected["transport"] == transport_name
            assert node.counters[f"transport.{transport_name}"] == 1
            assert node.counters[f"connections.{wire_format}"] == 1
            assert (await until("subscribed"))["recoverable"] is True
            assert (await until("publication"))["data"] == {"from": "js"}
            assert (await until("presence"))["clients"] == 1
            assert (await until("history"))["count"] == 1
            assert (await until("rpc"))["data"] == {"x": 1}
            # The 2-second token: refreshed through /emulation, the stream stays.
            await until("token", 2)
            await asyncio.sleep(2.5 * UNIT)
            assert sum(e["event"] == "connected" for e in events) == 1
            assert node.counters["disconnect.3005"] == 0
            await node.publish("chat:js", {"n": 1})
            assert (await until("publication", 2))["data"] == {"n": 1}
            # Cut: what is published meanwhile is recovered on the new stream.
            proxy.cut()
            for n in (2, 3):
                await node.publish("chat:js", {"n": n})
            again = await until("subscribed", 2)
            assert again["wasRecovering"] is True and again["recovered"] is True
            await node.publish("chat:js", {"last": True})
            await asyncio.wait_for(proc.wait(), 10 * UNIT)
        for line in (await proc.stdout.read()).decode().splitlines():
            events.append(json.loads(line))
        assert proc.returncode == 0, events
        pubs = [e["data"] for e in events if e["event"] == "publication"]
        assert pubs == [{"from": "js"}, {"n": 1}, {"n": 2}, {"n": 3}, {"last": True}]
        offsets = [e["offset"] for e in events if e["event"] == "publication"]
        assert offsets == [1, 2, 3, 4, 5]
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
        await proxy.close()
