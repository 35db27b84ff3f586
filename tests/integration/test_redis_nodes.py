"""Several nodes on one Redis: publications, presence and history cross node boundaries."""

from __future__ import annotations

import asyncio
import json
import uuid
from typing import Any

import pytest
from centrifuge import Client, PublicationContext

from hubbub.auth import mint_connection_token
from tests.conftest import SECRET, UNIT, RunningServer, suite_settings
from tests.integration.test_centrifuge_python import SubEvents, next_item

WAIT = 5 * UNIT


async def start_nodes(start_server: Any, redis_url: str, count: int) -> list[RunningServer]:
    prefix = f"nodes-{uuid.uuid4().hex[:8]}"
    settings = suite_settings(engine="redis", redis={"url": redis_url, "prefix": prefix})
    return [await start_server(settings) for _ in range(count)]


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


async def test_publications_cross_nodes_in_order(start_server: Any, redis_url: str) -> None:
    nodes = await start_nodes(start_server, redis_url, 3)
    clients: list[Client] = []
    try:
        subs = [await subscriber(n, f"user{i}", "news", clients) for i, n in enumerate(nodes)]
        expected = []
        for round_ in range(3):
            for i, node in enumerate(nodes):
                n = round_ * 3 + i
                position = await node.node.publish("news", {"n": n})
                expected.append((position.offset, n))
        for events in subs:
            got = []
            for _ in expected:
                ctx: PublicationContext = await next_item(events.publications, "publication")
                got.append((ctx.pub.offset, ctx.pub.data["n"]))
            assert got == expected == [(i + 1, i) for i in range(9)]
            await asyncio.sleep(0.05 * UNIT)
            assert events.publications.empty()  # exactly once
        # Presence is the same from every node.
        for node in nodes:
            stats = await node.node.presence_stats("chat:none")
            assert stats.num_clients == 0
        chat = [await subscriber(n, f"chat{i}", "chat:room", clients) for i, n in enumerate(nodes)]
        assert len(chat) == 3
        for node in nodes:
            presence = await node.node.presence("chat:room")
            assert sorted(i.user for i in presence.values()) == ["chat0", "chat1", "chat2"]
        # History written through one node is read through another.
        hist = await nodes[2].node.history("news", limit=-1)
        assert [p.offset for p in hist.publications] == list(range(1, 10))
    finally:
        for client in clients:
            await client.disconnect()


async def test_user_operations_and_info_cross_nodes(start_server: Any, redis_url: str) -> None:
    from tests.integration.test_bad_input import close_code, connect_ws
    from tests.integration.test_http_api import next_push

    first, second = await start_nodes(start_server, redis_url, 2)
    on_first = await connect_ws(first, "mallory")
    on_second = await connect_ws(second, "mallory")
    # info from either node lists both.
    for _ in range(int(100 * UNIT)):
        if len(first.node.info()) == 2 and len(second.node.info()) == 2:
            break
        await asyncio.sleep(0.02)
    uids = {n.uid for n in first.node.info()}
    assert uids == {first.node.uid, second.node.uid}

    # A server-side subscribe and a message issued on one node reach the other node's client.
    await first.node.subscribe("mallory", "chat:ops")
    push = await next_push(on_second, "subscribe")
    assert push["channel"] == "chat:ops"
    await first.node.send_message("mallory", {"hello": "there"})
    assert (await next_push(on_second, "message"))["message"]["data"] == {"hello": "there"}
    await second.node.unsubscribe("mallory", "chat:ops")
    assert (await next_push(on_first, "unsubscribe"))["unsubscribe"]["code"] == 2000

    # Disconnecting a user on one node closes its connections on the other.
    await first.node.disconnect("mallory", 4501, "banned")
    assert await close_code(on_first) == 4501
    assert await close_code(on_second) == 4501


async def test_recovery_while_publications_continue(start_server: Any, redis_url: str) -> None:
    """A client recovers on one node while another node keeps publishing: the recovered and
    the live publications join up exactly, whatever the interleaving."""
    from tests.integration.test_bad_input import connect_ws, parse

    publisher_node, reader_node = await start_nodes(start_server, redis_url, 2)
    stop = asyncio.Event()
    offsets: list[int] = []

    async def publish_forever() -> None:
        n = 0
        while not stop.is_set():
            n += 1
            offsets.append((await publisher_node.node.publish("news", {"n": n})).offset)
            await asyncio.sleep(0.001)

    publisher = asyncio.create_task(publish_forever())
    try:
        for round_ in range(5):
            while len(offsets) < 20 * (round_ + 1):  # noqa: ASYNC110 (the publisher fills it)
                await asyncio.sleep(0.005)
            since = offsets[-10]
            epoch = (await reader_node.node.history("news")).position.epoch
            ws = await connect_ws(reader_node, f"r{round_}")
            recover = {"channel": "news", "recover": True, "offset": since, "epoch": epoch}
            await ws.send(json.dumps({"id": 2, "subscribe": recover}))
            seen: list[int] = []
            result: dict[str, Any] = {}
            while len(seen) < 40:
                for msg in parse(await asyncio.wait_for(ws.recv(), WAIT)):
                    if msg.get("id") == 2:
                        result = msg["subscribe"]
                        assert result["recovered"] is True
                        seen.extend(p["offset"] for p in result.get("publications", []))
                    elif "pub" in msg.get("push", {}):
                        assert result, "a publication came before the subscribe reply"
                        seen.append(msg["push"]["pub"]["offset"])
            assert seen == list(range(since + 1, since + 1 + len(seen)))
            await ws.close()
    finally:
        stop.set()
        await publisher


async def test_tutorial_room_spans_nodes(start_server: Any, redis_url: str) -> None:
    import websockets

    first, second = await start_nodes(start_server, redis_url, 2)
    async with websockets.connect(f"ws://127.0.0.1:{first.port}/ws/alice") as alice:
        assert await asyncio.wait_for(alice.recv(), WAIT) == "alice joined the chat"
        async with websockets.connect(f"ws://127.0.0.1:{second.port}/ws/bob") as bob:
            assert await asyncio.wait_for(bob.recv(), WAIT) == "bob joined the chat"
            assert await asyncio.wait_for(alice.recv(), WAIT) == "bob joined the chat"
            await alice.send("hello from node one")
            assert await asyncio.wait_for(bob.recv(), WAIT) == "alice: hello from node one"
        assert await asyncio.wait_for(alice.recv(), WAIT) == "You said: hello from node one"
        assert await asyncio.wait_for(alice.recv(), WAIT) == "alice: hello from node one"
        assert await asyncio.wait_for(alice.recv(), WAIT) == "bob left the chat"


async def test_per_user_limits_hold_across_nodes(start_server: Any, redis_url: str) -> None:
    import hubbub.client as hc

    prefix = f"limits-{uuid.uuid4().hex[:8]}"
    settings = suite_settings(
        engine="redis",
        redis={"url": redis_url, "prefix": prefix},
        limits={"connections_per_user": 2, "user_command_rate": 2, "user_command_burst": 20},
    )
    one, two = [await start_server(settings) for _ in range(2)]
    for _ in range(int(100 * UNIT)):  # each node learns the other from its announcements
        if len(one.node.info()) == 2 and len(two.node.info()) == 2:
            break
        await asyncio.sleep(0.05)
    token = mint_connection_token(SECRET, "alice")
    async with hc.connect(one.url, token=token) as a1, hc.connect(two.url, token=token) as a2:
        # A third connection, on either node, is over the limit.
        with pytest.raises(hc.ClientClosed) as refused:
            async with hc.connect(two.url, token=token):
                pass
        assert refused.value.code == 3504
        # Commands: the user's burst and rate are shared by both nodes (10 and 1/s each here);
        # one node alone would allow the whole burst of 20.
        accepted = 0
        for client in (a1, a2):
            for _ in range(25):
                try:
                    await client.presence_stats("news")
                    accepted += 1
                except hc.ReplyError as exc:
                    assert exc.code == 111
        assert 20 <= accepted <= 26, accepted  # the burst, plus what refilled meanwhile
    # Closed connections no longer count, once each node has handled the close (the client's
    # exit does not wait for it).
    for _ in range(int(100 * UNIT)):
        if await two.node.user_connections_everywhere("alice") == 0:
            break
        await asyncio.sleep(0.02)
    async with hc.connect(two.url, token=token), hc.connect(two.url, token=token):
        pass
