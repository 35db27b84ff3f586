"""One conformance suite for every engine: the contracts of ``hubbub.engines.base``.

Each engine enters through the ``engine`` fixture, which also says how time passes: the memory
engine runs on a fake clock with a time unit of one second; the Redis engine (a real
``redis-server`` started for the test session) runs on real time with a unit of 50 ms, so the
same TTL tests take well under a second. Adding an engine means appending an
:class:`EngineKind` to :data:`ENGINES`.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import msgspec
import pytest

from hubbub.clock import FakeClock
from hubbub.engines.base import (
    Broker,
    HistoryFilter,
    PresenceManager,
    PublishOptions,
    StreamPosition,
)
from hubbub.engines.memory import MemoryBroker, MemoryPresenceManager
from hubbub.engines.redis import RedisBroker, RedisPresenceManager
from hubbub.engines.sharded import ShardedBroker, ShardedPresenceManager, jump_hash, shard_of
from hubbub.protocol.codes import ProtocolError
from hubbub.protocol.messages import ClientInfo, Publication, raw

HISTORY = PublishOptions(history_size=10, history_ttl=60, history_meta_ttl=3600)
NO_HISTORY = PublishOptions()


@dataclass
class Recorder:
    """A BrokerEventHandler that writes down what it receives."""

    pubs: list[tuple[str, Publication, StreamPosition]] = field(default_factory=list)
    joins: list[tuple[str, ClientInfo]] = field(default_factory=list)
    leaves: list[tuple[str, ClientInfo]] = field(default_factory=list)

    def handle_publication(self, channel: str, pub: Publication, position: StreamPosition) -> None:
        self.pubs.append((channel, pub, position))

    def handle_join(self, channel: str, info: ClientInfo) -> None:
        self.joins.append((channel, info))

    def handle_leave(self, channel: str, info: ClientInfo) -> None:
        self.leaves.append((channel, info))

    def data(self, channel: str) -> list[object]:
        return [msgspec.json.decode(p.data) for c, p, _ in self.pubs if c == channel]


@dataclass
class Engine:
    broker: Broker
    presence: PresenceManager
    recorder: Recorder
    unit: float
    wait: Callable[[float], Awaitable[None]]
    # Another node's presence manager on the same engine; None for a single-process engine.
    peer: Callable[[], PresenceManager] | None = None
    peers: list[PresenceManager] = field(default_factory=list)

    def new_peer(self) -> PresenceManager:
        """A presence manager for another node (closed with the engine)."""
        assert self.peer is not None
        manager = self.peer()
        self.peers.append(manager)
        return manager

    async def advance(self, units: float) -> None:
        """Let ``units`` time units pass."""
        await self.wait(units * self.unit)

    def opts(
        self, size: int = 10, ttl: float = 60, meta: float = 3600, **kw: Any
    ) -> PublishOptions:
        """History options with durations in time units."""
        return PublishOptions(
            history_size=size,
            history_ttl=ttl * self.unit,
            history_meta_ttl=meta * self.unit,
            **{k: v * self.unit if k.endswith("ttl") else v for k, v in kw.items()},
        )


def memory_engine() -> Engine:
    clock = FakeClock()
    broker = MemoryBroker(clock=clock)
    recorder = Recorder()
    broker.set_event_handler(recorder)

    async def wait(seconds: float) -> None:
        clock.advance(seconds)

    return Engine(broker, MemoryPresenceManager(clock=clock), recorder, 1.0, wait)


def redis_engine(urls: list[str]) -> Engine:
    prefix = f"conformance-{uuid.uuid4().hex[:8]}"
    recorder = Recorder()
    broker: Broker

    def manager() -> PresenceManager:
        if len(urls) == 1:
            return RedisPresenceManager(urls[0], prefix=prefix)
        return ShardedPresenceManager([RedisPresenceManager(u, prefix=prefix) for u in urls])

    if len(urls) == 1:
        broker = RedisBroker(urls[0], prefix=prefix)
    else:
        broker = ShardedBroker([RedisBroker(u, prefix=prefix) for u in urls])
    broker.set_event_handler(recorder)
    return Engine(broker, manager(), recorder, 0.05, asyncio.sleep, manager)


def sentinel_engine(group: Any) -> Engine:
    """The Redis engine on the master a :class:`~tests.integration.sentinel_kit.SentinelGroup`
    names: found through its Sentinels, as a node configured with them finds it."""
    from hubbub.engines.redis_sentinel import SentinelConnector
    from tests.integration.sentinel_kit import MASTER_NAME

    prefix = f"conformance-{uuid.uuid4().hex[:8]}"
    master = SentinelConnector(
        [("127.0.0.1", p) for p in group.sentinel_ports],
        MASTER_NAME,
        sentinel_password=group.password,
        password=group.password,
    )
    recorder = Recorder()
    broker = RedisBroker(master, prefix=prefix)
    broker.set_event_handler(recorder)

    def manager() -> PresenceManager:
        return RedisPresenceManager(master, prefix=prefix)

    return Engine(broker, manager(), recorder, 0.05, asyncio.sleep, manager)


def cluster_engine(cluster: Any) -> Engine:
    """The Redis engine on a :class:`~tests.redis_cluster.RedisCluster` (3 masters)."""
    from hubbub.engines.redis_cluster import ClusterConnector, RedisClusterPresenceManager
    from hubbub.engines.redis_cluster_broker import RedisClusterBroker

    prefix = f"conformance-{uuid.uuid4().hex[:8]}"
    connector = ClusterConnector(cluster.addresses[:1])
    recorder = Recorder()
    broker = RedisClusterBroker(connector, prefix=prefix)
    broker.set_event_handler(recorder)

    def manager() -> PresenceManager:
        return RedisClusterPresenceManager(connector, prefix=prefix)

    # A unit of 100 ms, not 50: a presence change is several round trips to different masters,
    # and a busy machine made four of them outlast a four-unit lapse.
    return Engine(broker, manager(), recorder, 0.1, asyncio.sleep, manager)


def nats_engine(request: pytest.FixtureRequest, history: str) -> Engine:
    """NATS for live delivery; streams and presence in Redis, or in this node's memory."""
    from hubbub.engines.nats import NatsBroker

    nats_url: str = request.getfixturevalue("nats_url")
    prefix = f"conformance-{uuid.uuid4().hex[:8]}"
    recorder = Recorder()
    if history == "memory":
        clock = FakeClock()
        broker = NatsBroker([nats_url], prefix=prefix, history="memory", clock=clock)
        broker.set_event_handler(recorder)

        async def wait(seconds: float) -> None:
            clock.advance(seconds)

        return Engine(broker, MemoryPresenceManager(clock=clock), recorder, 1.0, wait)
    url: str = request.getfixturevalue("redis_urls")[0]

    def manager() -> PresenceManager:
        return RedisPresenceManager(url, prefix=prefix)

    streams = RedisBroker(url, prefix=prefix)
    broker = NatsBroker([nats_url], prefix=prefix, history="redis", streams=streams)
    broker.set_event_handler(recorder)
    return Engine(broker, manager(), recorder, 0.05, asyncio.sleep, manager)


@dataclass(frozen=True)
class EngineKind:
    """One engine combination the whole suite runs against.

    Attributes:
        name: the test id.
        make: builds the (unstarted) engine; it asks ``request`` for the fixtures (servers)
            it needs.
        marks: what the combination needs (``redis``, ``nats``…), so ``make unit`` skips it.
    """

    name: str
    make: Callable[[pytest.FixtureRequest], Engine]
    marks: tuple[str, ...] = ()


ENGINES: list[EngineKind] = [
    EngineKind("memory", lambda _: memory_engine()),
    EngineKind("redis", lambda r: redis_engine(r.getfixturevalue("redis_urls")[:1]), ("redis",)),
    EngineKind(
        "redis-sharded", lambda r: redis_engine(r.getfixturevalue("redis_urls")), ("redis",)
    ),
    EngineKind(
        "redis-sentinel",
        lambda r: sentinel_engine(r.getfixturevalue("redis_sentinel")),
        ("redis",),
    ),
    EngineKind(
        "redis-cluster", lambda r: cluster_engine(r.getfixturevalue("redis_cluster")), ("redis",)
    ),
    EngineKind("nats-redis", lambda r: nats_engine(r, "redis"), ("nats", "redis")),
    EngineKind("nats-memory", lambda r: nats_engine(r, "memory"), ("nats",)),
]
"""Every engine combination: append an :class:`EngineKind` (a factory that builds it from
fixtures, and the markers of what it needs) and the whole suite runs against it."""


@pytest.fixture(
    params=[
        pytest.param(kind, id=kind.name, marks=[getattr(pytest.mark, m) for m in kind.marks])
        for kind in ENGINES
    ]
)
async def engine(request: pytest.FixtureRequest) -> AsyncIterator[Engine]:
    kind: EngineKind = request.param
    eng = kind.make(request)
    await eng.broker.start()
    yield eng
    await eng.broker.close()
    for presence in (eng.presence, *eng.peers):
        close = getattr(presence, "close", None)
        if close is not None:
            await close()


async def delivered(eng: Engine, count: int) -> None:
    """Wait until the handler saw ``count`` publications (Redis delivers asynchronously)."""
    for _ in range(200):
        if len(eng.recorder.pubs) >= count:
            return
        await asyncio.sleep(0.01)


def pub(value: object) -> Publication:
    return Publication(data=raw(value))


async def publish_n(eng: Engine, channel: str, n: int, opts: PublishOptions = HISTORY) -> None:
    for i in range(1, n + 1):
        await eng.broker.publish(channel, pub(i), opts)


# ---------------------------------------------------------------------------------------------
# Publishing and delivery


async def test_offsets_start_at_one_and_epoch_is_stable(engine: Engine) -> None:
    first = await engine.broker.publish("a", pub(1), HISTORY)
    second = await engine.broker.publish("a", pub(2), HISTORY)
    assert first.position.offset == 1 and second.position.offset == 2
    assert first.position.epoch == second.position.epoch != ""
    hist = await engine.broker.history("a", HistoryFilter(limit=0), HISTORY)
    assert hist.position == second.position
    other = await engine.broker.publish("b", pub(1), HISTORY)
    assert other.position.offset == 1


async def test_delivery_only_to_subscribed_channels(engine: Engine) -> None:
    await engine.broker.publish("a", pub("before"), HISTORY)
    await engine.broker.subscribe("a")
    await engine.broker.publish("a", pub("during"), HISTORY)
    await engine.broker.publish("b", pub("elsewhere"), HISTORY)
    await delivered(engine, 1)
    await engine.broker.unsubscribe("a")
    await engine.broker.publish("a", pub("after"), HISTORY)
    await engine.broker.subscribe("b2")  # a round trip on the PUB/SUB connection
    await engine.broker.publish("b2", pub("marker"), HISTORY)
    await delivered(engine, 2)
    assert engine.recorder.data("a") == ["during"]
    assert engine.recorder.data("b") == []


async def test_delivered_publications_carry_offsets_in_order(engine: Engine) -> None:
    await engine.broker.subscribe("a")
    await publish_n(engine, "a", 5)
    await delivered(engine, 5)
    offsets = [(p.offset, pos.offset) for _, p, pos in engine.recorder.pubs]
    assert offsets == [(i, i) for i in range(1, 6)]
    hist = await engine.broker.history("a", HistoryFilter(limit=-1), HISTORY)
    assert [p.offset for p in hist.publications] == [1, 2, 3, 4, 5]
    assert [p.data for p in hist.publications] == [p.data for _, p, _ in engine.recorder.pubs]


async def test_publish_without_history(engine: Engine) -> None:
    await engine.broker.subscribe("a")
    result = await engine.broker.publish("a", pub(1), NO_HISTORY)
    await delivered(engine, 1)
    assert result.position == StreamPosition(0, "")
    assert engine.recorder.pubs[0][1].offset == 0
    hist = await engine.broker.history("a", HistoryFilter(limit=-1), HISTORY)
    assert hist.publications == [] and hist.position.offset == 0


async def test_join_and_leave(engine: Engine) -> None:
    info = ClientInfo(user="u", client="c")
    await engine.broker.publish_join("a", info)  # not subscribed: nothing
    await engine.broker.subscribe("a")
    await engine.broker.publish_join("a", info)
    await engine.broker.publish_leave("a", info)
    for _ in range(200):
        if engine.recorder.leaves:
            break
        await asyncio.sleep(0.01)
    assert engine.recorder.joins == [("a", info)]
    assert engine.recorder.leaves == [("a", info)]


async def test_idempotency_key(engine: Engine) -> None:
    await engine.broker.subscribe("a")
    opts = engine.opts(idempotency_key="k1", idempotent_result_ttl=10)
    first = await engine.broker.publish("a", pub(1), opts)
    again = await engine.broker.publish("a", pub(1), opts)
    assert not first.suppressed and again.suppressed
    assert again.position == first.position
    await delivered(engine, 1)
    await engine.advance(15)
    assert engine.recorder.data("a") == [1]
    later = await engine.broker.publish("a", pub(1), opts)
    assert not later.suppressed and later.position.offset == 2


# ---------------------------------------------------------------------------------------------
# History


async def test_history_limits_and_directions(engine: Engine) -> None:
    await publish_n(engine, "a", 6)
    h = engine.broker.history

    async def offsets(flt: HistoryFilter) -> list[int]:
        return [p.offset for p in (await h("a", flt, HISTORY)).publications]

    assert await offsets(HistoryFilter(limit=0)) == []
    assert await offsets(HistoryFilter(limit=-1)) == [1, 2, 3, 4, 5, 6]
    assert await offsets(HistoryFilter(limit=2)) == [1, 2]
    assert await offsets(HistoryFilter(limit=2, reverse=True)) == [6, 5]
    top = (await h("a", HistoryFilter(), HISTORY)).position
    since = StreamPosition(3, top.epoch)
    assert await offsets(HistoryFilter(limit=-1, since=since)) == [4, 5, 6]
    assert await offsets(HistoryFilter(limit=1, since=since)) == [4]
    assert await offsets(HistoryFilter(limit=-1, since=since, reverse=True)) == [2, 1]
    assert await offsets(HistoryFilter(limit=-1, since=StreamPosition(6, ""))) == []


async def test_history_epoch_mismatch_is_112(engine: Engine) -> None:
    await publish_n(engine, "a", 2)
    with pytest.raises(ProtocolError) as exc_info:
        await engine.broker.history(
            "a", HistoryFilter(limit=-1, since=StreamPosition(1, "other")), HISTORY
        )
    assert exc_info.value.code == 112


async def test_new_channel_has_an_epoch(engine: Engine) -> None:
    first = await engine.broker.history("fresh", HistoryFilter(), HISTORY)
    assert first.position.offset == 0 and first.position.epoch
    published = await engine.broker.publish("fresh", pub(1), HISTORY)
    assert published.position == StreamPosition(1, first.position.epoch)


async def test_history_size_trims(engine: Engine) -> None:
    small = PublishOptions(history_size=3, history_ttl=60)
    await publish_n(engine, "a", 7, small)
    hist = await engine.broker.history("a", HistoryFilter(limit=-1), small)
    assert [p.offset for p in hist.publications] == [5, 6, 7]
    assert hist.position.offset == 7


async def test_history_ttl_expires(engine: Engine) -> None:
    opts = engine.opts(ttl=10)
    await publish_n(engine, "a", 2, opts)
    await engine.advance(5)
    await engine.broker.publish("a", pub(3), opts)
    await engine.advance(7)  # the first two are 12 units old now, the third 7
    hist = await engine.broker.history("a", HistoryFilter(limit=-1), opts)
    assert [p.offset for p in hist.publications] == [3]
    assert hist.position.offset == 3  # the position outlives the publications


async def test_meta_ttl_starts_a_new_epoch(engine: Engine) -> None:
    opts = engine.opts(ttl=5, meta=10)
    first = await engine.broker.publish("a", pub(1), opts)
    await engine.advance(15)
    hist = await engine.broker.history("a", HistoryFilter(limit=-1), opts)
    assert hist.position.epoch != first.position.epoch
    assert hist.position.offset == 0 and hist.publications == []


async def test_a_stream_only_read_is_forgotten_after_the_history_ttl(engine: Engine) -> None:
    # Every subscribe reads the position: channels nobody publishes to (personal channels)
    # must not be kept for the meta TTL.
    opts = engine.opts(ttl=5, meta=1000)
    read = await engine.broker.history("quiet", HistoryFilter(), opts)
    again = await engine.broker.history("quiet", HistoryFilter(), opts)
    assert read.position == again.position  # a stable identity meanwhile
    await engine.advance(7)
    later = await engine.broker.history("quiet", HistoryFilter(), opts)
    assert later.position.epoch != read.position.epoch and later.position.offset == 0
    # Once published to, it keeps the meta TTL.
    first = await engine.broker.publish("quiet", pub(1), opts)
    await engine.advance(7)
    kept = await engine.broker.history("quiet", HistoryFilter(), opts)
    assert kept.position == first.position


async def test_remove_history_keeps_position(engine: Engine) -> None:
    await publish_n(engine, "a", 3)
    before = (await engine.broker.history("a", HistoryFilter(), HISTORY)).position
    await engine.broker.remove_history("a")
    hist = await engine.broker.history("a", HistoryFilter(limit=-1), HISTORY)
    assert hist.publications == [] and hist.position == before
    after = await engine.broker.publish("a", pub(4), HISTORY)
    assert after.position == StreamPosition(4, before.epoch)


async def test_renew_epoch_only_replaces_the_named_epoch(engine: Engine) -> None:
    await publish_n(engine, "a", 3)
    before = (await engine.broker.history("a", HistoryFilter(), HISTORY)).position
    await engine.broker.renew_epoch("a", "another")  # not the current one: nothing happens
    assert (await engine.broker.history("a", HistoryFilter(), HISTORY)).position == before
    await engine.broker.renew_epoch("a", before.epoch)
    hist = await engine.broker.history("a", HistoryFilter(limit=-1), HISTORY)
    # A new identity; offsets and publications are kept.
    assert hist.position.epoch != before.epoch and hist.position.offset == 3
    assert [p.offset for p in hist.publications] == [1, 2, 3]
    after = await engine.broker.publish("a", pub(4), HISTORY)
    assert after.position == StreamPosition(4, hist.position.epoch)


# ---------------------------------------------------------------------------------------------
# Presence


async def test_presence_add_get_remove(engine: Engine) -> None:
    p = engine.presence
    alice1 = ClientInfo(user="alice", client="c1", conn_info=raw({"n": 1}))
    alice2 = ClientInfo(user="alice", client="c2")
    bob = ClientInfo(user="bob", client="c3")
    for info in (alice1, alice2, bob):
        await p.add_presence("room", info, 60)
    assert await p.presence("room") == {"c1": alice1, "c2": alice2, "c3": bob}
    stats = await p.presence_stats("room")
    assert (stats.num_clients, stats.num_users) == (3, 2)
    await p.remove_presence("room", "c3", "bob")
    await p.remove_presence("room", "c3", "bob")  # idempotent
    stats = await p.presence_stats("room")
    assert (stats.num_clients, stats.num_users) == (2, 1)
    assert await p.presence("elsewhere") == {}


async def test_presence_expires_unless_refreshed(engine: Engine) -> None:
    p = engine.presence
    ttl = 10 * engine.unit
    await p.add_presence("room", ClientInfo(user="a", client="c1"), ttl)
    await p.add_presence("room", ClientInfo(user="b", client="c2"), ttl)
    await engine.advance(6)
    await p.add_presence("room", ClientInfo(user="a", client="c1"), ttl)  # refresh
    await engine.advance(6)
    assert set(await p.presence("room")) == {"c1"}
    await engine.advance(10)
    assert await p.presence("room") == {}
    stats = await p.presence_stats("room")
    assert (stats.num_clients, stats.num_users) == (0, 0)


async def test_keep_alive_tells_a_new_or_lapsed_owner(engine: Engine) -> None:
    p = engine.presence
    p.set_owner("n1")
    lapse = 4 * engine.unit
    assert not await p.keep_alive(lapse)  # first call
    assert await p.keep_alive(lapse)
    await engine.advance(2)
    assert await p.keep_alive(lapse)
    if engine.peer is None:
        return  # one process: its owner cannot lapse while it runs
    await engine.advance(6)
    assert not await p.keep_alive(lapse)
    assert await p.keep_alive(lapse)


async def test_reap_lapsed_removes_a_dead_nodes_entries_once(engine: Engine) -> None:
    survivor = engine.presence
    survivor.set_owner("survivor")
    long, lapse = 60 * engine.unit, 4 * engine.unit
    await survivor.keep_alive(long)
    mine = ClientInfo(user="carol", client="c3")
    await survivor.add_presence("room", mine, long)
    if engine.peer is None:
        # One process: nothing can lapse, nothing is reaped.
        await engine.advance(10)
        assert await survivor.reap_lapsed() == []
        assert await survivor.presence("room") == {"c3": mine}
        return
    dead = engine.new_peer()
    dead.set_owner("dead")
    await dead.keep_alive(lapse)
    alice, bob = ClientInfo(user="alice", client="c1"), ClientInfo(user="bob", client="c2")
    await dead.add_presence("room", alice, long)
    await dead.add_presence("connections#bob", bob, long)
    await dead.add_presence("room", bob, long)
    await dead.remove_presence("room", "c2", "bob")
    assert await survivor.reap_lapsed() == []  # alive: nothing to reap
    await engine.advance(6)
    # A node that started after the dead one's last renewal finds it too; of the two
    # reapers, exactly one gets the entries.
    late = engine.new_peer()
    late.set_owner("late")
    first, second = await asyncio.gather(survivor.reap_lapsed(), late.reap_lapsed())
    reaped = sorted((e.channel, e.info.client) for e in [*first, *second])
    assert reaped == [("connections#bob", "c2"), ("room", "c1")]
    assert not (first and second)
    assert await survivor.presence("room") == {"c3": mine}
    assert await survivor.presence("connections#bob") == {}
    assert await survivor.reap_lapsed() == []
    # The dead node was only cut off: it learns that it lapsed and adds its entries again.
    assert not await dead.keep_alive(lapse)
    await dead.add_presence("room", alice, long)
    assert await survivor.presence("room") == {"c1": alice, "c3": mine}
    assert await survivor.reap_lapsed() == []


async def test_memory_forgets_idle_streams() -> None:
    clock = FakeClock()
    broker = MemoryBroker(clock=clock)
    short = PublishOptions(history_size=5, history_ttl=10, history_meta_ttl=100)
    for n in range(50):
        await broker.publish(f"ch{n}", pub(n), short)
    assert broker.stream_count == 50
    clock.advance(101)
    await broker.publish("fresh", pub(0), short)
    assert broker.stream_count == 1


def test_consistent_hashing() -> None:
    channels = [f"chat:room{i}" for i in range(2000)]
    two = [shard_of(c, 2) for c in channels]
    three = [shard_of(c, 3) for c in channels]
    assert abs(two.count(0) - 1000) < 150  # spread evenly
    moved = sum(1 for a, b in zip(two, three, strict=True) if a != b)
    assert 500 < moved < 850  # about a third moves to the new shard, the rest stays
    assert all(b == 2 for a, b in zip(two, three, strict=True) if a != b)
    assert jump_hash(123456789, 1) == 0 and shard_of("x", 5) == shard_of("x", 5)
