"""Bidirectional emulation over raw HTTP on a loopback port: ``/connection/http_stream``,
``/connection/sse`` and ``/emulation`` (PROTOCOL-EXTENSIONS 1), read with httpx.

The module runs on both server transports: the streams are plain HTTP responses in either, and
the native transport's HTTP path must not get in their way.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest

from hubbub import control
from hubbub.auth import mint_connection_token
from hubbub.protocol.messages import Reply
from tests.conftest import SECRET, UNIT, RunningServer, suite_settings
from tests.integration.emulation_kit import EmulationClient, Stream

pytestmark = pytest.mark.usefixtures("transport")


def token(user: str = "alice") -> str:
    return mint_connection_token(SECRET, user)


@pytest.fixture
async def emu(server: RunningServer) -> AsyncIterator[EmulationClient]:
    async with httpx.AsyncClient(timeout=10 * UNIT) as http:
        yield EmulationClient(server.http, http)


async def wait_until(condition: Any, what: str) -> None:
    for _ in range(int(200 * UNIT)):
        if condition():
            return
        await asyncio.sleep(0.025)
    raise AssertionError(f"timed out waiting for {what}")


@pytest.mark.parametrize("kind", ["json", "sse"])
async def test_connect_subscribe_publish(
    server: RunningServer, emu: EmulationClient, kind: str
) -> None:
    async with emu.open({"token": token()}, kind=kind) as stream:
        assert stream.response.status_code == 200
        headers = stream.response.headers
        assert headers["cache-control"] == "private, no-cache, no-store, must-revalidate, max-age=0"
        assert headers["pragma"] == "no-cache" and headers["expire"] == "0"
        assert headers["x-accel-buffering"] == "no"
        if kind == "sse":
            assert headers["content-type"] == "text/event-stream; charset=utf-8"
        else:
            assert headers["content-type"] == "text/plain; charset=utf-8"
        result = await emu.connected(stream)
        assert result["node"] == server.node.uid and result["session"]
        assert result["ping"] == 25 and result["pong"] is True
        assert server.node.index.streams[result["session"]].client_id == result["client"]
        if kind == "sse":
            assert stream.raw.startswith(b"\r\ndata: {")
        answer = await emu.emulate(
            stream,
            {"subscribe": {"channel": "news"}, "id": 2},
            {"presence": {"channel": "news"}, "id": 3},
        )
        assert answer.status_code == 204 and answer.content == b""
        assert (await stream.next())["id"] == 2
        presence = await stream.next()
        assert presence["id"] == 3 and result["client"] in presence["presence"]["presence"]
        await server.node.publish("news", {"text": "hello"})
        push = await stream.next_non_ping()
        assert push == {
            "push": {"channel": "news", "pub": {"data": {"text": "hello"}, "offset": 1}}
        }
        # A client's own publish, through /emulation, comes back on the stream.
        await emu.emulate(stream, {"publish": {"channel": "news", "data": {"n": 2}}, "id": 4})
        replies = [await stream.next_non_ping(), await stream.next_non_ping()]
        assert {"id": 4, "publish": {}} in replies
    assert server.node.counters[f"transport.{'sse' if kind == 'sse' else 'http_stream'}"] == 1


async def test_sse_post_and_form_encoded_connect(
    server: RunningServer, emu: EmulationClient
) -> None:
    async with emu.open({"token": token()}, kind="sse", method="POST") as stream:
        assert (await emu.connected(stream))["session"]
    # EventSource URLs are form-encoded: a space may come as "+".
    connect = json.dumps({"connect": {"token": token(), "name": "a b"}, "id": 1})
    url = f"{server.http}/connection/sse?cf_connect=" + connect.replace(" ", "+")
    async with emu.http.stream("GET", url) as response:
        stream = Stream(response, "sse")
        assert (await emu.connected(stream))["client"]
        session = server.node.index.streams[stream.connect["session"]]
        assert session.name == "a b"


async def test_pings_pongs_and_no_pong(start_server: Any) -> None:
    server = await start_server(suite_settings(client={"ping_interval": 1, "pong_timeout": 0.5}))
    async with httpx.AsyncClient(timeout=10 * UNIT) as http:
        emu = EmulationClient(server.http, http)
        async with emu.open({"token": token()}) as stream:
            await emu.connected(stream)
            for _ in range(2):
                assert await stream.next() == {}
                assert (await emu.emulate(stream, raw="{}")).status_code == 204
            # Silence: the server gives up on the client.
            assert await stream.next() == {}
            assert await stream.next() == {
                "push": {"disconnect": {"code": 3012, "reason": "no pong"}}
            }
            await stream.end()
        await wait_until(lambda: not server.node.index.sessions, "the session to go")


async def test_emulation_statuses(server: RunningServer, emu: EmulationClient) -> None:
    url = server.http + "/emulation"
    async with emu.open({"token": token()}) as stream:
        result = await emu.connected(stream)
        session, node = result["session"], result["node"]
        # Unknown session on this node: 204, nothing happens.
        answer = await emu.http.post(url, json={"session": "nope", "node": node, "data": "{}"})
        assert answer.status_code == 204
        # data not a JSON string for a JSON session: 204, the session untouched.
        answer = await emu.http.post(url, json={"session": session, "node": node, "data": {"a": 1}})
        assert answer.status_code == 204
        # Not an emulation request: 400.
        for body in (b"not json", b"[1,2]"):
            answer = await emu.http.post(url, content=body)
            assert answer.status_code == 400
        answer = await emu.http.post(
            url, content=b"\xff\xff", headers={"content-type": "application/octet-stream"}
        )
        assert answer.status_code == 400
        # A node that is neither this one nor a live peer: 404.
        answer = await emu.http.post(url, json={"session": session, "node": "x", "data": "{}"})
        assert answer.status_code == 404
        # Over the body limit: 413.
        big = "x" * 70000
        answer = await emu.http.post(url, json={"session": session, "node": node, "data": big})
        assert answer.status_code == 413
        # Other methods: 405; OPTIONS: the preflight.
        assert (await emu.http.get(url)).status_code == 405
        assert (await emu.http.put(url, content=b"{}")).status_code == 405
        assert (await emu.http.options(url)).status_code == 204
        # Still connected: the next command is answered.
        await emu.emulate(stream, {"presence_stats": {"channel": "news"}, "id": 2})
        assert (await stream.next_non_ping())["id"] == 2
        # Empty data: the session is closed with 3501, as an empty WebSocket frame.
        assert (await emu.emulate(stream, raw="")).status_code == 204
        bye = await stream.next_non_ping()
        assert bye["push"]["disconnect"]["code"] == 3501
        await stream.end()
    assert server.node.counters["bad_input.400"] == 3
    assert server.node.counters["bad_input.413"] == 1


async def test_emulation_to_a_peer_that_does_not_answer(start_server: Any) -> None:
    server = await start_server(suite_settings(emulation={"timeout": 0.3}))
    # A peer announces itself (what the engine would deliver), then never answers.
    peer = control.NodeAnnouncement("peer-uid", "peer", "0", 0, 0, 0, 0, 0)
    server.node.cluster.handle_control(control.encode(peer))
    async with httpx.AsyncClient(timeout=10 * UNIT) as http:
        answer = await http.post(
            server.http + "/emulation", json={"session": "s", "node": "peer-uid", "data": "{}"}
        )
    assert answer.status_code == 500
    assert server.node.counters["emulation.route_failed"] == 1


async def test_stream_endpoint_refusals(server: RunningServer, emu: EmulationClient) -> None:
    http = emu.http
    stream_url, sse_url = server.http + "/connection/http_stream", server.http + "/connection/sse"
    assert (await http.get(stream_url)).status_code == 405
    preflight = await http.options(
        stream_url,
        headers={
            "origin": f"http://127.0.0.1:{server.port}",
            "access-control-request-method": "POST",
            "access-control-request-headers": "content-type",
        },
    )
    assert preflight.status_code == 204
    assert preflight.headers["access-control-allow-methods"] == "POST, OPTIONS"
    assert preflight.headers["access-control-max-age"] == "300"
    assert preflight.headers["access-control-allow-headers"] == "content-type"
    assert (await http.options(sse_url)).status_code == 405
    assert (await http.put(sse_url)).status_code == 405
    assert (await http.get(sse_url)).status_code == 400  # no cf_connect
    assert (await http.post(stream_url, content=b"x" * 70000)).status_code == 413
    assert (await http.post(sse_url, content=b"x" * 70000)).status_code == 413
    # An empty or undecodable connect: 200, then the disconnect in the stream.
    for body in (b"", b"{nope"):
        async with emu.open(body=body) as stream:
            bye = await stream.next()
            assert bye["push"]["disconnect"]["code"] == 3501
            assert bye["push"]["disconnect"]["reason"].startswith("bad request")
            await stream.end()
    # A first command that is not a connect.
    async with emu.open(body=b'{"subscribe":{"channel":"news"},"id":1}') as stream:
        assert (await stream.next())["push"]["disconnect"]["code"] == 3501
    assert not server.node.index.sessions


async def test_cors(start_server: Any) -> None:
    allowed = "https://app.example.com"
    server = await start_server(suite_settings(client={"allowed_origins": [allowed]}))
    async with httpx.AsyncClient(timeout=10 * UNIT) as http:
        emu = EmulationClient(server.http, http)
        async with emu.open({"token": token()}, headers={"origin": allowed}) as stream:
            assert stream.response.headers["access-control-allow-origin"] == allowed
            assert stream.response.headers["access-control-allow-credentials"] == "true"
            await emu.connected(stream)
            request = {**stream.connect, "data": "{}"}
            answer = await http.post(
                server.http + "/emulation", json=request, headers={"origin": allowed}
            )
            assert answer.headers["access-control-allow-origin"] == allowed
        evil = {"origin": "https://evil.example.com"}
        async with emu.open({"token": token()}, headers=evil) as stream:
            assert stream.response.status_code == 403
            assert "access-control-allow-origin" not in stream.response.headers
        answer = await http.post(server.http + "/emulation", json={}, headers=evil)
        assert answer.status_code == 403
        assert server.node.counters["handshake.origin_refused"] == 2


async def test_protobuf_stream(server: RunningServer, emu: EmulationClient) -> None:
    async with emu.open({"token": token()}, kind="protobuf") as stream:
        assert stream.response.headers["content-type"] == "application/octet-stream"
        result = await emu.connected(stream)
        assert result["node"] == server.node.uid
        answer = await emu.emulate(stream, {"subscribe": {"channel": "news"}, "id": 2})
        assert answer.status_code == 204
        reply = await stream.next()
        assert isinstance(reply, Reply) and reply.id == 2 and reply.subscribe is not None
        await server.node.publish("news", {"n": 1})
        await server.node.publish("news", {"n": 2})
        pubs = [await stream.next_non_ping(), await stream.next_non_ping()]
        assert [json.loads(bytes(p.push.pub.data)) for p in pubs] == [{"n": 1}, {"n": 2}]
        # A pong is the single byte 0x00; a bad frame closes with 3501.
        assert (await emu.emulate(stream, b"\x05\x01")).status_code == 204
        bye = await stream.next_non_ping()
        assert bye.push.disconnect.code == 3501


async def test_disconnect_push_on_server_disconnect_and_shutdown(
    start_server: Any,
) -> None:
    server = await start_server()
    async with httpx.AsyncClient(timeout=10 * UNIT) as http:
        emu = EmulationClient(server.http, http)
        async with emu.open({"token": token("bob")}, kind="sse") as stream:
            await emu.connected(stream)
            await server.node.disconnect("bob")
            assert await stream.next_non_ping() == {
                "push": {"disconnect": {"code": 3503, "reason": "force disconnect"}}
            }
            await stream.end()
        async with emu.open({"token": token("carol")}) as stream:
            await emu.connected(stream)
            await server.node.drain(0)
            assert await stream.next_non_ping() == {
                "push": {"disconnect": {"code": 3001, "reason": "shutdown"}}
            }
            await stream.end()
            # Draining: new streams are refused (503), as WebSocket handshakes.
            async with emu.open({"token": token()}) as refused:
                assert refused.response.status_code == 503


async def test_client_going_away_is_cleaned_up(server: RunningServer, emu: EmulationClient) -> None:
    node = server.node
    async with emu.open({"token": token("dave")}) as stream:
        result = await emu.connected(stream)
        await emu.emulate(stream, {"subscribe": {"channel": "news"}, "id": 2})
        await stream.next()
        assert result["client"] in await node.presence_manager.presence("news")
    # The response was closed under the server (the client aborted its fetch).
    await wait_until(lambda: not node.index.sessions, "the session to be released")
    assert not node.index.streams and node.admission.connections == 0
    assert not await node.presence_manager.presence("news")
    # Its session is gone: commands for it are answered 204 and dropped.
    answer = await emu.emulate(stream, {"presence": {"channel": "news"}, "id": 3})
    assert answer.status_code == 204


async def test_disabled_endpoints(start_server: Any) -> None:
    server = await start_server(
        suite_settings(http_stream={"enabled": False}, sse={"enabled": False})
    )
    async with httpx.AsyncClient(timeout=10 * UNIT) as http:
        for path in ("/connection/http_stream", "/connection/sse", "/emulation"):
            assert (await http.post(server.http + path, content=b"{}")).status_code == 404
