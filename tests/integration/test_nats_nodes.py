"""Several hubbub nodes on one private nats-server: publications, joins and control messages
cross nodes, and a ``kill -9`` of nats-server mid-stream loses nothing acknowledged silently.

History and presence live in Redis (recovery works on every node) or in each node's memory
(a node's streams are its own: after the outage its subscribers are told they cannot recover).
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from centrifuge import Client, PublicationContext

from hubbub.auth import mint_connection_token
from tests.conftest import SECRET, UNIT, RunningServer, suite_settings
from tests.integration.test_centrifuge_python import SubEvents, next_item
from tests.integration.test_redis_restart import (
    CHANNEL,
    PAUSE,
    Publisher,
    Stream,
    Subscriber,
    Tally,
    report,
    settle,
    subscribers,
    wait_not_ready,
    wait_ready,
)
from tests.nats_process import NatsProcess

WAIT = 5 * UNIT
__all__ = ["subscribers"]  # a fixture of the Redis restart tests, used here too


@pytest.fixture
def own_nats() -> Iterator[NatsProcess]:
    """A nats-server of this test only, which it may kill and restart."""
    server = NatsProcess()
    server.start()
    yield server
    server.stop()


def nats_settings(nats_url: str, history: str, request: pytest.FixtureRequest) -> Any:
    prefix = f"nats{uuid.uuid4().hex[:8]}"
    nats = {"url": nats_url, "prefix": prefix, "history": history, "presence": history}
    if history == "redis":
        redis_url: str = request.getfixturevalue("redis_url")
        return suite_settings(engine="nats", nats=nats, redis={"url": redis_url, "prefix": prefix})
    return suite_settings(engine="nats", nats=nats)


HISTORIES = [pytest.param("redis", marks=pytest.mark.redis), "memory"]


async def subscriber(
    node: RunningServer, user: str, channel: str, clients: list[Client]
) -> SubEvents:
    client = Client(node.url, token=mint_connection_token(SECRET, user), proxy=None)
    clients.append(client)
    events = SubEvents()
    sub = client.new_subscription(channel, events=events)
    await client.connect()
    await sub.subscribe()
    await next_item(events.subscribed, f"{user} subscribed")
    return events


@pytest.mark.parametrize("history", HISTORIES)
async def test_publications_joins_and_history_cross_nodes(
    start_server: Any, nats_url: str, history: str, request: pytest.FixtureRequest
) -> None:
    settings = nats_settings(nats_url, history, request)
    nodes = [await start_server(settings) for _ in range(3)]
    clients: list[Client] = []
    try:
        subs = [await subscriber(n, f"user{i}", "chat:room", clients) for i, n in enumerate(nodes)]
        # The first subscriber sees the others join, on their nodes.
        joined = {(await next_item(subs[0].joins, "join")).info.user for _ in range(3)}
        assert joined == {"user0", "user1", "user2"}
        sent = []
        for round_ in range(3):
            for i, node in enumerate(nodes):
                sent.append(round_ * 3 + i)
                await node.node.publish("chat:room", {"n": sent[-1]})
        for events in subs:
            got: list[tuple[int, int]] = []
            for _ in sent:
                ctx: PublicationContext = await next_item(events.publications, "publication")
                got.append((ctx.pub.offset, ctx.pub.data["n"]))
            # In publish order, each node's offsets running on without a gap.
            assert [n for _, n in got] == sent
            assert [o for o, _ in got] == list(range(got[0][0], got[0][0] + len(sent)))
            await asyncio.sleep(0.05 * UNIT)
            assert events.publications.empty()  # exactly once
        for node in nodes:
            hist = await node.node.history("chat:room", limit=-1)
            assert len(hist.publications) == 9
            presence = await node.node.presence("chat:room")
            users = sorted(i.user for i in presence.values())
            # Presence in Redis is the cluster's; in memory, each node's own.
            assert len(users) == (3 if history == "redis" else 1)
    finally:
        for client in clients:
            await client.disconnect()


@pytest.mark.parametrize("history", HISTORIES)
async def test_control_messages_cross_nodes(
    start_server: Any, nats_url: str, history: str, request: pytest.FixtureRequest
) -> None:
    from tests.integration.test_bad_input import close_code, connect_ws
    from tests.integration.test_http_api import next_push

    settings = nats_settings(nats_url, history, request)
    first, second = [await start_server(settings) for _ in range(2)]
    on_first = await connect_ws(first, "mallory")
    on_second = await connect_ws(second, "mallory")
    for _ in range(int(100 * UNIT)):  # the nodes' announcements
        if len(first.node.info()) == 2 and len(second.node.info()) == 2:
            break
        await asyncio.sleep(0.02)
    assert {n.uid for n in second.node.info()} == {first.node.uid, second.node.uid}
    await first.node.send_message("mallory", {"hello": "there"})
    assert (await next_push(on_second, "message"))["message"]["data"] == {"hello": "there"}
    await first.node.disconnect("mallory", 4501, "banned")
    assert await close_code(on_first) == 4501
    assert await close_code(on_second) == 4501


class TimedTally(Tally):
    """A :class:`Tally` that also notes when the client was told it could not recover."""

    def __init__(self) -> None:
        super().__init__()
        self.reset_times: list[float] = []

    async def on_subscribed(self, ctx: Any) -> None:
        if ctx.was_recovering and not ctx.recovered:
            self.reset_times.append(time.monotonic())
        await super().on_subscribed(ctx)


class TimedStream(Stream):
    """A :class:`Stream` that also notes when each publication was acknowledged."""

    def __init__(self) -> None:
        super().__init__()
        self.acked_at: dict[int, float] = {}

    def ack(self, n: int, epoch: str, offset: int) -> None:
        super().ack(n, epoch, offset)
        self.acked_at[n] = time.monotonic()

    def silent_gaps_on_node(self, tally: Tally, offsets: dict[int, int]) -> list[int]:
        """With memory streams each node numbers publications in a stream of its own, so an
        acknowledged position (in the publisher's stream) says nothing of a client on another
        node. ``offsets`` maps each publication to its offset in the client's node's stream
        (offsets keep climbing when an epoch is renewed): a ``recovered: false`` at offset O
        covers every publication at or below O there. A publication that never reached that
        node is covered by being told after it was acknowledged."""
        told = getattr(tally, "reset_times", [])
        return sorted(
            n
            for n, at in self.acked_at.items()
            if n not in tally.received
            and not (
                any(offsets[n] <= offset for _, offset in tally.resets)
                if n in offsets
                else any(t > at for t in told)
            )
        )


async def subscribe_timed(made: list[Subscriber], nodes: list[RunningServer], count: int) -> None:
    """``count`` clients over the nodes in turn, half of them Protobuf, each subscribed."""

    async def one(i: int) -> None:
        client = Client(
            nodes[i % len(nodes)].url,
            token=mint_connection_token(SECRET, f"user{i}"),
            use_protobuf=bool(i % 2),
            proxy=None,
        )
        tally = TimedTally()
        made.append(Subscriber(client, tally, bool(i % 2)))
        sub = client.new_subscription(CHANNEL, events=tally)
        await client.connect()
        await sub.subscribe()
        await asyncio.wait_for(tally.subscribed.wait(), WAIT)

    await asyncio.gather(*(one(i) for i in range(count)))


async def settle_on_nodes(
    stream: TimedStream, made: list[Subscriber], nodes: list[RunningServer]
) -> dict[int, list[int]]:
    """:func:`settle` for memory streams: each client judged against its own node's stream
    (client ``i`` is on node ``i % len(nodes)``)."""
    gaps: dict[int, list[int]] = {}
    for _ in range(int(100 * UNIT)):
        offsets = []
        for node in nodes:
            hist = await node.node.history(CHANNEL, limit=-1)
            offsets.append({json.loads(bytes(p.data))["n"]: p.offset for p in hist.publications})
        gaps = {
            i: g
            for i, s in enumerate(made)
            if (g := stream.silent_gaps_on_node(s.tally, offsets[i % len(nodes)]))
        }
        if not gaps:
            break
        await asyncio.sleep(0.1)
    return gaps


@pytest.mark.slow
@pytest.mark.parametrize("history", HISTORIES)
async def test_nats_killed_and_restarted_mid_stream(
    start_server: Any,
    own_nats: NatsProcess,
    subscribers: list[Subscriber],
    history: str,
    request: pytest.FixtureRequest,
) -> None:
    """Two nodes, JSON and Protobuf subscribers on both, publications through both nodes' API
    at a steady pace; nats-server is killed with SIGKILL and restarted empty. Publishes fail
    fast while it is away; afterwards every acknowledged publication reached every client, or
    the client was told it cannot have it (``recovered: false`` at a position covering it)."""
    from tests.integration.test_bad_input import close_code, connect_ws

    settings = nats_settings(own_nats.url, history, request)
    nodes = [await start_server(settings) for _ in range(2)]
    await subscribe_timed(subscribers, nodes, 20)
    stream = TimedStream()
    publisher = Publisher(nodes, stream)
    stop = asyncio.Event()
    steady = asyncio.create_task(publisher.steady(stop))
    try:
        await asyncio.sleep(20 * PAUSE)
        own_nats.kill()
        killed = time.monotonic()
        await wait_not_ready(nodes)
        refused_before = stream.refused
        await asyncio.sleep(10 * PAUSE)
        assert stream.refused > refused_before  # failing fast, not hanging
        own_nats.start()
        await wait_ready(nodes)
        back = time.monotonic() - killed
        await publisher.publish_acked(20)
    finally:
        stop.set()
        await steady
        await publisher.close()
    if history == "redis":
        gaps = await settle(stream, subscribers)
    else:
        gaps = await settle_on_nodes(stream, subscribers, nodes)
    debug = {
        i: (
            subscribers[i].tally.unsubscribe_codes,
            subscribers[i].tally.resets,
            [round(t - killed, 3) for t in getattr(subscribers[i].tally, "reset_times", [])],
            [(n, round(stream.acked_at[n] - killed, 3), stream.acked[n]) for n in g],
            sorted(subscribers[i].tally.received)[-8:],
        )
        for i, g in gaps.items()
    }
    assert not gaps, (report(gaps, subscribers), debug)
    # The control channel works again: a disconnect issued on one node closes a connection
    # (made after the outage: with memory streams, older ones were told to reconnect, 3010).
    watcher = await connect_ws(nodes[1], "watched")
    await nodes[0].node.disconnect("watched", 4502, "control works again")
    assert await close_code(watcher) == 4502
    told = sum(1 for s in subscribers if s.tally.resets)
    print(
        f"\nnats {history}: ready {back:.2f} s after kill -9; {len(stream.acked)} acknowledged, "
        f"{stream.refused} refused, 0 silently lost, {told}/{len(subscribers)} clients told "
        "they could not recover"
    )
    if history == "memory":
        # Each node's streams may lack what the other published meanwhile: everyone is told.
        assert told == len(subscribers)
