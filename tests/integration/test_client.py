"""``hubbub.client`` against a real server: every publication once and in order, through cuts,
restarts, expiring tokens and slow consumers; each test compares offsets end to end."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pytest

import hubbub.client as hc
from hubbub.auth import mint_connection_token
from tests.conftest import SECRET, UNIT, RunningServer
from tests.integration.test_cluster import Balancer, pipe

WAIT = 5 * UNIT

# What a client sees over the wire: on both WebSocket transports (tests/conftest.py::transport).
pytestmark = pytest.mark.usefixtures("transport")


async def take(sub: hc.Subscription, n: int) -> list[hc.Publication | hc.Gap]:
    out: list[hc.Publication | hc.Gap] = []
    async with asyncio.timeout(WAIT * 2):
        async for item in sub:
            out.append(item)
            if len(out) == n:
                break
    return out


@pytest.fixture
async def balancer(server: RunningServer) -> AsyncIterator[Balancer]:
    lb = Balancer()
    lb.target = server.port
    await lb.start()
    yield lb
    await lb.close()


def token(user: str = "alice", **kw: Any) -> str:
    return mint_connection_token(SECRET, user, **kw)


async def test_subscribe_publish_iterate(server: RunningServer) -> None:
    async with hc.connect(server.url, token=token()) as client:
        assert client.state is hc.State.CONNECTED
        sub = await client.subscribe("news")
        await sub.publish({"n": 1})
        await server.node.publish("news", {"n": 2})
        items = await take(sub, 2)
        assert [(p.offset, p.data) for p in items if isinstance(p, hc.Publication)] == [
            (1, {"n": 1}),
            (2, {"n": 2}),
        ]
        first = items[0]
        assert isinstance(first, hc.Publication) and first.info is not None
        assert first.info.user == "alice"
        assert await client.presence_stats("chat:x") == (0, 0)
        hist = await client.history("news", limit=-1)
        assert [p["offset"] for p in hist["publications"]] == [1, 2]
        with pytest.raises(hc.ReplyError) as exc_info:
            await client.subscribe("nope:x")
        assert exc_info.value.code == 102
        with pytest.raises(hc.ReplyError) as exc_info:
            await client.rpc("missing")
        assert exc_info.value.code == 104


async def test_connection_cut_by_proxy(server: RunningServer, balancer: Balancer) -> None:
    url = f"ws://127.0.0.1:{balancer.port}/connection/websocket"
    async with hc.connect(url, token=token(), min_delay=0.05) as client:
        sub = await client.subscribe("news")
        sent = [(await server.node.publish("news", {"n": n})).offset for n in range(3)]
        got = await take(sub, 3)
        # Cut every connection through the balancer, keep publishing meanwhile.
        assert client._ws is not None
        client._ws.transport.abort()
        for n in range(3, 10):
            sent.append((await server.node.publish("news", {"n": n})).offset)
            await asyncio.sleep(0.01)
        got += await take(sub, 7)
        assert [p.offset for p in got if isinstance(p, hc.Publication)] == sent
        assert client.reconnects >= 1


async def test_server_restart(server: RunningServer, balancer: Balancer, start_server: Any) -> None:
    """The server is replaced mid-stream (shutdown 3001, a new process behind the balancer,
    memory engine: history gone). The client reconnects by itself, says so with a Gap, and goes
    on with the new stream; nothing from the old stream is repeated."""
    url = f"ws://127.0.0.1:{balancer.port}/connection/websocket"
    async with hc.connect(url, token=token(), min_delay=0.05) as client:
        sub = await client.subscribe("news")
        old = [(await server.node.publish("news", {"n": n})).offset for n in range(3)]
        got = await take(sub, 3)
        assert [p.offset for p in got if isinstance(p, hc.Publication)] == old
        replacement: RunningServer = await start_server()
        balancer.target = replacement.port
        await server.node.close()  # every connection gets 3001 shutdown
        (gap,) = await take(sub, 1)
        assert isinstance(gap, hc.Gap) and gap.offset == 0
        new = [(await replacement.node.publish("news", {"n": n})).offset for n in range(3)]
        got = await take(sub, 3)
        assert [p.offset for p in got if isinstance(p, hc.Publication)] == new == [1, 2, 3]
        assert client.reconnects >= 1


async def test_token_expiring_during_the_session(server: RunningServer) -> None:
    fetched: list[int] = []

    async def get_token() -> str:
        fetched.append(1)
        return token(ttl=2)

    async with hc.connect(server.url, get_token=get_token) as client:
        sub = await client.subscribe("news")
        sent = []
        for n in range(6):
            sent.append((await server.node.publish("news", {"n": n})).offset)
            await asyncio.sleep(0.5 * UNIT)
        got = await take(sub, 6)
        assert [p.offset for p in got if isinstance(p, hc.Publication)] == sent
        assert len(fetched) >= 2  # refreshed in band before expiry
        assert client.reconnects == 0


async def test_slow_consumer_loses_nothing(server: RunningServer) -> None:
    async with hc.connect(server.url, token=token()) as client:
        sub = await client.subscribe("news", max_queue=5)
        sent = [(await server.node.publish("news", {"n": n})).offset for n in range(40)]
        await asyncio.sleep(0.2 * UNIT)  # the consumer sleeps; the queue overflows
        got = await take(sub, 40)
        assert [p.offset for p in got if isinstance(p, hc.Publication)] == sent


async def test_invalid_token_is_terminal(server: RunningServer) -> None:
    client = hc.Client(server.url, token="not-a-token")
    with pytest.raises(hc.ClientClosed) as exc_info:
        await client.connect()
    assert exc_info.value.code == 3500
    await client.close()


async def test_reconnects_when_server_pings_stop(start_server: Any) -> None:
    from tests.conftest import suite_settings

    running: RunningServer = await start_server(
        suite_settings(client={"ping_interval": 1, "pong_timeout": 0.5})
    )
    async with hc.connect(running.url, token=token(), max_ping_delay=0.5, min_delay=0.05) as client:
        sub = await client.subscribe("news")
        first_id = client.client_id
        # The server goes silent on this connection (its ping timer is stopped).
        (session,) = [s for s in running.node.index.sessions.values() if s.client_id == first_id]
        assert session._heartbeat is not None
        session._heartbeat.stop()
        for _ in range(int(100 * UNIT)):
            if client.client_id != first_id and client.state is hc.State.CONNECTED:
                break
            await asyncio.sleep(0.05)
        assert client.reconnects >= 1 and client.client_id != first_id
        position = await running.node.publish("news", {"after": "silence"})
        (item,) = await take(sub, 1)
        assert isinstance(item, hc.Publication) and item.offset == position.offset


class Gate:
    """A TCP proxy to the server that can cut every connection and answer new ones with an
    HTTP 503 (a restarting server behind a load balancer) until it is opened again."""

    def __init__(self, target: int) -> None:
        self.target = target
        self.open = True
        self.refused = 0
        self.port = 0
        self._writers: list[asyncio.StreamWriter] = []
        self._server: asyncio.Server | None = None

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]

    def cut(self) -> None:
        self.open = False
        for writer in self._writers:
            writer.transport.abort()
        self._writers.clear()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if not self.open:
            self.refused += 1
            await reader.readuntil(b"\r\n\r\n")
            writer.write(b"HTTP/1.1 503 Service Unavailable\r\nContent-Length: 0\r\n\r\n")
            writer.close()
            return
        up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.target)
        self._writers += [writer, up_writer]
        await asyncio.gather(pipe(reader, up_writer), pipe(up_reader, writer))

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()


async def test_refused_handshakes_are_retried_and_nothing_is_lost(server: RunningServer) -> None:
    gate = Gate(server.port)
    await gate.start()
    url = f"ws://127.0.0.1:{gate.port}/connection/websocket"
    states: list[tuple[float, hc.State]] = []
    loop = asyncio.get_running_loop()
    try:
        async with hc.connect(url, token=token(), min_delay=0.05, max_delay=0.2) as client:
            client.on_state(lambda state: states.append((loop.time(), state)))
            sub = await client.subscribe("news")
            await server.node.publish("news", {"n": 0})
            cut_at = loop.time()
            gate.cut()
            for n in range(1, 6):
                await server.node.publish("news", {"n": n})
            for _ in range(int(100 * UNIT)):
                if gate.refused >= 3:
                    break
                await asyncio.sleep(0.05)
            assert gate.refused >= 3, "the client stopped trying after refused handshakes"
            # The loss was reported at once, not after the backoff.
            lost = [t for t, state in states if state is hc.State.CONNECTING]
            assert lost and lost[0] - cut_at < 1.0 * UNIT
            gate.open = True
            got = await take(sub, 6)
            assert [item.data["n"] for item in got] == list(range(6))  # type: ignore[union-attr]
            assert client.state is hc.State.CONNECTED
    finally:
        await gate.close()
