"""The unidirectional transports with the clients they are for: a plain WebSocket
(``websockets``) on uni_websocket, the real ``curl -N`` on uni_http_stream and uni_sse, raw
HTTP (httpx) for the statuses. No SDK: every message is a bare push."""

from __future__ import annotations

import asyncio
import json
import shutil
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any
from urllib.parse import quote

import httpx
import pytest
import websockets
from websockets.asyncio.client import ClientConnection

from hubbub.auth import mint_connection_token
from tests.conftest import API_KEY, SECRET, UNIT, RunningServer, suite_settings

# Both WebSocket transports: uni_websocket is served through ASGI under either, and the
# streams through the HTTP protocol each of them configures.
pytestmark = pytest.mark.usefixtures("transport")

WAIT = 5 * UNIT
_ON = {"enabled": True}


def uni_settings(**overrides: Any) -> Any:
    """The suite's settings with the three uni transports on."""
    on = {"uni_websocket": _ON, "uni_sse": _ON, "uni_http_stream": _ON}
    return suite_settings(**{**on, **overrides})


@pytest.fixture
async def uni(start_server: Any) -> RunningServer:
    running: RunningServer = await start_server(uni_settings())
    return running


def token(user: str, **claims: Any) -> str:
    return mint_connection_token(SECRET, user, **claims)


# ---------------------------------------------------------------------------------------------
# uni_websocket: a plain WebSocket client


def ws_url(server: RunningServer, request: object | None = None) -> str:
    url = f"ws://127.0.0.1:{server.port}/connection/uni_websocket"
    if request is not None:
        url += "?cf_connect=" + quote(json.dumps(request))
    return url


async def next_push(ws: ClientConnection, *, skip_pings: bool = True) -> dict[str, Any]:
    """The next push of a uni_websocket connection (one JSON document per message)."""
    while True:
        message = await asyncio.wait_for(ws.recv(), WAIT)
        assert isinstance(message, str)
        push: dict[str, Any] = json.loads(message)
        if push or not skip_pings:
            return push


async def test_uni_websocket_connect_request_in_the_query(uni: RunningServer) -> None:
    async with websockets.connect(ws_url(uni, {"token": token("alice")})) as ws:
        connect = (await next_push(ws))["connect"]
        assert connect["client"] and connect["session"] and connect["ping"] == 25
        assert "pong" not in connect and "node" not in connect
        assert set(connect["subs"]) == {"#alice"}  # the personal channel
        assert uni.node.counters["transport.uni_websocket"] == 1
        await uni.node.publish("#alice", {"n": 1})
        assert await next_push(ws) == {"channel": "#alice", "pub": {"data": {"n": 1}, "offset": 1}}


async def test_uni_websocket_connect_request_as_first_message(uni: RunningServer) -> None:
    async with websockets.connect(ws_url(uni)) as ws:
        # live:news may be subscribed by any client; locked:x and $news are not: ignored.
        subs = {"live:news": {}, "locked:x": {}, "$news": {}}
        await ws.send(json.dumps({"token": token("bob"), "subs": subs}))
        connect = (await next_push(ws))["connect"]
        assert set(connect["subs"]) == {"#bob", "live:news"}
        await uni.node.publish("live:news", "hello")
        assert await next_push(ws) == {"channel": "live:news", "pub": {"data": "hello"}}


async def test_uni_websocket_pings_expect_no_pong(start_server: Any) -> None:
    running = await start_server(uni_settings(client={"ping_interval": 1, "pong_timeout": 0.5}))
    async with websockets.connect(ws_url(running, {"token": token("alice")})) as ws:
        await next_push(ws)
        # Three pings, never answered: the connection stays (a bidirectional one would be
        # closed with 3012 after the first).
        for _ in range(3):
            assert await next_push(ws, skip_pings=False) == {}
        await running.node.publish("#alice", "still here")
        assert (await next_push(ws))["pub"]["data"] == "still here"


async def test_uni_websocket_disconnect_push_then_close_frame(uni: RunningServer) -> None:
    async with websockets.connect(ws_url(uni, {"token": token("alice")})) as ws:
        await next_push(ws)
        await uni.node.disconnect("alice")
        assert await next_push(ws) == {"disconnect": {"code": 3503, "reason": "force disconnect"}}
        with pytest.raises(websockets.ConnectionClosed) as closed:
            await asyncio.wait_for(ws.recv(), WAIT)
        assert closed.value.rcvd is not None and closed.value.rcvd.code == 3503


async def test_uni_websocket_server_side_pushes(uni: RunningServer) -> None:
    async with websockets.connect(ws_url(uni, {"token": token("alice")})) as ws:
        await next_push(ws)
        await uni.node.subscribe("alice", "live:later")
        assert await next_push(ws) == {"channel": "live:later", "subscribe": {}}
        await uni.node.send_message("alice", {"hi": 1})
        assert await next_push(ws) == {"message": {"data": {"hi": 1}}}
        expire_at = uni.node.clock.time() + 600
        await uni.node.refresh("alice", expire_at=expire_at)
        refresh = (await next_push(ws))["refresh"]
        assert refresh["expires"] is True and 590 <= refresh["ttl"] <= 600
        await uni.node.unsubscribe("alice", "live:later")
        push = await next_push(ws)
        assert push == {
            "channel": "live:later",
            "unsubscribe": {"code": 2000, "reason": "server unsubscribe"},
        }


async def test_uni_websocket_invalid_cf_connect_is_400(uni: RunningServer) -> None:
    with pytest.raises(websockets.InvalidStatus) as refused:
        await websockets.connect(ws_url(uni) + "?cf_connect=%7Bnot-json")
    assert refused.value.response.status_code == 400


async def test_uni_websocket_invalid_first_message_closes_3501(uni: RunningServer) -> None:
    async with websockets.connect(ws_url(uni)) as ws:
        await ws.send("{not json")
        assert (await next_push(ws))["disconnect"]["code"] == 3501
        with pytest.raises(websockets.ConnectionClosed) as closed:
            await asyncio.wait_for(ws.recv(), WAIT)
        assert closed.value.rcvd is not None and closed.value.rcvd.code == 3501
    assert uni.node.counters["bad_input.3501"] >= 1


async def test_uni_websocket_oversized_first_message_closes(start_server: Any) -> None:
    running = await start_server(
        uni_settings(uni_websocket={"enabled": True, "message_size_limit": 256})
    )
    async with websockets.connect(ws_url(running)) as ws:
        await ws.send(json.dumps({"token": token("alice"), "data": "x" * 300}))
        assert (await next_push(ws))["disconnect"]["code"] == 1009


async def test_uni_websocket_bad_token_is_a_terminal_disconnect(uni: RunningServer) -> None:
    async with websockets.connect(ws_url(uni, {"token": "not-a-jwt"})) as ws:
        push = await next_push(ws)
        assert push == {"disconnect": {"code": 3500, "reason": "invalid token"}}


async def test_uni_transports_are_off_unless_enabled(start_server: Any) -> None:
    running = await start_server(suite_settings())
    with pytest.raises(websockets.InvalidStatus):
        await websockets.connect(ws_url(running))
    async with httpx.AsyncClient(base_url=running.http, timeout=WAIT) as http:
        response = await http.post("/connection/uni_http_stream", content=b"{}")
        assert response.status_code == 404


# ---------------------------------------------------------------------------------------------
# uni_http_stream and uni_sse with the real curl


class Curl:
    """``curl -N`` reading one stream: its pushes, line by line, as they come."""

    def __init__(self, proc: asyncio.subprocess.Process, sse: bool) -> None:
        self.proc = proc
        self.sse = sse

    async def push(self, *, skip_pings: bool = True) -> dict[str, Any]:
        """The next push; an AssertionError at the end of the stream."""
        assert self.proc.stdout is not None
        while True:
            line = await asyncio.wait_for(self.proc.stdout.readline(), WAIT)
            assert line, "the stream ended"
            text = line.decode().strip()
            if self.sse:
                if not text.startswith("data: "):
                    continue  # the blank line between events, a keep-alive comment
                text = text[len("data: ") :]
            elif not text:
                continue
            push: dict[str, Any] = json.loads(text)
            if push or not skip_pings:
                return push

    async def ended(self) -> bool:
        """Whether the stream ends (curl exits, successfully) with nothing more."""
        assert self.proc.stdout is not None
        rest = await asyncio.wait_for(self.proc.stdout.read(), WAIT)
        await asyncio.wait_for(self.proc.wait(), WAIT)
        return rest.strip() == b"" and self.proc.returncode == 0


@asynccontextmanager
async def curl(server: RunningServer, path: str, *args: str) -> AsyncIterator[Curl]:
    binary = shutil.which("curl")
    assert binary, "these tests run the real curl"
    proc = await asyncio.create_subprocess_exec(
        binary, "-sN", "--max-time", str(int(20 * UNIT)), *args, server.http + path,
        stdout=asyncio.subprocess.PIPE,
    )  # fmt: skip
    try:
        yield Curl(proc, sse="uni_sse" in path)
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()


def post(request: object) -> tuple[str, ...]:
    return ("-X", "POST", "-H", "Content-Type: application/json", "-d", json.dumps(request))


async def api_publish(server: RunningServer, channel: str, data: object) -> dict[str, Any]:
    async with httpx.AsyncClient(base_url=server.http, timeout=WAIT) as http:
        response = await http.post(
            "/api/publish",
            json={"channel": channel, "data": data},
            headers={"X-API-Key": API_KEY},
        )
        response.raise_for_status()
        result: dict[str, Any] = response.json()["result"]
        return result


async def test_curl_on_uni_http_stream(uni: RunningServer) -> None:
    request = {"token": token("alice"), "subs": {"news": {}}}
    async with curl(uni, "/connection/uni_http_stream", *post(request)) as stream:
        connect = (await stream.push())["connect"]
        assert set(connect["subs"]) == {"#alice", "news"} and connect["session"]
        await api_publish(uni, "news", {"text": "hi"})
        assert await stream.push() == {
            "channel": "news",
            "pub": {"data": {"text": "hi"}, "offset": 1},
        }
        await api_publish(uni, "#alice", "personal")
        push = await stream.push()
        assert push["channel"] == "#alice" and push["pub"]["data"] == "personal"


async def test_curl_on_uni_sse_get_and_post(uni: RunningServer) -> None:
    query = "?cf_connect=" + quote(json.dumps({"token": token("alice")}))
    async with curl(uni, "/connection/uni_sse" + query) as stream:
        assert "#alice" in (await stream.push())["connect"]["subs"]
        await api_publish(uni, "#alice", {"n": 1})
        assert (await stream.push())["pub"]["data"] == {"n": 1}
    async with curl(uni, "/connection/uni_sse", *post({"token": token("bob")})) as stream:
        assert "#bob" in (await stream.push())["connect"]["subs"]


async def test_uni_sse_without_cf_connect_is_an_empty_request(uni: RunningServer) -> None:
    # {} has no token, and the suite allows no anonymous connection: the disconnect push.
    async with curl(uni, "/connection/uni_sse") as stream:
        assert (await stream.push())["disconnect"]["code"] == 3501
        assert await stream.ended()


async def test_curl_recovers_through_subs_after_a_cut(uni: RunningServer) -> None:
    request: dict[str, Any] = {"token": token("alice"), "subs": {"news": {}}}
    async with curl(uni, "/connection/uni_http_stream", *post(request)) as stream:
        epoch = (await stream.push())["connect"]["subs"]["news"]["epoch"]
        await api_publish(uni, "news", 1)
        assert (await stream.push())["pub"]["offset"] == 1
    # Cut; meanwhile two more publications.
    await api_publish(uni, "news", 2)
    await api_publish(uni, "news", 3)
    request["subs"] = {"news": {"recover": True, "offset": 1, "epoch": epoch}}
    async with curl(uni, "/connection/uni_http_stream", *post(request)) as stream:
        news = (await stream.push())["connect"]["subs"]["news"]
        assert news["recovered"] is True and news["was_recovering"] is True
        assert [p["data"] for p in news["publications"]] == [2, 3]
        await api_publish(uni, "news", 4)
        assert (await stream.push())["pub"] == {"data": 4, "offset": 4}
    # A position of another epoch cannot be recovered: said so, with the stream's top.
    request["subs"] = {"news": {"recover": True, "offset": 1, "epoch": "other"}}
    async with curl(uni, "/connection/uni_http_stream", *post(request)) as stream:
        news = (await stream.push())["connect"]["subs"]["news"]
        assert not news.get("recovered") and news["offset"] == 4


async def test_curl_bad_token_gets_the_disconnect_push_and_the_end(uni: RunningServer) -> None:
    for path in ("/connection/uni_http_stream", "/connection/uni_sse"):
        async with curl(uni, path, *post({"token": "bad"})) as stream:
            assert await stream.push() == {"disconnect": {"code": 3500, "reason": "invalid token"}}
            assert await stream.ended()


async def test_connect_errors_become_disconnects(uni: RunningServer) -> None:
    expired = token("alice", ttl=-10)
    async with curl(uni, "/connection/uni_http_stream", *post({"token": expired})) as stream:
        assert (await stream.push())["disconnect"]["code"] == 3005  # 109/110 → 3005
    unknown = {"token": token("alice"), "subs": {"nowhere:x": {}}}
    async with curl(uni, "/connection/uni_http_stream", *post(unknown)) as stream:
        assert (await stream.push())["disconnect"]["code"] == 3501


async def test_shutdown_ends_streams_with_the_disconnect_push(uni: RunningServer) -> None:
    async with curl(uni, "/connection/uni_http_stream", *post({"token": token("alice")})) as stream:
        await stream.push()
        await uni.node.drain(0)
        assert (await stream.push())["disconnect"]["code"] == 3001
        assert await stream.ended()


# ---------------------------------------------------------------------------------------------
# Bad input and limits (raw HTTP)


async def test_bad_requests_get_their_status(start_server: Any) -> None:
    running = await start_server(
        uni_settings(
            uni_http_stream={"enabled": True, "max_request_body_size": 1024},
            uni_sse={"enabled": True, "max_request_body_size": 1024},
        )
    )
    async with httpx.AsyncClient(base_url=running.http, timeout=WAIT) as http:
        for path in ("/connection/uni_http_stream", "/connection/uni_sse"):
            big = json.dumps({"data": "x" * 2000})
            assert (await http.post(path, content=big)).status_code == 413
            assert (await http.post(path, content=b"{nope")).status_code == 400
            assert (await http.put(path, content=b"{}")).status_code == 405
        stream = "/connection/uni_http_stream"
        assert (await http.post(stream, content=b"")).status_code == 400
        assert (await http.get(stream)).status_code == 405
        assert (await http.get("/connection/uni_sse?cf_connect=%7Bnope")).status_code == 400
        assert (await http.options("/connection/uni_sse")).status_code == 405
    assert running.node.counters["bad_input.413"] == 2
    assert running.node.counters["bad_input.400"] == 4


async def test_cors_and_preflight(start_server: Any) -> None:
    running = await start_server(uni_settings(client={"allowed_origins": ["https://app.example"]}))
    path = "/connection/uni_http_stream"
    async with httpx.AsyncClient(base_url=running.http, timeout=WAIT) as http:
        asked = {"Origin": "https://app.example", "Access-Control-Request-Headers": "content-type"}
        response = await http.options(path, headers=asked)
        assert response.status_code == 204
        assert response.headers["access-control-allow-origin"] == "https://app.example"
        assert response.headers["access-control-allow-credentials"] == "true"
        assert response.headers["access-control-allow-headers"] == "content-type"
        assert response.headers["access-control-allow-methods"] == "POST, OPTIONS"
        assert response.headers["access-control-max-age"] == "300"
        other = await http.options(path, headers={"Origin": "https://evil.example"})
        assert "access-control-allow-origin" not in other.headers
        request = json.dumps({"token": token("alice")})
        async with http.stream(
            "POST", path, content=request, headers={"Origin": "https://app.example"}
        ) as response:
            assert response.status_code == 200
            assert response.headers["access-control-allow-origin"] == "https://app.example"
            assert response.headers["content-type"] == "text/plain; charset=utf-8"
            first = await asyncio.wait_for(anext(response.aiter_lines()), WAIT)
            assert "connect" in json.loads(first)


async def test_a_flood_of_connects_is_bounded_by_the_connection_limits(start_server: Any) -> None:
    running = await start_server(uni_settings(limits={"connections_per_ip": 5}))
    request = json.dumps({"token": token("alice")})
    path = "/connection/uni_http_stream"
    async with httpx.AsyncClient(base_url=running.http, timeout=WAIT) as http:
        streams = []
        try:
            for _ in range(5):
                cm = http.stream("POST", path, content=request)
                response = await cm.__aenter__()
                streams.append(cm)
                assert response.status_code == 200
            refused = await http.post(path, content=request)
            assert refused.status_code == 503 and "connection limit" in refused.text
            with pytest.raises(websockets.InvalidStatus) as ws_refused:
                await websockets.connect(ws_url(running, {"token": token("alice")}))
            assert ws_refused.value.response.status_code == 503
        finally:
            for cm in streams:
                await cm.__aexit__(None, None, None)
    # The streams that ended gave their places back.
    for _ in range(int(100 * UNIT)):
        if running.node.admission.connections == 0:
            break
        await asyncio.sleep(0.05)
    assert running.node.admission.connections == 0


async def test_a_quiet_stream_outlives_the_header_deadline(start_server: Any) -> None:
    # The request's header deadline must not cut the response streaming after it; the SSE
    # keep-alive comments flow meanwhile.
    running = await start_server(
        uni_settings(limits={"header_timeout": 0.3}, sse={"keepalive_interval": 0.2})
    )
    query = "?cf_connect=" + quote(json.dumps({"token": token("alice")}))
    async with curl(running, "/connection/uni_sse" + query) as stream:
        await stream.push()
        assert stream.proc.stdout is not None
        comments = 0
        while comments < 3:
            line = await asyncio.wait_for(stream.proc.stdout.readline(), WAIT)
            assert line, "the stream ended"
            comments += line == b":\n"
        await running.node.publish("#alice", "after")
        assert (await stream.push())["pub"]["data"] == "after"
