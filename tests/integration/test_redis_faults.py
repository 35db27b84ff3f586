"""Redis faults: the engine goes away mid-stream and comes back (empty, as after a crash)."""

from __future__ import annotations

import asyncio
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from centrifuge import Client, SubscribedContext

from hubbub.auth import mint_connection_token
from hubbub.protocol.codes import ProtocolError
from tests.conftest import SECRET, UNIT, suite_settings
from tests.integration.test_centrifuge_python import SubEvents, next_item

WAIT = 5 * UNIT


class RedisProcess:
    """A redis-server this test may kill and restart on the same port.

    It comes back empty, as after a crash, unless ``durable``: then every write is synced to
    disk, and it comes back with what it held (Redis briefly unavailable, nothing lost).
    """

    def __init__(self, workdir: Path, *, durable: bool = False) -> None:
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            self.port = sock.getsockname()[1]
        self.workdir = workdir
        self.durable = durable
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        self.proc = subprocess.Popen(
            ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
             "--dir", str(self.workdir), "--appendonly",
             *(["yes", "--appendfsync", "always"] if self.durable else ["no"])],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )  # fmt: skip
        for _ in range(int(200 * UNIT)):
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.1).close()
                return
            except OSError:
                time.sleep(0.05)
        raise AssertionError("redis-server did not start")

    def kill(self) -> None:
        assert self.proc is not None
        self.proc.kill()
        self.proc.wait(10)


@pytest.fixture
def own_redis(tmp_path: Path) -> Iterator[RedisProcess]:
    redis = RedisProcess(tmp_path)
    redis.start()
    yield redis
    if redis.proc is not None and redis.proc.poll() is None:
        redis.kill()


async def test_redis_restart_mid_stream(start_server: Any, own_redis: RedisProcess) -> None:
    running = await start_server(suite_settings(engine="redis", redis={"url": own_redis.url}))
    node = running.node
    client = Client(running.url, token=mint_connection_token(SECRET, "alice"), proxy=None)
    events = SubEvents()
    sub = client.new_subscription("news", events=events)
    await client.connect()
    await sub.subscribe()
    first: SubscribedContext = await next_item(events.subscribed, "subscribed")
    for n in range(1, 4):
        await node.publish("news", {"n": n})
    for n in range(1, 4):
        assert (await next_item(events.publications, "publication")).pub.data == {"n": n}

    own_redis.kill()
    # Publishing fails fast with a temporary error; the node says it is not ready.
    started = time.monotonic()
    for _ in range(int(200 * UNIT)):
        try:
            await node.publish("news", {"n": "lost"})
        except ProtocolError as exc:
            assert exc.code == 100 and exc.temporary
            break
        await asyncio.sleep(0.01)
    else:
        raise AssertionError("publish kept succeeding without Redis")
    assert time.monotonic() - started < 3 * UNIT
    for _ in range(int(100 * UNIT)):
        if not node.ready:
            break
        await asyncio.sleep(0.02)
    async with httpx.AsyncClient(base_url=running.http) as http:
        assert (await http.get("/readyz")).status_code == 503
    # The WebSocket client is kept meanwhile.
    assert client.state.value == "connected"

    own_redis.start()  # empty: the stream and its epoch are gone
    # The node reconnects by itself; the subscriber is told to recover and learns it cannot.
    again: SubscribedContext = await next_item(events.subscribed, "resubscribe")
    assert again.was_recovering and not again.recovered
    assert again.stream_position is not None and first.stream_position is not None
    assert again.stream_position.epoch != first.stream_position.epoch
    assert node.ready and node.counters["engine.reconnects"] >= 1
    async with httpx.AsyncClient(base_url=running.http) as http:
        assert (await http.get("/readyz")).status_code == 200
    # Live again, on the new stream.
    position = await node.publish("news", {"n": "after"})
    ctx = await next_item(events.publications, "publication after the restart")
    assert ctx.pub.data == {"n": "after"} and ctx.pub.offset == position.offset == 1
    await client.disconnect()


async def test_clients_come_and_go_while_redis_is_down(
    start_server: Any, own_redis: RedisProcess
) -> None:
    settings = suite_settings(engine="redis", redis={"url": own_redis.url})
    running = await start_server(settings)
    client = Client(running.url, token=mint_connection_token(SECRET, "bob"), proxy=None)
    events = SubEvents()
    sub = client.new_subscription("chat:room", events=events)
    await client.connect()
    await sub.subscribe()
    await next_item(events.subscribed, "subscribed")
    own_redis.kill()
    for _ in range(int(100 * UNIT)):
        if not running.node.ready:
            break
        await asyncio.sleep(0.02)
    # Leaving while Redis is down cleans up locally and never hangs.
    await asyncio.wait_for(client.disconnect(), WAIT)
    for _ in range(int(100 * UNIT)):
        if running.node.info()[0].num_clients == 0:
            break
        await asyncio.sleep(0.02)
    assert running.node.info()[0].num_clients == 0
    assert running.node.channels() == {}
    # A new subscriber is refused with a temporary error, then succeeds once Redis is back.
    late = Client(running.url, token=mint_connection_token(SECRET, "carol"), proxy=None)
    late_events = SubEvents()
    late_sub = late.new_subscription("chat:room", events=late_events)
    await late.connect()
    await late_sub.subscribe()
    own_redis.start()
    subscribed = await asyncio.wait_for(late_events.subscribed.get(), 15 * UNIT)
    assert subscribed.channel == "chat:room"
    await late.disconnect()
