"""The immediate publish path: on the memory engine, with no ``on_publish`` hook, no publish
proxy and no delta compression for the namespace, a client's ``publish`` is handled where its
frame is read (no task, no await) and its reply written from a template. Whenever one of those
applies, the general path takes the command; each case here checks both what the clients see
and which path ran (a spy on :func:`hubbub.session_requests.publish_now`)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from typing import Any

import pytest
import websockets

from hubbub import session_requests
from hubbub.auth import mint_connection_token
from hubbub.hook_types import PublishContext, PublishDecision
from hubbub.node import Node
from hubbub.protocol import client_pb2 as pb
from hubbub.protocol.codec import JSON
from hubbub.protocol.messages import EmptyResult, PublishRequest, Reply
from hubbub.session import Session
from tests.conftest import _OPEN, SECRET, UNIT, RunningServer, suite_settings
from tests.integration.proxy_kit import serving_backend
from tests.integration.test_protobuf import frame, raw_protobuf_ws, replies

WAIT = 5 * UNIT


@pytest.fixture
def immediate(monkeypatch: pytest.MonkeyPatch) -> list[bool]:
    """What each call of ``publish_now`` answered (True: it published), in order."""
    answers: list[bool] = []
    real = session_requests.publish_now

    def spy(session: Session, cmd_id: int, req: PublishRequest) -> bool:
        done = real(session, cmd_id, req)
        answers.append(done)
        return done

    monkeypatch.setattr(session_requests, "publish_now", spy)
    return answers


async def _connect(running: RunningServer, user: str = "u") -> Any:
    ws = await websockets.connect(running.url, open_timeout=WAIT)
    await ws.send(json.dumps({"id": 1, "connect": {"token": mint_connection_token(SECRET, user)}}))
    assert "connect" in (await _messages(ws, 1))[0]
    return ws


async def _messages(ws: Any, count: int) -> list[dict[str, Any]]:
    """The next ``count`` protocol messages (a frame may hold several, one per line)."""
    got: list[dict[str, Any]] = []
    while len(got) < count:
        data = await asyncio.wait_for(ws.recv(), WAIT)
        got.extend(json.loads(line) for line in data.splitlines() if line)
    return got


async def _subscribe(ws: Any, channel: str, cmd_id: int = 2) -> None:
    await ws.send(json.dumps({"id": cmd_id, "subscribe": {"channel": channel}}))
    assert "subscribe" in (await _messages(ws, 1))[0]


def _pubs(messages: list[dict[str, Any]]) -> list[Any]:
    return [m["push"]["pub"]["data"] for m in messages if "pub" in m.get("push", {})]


def test_the_reply_template_is_the_encoders_reply() -> None:
    for cmd_id in (1, 42, 2**32 - 1):
        assert JSON.encode_reply(Reply(id=cmd_id, publish=EmptyResult())) == (
            b'{"id":%d,"publish":{}}' % cmd_id
        )


async def test_publications_take_the_immediate_path_in_order(
    server: RunningServer, immediate: list[bool]
) -> None:
    sub = await _connect(server, "reader")
    await _subscribe(sub, "live:room")
    pub = await _connect(server, "writer")
    # One frame: a subscribe (which waits on the engine) and then publications: they are
    # answered in order, the publications only after the subscribe.
    lines = [json.dumps({"id": 2, "subscribe": {"channel": "live:room"}})]
    lines += [
        json.dumps({"id": 3 + i, "publish": {"channel": "live:room", "data": {"n": i}}})
        for i in range(5)
    ]
    await pub.send("\n".join(lines))
    got = await _messages(pub, 1 + 5 + 5)
    replies = [m for m in got if "id" in m]
    assert [m["id"] for m in replies] == [2, 3, 4, 5, 6, 7]
    assert "subscribe" in replies[0] and all(m["publish"] == {} for m in replies[1:])
    assert _pubs(got) == [{"n": i} for i in range(5)]
    assert _pubs(await _messages(sub, 5)) == [{"n": i} for i in range(5)]
    assert immediate == [True] * 5
    for ws in (sub, pub):
        await ws.close()


async def test_errors_on_the_immediate_path(server: RunningServer, immediate: list[bool]) -> None:
    ws = await _connect(server)
    await ws.send(json.dumps({"id": 2, "publish": {"channel": "locked:x", "data": {}}}))
    assert (await _messages(ws, 1))[0] == {
        "id": 2,
        "error": {"code": 103, "message": "permission denied"},
    }
    await ws.send(json.dumps({"id": 3, "publish": {"channel": "live:x"}}))
    reply = (await _messages(ws, 1))[0]
    assert reply["id"] == 3 and reply["error"]["code"] == 107
    await ws.send(json.dumps({"id": 4, "publish": {"channel": "live:x", "data": 1}}))
    assert (await _messages(ws, 1))[0] == {"id": 4, "publish": {}}
    assert immediate == [True]  # the refused ones raised before publishing
    counters = server.node.counters
    assert counters["reply_error.103"] == 1 and counters["reply_error.107"] == 1
    # Without an id a publish is no command: bad input, closed and counted.
    await ws.send(json.dumps({"id": 0, "publish": {"channel": "live:x", "data": 1}}))
    with pytest.raises(websockets.ConnectionClosed) as closed:
        await _messages(ws, 1)
    assert closed.value.rcvd is not None and closed.value.rcvd.code == 3501
    assert counters["bad_input.3501"] == 1


async def test_the_command_rate_limit_applies_on_the_immediate_path(
    start_server: Callable[..., Any], immediate: list[bool]
) -> None:
    running = await start_server(suite_settings(limits={"command_rate": 0.001, "command_burst": 3}))
    ws = await _connect(running)  # the connect took one token
    for cmd_id in (2, 3, 4):
        await ws.send(json.dumps({"id": cmd_id, "publish": {"channel": "live:x", "data": 1}}))
    got = await _messages(ws, 3)
    assert got[0] == {"id": 2, "publish": {}} and got[1] == {"id": 3, "publish": {}}
    assert got[2]["id"] == 4 and got[2]["error"]["code"] == 111
    assert immediate == [True, True]
    await ws.close()


async def test_protobuf_clients_take_the_immediate_path(
    server: RunningServer, immediate: list[bool]
) -> None:
    ws = await raw_protobuf_ws(server)
    connect = pb.Command(id=1)
    connect.connect.token = mint_connection_token(SECRET, "pb")
    subscribe = pb.Command(id=2)
    subscribe.subscribe.channel = "live:pb"
    publish = pb.Command(id=3)
    publish.publish.channel = "live:pb"
    publish.publish.data = b'{"n":1}'
    await ws.send(frame(connect, subscribe))
    got: list[pb.Reply] = []
    while len(got) < 2:
        got.extend(replies(await asyncio.wait_for(ws.recv(), WAIT)))
    await ws.send(frame(publish))
    got = []
    while len(got) < 2:
        got.extend(replies(await asyncio.wait_for(ws.recv(), WAIT)))
    # The push first, as on the general path: the fan-out runs before the reply is written.
    assert got[0].push.pub.data == b'{"n":1}'
    assert got[1].id == 3 and got[1].HasField("publish")
    assert immediate == [True]
    await ws.close()


async def test_an_on_publish_hook_takes_the_general_path(
    server: RunningServer, immediate: list[bool]
) -> None:
    node: Node = server.node

    @node.on_publish
    async def shout(ctx: PublishContext) -> PublishDecision | None:
        await asyncio.sleep(0)  # a hook may wait
        return PublishDecision(data={"said": json.loads(bytes(ctx.data))["text"].upper()})

    ws = await _connect(server)
    await _subscribe(ws, "live:room")
    await ws.send(
        json.dumps({"id": 3, "publish": {"channel": "live:room", "data": {"text": "hi"}}})
    )
    got = await _messages(ws, 2)
    assert {"id": 3, "publish": {}} in got
    assert _pubs(got) == [{"said": "HI"}]
    assert immediate == []
    await ws.close()


async def test_the_publish_proxy_takes_the_general_path(
    start_server: Callable[..., Any], immediate: list[bool]
) -> None:
    async with serving_backend() as backend:
        backend.answers["/publish"] = lambda body: {"result": {"data": {"proxied": body["data"]}}}
        running = await start_server(
            suite_settings(
                channel={
                    "proxy": {"publish": {"endpoint": f"{backend.url}/publish"}},
                    "namespaces": [{"name": "px", **_OPEN, "publish_proxy_enabled": True}],
                }
            )
        )
        ws = await _connect(running)
        await _subscribe(ws, "px:room")
        await ws.send(json.dumps({"id": 3, "publish": {"channel": "px:room", "data": 1}}))
        got = await _messages(ws, 2)
        assert {"id": 3, "publish": {}} in got
        assert _pubs(got) == [{"proxied": 1}]
        assert len(backend.requests("/publish")) == 1
        assert immediate == []
        await ws.close()


async def test_a_delta_namespace_takes_the_general_path(
    start_server: Callable[..., Any], immediate: list[bool]
) -> None:
    running = await start_server(
        suite_settings(
            channel={
                "namespaces": [
                    {
                        "name": "dx",
                        **_OPEN,
                        "history_size": 10,
                        "history_ttl": 300,
                        "allowed_delta_types": ["fossil"],
                        "delta_publish": True,
                    },
                    {"name": "live", **_OPEN},
                ]
            }
        )
    )
    ws = await _connect(running)
    await ws.send(json.dumps({"id": 2, "subscribe": {"channel": "dx:ticker", "delta": "fossil"}}))
    assert (await _messages(ws, 1))[0]["subscribe"]["delta"] is True
    payload = {"quote": "x" * 200, "n": 1}
    await ws.send(json.dumps({"id": 3, "publish": {"channel": "dx:ticker", "data": payload}}))
    got = await _messages(ws, 2)
    assert {"id": 3, "publish": {}} in got
    # A delta subscription's JSON payloads are strings (the first one in full).
    assert [json.loads(data) for data in _pubs(got)] == [payload]
    await ws.send(json.dumps({"id": 4, "publish": {"channel": "live:x", "data": 1}}))
    assert (await _messages(ws, 1))[0] == {"id": 4, "publish": {}}
    assert immediate == [False, True]  # the delta namespace declined, the other took it
    history = await running.node.history("dx:ticker", limit=-1)
    assert [json.loads(bytes(p.data)) for p in history.publications] == [payload]
    await ws.close()


async def test_the_redis_engine_queues_the_publication(
    start_server: Callable[..., Any], redis_url: str, immediate: list[bool]
) -> None:
    # No task: the publication joins the turn's pipeline, the reply follows Redis's answer.
    running = await start_server(suite_settings(engine="redis", redis={"url": redis_url}))
    ws = await _connect(running)
    await _subscribe(ws, "live:r")
    await ws.send(json.dumps({"id": 3, "publish": {"channel": "live:r", "data": {"n": 1}}}))
    got = await _messages(ws, 2)
    assert {"id": 3, "publish": {}} in got and _pubs(got) == [{"n": 1}]
    assert immediate == [True]
    await ws.close()


async def test_history_in_the_same_frame_finds_the_queued_publication(
    start_server: Callable[..., Any], redis_url: str, immediate: list[bool]
) -> None:
    # Publish, then read history in one frame: the publish is queued for the turn's pipeline
    # and not yet answered when the history command runs; the read travels behind it, so it
    # finds the publication, as on the memory engine. Each round publishes to a new channel.
    running = await start_server(suite_settings(engine="redis", redis={"url": redis_url}))
    ws = await _connect(running)
    for n in range(20):
        channel = f"chat:h{n}"
        publish = {"id": 10 + 2 * n, "publish": {"channel": channel, "data": {"n": n}}}
        history = {"id": 11 + 2 * n, "history": {"channel": channel, "limit": -1}}
        await ws.send(json.dumps(publish) + "\n" + json.dumps(history))
        got = {m["id"]: m for m in await _messages(ws, 2)}
        assert got[10 + 2 * n] == {"id": 10 + 2 * n, "publish": {}}
        pubs = got[11 + 2 * n]["history"].get("publications", [])
        assert [p["data"] for p in pubs] == [{"n": n}], f"round {n}: {got}"
    assert immediate == [True] * 20
    await ws.close()
