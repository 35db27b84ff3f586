"""The server HTTP API with the real ``cent`` 5.x clients (sync and async) on loopback."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from cent import (
    AsyncClient,
    BatchRequest,
    BroadcastRequest,
    ChannelsRequest,
    Client,
    Disconnect,
    DisconnectRequest,
    HistoryRemoveRequest,
    HistoryRequest,
    InfoRequest,
    PresenceRequest,
    PresenceStatsRequest,
    PublishRequest,
    RefreshRequest,
    StreamPosition,
    SubscribeRequest,
    UnsubscribeRequest,
)
from cent.exceptions import CentApiResponseError, CentUnauthorizedError

from hubbub.auth import mint_connection_token
from tests.conftest import API_KEY, SECRET, UNIT, RunningServer, suite_settings
from tests.integration.test_bad_input import connect_ws, parse, replies

WAIT = 5 * UNIT


@pytest.fixture
async def cent(server: RunningServer) -> AsyncIterator[AsyncClient]:
    client = AsyncClient(f"{server.http}/api", API_KEY)
    yield client
    await client.close()


@pytest.fixture
def sync_cent(server: RunningServer) -> Client:
    return Client(f"{server.http}/api", API_KEY)


async def next_push(ws: Any, kind: str) -> dict[str, Any]:
    """Read until a push of ``kind`` arrives (other messages are skipped)."""
    while True:
        for msg in parse(await asyncio.wait_for(ws.recv(), WAIT)):
            if kind in msg.get("push", {}):
                push: dict[str, Any] = msg["push"]
                return push


async def api_error(call: Any) -> int:
    with pytest.raises(CentApiResponseError) as exc_info:
        await call
    code: int = exc_info.value.code
    return code


@pytest.mark.parametrize("wire_format", ["json", "protobuf"])
async def test_publish_returns_position_and_reaches_subscriber(
    server: RunningServer, cent: AsyncClient, wire_format: str
) -> None:
    from centrifuge import Client as WSClient
    from centrifuge import PublicationContext, SubscriptionEventHandler

    received: asyncio.Queue[PublicationContext] = asyncio.Queue()

    class Events(SubscriptionEventHandler):
        async def on_publication(self, ctx: PublicationContext) -> None:
            await received.put(ctx)

    ws = WSClient(
        server.url,
        token=mint_connection_token(SECRET, "alice"),
        use_protobuf=wire_format == "protobuf",
        proxy=None,
    )
    sub = ws.new_subscription("news", events=Events())
    await ws.connect()
    await sub.subscribe()
    await sub.ready(timeout=WAIT)
    await cent.publish(PublishRequest(channel="news", data={"n": 0}))
    result = await cent.publish(
        PublishRequest(channel="news", data={"text": "hi"}, tags={"kind": "greeting"})
    )
    assert result.offset == 2 and result.epoch
    first = await asyncio.wait_for(received.get(), WAIT)
    ctx = await asyncio.wait_for(received.get(), WAIT)
    assert first.pub.offset == 1
    data = json.loads(ctx.pub.data) if wire_format == "protobuf" else ctx.pub.data
    assert data == {"text": "hi"} and ctx.pub.offset == result.offset
    assert ctx.pub.tags == {"kind": "greeting"} and ctx.pub.info is None
    await ws.disconnect()


async def test_publish_options(server: RunningServer, cent: AsyncClient) -> None:
    skipped = await cent.publish(PublishRequest(channel="news", data=1, skip_history=True))
    assert skipped.offset is None or skipped.offset == 0
    first = await cent.publish(PublishRequest(channel="news", data=2, idempotency_key="k1"))
    again = await cent.publish(PublishRequest(channel="news", data=2, idempotency_key="k1"))
    assert first.offset == again.offset == 1
    b64 = await cent.publish(PublishRequest(channel="news", data=None, b64data="eyJiIjogMX0="))
    history = await cent.history(HistoryRequest(channel="news", limit=-1))
    assert [p.data for p in history.publications] == [2, {"b": 1}]
    assert b64.offset == 2
    no_history = await cent.publish(PublishRequest(channel="live:x", data=1))
    assert not no_history.epoch


async def test_publish_errors(cent: AsyncClient) -> None:
    assert await api_error(cent.publish(PublishRequest(channel="nope:x", data=1))) == 102
    assert await api_error(cent.publish(PublishRequest(channel="", data=1))) == 107
    assert await api_error(cent.publish(PublishRequest(channel="x" * 300, data=1))) == 107
    assert (
        await api_error(cent.publish(PublishRequest(channel="news", data=None, b64data="!!")))
        == 107
    )


async def test_broadcast(cent: AsyncClient) -> None:
    result = await cent.broadcast(
        BroadcastRequest(channels=["news", "nope:x", "chat:a"], data={"x": 1})
    )
    assert [r.error.code if r.error else None for r in result.responses] == [None, 102, None]
    assert result.responses[0].result is not None and result.responses[0].result.offset == 1
    assert await api_error(cent.broadcast(BroadcastRequest(channels=[], data=1))) == 107


async def test_subscribe_unsubscribe_disconnect_refresh(
    server: RunningServer, cent: AsyncClient
) -> None:
    ws = await connect_ws(server, "carol")
    await cent.subscribe(SubscribeRequest(user="carol", channel="chat:ops"))
    push = await next_push(ws, "subscribe")
    assert push["channel"] == "chat:ops" and push["subscribe"]["recoverable"] is True
    await cent.publish(PublishRequest(channel="chat:ops", data={"a": 1}))
    assert (await next_push(ws, "pub"))["pub"]["data"] == {"a": 1}
    await cent.unsubscribe(UnsubscribeRequest(user="carol", channel="chat:ops"))
    unsub = await next_push(ws, "unsubscribe")
    assert unsub["unsubscribe"] == {"code": 2000, "reason": "server unsubscribe"}
    # Unknown user: nothing to do, still a success.
    await cent.subscribe(SubscribeRequest(user="nobody", channel="chat:ops"))
    assert await api_error(cent.subscribe(SubscribeRequest(user="x", channel="nope:x"))) == 102
    await cent.refresh(RefreshRequest(user="carol", expired=True))
    with pytest.raises(Exception) as closed:
        while True:
            parse(await asyncio.wait_for(ws.recv(), WAIT))
    assert closed.value.rcvd.code == 3005

    ws2 = await connect_ws(server, "dave")
    await cent.disconnect(
        DisconnectRequest(user="dave", disconnect=Disconnect(code=4501, reason="banned"))
    )
    with pytest.raises(Exception) as closed:
        while True:
            await asyncio.wait_for(ws2.recv(), WAIT)
    assert closed.value.rcvd.code == 4501
    assert closed.value.rcvd.reason == "banned"


async def test_presence_history_channels_info(server: RunningServer, cent: AsyncClient) -> None:
    ws = await connect_ws(server, "erin")
    await ws.send('{"id": 2, "subscribe": {"channel": "chat:room"}}')
    await replies(ws, 1)
    presence = await cent.presence(PresenceRequest(channel="chat:room"))
    (info,) = presence.presence.values()
    assert info.user == "erin"
    stats = await cent.presence_stats(PresenceStatsRequest(channel="chat:room"))
    assert (stats.num_clients, stats.num_users) == (1, 1)
    assert await api_error(cent.presence(PresenceRequest(channel="live:x"))) == 108

    for n in range(5):
        await cent.publish(PublishRequest(channel="chat:room", data={"n": n}))
    hist = await cent.history(HistoryRequest(channel="chat:room", limit=2, reverse=True))
    assert [p.offset for p in hist.publications] == [5, 4] and hist.offset == 5
    since = await cent.history(
        HistoryRequest(
            channel="chat:room", limit=10, since=StreamPosition(offset=3, epoch=hist.epoch)
        )
    )
    assert [p.data for p in since.publications] == [{"n": 3}, {"n": 4}]
    wrong = HistoryRequest(channel="chat:room", limit=1, since=StreamPosition(offset=1, epoch="x"))
    assert await api_error(cent.history(wrong)) == 112
    await cent.history_remove(HistoryRemoveRequest(channel="chat:room"))
    emptied = await cent.history(HistoryRequest(channel="chat:room", limit=-1))
    assert emptied.publications == [] and emptied.offset == 5
    assert await api_error(cent.history(HistoryRequest(channel="live:x"))) == 108

    channels = await cent.channels(ChannelsRequest(pattern="chat:*"))
    assert {k: v.num_clients for k, v in channels.channels.items()} == {"chat:room": 1}
    nodes = (await cent.info(InfoRequest())).nodes
    assert len(nodes) == 1 and nodes[0].uid == server.node.uid
    assert nodes[0].num_clients == 1 and nodes[0].num_users == 1
    await ws.close()


async def test_batch_mixing_successes_and_errors(cent: AsyncClient) -> None:
    result = await cent.batch(
        BatchRequest(
            requests=[
                PublishRequest(channel="news", data={"a": 1}),
                PresenceStatsRequest(channel="chat:x"),
                PublishRequest(channel="news", data={"a": 2}),
                HistoryRequest(channel="news", limit=-1),
            ],
            parallel=False,
        )
    )
    assert result.replies[0].offset == 1 and result.replies[2].offset == 2
    assert result.replies[1].num_clients == 0
    assert [p.data for p in result.replies[3].publications] == [{"a": 1}, {"a": 2}]


async def test_batch_errors_over_http(server: RunningServer) -> None:
    # cent 5.2 cannot parse error replies inside a batch, so this one speaks HTTP directly.
    async with httpx.AsyncClient(base_url=server.http, headers={"X-API-Key": API_KEY}) as http:
        body = {
            "commands": [
                {"publish": {"channel": "news", "data": 1}},
                {"publish": {"channel": "nope:x", "data": 1}},
                {"frobnicate": {}},
                {"presence": {"channel": "live:x"}},
            ],
            "parallel": True,
        }
        reply = (await http.post("/api/batch", json=body)).json()
    assert reply["replies"][0] == {
        "publish": {"offset": 1, "epoch": reply["replies"][0]["publish"]["epoch"]}
    }
    assert [r.get("error", {}).get("code") for r in reply["replies"]] == [None, 102, 104, 108]


def test_sync_client() -> None:
    # The sync client blocks, so the server runs in its own thread's loop here.
    import threading

    import uvicorn

    from hubbub.app import create_app

    config = uvicorn.Config(
        create_app(suite_settings()), host="127.0.0.1", port=0, log_level="warning"
    )
    srv = uvicorn.Server(config)
    thread = threading.Thread(target=asyncio.run, args=(srv.serve(),), daemon=True)
    thread.start()
    for _ in range(int(500 * UNIT)):
        if srv.started:
            break
        threading.Event().wait(0.01)
    port = srv.servers[0].sockets[0].getsockname()[1]
    try:
        client = Client(f"http://127.0.0.1:{port}/api", API_KEY)
        result = client.publish(PublishRequest(channel="news", data={"sync": True}))
        assert result.offset == 1
        hist = client.history(HistoryRequest(channel="news", limit=-1))
        assert [p.data for p in hist.publications] == [{"sync": True}]
        assert client.info(InfoRequest()).nodes[0].name
        with pytest.raises(CentApiResponseError) as exc_info:
            client.publish(PublishRequest(channel="nope:x", data=1))
        assert exc_info.value.code == 102
        with pytest.raises(CentUnauthorizedError):
            Client(f"http://127.0.0.1:{port}/api", "wrong").info(InfoRequest())
        client.close()
    finally:
        srv.should_exit = True
        thread.join(10 * UNIT)


async def test_wrong_or_missing_key_is_401(server: RunningServer) -> None:
    bad = AsyncClient(f"{server.http}/api", "wrong-key")
    with pytest.raises(CentUnauthorizedError):
        await bad.info(InfoRequest())
    await bad.close()
    async with httpx.AsyncClient(base_url=server.http) as http:
        missing = await http.post("/api/info", json={})
        assert missing.status_code == 401 and missing.content == b""
        other = await http.post("/api/info", json={}, headers={"Authorization": "apikey nope"})
        assert other.status_code == 401
        ok = await http.post("/api/info", json={}, headers={"Authorization": f"apikey {API_KEY}"})
        assert ok.status_code == 200 and "nodes" in ok.json()["result"]
        assert (await http.get("/api/info", headers={"X-API-Key": API_KEY})).status_code == 405


@pytest.mark.parametrize(
    ("body", "status", "fragment"),
    [
        (b"not json", 400, "not JSON"),
        (b'{"channel": 5, "data": 1}', 200, "Expected `str`, got `int` - at `$.channel`"),
        (b'{"data": 1}', 200, "channel required"),
        (b'{"channel": "news"}', 200, "data required"),
        (b"[1, 2]", 200, "Expected `object`"),
        (b'{"channel": "news", "data": 1, "tags": {"a": 1}}', 200, "$.tags"),
    ],
)
async def test_malformed_bodies(
    server: RunningServer, body: bytes, status: int, fragment: str, caplog: pytest.LogCaptureFixture
) -> None:
    async with httpx.AsyncClient(base_url=server.http, headers={"X-API-Key": API_KEY}) as http:
        response = await http.post("/api/publish", content=body)
    assert response.status_code == status
    if status == 200:
        error = response.json()["error"]
        assert error["code"] == 107 and fragment in error["message"]
    else:
        assert fragment in response.text
    assert "Traceback" not in caplog.text


async def test_huge_body_is_413(server: RunningServer, caplog: pytest.LogCaptureFixture) -> None:
    payload = b'{"channel": "news", "data": "' + b"x" * (10 * 1024 * 1024) + b'"}'
    async with httpx.AsyncClient(base_url=server.http, headers={"X-API-Key": API_KEY}) as http:
        response = await http.post("/api/publish", content=payload)
        unknown = await http.post("/api/frobnicate", json={})
    assert response.status_code == 413 and "max_body_size" in response.text
    assert unknown.status_code == 404
    assert "Traceback" not in caplog.text


async def test_openapi_document(server: RunningServer) -> None:
    async with httpx.AsyncClient(base_url=server.http) as http:
        doc = (await http.get("/api/openapi.json")).json()
    assert doc["openapi"].startswith("3.")
    assert {"/api/publish", "/api/batch", "/api/info"} <= set(doc["paths"])
    assert {"/api/notify", "/api/chat_send", "/api/chat_history"} <= set(doc["paths"])
    # Every documented method is answered (an unknown one would be 404).
    async with httpx.AsyncClient(base_url=server.http) as http:
        for path in doc["paths"]:
            response = await http.post(path, json={}, headers={"X-API-Key": API_KEY})
            assert response.status_code == 200, path


async def test_api_disabled_without_key(start_server: Any) -> None:
    running = await start_server(suite_settings(http_api={"key": ""}))
    async with httpx.AsyncClient(base_url=running.http) as http:
        response = await http.post("/api/info", json={}, headers={"X-API-Key": ""})
    assert response.status_code == 404
