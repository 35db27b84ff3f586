"""The Centrifugo-compatible HTTP proxies against a real backend on loopback
(:mod:`tests.integration.proxy_kit`): the request bodies and headers it receives, each result
field taking effect, refusals, and a backend that is slow, answers garbage or 500, or is down.
Over WebSocket (both transports) and uni_http_stream."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import httpx
import pytest

from hubbub.config import Settings
from tests.conftest import SECRET, UNIT, RunningServer, suite_settings
from tests.integration.proxy_kit import WAIT, Backend, Behaviour, Conn, serving_backend

pytestmark = pytest.mark.usefixtures("transport")

OPEN = {"allow_subscribe_for_client": True, "allow_publish_for_client": True}


def proxy_settings(url: str, **extra: Any) -> Settings:
    """Every proxy on, pointing at the backend at ``url``."""
    timeout = {"timeout": 0.5 * UNIT}
    return suite_settings(
        client={
            "proxy": {
                "connect": {
                    "enabled": True,
                    "endpoint": f"{url}/connect",
                    "http_headers": ["Cookie", "X-Trace"],
                    "emulated_headers": ["X-Emulated"],
                    "http": {
                        "static_headers": {"X-Static": "s", "X-Trace": "static-loses"},
                        "status_to_code_transforms": [
                            {"status_code": 418, "to_disconnect": {"code": 4418, "reason": "tea"}}
                        ],
                    },
                    **timeout,
                },
                "refresh": {
                    "enabled": True,
                    "endpoint": f"{url}/refresh",
                    "http_headers": ["Cookie"],
                    "include_connection_meta": True,
                    **timeout,
                },
            },
            "personal_channel": False,
        },
        channel={
            "proxy": {
                "subscribe": {
                    "endpoint": f"{url}/subscribe",
                    "http_headers": ["Cookie"],
                    **timeout,
                },
                "publish": {"endpoint": f"{url}/publish", **timeout},
                "sub_refresh": {"endpoint": f"{url}/sub_refresh", **timeout},
            },
            "namespaces": [
                {
                    "name": "px",
                    "subscribe_proxy_enabled": True,
                    "publish_proxy_enabled": True,
                    "sub_refresh_proxy_enabled": True,
                    "history_size": 10,
                    "history_ttl": 300,
                },
                {"name": "named", "subscribe_proxy_enabled": True, "subscribe_proxy_name": "other"},
                {"name": "live", **OPEN},
                {"name": "chat", **OPEN, "presence": True},
            ],
        },
        rpc={
            "proxy": {"endpoint": f"{url}/rpc", **timeout},
            "without_namespace": {"proxy_enabled": True},
            "namespaces": [
                {"name": "app", "proxy_enabled": True, "proxy_name": "other"},
                {"name": "off"},
            ],
        },
        proxies=[{"name": "other", "endpoint": f"{url}/other", **timeout}],
        uni_http_stream={"enabled": True},
        **extra,
    )


@pytest.fixture
async def backend() -> AsyncIterator[Backend]:
    async with serving_backend() as running:
        yield running


@pytest.fixture
async def hub(backend: Backend, start_server: Callable[..., Any]) -> RunningServer:
    server: RunningServer = await start_server(proxy_settings(backend.url))
    return server


COOKIES = {"Cookie": "session=abc123; theme=dark", "X-Trace": "t-1", "Authorization": "no"}


async def test_connect_proxy_credentials_and_request(backend: Backend, hub: RunningServer) -> None:
    expire_at = int(time.time()) + 3600
    backend.answers["/connect"] = {
        "result": {
            "user": "42",
            "expire_at": expire_at,
            "info": {"name": "Ann"},
            "data": {"hello": 1},
            "channels": ["live:news"],
            "subs": {
                "chat:room": {
                    "info": {"role": "mod"},
                    "data": {"welcome": True},
                    "override": {"presence": {"value": False}},
                }
            },
            "meta": {"plan": "pro"},
        }
    }
    async with Conn.open(hub.url, COOKIES) as conn:
        reply = await conn.command(
            connect={
                "name": "js",
                "version": "5.0",
                "data": {"lang": "en"},
                "subs": {"live:wish": {}},
                "headers": {"X-Emulated": "e", "X-Other": "dropped"},
            }
        )
        result = reply["connect"]
        assert result["data"] == {"hello": 1}
        # Refreshed by the refresh proxy on the server: the client is not asked.
        assert "expires" not in result
        assert set(result["subs"]) == {"live:news", "chat:room"}
        assert result["subs"]["chat:room"]["data"] == {"welcome": True}

        [seen] = backend.requests("/connect")
        assert seen.body == {
            "client": result["client"],
            "transport": "websocket",
            "protocol": "json",
            "encoding": "json",
            "name": "js",
            "version": "5.0",
            "data": {"lang": "en"},
            "channels": ["live:wish"],
        }
        assert seen.header("cookie") == ["session=abc123; theme=dark"]
        assert seen.header("x-trace") == ["t-1"]  # the handshake's header beats the static one
        assert seen.header("x-static") == ["s"]
        assert seen.header("x-emulated") == ["e"]
        assert seen.header("x-other") == [] and seen.header("authorization") == []
        assert seen.header("content-type") == ["application/json"]

        session = hub.node.session(result["client"])
        assert session is not None and session.user == "42"
        assert json.loads(bytes(session.meta)) == {"plan": "pro"}
        assert session.expire_at == expire_at
        # The presence override applied to this subscription only.
        assert session.subscriptions["chat:room"].options.presence is False
        # Publications carry the connection info and the subscription's channel info.
        await conn.command(publish={"channel": "chat:room", "data": {"text": "hi"}})
        push = await conn.wait(lambda m: m.get("push", {}).get("channel") == "chat:room")
        info = push["push"]["pub"]["info"]
        assert info == {
            "user": "42",
            "client": result["client"],
            "conn_info": {"name": "Ann"},
            "chan_info": {"role": "mod"},
        }


async def test_connect_with_token_skips_the_proxy(backend: Backend, hub: RunningServer) -> None:
    from hubbub.auth import mint_connection_token

    token = mint_connection_token(SECRET, "7")
    async with Conn.open(hub.url) as conn:
        reply = await conn.command(connect={"token": token})
        assert "connect" in reply
    assert backend.requests("/connect") == []


@pytest.mark.parametrize(
    ("answer", "expect"),
    [
        ({"disconnect": {"code": 4501, "reason": "unauthorized"}}, ("close", 4501, "unauthorized")),
        ({"error": {"code": 1403, "message": "go away"}}, ("error", 1403, False)),
        ({"error": {"code": 1500, "message": "later", "temporary": True}}, ("error", 1500, True)),
        # Both: the disconnect wins (Centrifugo's precedence).
        (
            {"error": {"code": 1403, "message": "x"}, "disconnect": {"code": 4502, "reason": "d"}},
            ("close", 4502, "d"),
        ),
        ({}, ("close", 3501, "bad request: no credentials")),
        (Behaviour(status=418), ("close", 4418, "tea")),
    ],
)
async def test_connect_proxy_refusals(
    backend: Backend, hub: RunningServer, answer: Any, expect: tuple[Any, ...]
) -> None:
    backend.answers["/connect"] = answer
    async with Conn.open(hub.url) as conn:
        await conn.ws.send(json.dumps({"id": 1, "connect": {}}))
        if expect[0] == "close":
            assert await conn.closed() == expect[1:]
        else:
            reply = await conn.wait(lambda m: m.get("id") == 1)
            assert reply["error"]["code"] == expect[1]
            assert reply["error"].get("temporary", False) is expect[2]


FAILURES = {
    "slow": Behaviour(sleep=2 * UNIT, body=b'{"result":{"user":"1"}}'),
    "garbage": Behaviour(body=b"<html>oops</html>"),
    "wrong shape": Behaviour(body=b'{"result":{"user":17}}'),
    "500": Behaviour(status=500, body=b"boom"),
    "bad base64": {"result": {"user": "1", "b64info": "***"}},
}


@pytest.mark.parametrize("failure", [*FAILURES, "down"])
async def test_connect_proxy_failure_is_a_temporary_internal_error(
    backend: Backend, start_server: Callable[..., Any], failure: str
) -> None:
    url = backend.url
    if failure == "down":
        url = "http://127.0.0.1:9"  # discard port: nothing listens
    else:
        backend.answers["/connect"] = FAILURES[failure]
    hub = await start_server(proxy_settings(url))
    async with Conn.open(hub.url) as conn:
        started = time.monotonic()
        reply = await conn.command(connect={})
        assert reply["error"] == {
            "code": 100,
            "message": "internal server error",
            "temporary": True,
        }
        assert time.monotonic() - started < 2 * UNIT  # bounded by the proxy's timeout
    async with httpx.AsyncClient() as http:
        metrics = (await http.get(f"{hub.http}/metrics")).text
    assert 'hubbub_proxy_request_duration_seconds_count{kind="connect"}' in metrics
    if failure != "bad base64":
        assert 'hubbub_proxy_errors_total{kind="connect",reason=' in metrics


async def connected(conn: Conn, backend: Backend, user: str = "42", **result: Any) -> str:
    backend.answers["/connect"] = {"result": {"user": user, **result}}
    reply = await conn.command(connect={})
    client: str = reply["connect"]["client"]
    return client


async def test_subscribe_proxy(backend: Backend, hub: RunningServer) -> None:
    def decide(body: dict[str, Any]) -> Any:
        if body["channel"] == "px:denied":
            return {"error": {"code": 1403, "message": "permission denied"}}
        if body["channel"] == "px:empty":
            return {}
        return {
            "result": {
                "info": {"role": "mod"},
                "data": {"seen": body.get("data")},
                "override": {"join_leave": {"value": True}},
            }
        }

    backend.answers["/subscribe"] = decide
    async with Conn.open(hub.url, COOKIES) as conn:
        client = await connected(conn, backend)
        reply = await conn.command(subscribe={"channel": "px:a", "data": {"k": 1}})
        assert reply["subscribe"]["data"] == {"seen": {"k": 1}}
        [seen] = backend.requests("/subscribe")
        assert seen.body == {
            "client": client,
            "transport": "websocket",
            "protocol": "json",
            "encoding": "json",
            "user": "42",
            "channel": "px:a",
            "data": {"k": 1},
        }
        # The handshake's cookie is kept for the proxies of later commands.
        assert seen.header("cookie") == ["session=abc123; theme=dark"]
        session = hub.node.session(client)
        assert session is not None
        sub = session.subscriptions["px:a"]
        assert sub.options.join_leave is True
        assert json.loads(bytes(sub.info.chan_info)) == {"role": "mod"}
        # {} allows with the namespace's defaults (px forbids client subscriptions by itself).
        assert "subscribe" in await conn.command(subscribe={"channel": "px:empty"})
        reply = await conn.command(subscribe={"channel": "px:denied"})
        assert reply["error"] == {"code": 1403, "message": "permission denied"}
        # A namespace without the flag is not proxied; a named proxy goes to its endpoint.
        assert "subscribe" in await conn.command(subscribe={"channel": "live:x"})
        backend.answers["/other"] = {"result": {}}
        assert "subscribe" in await conn.command(subscribe={"channel": "named:x"})
        assert [s.body["channel"] for s in backend.requests("/other")] == ["named:x"]
        assert len(backend.requests("/subscribe")) == 3


async def test_publish_proxy_rewrites_and_refuses(backend: Backend, hub: RunningServer) -> None:
    def decide(body: dict[str, Any]) -> Any:
        if body["data"].get("bad"):
            return {"error": {"code": 1400, "message": "invalid"}}
        if body["data"].get("keep"):
            return {}
        return {"result": {"data": {"text": body["data"]["text"].upper()}, "skip_history": True}}

    backend.answers["/publish"] = decide
    backend.answers["/subscribe"] = {"result": {}}
    async with Conn.open(hub.url) as conn:
        await connected(conn, backend)
        await conn.command(subscribe={"channel": "px:room"})
        assert "publish" in await conn.command(
            publish={"channel": "px:room", "data": {"text": "hi"}}
        )
        push = await conn.wait(lambda m: "pub" in m.get("push", {}))
        assert push["push"]["pub"]["data"] == {"text": "HI"}
        history = await hub.node.history("px:room", limit=-1)
        assert history.publications == []  # skip_history
        assert "publish" in await conn.command(publish={"channel": "px:room", "data": {"keep": 1}})
        push = await conn.wait(lambda m: "pub" in m.get("push", {}))
        assert push["push"]["pub"]["data"] == {"keep": 1}
        assert len((await hub.node.history("px:room", limit=-1)).publications) == 1
        reply = await conn.command(publish={"channel": "px:room", "data": {"bad": 1}})
        assert reply["error"] == {"code": 1400, "message": "invalid"}
        seen = backend.requests("/publish")[0]
        assert seen.body["channel"] == "px:room" and seen.body["user"] == "42"


async def test_rpc_proxy_routing(backend: Backend, hub: RunningServer) -> None:
    backend.answers["/rpc"] = lambda body: {"result": {"data": {"echo": body.get("data")}}}
    backend.answers["/other"] = {"error": {"code": 1001, "message": "nope", "temporary": True}}
    async with Conn.open(hub.url) as conn:
        await connected(conn, backend)
        reply = await conn.command(rpc={"method": "whoami", "data": {"x": 1}})
        assert reply["rpc"] == {"data": {"echo": {"x": 1}}}
        assert backend.requests("/rpc")[0].body["method"] == "whoami"
        reply = await conn.command(rpc={"method": "app:price"})
        assert reply["error"] == {"code": 1001, "message": "nope", "temporary": True}
        reply = await conn.command(rpc={"method": "unknown:x"})
        assert reply["error"]["code"] == 104
        reply = await conn.command(rpc={"method": "off:x"})
        assert reply["error"]["code"] == 108


async def test_refresh_proxy_extends_then_expires(backend: Backend, hub: RunningServer) -> None:
    answers = [
        {"result": {"expire_at": int(time.time()) + 2, "info": {"v": 2}}},
        {"result": {"expired": True}},
    ]
    backend.answers["/refresh"] = lambda body: answers.pop(0)
    async with Conn.open(hub.url, COOKIES) as conn:
        client = await connected(conn, backend, expire_at=int(time.time()) + 1, meta={"m": 1})
        session = hub.node.session(client)
        assert session is not None
        await backend.wait_for("/refresh")
        assert await conn.closed() == (3005, "connection expired")
    first = backend.requests("/refresh")[0]
    assert first.body == {
        "client": client,
        "transport": "websocket",
        "protocol": "json",
        "encoding": "json",
        "user": "42",
        "meta": {"m": 1},
    }
    assert first.header("cookie") == ["session=abc123; theme=dark"]
    assert json.loads(bytes(session.info.conn_info)) == {"v": 2}
    assert len(backend.requests("/refresh")) == 2


async def test_refresh_proxy_down_keeps_the_connection(
    backend: Backend, hub: RunningServer
) -> None:
    backend.answers["/refresh"] = Behaviour(status=503)
    async with Conn.open(hub.url) as conn:
        client = await connected(conn, backend, expire_at=int(time.time()) + 1)
        await backend.wait_for("/refresh")
        await asyncio.sleep(0.2)
        session = hub.node.session(client)
        assert session is not None and not session.transport.closing
        assert session.expire_at is not None and session.expire_at > time.time() + 50
        backend.answers["/rpc"] = {"result": {}}
        assert (await conn.command(rpc={"method": "whoami"}))["rpc"] == {}


async def test_sub_refresh_proxy(backend: Backend, hub: RunningServer) -> None:
    backend.answers["/subscribe"] = {"result": {"expire_at": int(time.time()) + 1}}
    backend.answers["/sub_refresh"] = {"result": {"expired": True}}
    async with Conn.open(hub.url) as conn:
        client = await connected(conn, backend)
        reply = await conn.command(subscribe={"channel": "px:timed"})
        assert "expires" not in reply["subscribe"]  # refreshed on the server
        push = await conn.wait(lambda m: "unsubscribe" in m.get("push", {}))
        assert push["push"] == {
            "channel": "px:timed",
            "unsubscribe": {"code": 2501, "reason": "subscription expired"},
        }
    [seen] = backend.requests("/sub_refresh")
    assert seen.body == {
        "client": client,
        "transport": "websocket",
        "protocol": "json",
        "encoding": "json",
        "user": "42",
        "channel": "px:timed",
    }


async def test_uni_http_stream_connects_through_the_proxy(
    backend: Backend, hub: RunningServer
) -> None:
    backend.answers["/connect"] = {"result": {"user": "9", "channels": ["live:feed"]}}
    url = f"{hub.http}/connection/uni_http_stream"
    async with (
        httpx.AsyncClient(timeout=WAIT) as http,
        http.stream(
            "POST", url, content=b'{"name":"curl"}', headers={"Cookie": "session=uni"}
        ) as response,
    ):
        lines = response.aiter_lines()
        first = json.loads(await anext(lines))
        assert first["connect"]["subs"].keys() == {"live:feed"}
        await hub.node.publish("live:feed", {"n": 1})
        pub = json.loads(await anext(lines))
        assert pub == {"channel": "live:feed", "pub": {"data": {"n": 1}}}
    [seen] = backend.requests("/connect")
    assert seen.body["transport"] == "uni_http_stream"
    assert seen.body["name"] == "curl"
    assert seen.header("cookie") == ["session=uni"]


async def test_uni_http_stream_backend_down_is_3004(start_server: Callable[..., Any]) -> None:
    hub = await start_server(proxy_settings("http://127.0.0.1:9"))
    url = f"{hub.http}/connection/uni_http_stream"
    async with httpx.AsyncClient(timeout=WAIT) as http:
        response = await http.post(url, content=b"{}")
    assert json.loads(response.text.strip()) == {
        "disconnect": {"code": 3004, "reason": "internal server error"}
    }
