"""The session state machine, driven with plain objects: a list transport and a fake clock."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import msgspec
import pytest
from tests.conftest import SECRET, suite_settings

from hubbub.auth import mint_connection_token, mint_subscription_token
from hubbub.clock import FakeClock
from hubbub.config import Settings
from hubbub.node import Node
from hubbub.protocol.codes import DisconnectCode
from hubbub.protocol.messages import Command, raw
from hubbub.session import COMMANDS, Session


class ListTransport:
    """Collects what a session writes; remembers the close code."""

    def __init__(self) -> None:
        self.sent: list[dict[str, Any]] = []
        self.close_code: int | None = None
        self.close_reason = ""

    @property
    def closing(self) -> bool:
        return self.close_code is not None

    def write(self, data: bytes) -> None:
        if self.close_code is None:
            self.sent.append(msgspec.json.decode(data))

    def close(self, code: int, reason: str) -> None:
        if self.close_code is None:
            self.close_code, self.close_reason = code, reason

    def new_group(self) -> None:
        return None

    def take(self) -> list[dict[str, Any]]:
        sent, self.sent = self.sent, []
        return sent

    def pushes(self, kind: str) -> list[dict[str, Any]]:
        return [m["push"] for m in self.sent if "push" in m and kind in m["push"]]


class Harness:
    def __init__(self, node: Node, clock: FakeClock) -> None:
        self.node = node
        self.clock = clock

    def token(self, user: str, **kwargs: Any) -> str:
        return mint_connection_token(SECRET, user, now=self.clock.time(), **kwargs)

    async def session(self, user: str | None = "alice", **token_kwargs: Any) -> Session:
        """A connected session (or only started, with ``user=None``)."""
        session = Session(self.node, ListTransport())
        session.start()
        if user is not None:
            await send(session, {"id": 1, "connect": {"token": self.token(user, **token_kwargs)}})
            reply = transport(session).take()[0]
            assert "connect" in reply, reply
        return session


def transport(session: Session) -> ListTransport:
    assert isinstance(session.transport, ListTransport)
    return session.transport


async def send(session: Session, *commands: dict[str, Any]) -> list[dict[str, Any]]:
    frame = b"\n".join(msgspec.json.encode(c) for c in commands)
    await session.handle_frame(frame)
    return transport(session).sent


@pytest.fixture
async def h() -> AsyncIterator[Harness]:
    """Sessions without pong checks, so long clock jumps test one timer at a time."""
    clock = FakeClock()
    node = Node(suite_settings(client={"pong_timeout": 0}), clock=clock)
    yield Harness(node, clock)


@pytest.fixture
async def hp() -> AsyncIterator[Harness]:
    """Sessions with the default heartbeat: ping every 25 s, pong within 8 s."""
    clock = FakeClock()
    node = Node(suite_settings(), clock=clock)
    yield Harness(node, clock)


# ---------------------------------------------------------------------------------------------
# connect


async def test_connect_result(hp: Harness) -> None:
    h = hp
    session = Session(h.node, ListTransport())
    session.start()
    await send(session, {"id": 1, "connect": {"token": h.token("alice"), "name": "python"}})
    (reply,) = transport(session).take()
    result = reply["connect"]
    assert reply["id"] == 1
    assert result["client"] == session.client_id
    assert result["version"]
    assert result["ping"] == 25 and result["pong"] is True
    assert "expires" not in result
    # The personal channel is subscribed server-side, with its stream position.
    personal = result["subs"]["#alice"]
    assert personal["recoverable"] is True and personal["epoch"]
    assert "offset" not in personal  # 0 is omitted, as every zero value


async def test_connect_with_expiring_token(h: Harness) -> None:
    session = Session(h.node, ListTransport())
    await send(session, {"id": 1, "connect": {"token": h.token("bob", ttl=3600)}})
    result = transport(session).take()[0]["connect"]
    assert result["expires"] is True and result["ttl"] == 3600


async def test_connect_and_subscribe_in_one_frame(h: Harness) -> None:
    session = Session(h.node, ListTransport())
    await send(
        session,
        {"connect": {"token": h.token("alice")}, "id": 1},
        {"subscribe": {"channel": "news", "flag": 1}, "id": 2},
    )
    replies = transport(session).take()
    assert [r.get("id") for r in replies][:2] == [1, 2]
    assert replies[1]["subscribe"]["recoverable"] is True


async def test_no_credentials_is_bad_request(h: Harness) -> None:
    session = Session(h.node, ListTransport())
    await send(session, {"id": 1, "connect": {}})
    assert transport(session).close_code == DisconnectCode.BAD_REQUEST


async def test_invalid_token_closes_3500(h: Harness) -> None:
    session = Session(h.node, ListTransport())
    await send(session, {"id": 1, "connect": {"token": "not-a-jwt"}})
    assert transport(session).close_code == DisconnectCode.INVALID_TOKEN


async def test_expired_token_is_109_then_unusable(h: Harness) -> None:
    session = Session(h.node, ListTransport())
    token = mint_connection_token(SECRET, "alice", ttl=10, now=h.clock.time() - 60)
    await send(session, {"id": 1, "connect": {"token": token}})
    assert transport(session).take() == [
        {"id": 1, "error": {"code": 109, "message": "token expired"}}
    ]
    await send(session, {"id": 2, "connect": {"token": h.token("alice")}})
    assert transport(session).close_code == DisconnectCode.BAD_REQUEST


async def test_command_before_connect(h: Harness) -> None:
    session = Session(h.node, ListTransport())
    await send(session, {"id": 1, "subscribe": {"channel": "news"}})
    assert transport(session).close_code == DisconnectCode.BAD_REQUEST


async def test_second_connect(h: Harness) -> None:
    session = await h.session()
    await send(session, {"id": 2, "connect": {"token": h.token("alice")}})
    assert transport(session).close_code == DisconnectCode.BAD_REQUEST


async def test_stale_connection(h: Harness) -> None:
    session = await h.session(user=None)
    h.clock.advance(9.9)
    assert transport(session).close_code is None
    h.clock.advance(0.2)
    assert transport(session).close_code == DisconnectCode.STALE


async def test_anonymous_when_allowed() -> None:
    clock = FakeClock()
    node = Node(suite_settings(client={"allow_anonymous_connect_without_token": True}), clock=clock)
    session = Session(node, ListTransport())
    await send(session, {"id": 1, "connect": {}})
    result = transport(session).take()[0]["connect"]
    assert "subs" not in result  # no personal channel for anonymous users
    assert session.user == ""


async def test_unknown_namespace_in_token_channels(h: Harness) -> None:
    session = Session(h.node, ListTransport())
    await send(session, {"id": 1, "connect": {"token": h.token("a", channels=["nope:x"])}})
    assert transport(session).take()[0]["error"]["code"] == 102


# ---------------------------------------------------------------------------------------------
# heartbeats and expiry


def advance_until_ping(h: Harness, session: Session, limit: float) -> float:
    """Advance the clock in 0.1 s steps until the session pings; the time it took."""
    waited = 0.0
    while {} not in transport(session).sent:
        assert waited < limit, f"no ping within {limit} s"
        h.clock.advance(0.1)
        waited += 0.1
    transport(session).take()
    return waited


async def test_ping_and_pong(hp: Harness) -> None:
    h = hp
    session = await h.session()
    # The first ping comes at a random moment in [ping/2, ping), then every ping seconds.
    first = advance_until_ping(h, session, 25)
    assert 12.4 <= first <= 25.1
    await send(session, {})
    h.clock.advance(8.5)
    assert transport(session).close_code is None
    assert 16 < advance_until_ping(h, session, 25) <= 25.1
    h.clock.advance(7.9)
    assert transport(session).close_code is None
    h.clock.advance(0.2)
    assert transport(session).close_code == DisconnectCode.NO_PONG


async def test_a_stalled_loop_does_not_cost_the_pong(hp: Harness) -> None:
    h = hp
    session = await h.session()
    advance_until_ping(h, session, 25)
    # The loop stalls past the pong deadline (a long GC): the timer fires late, with the
    # client's pong still unread; the session looks again after a moment.
    h.clock.stall(12)
    h.clock.advance(0)
    assert transport(session).close_code is None
    await send(session, {})  # the pong, read once the loop gets to the socket
    h.clock.advance(1.5)
    assert transport(session).close_code is None
    # With no pong at all, the connection still closes: one second later.
    advance_until_ping(h, session, 25)
    h.clock.stall(12)
    h.clock.advance(0)
    assert transport(session).close_code is None
    h.clock.advance(1.1)
    assert transport(session).close_code == DisconnectCode.NO_PONG


async def test_a_loop_that_stays_late_does_not_postpone_the_no_pong_close(hp: Harness) -> None:
    h = hp
    session = await h.session()
    advance_until_ping(h, session, 25)
    h.clock.stall(12)
    h.clock.advance(0)
    assert transport(session).close_code is None  # the first late check looks again
    h.clock.stall(5)  # and that second look is late too: no more postponing
    h.clock.advance(0)
    assert transport(session).close_code == DisconnectCode.NO_PONG


async def test_stray_pong_is_tolerated(hp: Harness) -> None:
    session = await hp.session()
    await send(session, {})
    assert transport(session).close_code is None


async def test_pings_regardless_of_traffic(hp: Harness) -> None:
    h = hp
    session = await h.session()
    for _ in range(5):
        await send(session, {"id": 7, "presence_stats": {"channel": "news"}})
        h.clock.advance(5)
    assert {} in transport(session).sent


async def test_expired_connection_closes_after_grace(h: Harness) -> None:
    session = await h.session(ttl=60)
    h.clock.advance(60 + 24)
    assert transport(session).close_code is None
    h.clock.advance(2)
    assert transport(session).close_code == DisconnectCode.EXPIRED


async def test_refresh_extends(h: Harness) -> None:
    session = await h.session(ttl=60)
    h.clock.advance(50)
    await send(session, {"id": 2, "refresh": {"token": h.token("alice", ttl=600)}})
    reply = next(m for m in transport(session).take() if m.get("id") == 2)
    assert reply["refresh"]["expires"] is True and reply["refresh"]["ttl"] == 600
    h.clock.advance(100)
    assert transport(session).close_code is None


async def test_refresh_for_another_user(h: Harness) -> None:
    session = await h.session(ttl=60)
    await send(session, {"id": 2, "refresh": {"token": h.token("mallory", ttl=600)}})
    assert transport(session).close_code == DisconnectCode.INVALID_TOKEN


# ---------------------------------------------------------------------------------------------
# rpc, send, server-side API


async def test_rpc(h: Harness) -> None:
    session = await h.session()
    # No handler registered at all: RPC is not available (108, as Centrifugo's default).
    await send(session, {"id": 2, "rpc": {"method": "nope", "data": {}}})
    assert transport(session).take()[0]["error"] == {"code": 108, "message": "not available"}

    @h.node.rpc("echo")
    async def echo(s: Session, data: msgspec.Raw) -> msgspec.Raw:
        return raw({"user": s.user, "got": msgspec.json.decode(data)})

    await send(session, {"id": 3, "rpc": {"method": "echo", "data": [1]}})
    assert transport(session).take()[0] == {"id": 3, "rpc": {"data": {"user": "alice", "got": [1]}}}
    # Handlers exist, not for this method: 104.
    await send(session, {"id": 4, "rpc": {"method": "nope", "data": {}}})
    assert transport(session).take()[0]["error"] == {"code": 104, "message": "method not found"}


async def test_send_without_handler(h: Harness) -> None:
    session = await h.session()
    await send(session, {"send": {"data": {"typing": True}}})
    assert transport(session).close_code == DisconnectCode.NOT_AVAILABLE


async def test_send_with_handler(h: Harness) -> None:
    got: list[Any] = []

    @h.node.on_send
    async def on_send(s: Session, data: msgspec.Raw) -> None:
        got.append((s.user, msgspec.json.decode(data)))

    session = await h.session()
    await send(session, {"send": {"data": {"typing": True}}})
    assert got == [("alice", {"typing": True})]
    assert transport(session).close_code is None


async def test_command_without_id_closes(h: Harness) -> None:
    session = await h.session()
    await send(session, {"presence": {"channel": "news"}})
    assert transport(session).close_code == DisconnectCode.BAD_REQUEST


async def test_unknown_command_closes(h: Harness) -> None:
    session = await h.session()
    await send(session, {"id": 5, "frobnicate": {}})
    assert transport(session).close_code == DisconnectCode.BAD_REQUEST


async def test_server_side_subscribe_unsubscribe_disconnect(h: Harness) -> None:
    session = await h.session("carol")
    await h.node.subscribe("carol", "chat:ops")
    (push,) = transport(session).pushes("subscribe")
    assert push["channel"] == "chat:ops" and push["subscribe"]["recoverable"] is True
    await h.node.publish("chat:ops", {"x": 1})
    assert transport(session).pushes("pub")[-1]["pub"]["data"] == {"x": 1}
    await h.node.unsubscribe("carol", "chat:ops")
    (unsub,) = transport(session).pushes("unsubscribe")
    assert unsub["unsubscribe"] == {"code": 2000, "reason": "server unsubscribe"}
    await h.node.disconnect("carol")
    assert transport(session).close_code == DisconnectCode.FORCE_DISCONNECT


async def test_personal_channel_receives(h: Harness) -> None:
    session = await h.session("dave")
    await h.node.publish("#dave", {"note": "hi"})
    (pub,) = transport(session).pushes("pub")
    assert pub["channel"] == "#dave" and pub["pub"]["offset"] == 1


async def test_subscription_expiry_unsubscribes(h: Harness) -> None:
    session = await h.session()
    token = mint_subscription_token(SECRET, "alice", "$locked:vip", ttl=30, now=h.clock.time())
    await send(session, {"id": 2, "subscribe": {"channel": "$locked:vip", "token": token}})
    result = transport(session).take()[0]["subscribe"]
    assert result["expires"] is True and result["ttl"] == 30
    h.clock.advance(30 + 26)
    await asyncio.sleep(0)
    await asyncio.sleep(0)
    (push,) = transport(session).pushes("unsubscribe")
    assert push["unsubscribe"]["code"] == 2501


async def test_sub_refresh(h: Harness) -> None:
    session = await h.session()
    token = mint_subscription_token(SECRET, "alice", "$locked:vip", ttl=30, now=h.clock.time())
    await send(session, {"id": 2, "subscribe": {"channel": "$locked:vip", "token": token}})
    fresh = mint_subscription_token(SECRET, "alice", "$locked:vip", ttl=300, now=h.clock.time())
    await send(session, {"id": 3, "sub_refresh": {"channel": "$locked:vip", "token": fresh}})
    assert transport(session).sent[-1] == {"id": 3, "sub_refresh": {"expires": True, "ttl": 300}}
    await send(session, {"id": 4, "sub_refresh": {"channel": "$locked:other", "token": fresh}})
    assert transport(session).sent[-1]["error"]["code"] == 103


async def test_development_mode_opens_channels() -> None:
    clock = FakeClock()
    node = Node(Settings(development=True), clock=clock)
    session = Session(node, ListTransport())
    await send(session, {"id": 1, "connect": {}})  # anonymous is fine in development
    await send(
        session,
        {"id": 2, "subscribe": {"channel": "news"}},
        {"id": 3, "publish": {"channel": "news", "data": {"a": 1}}},
        {"id": 4, "presence_stats": {"channel": "news"}},
        {"id": 5, "history": {"channel": "news", "limit": -1}},
    )
    replies = {m["id"]: m for m in transport(session).sent if "id" in m}
    assert replies[2]["subscribe"]["recoverable"] is True
    assert replies[3] == {"id": 3, "publish": {}}
    assert replies[4]["presence_stats"] == {"num_clients": 1, "num_users": 1}
    assert [p["data"] for p in replies[5]["history"]["publications"]] == [{"a": 1}]


async def test_failed_connect_still_goes_stale(h: Harness) -> None:
    session = await h.session(user=None)
    token = mint_connection_token(SECRET, "a", channels=["nope:x"], now=h.clock.time())
    await send(session, {"id": 1, "connect": {"token": token}})
    assert transport(session).take()[0]["error"]["code"] == 102
    h.clock.advance(10.1)
    assert transport(session).close_code == DisconnectCode.STALE


# ---------------------------------------------------------------------------------------------
# the command table


def test_the_command_table_has_every_request_in_schema_order() -> None:
    requests = [f for f in Command.__struct_fields__ if f not in ("id", "ping")]
    assert list(COMMANDS) == requests


async def test_the_first_request_of_a_command_decides(h: Harness) -> None:
    session = await h.session()
    # Both set: subscribe comes before publish in the schema, so this is a subscribe.
    await send(
        session,
        {
            "id": 2,
            "subscribe": {"channel": "news"},
            "publish": {"channel": "news", "data": {"a": 1}},
        },
    )
    (reply,) = [m for m in transport(session).take() if "id" in m]
    assert reply["id"] == 2 and "subscribe" in reply
