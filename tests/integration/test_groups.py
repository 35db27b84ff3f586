"""Channel groups of the native transport: subscribers with nothing to check per publication
are written to together. Every one still gets each publication once, in order, and in order
with what it is sent on its own (replies, pushes) around it, also when it joins or leaves
between two flushes."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator
from typing import Any

import pytest
import websockets
from centrifuge import Client

from hubbub.auth import mint_connection_token
from hubbub.client import connect
from hubbub.node import Node
from hubbub.protocol.codec import JSON
from tests.conftest import SECRET, UNIT, RunningServer, suite_settings
from tests.integration.test_protobuf import as_json, collect
from tests.integration.test_protobuf import connect as pb_connect
from tests.integration.test_protobuf import subscribe as pb_subscribe

WAIT = 5 * UNIT
WINDOW = 0.1  # write_delay (its maximum): what is sent within it leaves in one flush


@pytest.fixture
async def clients() -> AsyncIterator[list[Client]]:
    made: list[Client] = []
    yield made
    for client in made:
        await client.disconnect()


async def _raw(running: RunningServer, user: str) -> Any:
    ws = await websockets.connect(running.url)
    token = mint_connection_token(SECRET, user)
    await ws.send(json.dumps({"id": 1, "connect": {"token": token}}))
    assert "connect" in json.loads(await asyncio.wait_for(ws.recv(), WAIT))
    return ws


async def _messages(ws: Any, count: int) -> list[dict[str, Any]]:
    """The next ``count`` protocol messages (a frame may hold several, one per line)."""
    got: list[dict[str, Any]] = []
    while len(got) < count:
        frame = await asyncio.wait_for(ws.recv(), WAIT)
        got.extend(json.loads(line) for line in frame.splitlines() if line)
    return got


async def _subscribe(channel: str, *sockets: Any) -> None:
    for ws in sockets:
        await ws.send(json.dumps({"id": 2, "subscribe": {"channel": channel}}))
        assert "subscribe" in (await _messages(ws, 1))[0]


def _members(node: Node, channel: str) -> int:
    return sum(len(group) for group in node.index.groups.get(channel, {}).values())


async def _until(check: Any) -> None:
    for _ in range(int(200 * UNIT)):
        if check():
            return
        await asyncio.sleep(0.005)
    raise AssertionError("condition not reached")


async def _fresh_window(node: Node, channel: str, ws: Any) -> None:
    """A flush just ran (its publication arrived): the next one is WINDOW away."""
    await node.publish(channel, {"n": 0})
    assert (await _messages(ws, 1))[0]["push"]["pub"]["data"] == {"n": 0}


async def test_every_member_gets_every_publication_once_in_order(
    start_server: Any, clients: list[Client]
) -> None:
    running: RunningServer = await start_server(suite_settings())
    node = running.node
    async with contextlib.AsyncExitStack() as stack:
        ours = [
            await stack.enter_async_context(
                connect(running.url, token=mint_connection_token(SECRET, f"u{n}"))
            )
            for n in range(4)
        ]
        subs = [await c.subscribe("live:many") for c in ours]
        # Protobuf members, through centrifuge-python.
        pb_events = []
        for n in range(2):
            client = await pb_connect(running, clients, f"p{n}", protobuf=True)
            pb_events.append(await pb_subscribe(client, "live:many"))
        await _until(lambda: _members(node, "live:many") == 6)
        assert len(node.index.groups["live:many"]) == 2  # one group per wire format
        assert "live:many" not in node.index.direct
        for n in range(400):
            await node.publish("live:many", {"n": n})
            if n % 50 == 0:
                await asyncio.sleep(0)  # several flushes, several publications in each
        for sub in subs:
            got = [(await asyncio.wait_for(anext(sub), WAIT)) for _ in range(400)]
            assert [p.data["n"] for p in got] == list(range(400))  # type: ignore[union-attr]
        for events in pb_events:
            got_pb = await collect(events, 400)
            assert [as_json(data)["n"] for _, data in got_pb] == list(range(400))
        assert node.counters["deliveries"] >= 2400
    for client in clients:
        await client.disconnect()
    clients.clear()
    index = node.index
    await _until(lambda: "live:many" not in index.groups and "live:many" not in index.channels)


async def test_own_messages_keep_their_place_between_publications(start_server: Any) -> None:
    running: RunningServer = await start_server(suite_settings(write_delay=WINDOW))
    node = running.node
    mine, other = await _raw(running, "mine"), await _raw(running, "other")
    try:
        await _subscribe("live:order", mine, other)
        await _until(lambda: _members(node, "live:order") == 2)
        await _fresh_window(node, "live:order", mine)
        assert len(await _messages(other, 1)) == 1
        # One flush window: a publication, a message to one member only, a publication.
        await node.publish("live:order", {"n": 1})
        await node.send_message("mine", {"private": True})
        await node.publish("live:order", {"n": 2})
        got = await _messages(mine, 3)
        assert [m["push"].get("pub", {}).get("data") for m in got] == [{"n": 1}, None, {"n": 2}]
        assert got[1]["push"]["message"]["data"] == {"private": True}
        others = await _messages(other, 2)
        assert [m["push"]["pub"]["data"]["n"] for m in others] == [1, 2]
    finally:
        await mine.close()
        await other.close()


async def test_joining_between_flushes_gets_only_what_follows(start_server: Any) -> None:
    running: RunningServer = await start_server(suite_settings(write_delay=WINDOW))
    node = running.node
    early, late = await _raw(running, "early"), await _raw(running, "late")
    try:
        await _subscribe("live:join", early)
        await _until(lambda: _members(node, "live:join") == 1)
        await _fresh_window(node, "live:join", early)
        await node.publish("live:join", {"n": 1})
        await late.send(json.dumps({"id": 2, "subscribe": {"channel": "live:join"}}))
        await _until(lambda: _members(node, "live:join") == 2)
        group = node.index.groups["live:join"][JSON]
        assert group.frames, "the flush ran before the join: the test needs them in one window"
        await node.publish("live:join", {"n": 2})
        got = await _messages(late, 2)
        assert "subscribe" in got[0]
        assert got[1]["push"]["pub"]["data"] == {"n": 2}
        assert [m["push"]["pub"]["data"]["n"] for m in await _messages(early, 2)] == [1, 2]
        await node.publish("live:join", {"n": 3})
        assert (await _messages(late, 1))[0]["push"]["pub"]["data"] == {"n": 3}
    finally:
        await early.close()
        await late.close()


async def test_leaving_between_flushes_gets_what_came_before_its_reply(
    start_server: Any,
) -> None:
    running: RunningServer = await start_server(suite_settings(write_delay=WINDOW))
    node = running.node
    leaving, staying = await _raw(running, "leaving"), await _raw(running, "staying")
    try:
        await _subscribe("live:leave", leaving, staying)
        await _until(lambda: _members(node, "live:leave") == 2)
        await _fresh_window(node, "live:leave", leaving)
        assert len(await _messages(staying, 1)) == 1
        await node.publish("live:leave", {"n": 1})
        await leaving.send(json.dumps({"id": 3, "unsubscribe": {"channel": "live:leave"}}))
        await _until(lambda: _members(node, "live:leave") == 1)
        group = node.index.groups["live:leave"][JSON]
        assert group.frames, "the flush ran before the leave: the test needs them in one window"
        await node.publish("live:leave", {"n": 2})
        got = await _messages(leaving, 2)
        assert got[0]["push"]["pub"]["data"] == {"n": 1}
        assert got[1] == {"id": 3, "unsubscribe": {}}
        assert [m["push"]["pub"]["data"]["n"] for m in await _messages(staying, 2)] == [1, 2]
        # Nothing more for the one that left.
        await node.send_message("leaving", {"after": True})
        assert (await _messages(leaving, 1))[0]["push"]["message"]["data"] == {"after": True}
    finally:
        await leaving.close()
        await staying.close()


async def test_positioned_subscribers_share_a_position_and_asgi_connections_stay_one_by_one(
    start_server: Any,
) -> None:
    for transport in ("native", "asgi"):
        running: RunningServer = await start_server(suite_settings(transport=transport))
        node = running.node
        token = mint_connection_token(SECRET, "u")
        async with connect(running.url, token=token) as client:
            live = await client.subscribe("live:x")
            tracked = await client.subscribe("small:x")  # history with recovery: positions
            await node.publish("live:x", {"n": 1})
            await node.publish("small:x", {"n": 1})
            assert (await asyncio.wait_for(anext(live), WAIT)).data == {"n": 1}  # type: ignore[union-attr]
            assert (await asyncio.wait_for(anext(tracked), WAIT)).offset == 1  # type: ignore[union-attr]
            # Positioned native subscribers are in the channel's groups with a shared position
            # (tests/integration/test_positioned_groups.py), never in its plain groups.
            assert "small:x" not in node.index.groups
            assert ("small:x" in node.index.positioned) == (transport == "native")
            assert ("small:x" in node.index.direct) == (transport == "asgi")
            grouped = "live:x" in node.index.groups
            assert grouped == (transport == "native")
