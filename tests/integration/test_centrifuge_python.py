"""The unmodified ``centrifuge-python`` client against a real server on a loopback port.

Every test runs twice: with the JSON format and with the Protobuf format (``use_protobuf``).
With Protobuf the client sends and receives payloads as bytes; :func:`payload` and
:func:`value` translate, so each test states its expectations once.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, TypeVar

import pytest
from centrifuge import (
    Client,
    ClientEventHandler,
    ConnectedContext,
    DisconnectedContext,
    JoinContext,
    LeaveContext,
    PublicationContext,
    ReplyError,
    ServerPublicationContext,
    ServerSubscribedContext,
    StreamPosition,
    SubscribedContext,
    SubscriptionEventHandler,
    UnsubscribedContext,
)

from hubbub.auth import mint_connection_token, mint_subscription_token
from tests.conftest import SECRET, UNIT, RunningServer

T = TypeVar("T")
WAIT = 5 * UNIT

# What a client sees over the wire: on both WebSocket transports (tests/conftest.py::transport).
pytestmark = pytest.mark.usefixtures("transport")


async def next_item(queue: asyncio.Queue[T], what: str) -> T:
    """The next item of ``queue``, failing with ``what`` in the message after WAIT seconds."""
    try:
        return await asyncio.wait_for(queue.get(), WAIT)
    except TimeoutError:
        raise AssertionError(f"timed out waiting for {what}") from None


class ClientEvents(ClientEventHandler):
    def __init__(self) -> None:
        self.connected: asyncio.Queue[ConnectedContext] = asyncio.Queue()
        self.disconnected: asyncio.Queue[DisconnectedContext] = asyncio.Queue()
        self.subscribed: asyncio.Queue[ServerSubscribedContext] = asyncio.Queue()
        self.publications: asyncio.Queue[ServerPublicationContext] = asyncio.Queue()

    async def on_connected(self, ctx: ConnectedContext) -> None:
        await self.connected.put(ctx)

    async def on_disconnected(self, ctx: DisconnectedContext) -> None:
        await self.disconnected.put(ctx)

    async def on_subscribed(self, ctx: ServerSubscribedContext) -> None:
        await self.subscribed.put(ctx)

    async def on_publication(self, ctx: ServerPublicationContext) -> None:
        await self.publications.put(ctx)


class SubEvents(SubscriptionEventHandler):
    def __init__(self) -> None:
        self.subscribed: asyncio.Queue[SubscribedContext] = asyncio.Queue()
        self.unsubscribed: asyncio.Queue[UnsubscribedContext] = asyncio.Queue()
        self.publications: asyncio.Queue[PublicationContext] = asyncio.Queue()
        self.joins: asyncio.Queue[JoinContext] = asyncio.Queue()
        self.leaves: asyncio.Queue[LeaveContext] = asyncio.Queue()

    async def on_subscribed(self, ctx: SubscribedContext) -> None:
        await self.subscribed.put(ctx)

    async def on_unsubscribed(self, ctx: UnsubscribedContext) -> None:
        await self.unsubscribed.put(ctx)

    async def on_publication(self, ctx: PublicationContext) -> None:
        await self.publications.put(ctx)

    async def on_join(self, ctx: JoinContext) -> None:
        await self.joins.put(ctx)

    async def on_leave(self, ctx: LeaveContext) -> None:
        await self.leaves.put(ctx)


ClientFactory = Callable[..., Awaitable[tuple[Client, ClientEvents]]]

FORMAT = "json"


@pytest.fixture(params=["json", "protobuf"], autouse=True)
def wire_format(request: pytest.FixtureRequest) -> str:
    """Run each test in both wire formats."""
    global FORMAT
    FORMAT = request.param
    return FORMAT


def payload(data: Any) -> Any:
    """What the client must be given to publish ``data`` in the current format."""
    return json.dumps(data).encode() if FORMAT == "protobuf" else data


def value(data: Any) -> Any:
    """The JSON value of a payload the client received."""
    return json.loads(data) if isinstance(data, bytes) else data


@pytest.fixture
async def connect(server: RunningServer, wire_format: str) -> AsyncIterator[ClientFactory]:
    clients: list[Client] = []

    async def make(user: str = "alice", **kwargs: Any) -> tuple[Client, ClientEvents]:
        events = ClientEvents()
        if "token" not in kwargs and "get_token" not in kwargs:
            kwargs["token"] = mint_connection_token(SECRET, user, info={"name": user.title()})
        kwargs.setdefault("use_protobuf", wire_format == "protobuf")
        client = Client(server.url, events=events, proxy=None, **kwargs)
        clients.append(client)
        await client.connect()
        await next_item(events.connected, f"{user} connected")
        return client, events

    yield make
    for client in clients:
        await client.disconnect()


async def subscribe(client: Client, channel: str, **kwargs: Any) -> tuple[Any, SubEvents]:
    events = SubEvents()
    sub = client.new_subscription(channel, events=events, **kwargs)
    await sub.subscribe()
    await next_item(events.subscribed, f"subscribed to {channel}")
    return sub, events


async def test_connect_subscribe_publish_receive(connect: ClientFactory) -> None:
    alice, _ = await connect("alice")
    bob, _ = await connect("bob")
    sub, events = await subscribe(bob, "news")
    await alice.publish("news", payload({"text": "hello"}))
    ctx = await next_item(events.publications, "publication")
    assert value(ctx.pub.data) == {"text": "hello"}
    assert ctx.pub.offset == 1
    assert ctx.pub.info is not None and ctx.pub.info.user == "alice"
    assert value(ctx.pub.info.conn_info) == {"name": "Alice"}
    # Publishing through the subscription works too.
    await sub.publish(payload({"text": "from bob"}))
    ctx = await next_item(events.publications, "own publication")
    assert value(ctx.pub.data) == {"text": "from bob"} and ctx.pub.offset == 2


async def test_join_and_leave(connect: ClientFactory) -> None:
    alice, _ = await connect("alice")
    bob, _ = await connect("bob")
    _, events = await subscribe(alice, "chat:lobby", join_leave=True)
    own = await next_item(events.joins, "own join")
    assert own.info.user == "alice"
    bob_sub, _ = await subscribe(bob, "chat:lobby")
    join = await next_item(events.joins, "bob's join")
    assert join.info.user == "bob" and value(join.info.conn_info) == {"name": "Bob"}
    await bob_sub.unsubscribe()
    leave = await next_item(events.leaves, "bob's leave")
    assert leave.info.user == "bob"


async def test_presence_and_stats(connect: ClientFactory) -> None:
    alice, _ = await connect("alice")
    bob, _ = await connect("bob")
    bob2, _ = await connect("bob")
    for client in (alice, bob, bob2):
        await subscribe(client, "chat:room")
    presence = await alice.presence("chat:room")
    assert sorted(i.user for i in presence.clients.values()) == ["alice", "bob", "bob"]
    stats = await alice.presence_stats("chat:room")
    assert (stats.num_clients, stats.num_users) == (3, 2)


async def test_history_limit_since_reverse(connect: ClientFactory, server: RunningServer) -> None:
    client, _ = await connect("alice")
    for n in range(1, 8):
        await server.node.publish("news", {"n": n})
    first = await client.history("news", limit=3)
    assert [value(p.data)["n"] for p in first.publications] == [1, 2, 3]
    assert first.offset == 7 and first.epoch
    newest = await client.history("news", limit=2, reverse=True)
    assert [p.offset for p in newest.publications] == [7, 6]
    since = await client.history(
        "news", limit=10, since=StreamPosition(offset=4, epoch=first.epoch)
    )
    assert [p.offset for p in since.publications] == [5, 6, 7]
    with pytest.raises(ReplyError) as exc_info:
        await client.history("news", limit=1, since=StreamPosition(offset=1, epoch="other"))
    assert exc_info.value.code == 112


async def test_personal_channel(connect: ClientFactory, server: RunningServer) -> None:
    _, events = await connect("erin")
    subscribed = await next_item(events.subscribed, "personal channel")
    assert subscribed.channel == "#erin"
    await server.node.publish("#erin", {"notice": 1})
    ctx = await next_item(events.publications, "personal publication")
    assert ctx.channel == "#erin" and value(ctx.pub.data) == {"notice": 1}


async def test_private_channel_with_subscription_token(connect: ClientFactory) -> None:
    client, _ = await connect("alice")

    async def get_token(channel: str) -> str:
        return mint_subscription_token(SECRET, "alice", channel, ttl=600)

    sub, events = await subscribe(client, "$locked:vip", get_token=get_token)
    await sub.publish(payload({"secret": True}))
    ctx = await next_item(events.publications, "private publication")
    assert value(ctx.pub.data) == {"secret": True}

    denied = SubEvents()
    other = client.new_subscription("$locked:other", events=denied)
    await other.subscribe()
    unsub = await next_item(denied.unsubscribed, "refused subscription")
    assert unsub.code == 103


@pytest.mark.slow
async def test_token_refresh(connect: ClientFactory, server: RunningServer) -> None:
    calls: list[int] = []

    async def get_token() -> str:
        calls.append(1)
        return mint_connection_token(SECRET, "alice", ttl=3)

    client, events = await connect("alice", get_token=get_token)
    # The client refreshes before expiry; the connection stays up well past the first token.
    await asyncio.sleep(4 * UNIT)
    assert len(calls) >= 2
    assert events.disconnected.empty()
    assert await client.presence_stats("chat:x") is not None


async def _recovery_scenario(
    connect: ClientFactory, server: RunningServer, channel: str
) -> tuple[list[int], SubscribedContext]:
    client, _ = await connect("alice")
    _sub, events = await subscribe(client, channel)
    await server.node.publish(channel, {"n": 0})
    assert value((await next_item(events.publications, "first publication")).pub.data) == {"n": 0}

    # Cut the TCP connection under the client, and keep publishing while it is away.
    conn = client._conn
    assert conn is not None
    conn.transport.abort()
    for n in range(1, 6):
        await server.node.publish(channel, {"n": n})
        await asyncio.sleep(0.01)
    resubscribed = await next_item(events.subscribed, "resubscribe after reconnect")
    for n in range(6, 9):
        await server.node.publish(channel, {"n": n})
    seen: list[int] = []
    while len(seen) < 8 if resubscribed.recovered else len(seen) < 3:
        seen.append(value((await next_item(events.publications, "publication")).pub.data)["n"])
    await asyncio.sleep(0.2 * UNIT)
    while not events.publications.empty():
        seen.append(value(events.publications.get_nowait().pub.data)["n"])
    return seen, resubscribed


async def test_recovery_after_connection_cut(connect: ClientFactory, server: RunningServer) -> None:
    seen, resubscribed = await _recovery_scenario(connect, server, "news")
    assert resubscribed.was_recovering and resubscribed.recovered
    assert seen == [1, 2, 3, 4, 5, 6, 7, 8]  # each missed publication once, in order


async def test_no_recovery_when_history_exceeded(
    connect: ClientFactory, server: RunningServer
) -> None:
    seen, resubscribed = await _recovery_scenario(connect, server, "small:x")
    assert resubscribed.was_recovering and not resubscribed.recovered
    assert seen == [6, 7, 8]  # live publications only


async def test_rpc_method_not_found(connect: ClientFactory) -> None:
    client, _ = await connect("alice")
    with pytest.raises(ReplyError) as exc_info:
        await client.rpc("nope", payload({}))
    assert exc_info.value.code == 104


async def test_server_disconnect_is_terminal(connect: ClientFactory, server: RunningServer) -> None:
    _, events = await connect("alice")
    await server.node.disconnect("alice")
    ctx = await next_item(events.disconnected, "disconnect")
    assert ctx.code == 3503
