"""hubbub on a Redis Cluster: two nodes across three masters, and a master killed mid-stream.

The cluster is private to the tests (:mod:`tests.redis_cluster`): six ``redis-server``
processes, three masters with a replica each. The failover test kills (SIGKILL) the master
that serves the stream's channel while publications flow through the HTTP API of both nodes;
the cluster promotes its replica. Publishes during the switch must fail fast with error 100,
and afterwards every acknowledged publication must have reached every client, or the client
must have been told it could not recover it (``recovered: false`` at a position covering it).
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from centrifuge import Client

from hubbub.auth import mint_connection_token
from hubbub.engines.redis_cluster import cluster_key
from tests.conftest import API_KEY, SECRET, UNIT, RunningServer, suite_settings
from tests.integration.test_redis_restart import (
    CHANNEL,
    PAUSE,
    Publisher,
    Stream,
    Subscriber,
    Tally,
    report,
    settle,
    subscribe_all,
    wait_ready,
)
from tests.redis_cluster import RedisCluster

WAIT = 5 * UNIT


def cluster_settings(cluster: RedisCluster, prefix: str = "hubbub", **overrides: Any) -> Any:
    return suite_settings(
        engine="redis",
        redis={"cluster_addresses": cluster.addresses[:2], "prefix": prefix},
        **overrides,
    )


@pytest.fixture
def own_cluster(tmp_path: Path) -> Iterator[RedisCluster]:
    """A cluster of this test only, whose masters it may kill."""
    cluster = RedisCluster(tmp_path)
    try:
        cluster.start()
        yield cluster
    finally:
        cluster.stop()


async def test_two_nodes_share_publications_presence_and_history(
    redis_cluster: RedisCluster, start_server: Any
) -> None:
    """Channels spread over the three masters: a publication through either node reaches the
    subscribers of both, presence lists the clients of both, history reads the same stream."""
    settings = cluster_settings(redis_cluster, prefix=f"nodes-{uuid.uuid4().hex[:6]}")
    nodes = [await start_server(settings) for _ in range(2)]
    channels = [f"chat:room{i}" for i in range(6)]
    masters = {redis_cluster.master_of(cluster_key("x", "ch", c)) for c in channels}
    assert len(masters) >= 2, "the rooms should live on more than one master"
    clients: list[Client] = []
    tallies: dict[tuple[int, str], Tally] = {}
    try:
        for i, node in enumerate(nodes):
            client = Client(node.url, token=mint_connection_token(SECRET, f"u{i}"), proxy=None)
            clients.append(client)
            await client.connect()
            for channel in channels:
                tally = tallies[(i, channel)] = Tally()
                await client.new_subscription(channel, events=tally).subscribe()
                await asyncio.wait_for(tally.subscribed.wait(), WAIT)
        async with httpx.AsyncClient(headers={"X-API-Key": API_KEY}, timeout=WAIT) as http:
            for n, channel in enumerate(channels * 2):
                node = nodes[n % 2]
                reply = await http.post(
                    f"{node.http}/api/publish", json={"channel": channel, "data": {"n": n}}
                )
                assert "result" in reply.json(), reply.text
            for _ in range(int(200 * UNIT)):
                if all(len(t.received) == 2 for t in tallies.values()):
                    break
                await asyncio.sleep(0.02)
            assert {k: sorted(t.received) for k, t in tallies.items()} == {
                (i, c): [k, k + 6] for i in range(2) for k, c in enumerate(channels)
            }
            for channel in channels:
                presence = await http.post(
                    f"{nodes[1].http}/api/presence", json={"channel": channel}
                )
                users = {c["user"] for c in presence.json()["result"]["presence"].values()}
                assert users == {"u0", "u1"}
                history = await http.post(
                    f"{nodes[0].http}/api/history", json={"channel": channel, "limit": -1}
                )
                pubs = history.json()["result"]["publications"]
                assert [p["offset"] for p in pubs] == [1, 2]
    finally:
        await asyncio.gather(*(c.disconnect() for c in clients), return_exceptions=True)


class TimedPublisher(Publisher):
    """The publisher of the restart tests, noting the error code and duration of each refusal
    and when publishing worked again."""

    def __init__(self, nodes: list[RunningServer], stream: Stream) -> None:
        super().__init__(nodes, stream)
        self.refusals: list[tuple[int | None, float]] = []
        self.last_ack = 0.0

    async def publish(self) -> bool:
        n, self.next = self.next, self.next + 1
        http = self.https[n % len(self.https)]
        start = time.monotonic()
        try:
            body = (
                await http.post("/api/publish", json={"channel": CHANNEL, "data": {"n": n}})
            ).json()
        except httpx.HTTPError:
            body = {}
        result = body.get("result")
        if result is None:
            self.stream.refused += 1
            self.refusals.append((body.get("error", {}).get("code"), time.monotonic() - start))
            return False
        self.stream.ack(n, result["epoch"], result["offset"])
        self.last_ack = time.monotonic()
        return True


@pytest.fixture
async def subscribers() -> Any:
    made: list[Subscriber] = []
    yield made
    await asyncio.gather(*(s.client.disconnect() for s in made), return_exceptions=True)


@pytest.mark.slow
async def test_master_killed_replica_promoted(
    own_cluster: RedisCluster, start_server: Any, subscribers: list[Subscriber]
) -> None:
    """kill -9 of the stream's master at about 50 publications/s over two nodes: publishes fail
    fast with error 100 until the replica serves the slot, then nothing acknowledged is lost
    silently. Prints the failover time (kill to the next acknowledged publication)."""
    settings = cluster_settings(own_cluster)
    nodes = [await start_server(settings) for _ in range(2)]
    await subscribe_all(subscribers, nodes, 4)
    stream = Stream()
    publisher = TimedPublisher(nodes, stream)
    stop = asyncio.Event()
    steady = asyncio.create_task(publisher.steady(stop))
    master = own_cluster.master_of(cluster_key("hubbub", "ch", CHANNEL))
    try:
        await publisher.publish_acked(0)
        for _ in range(int(200 * UNIT)):
            if len(stream.acked) >= 25:
                break
            await asyncio.sleep(PAUSE)
        killed = time.monotonic()
        own_cluster.kill(master)
        for _ in range(int(3000 * UNIT)):
            if publisher.last_ack > killed:
                break
            await asyncio.sleep(0.01)
        failover = publisher.last_ack - killed
        await wait_ready(nodes)
        await publisher.publish_acked(25)
    finally:
        stop.set()
        await steady
        await publisher.close()
    gaps = await settle(stream, subscribers)
    assert not gaps, report(gaps, subscribers)
    codes = {code for code, _ in publisher.refusals}
    slowest = max((took for _, took in publisher.refusals), default=0.0)
    told = sum(bool(s.tally.resets) for s in subscribers)
    print(
        f"\nRedis Cluster failover: publishing worked again {failover:.2f} s after the master "
        f"was killed; {len(publisher.refusals)} publishes refused (codes {sorted(codes, key=str)}, "
        f"slowest refusal {slowest * 1000:.0f} ms); {len(stream.acked)} acknowledged, 0 lost "
        f"silently; {told} of {len(subscribers)} clients told recovered: false"
    )
    assert publisher.refusals, "the switch should have refused some publishes"
    assert codes == {100}, publisher.refusals
    assert own_cluster.master_of(cluster_key("hubbub", "ch", CHANNEL)) != master


def test_keys_of_a_channel_share_one_slot() -> None:
    """Whatever a channel or idempotency key holds, a channel's keys have one hash tag."""
    from redis.crc import key_slot

    for channel in ["news", "a{b}c", "}x", "{", "", "\x01connections#u{1}"]:
        kinds = ["meta", "stream", "presence", "presence:exp", "ch", "idem:k{1}", "idem:}"]
        slots = {key_slot(cluster_key("hubbub", kind, channel).encode()) for kind in kinds}
        assert len(slots) == 1, channel
    assert cluster_key("hubbub", "meta", "news") == "hubbub:meta:{news}"  # as on one Redis


def test_settings_refuse_mixed_addresses() -> None:
    from hubbub.config import Settings

    with pytest.raises(ValueError, match="cluster_addresses"):
        Settings(engine="redis", redis={"cluster_addresses": ["127.0.0.1:7000"], "urls": ["x"]})
    with pytest.raises(ValueError, match="braces"):
        Settings(engine="redis", redis={"cluster_addresses": ["h:1"], "prefix": "a{b}"})
    with pytest.raises(ValueError, match="host:port"):
        Settings(engine="redis", redis={"cluster_addresses": ["nope"]})
    ok = Settings(engine="redis", redis={"cluster_addresses": ["h:1"], "password": "p"})
    assert ok.redis.cluster_addresses == ["h:1"]
