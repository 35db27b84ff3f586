"""The application's hooks in Python (:mod:`hubbub.hooks`) on a real server and a raw
WebSocket client: what each decides, the order, and what an exception in one does."""

from __future__ import annotations

import asyncio
import json
import logging
import time
from typing import Any

import msgspec
import pytest

from hubbub.hook_types import (
    ConnectContext,
    Credentials,
    PublishContext,
    PublishDecision,
    RefreshDecision,
    SubscribeContext,
    SubscribeOptions,
)
from hubbub.protocol.codes import Disconnect, ProtocolError
from hubbub.session import Session
from tests.conftest import RunningServer
from tests.integration.proxy_kit import WAIT, Conn

USERS = {"s3cr3t": "alice"}


async def current_user(session_id: str | None) -> str | None:
    """What a FastAPI app's dependency would do with its session cookie."""
    return USERS.get(session_id or "")


def authenticate_by_cookie(server: RunningServer, seen: list[ConnectContext]) -> None:
    @server.node.on_connecting
    async def authenticate(ctx: ConnectContext) -> Credentials | None:
        seen.append(ctx)
        user = await current_user(ctx.cookies.get("session"))
        if user is None:
            return None  # the usual path: the token, or refused without one
        return Credentials(user=user, info={"via": "cookie"}, data={"hi": user})


async def test_on_connecting_sees_the_handshake_and_decides(server: RunningServer) -> None:
    seen: list[ConnectContext] = []
    authenticate_by_cookie(server, seen)
    async with Conn.open(server.url, {"Cookie": "theme=x; session=s3cr3t"}) as conn:
        reply = await conn.command(connect={"name": "py", "data": {"a": 1}})
        assert reply["connect"]["data"] == {"hi": "alice"}
        session = server.node.session(reply["connect"]["client"])
        assert session is not None and session.user == "alice"
    [ctx] = seen
    assert ctx.handshake.transport == "websocket" and ctx.handshake.protocol == "json"
    assert ctx.handshake.remote.startswith("127.0.0.1:")
    assert ctx.handshake.header("Cookie") == "theme=x; session=s3cr3t"
    assert ctx.request.name == "py" and json.loads(bytes(ctx.request.data)) == {"a": 1}
    # Without the cookie: the hook says None, and without a token the connect is refused.
    async with Conn.open(server.url) as conn:
        await conn.ws.send(json.dumps({"id": 1, "connect": {}}))
        assert await conn.closed() == (3501, "bad request: no credentials")


@pytest.mark.parametrize(
    ("raised", "expect"),
    [
        (ProtocolError(1403, "not you"), ("error", {"code": 1403, "message": "not you"})),
        (Disconnect(4501, "banned"), ("close", (4501, "banned"))),
        (
            RuntimeError("bug"),
            ("error", {"code": 100, "message": "internal server error", "temporary": True}),
        ),
    ],
)
async def test_an_exception_in_on_connecting(
    server: RunningServer, raised: Exception, expect: tuple[str, Any], caplog: Any
) -> None:
    @server.node.on_connecting
    async def refuse(ctx: ConnectContext) -> Credentials | None:
        raise raised

    caplog.set_level(logging.ERROR)
    async with Conn.open(server.url) as conn:
        await conn.ws.send(json.dumps({"id": 1, "connect": {}}))
        if expect[0] == "close":
            assert await conn.closed() == expect[1]
        else:
            assert (await conn.wait(lambda m: m.get("id") == 1))["error"] == expect[1]
    if isinstance(raised, RuntimeError):
        assert any(r.exc_info and r.exc_info[1] is raised for r in caplog.records)


async def test_first_deciding_hook_wins(server: RunningServer) -> None:
    calls: list[str] = []

    @server.node.on_connecting
    async def undecided(ctx: ConnectContext) -> Credentials | None:
        calls.append("undecided")
        return None

    @server.node.on_connecting
    async def decides(ctx: ConnectContext) -> Credentials | None:
        calls.append("decides")
        return Credentials(user="bob")

    @server.node.on_connecting
    async def never(ctx: ConnectContext) -> Credentials | None:
        calls.append("never")
        return None

    async with Conn.open(server.url) as conn:
        assert "connect" in await conn.command(connect={})
    assert calls == ["undecided", "decides"]


async def test_on_subscribe_allows_refuses_and_fails_one_command(server: RunningServer) -> None:
    node = server.node

    @node.on_connecting
    async def anyone(ctx: ConnectContext) -> Credentials | None:
        return Credentials(user="carol")

    @node.on_subscribe
    async def decide(ctx: SubscribeContext) -> SubscribeOptions | None:
        if ctx.channel == "locked:vip":  # a namespace closed to clients: the hook opens it
            return SubscribeOptions(info={"tier": "gold"}, data={"welcome": 1})
        if ctx.channel == "live:no":
            raise ProtocolError(1403, "no")
        if ctx.channel == "live:bug":
            raise KeyError("bug")
        return None  # the namespace's permissions decide

    async with Conn.open(server.url) as conn:
        client = (await conn.command(connect={}))["connect"]["client"]
        reply = await conn.command(subscribe={"channel": "locked:vip"})
        assert reply["subscribe"]["data"] == {"welcome": 1}
        session = node.session(client)
        assert session is not None
        info = session.subscriptions["locked:vip"].info.chan_info
        assert json.loads(bytes(info)) == {"tier": "gold"}
        assert (await conn.command(subscribe={"channel": "live:no"}))["error"]["code"] == 1403
        reply = await conn.command(subscribe={"channel": "live:bug"})
        assert reply["error"] == {
            "code": 100,
            "message": "internal server error",
            "temporary": True,
        }
        # One command failed, the connection goes on; None left it to the namespace.
        assert "subscribe" in await conn.command(subscribe={"channel": "live:yes"})
        assert (await conn.command(subscribe={"channel": "locked:other"}))["error"]["code"] == 103


async def test_on_publish_transforms_and_refuses(server: RunningServer) -> None:
    node = server.node

    @node.on_connecting
    async def anyone(ctx: ConnectContext) -> Credentials | None:
        return Credentials(user="dan")

    @node.on_publish
    async def moderate(ctx: PublishContext) -> PublishDecision | None:
        text = msgspec.json.decode(ctx.data).get("text", "")
        if "spam" in text:
            raise ProtocolError(1400, "spam")
        if ctx.channel.startswith("chat:"):
            return PublishDecision(data={"text": text, "by": ctx.session.user}, skip_history=True)
        return None

    async with Conn.open(server.url) as conn:
        await conn.command(connect={})
        await conn.command(subscribe={"channel": "chat:room"})
        await conn.command(publish={"channel": "chat:room", "data": {"text": "hello"}})
        push = await conn.wait(lambda m: "pub" in m.get("push", {}))
        assert push["push"]["pub"]["data"] == {"text": "hello", "by": "dan"}
        assert (await node.history("chat:room", limit=-1)).publications == []
        reply = await conn.command(publish={"channel": "chat:room", "data": {"text": "spam!"}})
        assert reply["error"] == {"code": 1400, "message": "spam"}
        # None: the namespace's permissions ("locked" refuses publishers that did not subscribe).
        reply = await conn.command(publish={"channel": "locked:x", "data": {"text": "x"}})
        assert reply["error"]["code"] == 103


async def test_notices_of_unsubscribe_and_disconnect(server: RunningServer) -> None:
    node = server.node
    events: list[tuple[Any, ...]] = []
    done = asyncio.Event()

    @node.on_connecting
    async def anyone(ctx: ConnectContext) -> Credentials | None:
        return Credentials(user="erin")

    @node.on_unsubscribe
    async def left(session: Session, channel: str) -> None:
        events.append(("unsubscribe", channel))

    @node.on_disconnect
    async def gone(session: Session, code: int, reason: str) -> None:
        events.append(("disconnect", code, reason))
        done.set()
        raise RuntimeError("a failing notice is only logged")

    async with Conn.open(server.url) as conn:
        await conn.command(connect={})
        await conn.command(subscribe={"channel": "live:a"})
        await conn.command(subscribe={"channel": "live:b"})
        await conn.command(unsubscribe={"channel": "live:a"})
        await node.disconnect("erin")
        assert (await conn.closed())[0] == 3503
    async with asyncio.timeout(WAIT):
        await done.wait()
    # The connection's end ends its subscriptions (the personal channel's too) first.
    assert events[0] == ("unsubscribe", "live:a")
    assert set(events[1:-1]) == {("unsubscribe", "live:b"), ("unsubscribe", "#erin")}
    assert events[-1] == ("disconnect", 3503, "force disconnect")
    # The client leaving on its own: 3000.
    done.clear()
    async with Conn.open(server.url) as conn:
        await conn.command(connect={})
    async with asyncio.timeout(WAIT):
        await done.wait()
    assert events[-1] == ("disconnect", 3000, "connection closed")


async def test_on_refresh_extends_then_expires(server: RunningServer) -> None:
    node = server.node
    rounds: list[float] = []

    @node.on_connecting
    async def short(ctx: ConnectContext) -> Credentials | None:
        return Credentials(user="fay", expire_at=time.time() + 1)

    @node.on_refresh
    async def refresh(session: Session) -> RefreshDecision | None:
        rounds.append(time.time())
        if len(rounds) == 1:
            return RefreshDecision(expire_at=time.time() + 1, info={"round": 2})
        return RefreshDecision(expired=True)

    async with Conn.open(server.url) as conn:
        reply = await conn.command(connect={})
        assert "expires" not in reply["connect"]
        session = node.session(reply["connect"]["client"])
        assert session is not None
        assert await conn.closed() == (3005, "connection expired")
    assert json.loads(bytes(session.info.conn_info)) == {"round": 2}
    assert len(rounds) == 2 and rounds[1] - rounds[0] >= 0.9
