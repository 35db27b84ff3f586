"""Nothing acknowledged is silently lost when Redis loses publications.

Redis restarts empty, a Redis that was behind takes over (same epoch, lower offsets), or a
channel's history is removed, while real clients of both wire formats are subscribed and
publications keep coming through the HTTP API. For every client, every publication the API
acknowledged must be delivered, or the client must have been told it could not have it: a
resubscribe (after an unsubscribe push 2500, or a reconnect) that answers ``recovered: false``
at a position that covers it. Anything else is a silent gap, and there must be none.
"""

from __future__ import annotations

import asyncio
import itertools
import json
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import msgspec
import pytest
import redis.asyncio as aioredis
from centrifuge import (
    Client,
    PublicationContext,
    SubscribedContext,
    SubscriptionEventHandler,
    UnsubscribedContext,
)

from hubbub.auth import mint_connection_token
from hubbub.engines.redis import RedisBroker
from hubbub.protocol.messages import Publication
from tests.conftest import API_KEY, SECRET, UNIT, RunningServer, suite_settings
from tests.integration.test_redis_faults import RedisProcess

WAIT = 5 * UNIT
CHANNEL = "news"
PAUSE = 0.02 * UNIT
"""Between two publications of the steady stream."""


class Tally(SubscriptionEventHandler):
    """What one subscriber saw: the numbers of the publications it received, and the positions
    at which it was told it could not recover."""

    def __init__(self) -> None:
        self.received: set[int] = set()
        self.resets: list[tuple[str, int]] = []
        self.subscribed = asyncio.Event()
        self.unsubscribe_codes: list[int] = []

    async def on_subscribed(self, ctx: SubscribedContext) -> None:
        if ctx.was_recovering and not ctx.recovered:
            assert ctx.stream_position is not None
            self.resets.append((ctx.stream_position.epoch, ctx.stream_position.offset))
        self.subscribed.set()

    async def on_unsubscribed(self, ctx: UnsubscribedContext) -> None:
        self.unsubscribe_codes.append(ctx.code)

    async def on_publication(self, ctx: PublicationContext) -> None:
        data = ctx.pub.data
        self.received.add(json.loads(data)["n"] if isinstance(data, bytes) else data["n"])


@dataclass
class Stream:
    """The publications the HTTP API acknowledged: number -> (epoch, offset)."""

    acked: dict[int, tuple[str, int]] = field(default_factory=dict)
    epochs: list[str] = field(default_factory=list)
    refused: int = 0

    def ack(self, n: int, epoch: str, offset: int) -> None:
        self.acked[n] = (epoch, offset)
        if epoch not in self.epochs:
            self.epochs.append(epoch)

    def covered(self, n: int, reset: tuple[str, int]) -> bool:
        """Whether a ``recovered: false`` answered at ``reset`` tells of publication ``n``:
        ``n`` is at or before that position (an earlier epoch, or an offset up to it)."""
        epoch, offset = self.acked[n]
        reset_epoch, reset_offset = reset
        if epoch == reset_epoch:
            return offset <= reset_offset
        order = {e: i for i, e in enumerate(self.epochs)}
        return order[epoch] < order.get(reset_epoch, len(self.epochs))

    def silent_gaps(self, tally: Tally) -> list[int]:
        """Acknowledged publications the client neither received nor was told about."""
        return sorted(
            n
            for n in self.acked
            if n not in tally.received and not any(self.covered(n, r) for r in tally.resets)
        )


class Publisher:
    """Publishes ``{"n": <number>}`` through the HTTP API of the nodes in turn."""

    def __init__(self, nodes: list[RunningServer], stream: Stream) -> None:
        self.https = [
            httpx.AsyncClient(base_url=n.http, headers={"X-API-Key": API_KEY}, timeout=WAIT)
            for n in nodes
        ]
        self.stream = stream
        self.next = 1

    async def publish(self) -> bool:
        n, self.next = self.next, self.next + 1
        http = self.https[n % len(self.https)]
        try:
            reply = await http.post("/api/publish", json={"channel": CHANNEL, "data": {"n": n}})
            result = reply.json().get("result")
        except httpx.HTTPError:
            result = None
        if result is None:
            self.stream.refused += 1
            return False
        self.stream.ack(n, result["epoch"], result["offset"])
        return True

    async def publish_acked(self, count: int) -> None:
        """Publish until ``count`` more publications were acknowledged."""
        done = 0
        for _ in range(int(1000 * UNIT)):
            if done == count:
                return
            done += await self.publish()
            await asyncio.sleep(PAUSE)
        raise AssertionError(f"only {done} of {count} publications acknowledged")

    async def steady(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            await self.publish()
            await asyncio.sleep(PAUSE)

    async def close(self) -> None:
        for http in self.https:
            await http.aclose()


@dataclass
class Subscriber:
    client: Client
    tally: Tally
    protobuf: bool


@pytest.fixture
def own_redis(tmp_path: Path) -> Iterator[RedisProcess]:
    """A redis-server of this test only, which it may kill and restart (from a snapshot left
    in ``tmp_path``)."""
    redis = RedisProcess(tmp_path)
    redis.start()
    yield redis
    if redis.proc is not None and redis.proc.poll() is None:
        redis.kill()


@pytest.fixture
async def subscribers() -> AsyncIterator[list[Subscriber]]:
    made: list[Subscriber] = []
    yield made
    await asyncio.gather(*(s.client.disconnect() for s in made), return_exceptions=True)


async def subscribe_all(
    made: list[Subscriber], nodes: list[RunningServer], count: int, *, protobuf: bool | None = None
) -> None:
    """Connect ``count`` clients over the nodes in turn (half of them Protobuf unless
    ``protobuf`` says), each subscribed to the channel."""

    async def one(i: int) -> None:
        pb = bool(i % 2) if protobuf is None else protobuf
        client = Client(
            nodes[i % len(nodes)].url,
            token=mint_connection_token(SECRET, f"user{i}"),
            use_protobuf=pb,
            proxy=None,
        )
        tally = Tally()
        made.append(Subscriber(client, tally, pb))
        sub = client.new_subscription(CHANNEL, events=tally)
        await client.connect()
        await sub.subscribe()
        await asyncio.wait_for(tally.subscribed.wait(), WAIT)

    await asyncio.gather(*(one(i) for i in range(count)))


async def wait_ready(nodes: list[RunningServer]) -> None:
    """Until every node answers /readyz with 200 (its engine is back)."""
    for node in nodes:
        async with httpx.AsyncClient(base_url=node.http) as http:
            for _ in range(int(300 * UNIT)):
                if (await http.get("/readyz")).status_code == 200:
                    break
                await asyncio.sleep(0.05)
            else:
                raise AssertionError("the node did not become ready again")


async def wait_not_ready(nodes: list[RunningServer]) -> None:
    for node in nodes:
        for _ in range(int(300 * UNIT)):
            if not node.node.ready:
                break
            await asyncio.sleep(0.02)


async def settle(stream: Stream, made: list[Subscriber]) -> dict[int, list[int]]:
    """Wait (bounded) until no client has a silent gap; the gaps left, by client index."""
    gaps: dict[int, list[int]] = {}
    for _ in range(int(100 * UNIT)):
        gaps = {i: g for i, s in enumerate(made) if (g := stream.silent_gaps(s.tally))}
        if not gaps:
            break
        await asyncio.sleep(0.1)
    return gaps


def report(gaps: dict[int, list[int]], made: list[Subscriber]) -> str:
    lost = sum(len(g) for g in gaps.values())
    sample = {i: g[:10] for i, g in list(gaps.items())[:5]}
    formats = {"protobuf" if made[i].protobuf else "json" for i in gaps}
    clients = f"{len(gaps)} clients ({', '.join(sorted(formats))})"
    return f"{lost} acknowledged publications silently missed by {clients}: {sample}"


Fault = Callable[[RedisProcess, Publisher], Awaitable[None]]


async def run(
    start_server: Any,
    redis: RedisProcess,
    made: list[Subscriber],
    *,
    nodes: int,
    clients: int,
    fault: Fault,
) -> Stream:
    """Clients subscribed over ``nodes`` nodes, a steady stream of publications, ``fault``
    in the middle of it; returns the stream once every node is ready and the stream stopped."""
    settings = suite_settings(engine="redis", redis={"url": redis.url})
    servers = [await start_server(settings) for _ in range(nodes)]
    await subscribe_all(made, servers, clients)
    stream = Stream()
    publisher = Publisher(servers, stream)
    stop = asyncio.Event()
    steady = asyncio.create_task(publisher.steady(stop))
    try:
        await asyncio.sleep(10 * PAUSE)
        await fault(redis, publisher)
        await wait_ready(servers)
        await publisher.publish_acked(20)
    finally:
        stop.set()
        await steady
        await publisher.close()
    return stream


def restart_empty(redis: RedisProcess) -> Fault:
    async def fault(_: RedisProcess, publisher: Publisher) -> None:
        redis.kill()
        await asyncio.sleep(10 * PAUSE)
        redis.start()  # empty: the streams and their epochs are gone

    return fault


async def test_single_node_restart_empty(
    start_server: Any, own_redis: RedisProcess, subscribers: list[Subscriber]
) -> None:
    """The reported case: 20 publications, kill -9, Redis back empty, ready again, 30 more.
    Each subscriber (one per wire format) gets all 50, or is told it cannot recover and then
    gets the new epoch's publications."""
    running = await start_server(suite_settings(engine="redis", redis={"url": own_redis.url}))
    await subscribe_all(subscribers, [running], 1, protobuf=False)
    await subscribe_all(subscribers, [running], 1, protobuf=True)
    stream = Stream()
    publisher = Publisher([running], stream)
    try:
        await publisher.publish_acked(20)
        for s in subscribers:
            for _ in range(int(100 * UNIT)):
                if len(s.tally.received) == 20:
                    break
                await asyncio.sleep(0.02)
        own_redis.kill()
        await wait_not_ready([running])
        own_redis.start()
        await wait_ready([running])
        await publisher.publish_acked(30)
    finally:
        await publisher.close()
    gaps = await settle(stream, subscribers)
    assert not gaps, report(gaps, subscribers)
    new_epoch = [n for n, (epoch, _) in stream.acked.items() if epoch != stream.epochs[0]]
    assert len(new_epoch) == 30
    for s in subscribers:
        # Told, and live on the new epoch after that.
        assert s.tally.resets and set(new_epoch[-10:]) <= s.tally.received


async def test_publications_before_the_node_reconnects(
    start_server: Any, own_redis: RedisProcess, subscribers: list[Subscriber]
) -> None:
    """Redis back empty gets publications (from another process) before this node's PUB/SUB
    reconnects: the node has no live sign of them, its check after reconnecting must find them."""
    running = await start_server(suite_settings(engine="redis", redis={"url": own_redis.url}))
    await subscribe_all(subscribers, [running], 2)
    stream = Stream()
    publisher = Publisher([running], stream)
    other = RedisBroker(own_redis.url, prefix=running.node.settings.redis.prefix)
    try:
        await publisher.publish_acked(5)
        own_redis.kill()
        await wait_not_ready([running])
        own_redis.start()
        await other.start()
        for _ in range(10):
            n, publisher.next = publisher.next, publisher.next + 1
            opts = running.node.publish_options(running.node.rules.options(CHANNEL))
            data = msgspec.Raw(json.dumps({"n": n}).encode())
            result = await other.publish(CHANNEL, Publication(data=data), opts)
            stream.ack(n, result.position.epoch, result.position.offset)
        await wait_ready([running])
        await publisher.publish_acked(5)
    finally:
        await other.close()
        await publisher.close()
    gaps = await settle(stream, subscribers)
    assert not gaps, report(gaps, subscribers)
    assert all(s.tally.resets for s in subscribers)


async def test_two_nodes_restart_empty_mid_stream(
    start_server: Any, own_redis: RedisProcess, subscribers: list[Subscriber]
) -> None:
    """Two nodes, many JSON and Protobuf subscribers, Redis killed and back empty while the
    publications keep coming: zero silent gaps."""
    stream = await run(
        start_server, own_redis, subscribers, nodes=2, clients=60, fault=restart_empty(own_redis)
    )
    gaps = await settle(stream, subscribers)
    assert not gaps, report(gaps, subscribers)
    assert len(stream.epochs) == 2 and all(s.tally.resets for s in subscribers)


async def test_failover_to_a_replica_that_is_behind(
    start_server: Any, own_redis: RedisProcess, subscribers: list[Subscriber]
) -> None:
    """A snapshot mid-stream, more publications, then Redis killed and restarted from that
    snapshot: the same epoch at a lower offset, as after a failover to a replica that was
    behind. The publications after the snapshot are lost in Redis; new ones reuse their
    offsets. Nobody may take those for publications already seen."""

    async def fault(redis: RedisProcess, publisher: Publisher) -> None:
        admin = aioredis.Redis.from_url(redis.url)
        try:
            await admin.save()
        finally:
            await admin.aclose()
        await publisher.publish_acked(30)  # acknowledged, then lost with the old server
        redis.kill()
        redis.start()  # loads the snapshot

    stream = await run(start_server, own_redis, subscribers, nodes=2, clients=40, fault=fault)
    gaps = await settle(stream, subscribers)
    assert not gaps, report(gaps, subscribers)
    # Redis did go back: a later publication got an offset not above an earlier one. The
    # nodes noticed and renewed the epoch, and told every subscriber.
    offsets = [stream.acked[n][1] for n in sorted(stream.acked)]
    assert any(later <= earlier for earlier, later in itertools.pairwise(offsets))
    assert len(stream.epochs) == 2 and all(s.tally.resets for s in subscribers)


async def test_history_remove_while_subscribed(
    start_server: Any, own_redis: RedisProcess, subscribers: list[Subscriber]
) -> None:
    """history_remove through the HTTP API mid-stream, with live subscribers and with
    subscribers that reconnect across it: each gets everything, or is told."""

    async def fault(redis: RedisProcess, publisher: Publisher) -> None:
        # A few clients drop their connection (a reconnect code): they come back after the
        # removal and recover from history that no longer has what they missed.
        dropped = subscribers[::5]
        for s in dropped:
            await s.client.disconnect()
        await publisher.publish_acked(10)
        http = publisher.https[0]
        reply = await http.post("/api/history_remove", json={"channel": CHANNEL})
        assert reply.json() == {"result": {}}
        await publisher.publish_acked(10)
        for s in dropped:
            await s.client.connect()

    stream = await run(start_server, own_redis, subscribers, nodes=2, clients=20, fault=fault)
    gaps = await settle(stream, subscribers)
    assert not gaps, report(gaps, subscribers)
    assert all(s.tally.resets for s in subscribers[::5])
