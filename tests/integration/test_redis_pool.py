"""A burst against one node on Redis: 1,000 concurrent connects, HTTP API publishes and
disconnects wait for a pooled Redis connection instead of failing with error 100, and every
user's connection count in Redis is exact afterwards.

The node is a real ``hubbub serve`` process with the default pool, so that the clients' work
in the test process does not slow it down; the counts are read from Redis directly.
"""

from __future__ import annotations

import asyncio
import json
import resource
import socket
import sys
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest
import websockets
from prometheus_client.parser import text_string_to_metric_families
from websockets.asyncio.client import ClientConnection
from websockets.exceptions import ConnectionClosed

from hubbub.auth import mint_connection_token
from hubbub.engines.redis import RedisBroker, RedisPresenceManager
from hubbub.index import user_presence_key
from hubbub.node import Node
from tests.conftest import API_KEY, SECRET, UNIT, RunningServer, suite_settings
from tests.integration.test_redis_faults import RedisProcess

USERS = 100
PER_USER = 10  # connections_per_user: the burst puts every user exactly at its limit
BURST = USERS * PER_USER
WAIT = 30 * UNIT  # for one whole burst on a shared 2-core machine, not one call


@dataclass
class Served:
    """A ``hubbub serve`` process on the test's Redis."""

    port: int
    prefix: str

    @property
    def url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/connection/websocket"

    @property
    def http(self) -> str:
        return f"http://127.0.0.1:{self.port}"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@pytest.fixture
async def served(tmp_path: Path, redis_url: str) -> AsyncIterator[Served]:
    """The node: the default pool size; no periodic presence refresh during the test, so the
    counts come from connect and close only."""
    served = Served(free_port(), f"pool-{uuid.uuid4().hex[:8]}")
    config = tmp_path / "node.toml"
    config.write_text(
        f"port = {served.port}\n"
        'engine = "redis"\n'
        f'[redis]\nurl = "{redis_url}"\nprefix = "{served.prefix}"\n'
        f"pool_timeout = {5 * UNIT}\n"  # the default on a machine of normal speed
        f'[token]\nhmac_secret_key = "{SECRET}"\n'
        f'[http_api]\nkey = "{API_KEY}"\n'
        f"[limits]\nconnections_per_user = {PER_USER}\nconnections_per_ip = 0\n"
        "[client]\npresence_update_interval = 600\npresence_ttl = 1200\n"
    )
    with (tmp_path / "node.log").open("wb") as log:
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "hubbub", "serve", "--config", str(config),
            stdout=log, stderr=log,
        )  # fmt: skip
    try:
        for _ in range(int(200 * UNIT)):
            try:
                _, writer = await asyncio.open_connection("127.0.0.1", served.port)
                writer.close()
                break
            except OSError:
                await asyncio.sleep(0.05)
        else:
            raise AssertionError("hubbub serve did not start listening")
        yield served
    finally:
        proc.terminate()
        try:
            await asyncio.wait_for(proc.wait(), 10 * UNIT)
        except TimeoutError:
            proc.kill()
            await proc.wait()


@pytest.fixture(autouse=True)
def _descriptors() -> Iterator[None]:
    """Two sockets per client on each side of loopback, plus HTTP: raise the soft limit."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < min(hard, 8 * BURST):
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, 8 * BURST), hard))
    yield
    resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


async def _connect(
    server: Served | RunningServer, user: str
) -> tuple[ClientConnection, dict[str, Any]]:
    """A WebSocket that sent ``connect`` as ``user``, and the reply (or the close as 'close')."""
    ws = await websockets.connect(server.url, max_size=None, open_timeout=WAIT)
    await ws.send(json.dumps({"id": 1, "connect": {"token": mint_connection_token(SECRET, user)}}))
    try:
        reply: dict[str, Any] = json.loads(await asyncio.wait_for(ws.recv(), WAIT))
    except ConnectionClosed as exc:
        reply = {"close": exc.rcvd.code if exc.rcvd else None}
    return ws, reply


def _outcome(reply: dict[str, Any]) -> str:
    if "connect" in reply:
        return "ok"
    if "close" in reply:
        return f"close {reply['close']}"
    return f"error {reply.get('error', {}).get('code')}"


async def _burst_connect(
    server: Served, users: list[str]
) -> tuple[list[ClientConnection], list[str], Counter[str]]:
    """Connect as each of ``users`` at once: the connected sockets, the users that could not
    connect (their sockets closed), and the outcomes."""
    results = await asyncio.gather(*(_connect(server, user) for user in users))
    connected = [ws for ws, reply in results if "connect" in reply]
    refused = [
        user for user, (_, reply) in zip(users, results, strict=True) if "connect" not in reply
    ]
    await _close_all([ws for ws, reply in results if "connect" not in reply])
    return connected, refused, Counter(_outcome(reply) for _, reply in results)


async def _top_up(server: Served, users: list[str]) -> list[ClientConnection]:
    """Connect ``users`` a few at a time (no burst), so that the disconnect burst is whole
    even where the connect burst was not (a few tries each)."""
    sockets: list[ClientConnection] = []
    for _ in range(5):
        left: list[str] = []
        for i in range(0, len(users), 20):
            more, refused, _ = await _burst_connect(server, users[i : i + 20])
            sockets += more
            left += refused
        users = left
        if not users:
            break
    return sockets


async def _publish(server: Served, users: list[str], first: int) -> list[str]:
    """Publish to each user's personal channel at once through the HTTP API; the outcomes."""
    limits = httpx.Limits(max_connections=len(users), max_keepalive_connections=len(users))
    async with httpx.AsyncClient(
        base_url=server.http, headers={"X-API-Key": API_KEY}, limits=limits, timeout=WAIT
    ) as http:
        replies = await asyncio.gather(
            *(
                http.post("/api/publish", json={"channel": f"#{user}", "data": {"n": first + i}})
                for i, user in enumerate(users)
            )
        )
    return [f"error {r.json()['error']['code']}" if "error" in r.json() else "ok" for r in replies]


async def _close_all(sockets: list[ClientConnection]) -> None:
    await asyncio.gather(*(ws.close() for ws in sockets), return_exceptions=True)


async def _still_counted(counts: RedisPresenceManager, users: list[str]) -> dict[str, int]:
    """The users with connections still counted in Redis, and how many (after a bounded wait
    for the removals under way)."""
    left = dict.fromkeys(users, 0)
    for _ in range(int(50 * UNIT)):
        stats = [await counts.presence_stats(user_presence_key(user)) for user in left]
        left = {user: n.num_clients for user, n in zip(left, stats, strict=True) if n.num_clients}
        if not left:
            break
        await asyncio.sleep(0.2)
    return left


async def _error_100_replies(server: Served) -> float:
    """Error 100 replies the node sent to its clients, from its metrics."""
    async with httpx.AsyncClient() as http:
        text = (await http.get(f"{server.http}/metrics")).text
    for family in text_string_to_metric_families(text):
        if family.name == "hubbub_reply_errors":
            return sum(s.value for s in family.samples if s.labels.get("code") == "100")
    return 0.0


async def test_burst_of_connects_publishes_and_disconnects(served: Served, redis_url: str) -> None:
    counts = RedisPresenceManager(redis_url, prefix=served.prefix)
    users = [f"user{i}" for i in range(USERS)]
    burst = [user for user in users for _ in range(PER_USER)]
    figures: dict[str, Any] = {}
    sockets: list[ClientConnection] = []
    try:
        # 1,000 concurrent connects: every user reaches its limit, nobody is refused.
        sockets, refused, outcomes = await _burst_connect(served, burst)
        figures["connects"] = dict(outcomes)
        sockets += await _top_up(served, refused)
        figures["closed at once"] = len(sockets)

        # 1,000 concurrent publishes through the HTTP API, one connection each (spread over
        # clients of 50 connections: one client's pool gets slow with many more).
        responses = await asyncio.gather(
            *(_publish(served, burst[i : i + 50], i) for i in range(0, BURST, 50))
        )
        figures["publishes"] = dict(Counter(outcome for chunk in responses for outcome in chunk))

        # 1,000 simultaneous disconnects: every count drops back to zero.
        await _close_all(sockets)
        sockets = []
        left = await _still_counted(counts, users)
        figures["users with wrong counts"] = len(left)
        figures["connections left counted"] = sum(left.values())

        # So every user can connect up to its limit again (at once), and not once more.
        sockets, _, outcomes = await _burst_connect(served, burst)
        figures["reconnects"] = dict(outcomes)
        extra, _, outcomes = await _burst_connect(served, users)
        sockets += extra
        figures["over the limit"] = dict(outcomes)
        figures["error 100 replies"] = await _error_100_replies(served)
        await _close_all(sockets)
        sockets = []
        figures["wrong counts at the end"] = len(await _still_counted(counts, users))
    finally:
        await _close_all(sockets)
        await counts.close()
    print(figures)
    assert figures == {
        "connects": {"ok": BURST},
        "closed at once": BURST,
        "publishes": {"ok": BURST},
        "users with wrong counts": 0,
        "connections left counted": 0,
        "reconnects": {"ok": BURST},
        "over the limit": {"close 3504": USERS},
        "error 100 replies": 0,
        "wrong counts at the end": 0,
    }


@pytest.fixture
def durable_redis(tmp_path: Path) -> Iterator[RedisProcess]:
    redis = RedisProcess(tmp_path, durable=True)
    redis.start()
    yield redis
    if redis.proc is not None and redis.proc.poll() is None:
        redis.kill()


async def test_a_count_removal_that_failed_is_retried(
    start_server: Any, durable_redis: RedisProcess
) -> None:
    running: RunningServer = await start_server(
        suite_settings(
            engine="redis",
            redis={"url": durable_redis.url},
            limits={"connections_per_user": 1},
        )
    )
    node = running.node
    ws, reply = await _connect(running, "alice")
    assert "connect" in reply
    durable_redis.kill()
    # alice leaves while Redis is down: her count cannot be removed now.
    await ws.close()
    for _ in range(int(100 * UNIT)):
        if node.counters["engine.uncount_deferred"]:
            break
        await asyncio.sleep(0.05)
    assert node.user_connections("alice") == 0
    durable_redis.start()  # with alice's count still in it
    for _ in range(int(200 * UNIT)):
        if node.ready:
            break
        await asyncio.sleep(0.05)
    assert node.ready
    # Retried in the background: her count goes, and she is not refused (3504) on reconnect.
    for _ in range(int(200 * UNIT)):  # 10 s: the retries back off up to 5 s
        if not await node.user_connections_everywhere("alice"):
            break
        await asyncio.sleep(0.05)
    ws, reply = await _connect(running, "alice")
    await ws.close()
    assert "connect" in reply, reply
    assert node.counters["engine.uncount_deferred"] == 1


async def test_the_pool_options_reach_every_client(redis_url: str) -> None:
    """``[redis]`` pool options reach the broker's and the presence manager's clients, on the
    server of ``urls`` (a list of one server is not sharded)."""
    node = Node(
        suite_settings(
            engine="redis", redis={"urls": [redis_url], "pool_size": 7, "pool_timeout": 0.5}
        )
    )
    broker, presence = node.broker, node.presence_manager
    assert isinstance(broker, RedisBroker) and isinstance(presence, RedisPresenceManager)
    await node.start()
    try:
        for client in (broker.redis, presence._redis):
            pool = client.connection_pool
            assert (pool.max_connections, pool.timeout) == (7, 0.5)  # type: ignore[attr-defined]
            assert pool.connection_kwargs["port"] == urlsplit(redis_url).port
    finally:
        await node.close()
