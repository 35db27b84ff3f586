"""Both wire formats on one endpoint: JSON and Protobuf clients in the same channels."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
import websockets
from centrifuge import Client, PublicationContext, ReplyError, SubscribedContext
from websockets.exceptions import ConnectionClosed

from hubbub.auth import mint_connection_token
from hubbub.protocol import client_pb2 as pb
from hubbub.protocol.protobuf import decode_varint, encode_varint
from tests.conftest import API_KEY, SECRET, UNIT, RunningServer
from tests.integration.test_centrifuge_python import SubEvents, next_item

WAIT = 5 * UNIT

# What a client sees over the wire: on both WebSocket transports (tests/conftest.py::transport).
pytestmark = pytest.mark.usefixtures("transport")


@pytest.fixture
async def clients(server: RunningServer) -> AsyncIterator[list[Client]]:
    made: list[Client] = []
    yield made
    for client in made:
        await client.disconnect()


async def connect(server: RunningServer, made: list[Client], user: str, protobuf: bool) -> Client:
    client = Client(
        server.url,
        token=mint_connection_token(SECRET, user),
        use_protobuf=protobuf,
        proxy=None,
    )
    made.append(client)
    await client.connect()
    await client.ready(timeout=WAIT)
    return client


async def subscribe(client: Client, channel: str) -> SubEvents:
    events = SubEvents()
    sub = client.new_subscription(channel, events=events)
    await sub.subscribe()
    await next_item(events.subscribed, f"subscribed to {channel}")
    return events


def as_json(data: Any) -> Any:
    return json.loads(data) if isinstance(data, bytes) else data


async def collect(events: SubEvents, n: int) -> list[tuple[int, Any]]:
    out = []
    for _ in range(n):
        ctx: PublicationContext = await next_item(events.publications, "publication")
        out.append((ctx.pub.offset, as_json(ctx.pub.data)))
    return out


async def test_mixed_subscribers_see_the_same_stream(
    server: RunningServer, clients: list[Client]
) -> None:
    json_client = await connect(server, clients, "jay", protobuf=False)
    pb_client = await connect(server, clients, "pat", protobuf=True)
    json_events = await subscribe(json_client, "news")
    pb_events = await subscribe(pb_client, "news")
    # Publications from the node, from a JSON client and from a Protobuf client.
    await server.node.publish("news", {"from": "node"})
    await json_client.publish("news", {"from": "json"})
    await pb_client.publish("news", b'{"from": "protobuf"}')
    expected = [(1, {"from": "node"}), (2, {"from": "json"}), (3, {"from": "protobuf"})]
    assert await collect(json_events, 3) == expected
    assert await collect(pb_events, 3) == expected

    # Both recover after their connections are cut while publications continue.
    for client in (json_client, pb_client):
        conn = client._conn
        assert conn is not None
        conn.transport.abort()
    for n in range(4, 8):
        await server.node.publish("news", {"n": n})
    for events in (json_events, pb_events):
        resubscribed: SubscribedContext = await next_item(events.subscribed, "resubscribed")
        assert resubscribed.recovered
        assert await collect(events, 4) == [(n, {"n": n}) for n in range(4, 8)]


async def test_protobuf_payload_must_be_json_in_json_namespaces(
    server: RunningServer, clients: list[Client]
) -> None:
    pb_client = await connect(server, clients, "pat", protobuf=True)
    with pytest.raises(ReplyError) as exc_info:
        await pb_client.publish("news", b"\x00\x01 not json")
    assert exc_info.value.code == 107
    # Pretty-printed JSON is fine; its raw newlines never reach JSON clients' frames.
    json_client = await connect(server, clients, "jay", protobuf=False)
    events = await subscribe(json_client, "news")
    await pb_client.publish("news", b'{\n  "pretty": true\n}')
    assert await collect(events, 1) == [(1, {"pretty": True})]


async def test_binary_namespace(server: RunningServer, clients: list[Client]) -> None:
    pb_client = await connect(server, clients, "pat", protobuf=True)
    events = await subscribe(pb_client, "bin:raw")
    await pb_client.publish("bin:raw", b"\x00\xff\x10binary")
    ctx = await next_item(events.publications, "binary publication")
    assert ctx.pub.data == b"\x00\xff\x10binary" and ctx.pub.offset == 1
    # Through the HTTP API, binary goes in base64.
    async with httpx.AsyncClient(base_url=server.http, headers={"X-API-Key": API_KEY}) as http:
        ok = await http.post("/api/publish", json={"channel": "bin:raw", "b64data": "AAEC"})
        refused = await http.post("/api/publish", json={"channel": "news", "b64data": "AAEC"})
    assert ok.json()["result"]["offset"] == 2
    assert refused.json()["error"]["code"] == 107
    ctx = await next_item(events.publications, "API publication")
    assert ctx.pub.data == b"\x00\x01\x02"
    # JSON clients cannot read binary channels: a clear error, the connection stays.
    json_client = await connect(server, clients, "jay", protobuf=False)
    with pytest.raises(ReplyError) as exc_info:
        await json_client.history("bin:raw", limit=1)
    assert exc_info.value.code == 107 and "Protobuf" in exc_info.value.message


async def raw_protobuf_ws(server: RunningServer) -> Any:
    ws = await websockets.connect(
        server.url, subprotocols=[websockets.Subprotocol("centrifuge-protobuf")], open_timeout=WAIT
    )
    assert ws.subprotocol == "centrifuge-protobuf"
    return ws


def frame(*commands: pb.Command) -> bytes:
    out = b""
    for command in commands:
        body = command.SerializeToString()
        out += encode_varint(len(body)) + body
    return out


def replies(data: bytes) -> list[pb.Reply]:
    out = []
    pos = 0
    while pos < len(data):
        size, pos = decode_varint(data, pos)
        reply = pb.Reply()
        reply.ParseFromString(data[pos : pos + size])
        out.append(reply)
        pos += size
    return out


async def test_raw_protobuf_frames(server: RunningServer) -> None:
    ws = await raw_protobuf_ws(server)
    connect_cmd = pb.Command(id=1)
    connect_cmd.connect.token = mint_connection_token(SECRET, "raw")
    sub_cmd = pb.Command(id=2)
    sub_cmd.subscribe.channel = "news"
    await ws.send(frame(connect_cmd, sub_cmd))  # two commands, one binary frame
    got: list[pb.Reply] = []
    while len(got) < 2:
        data = await asyncio.wait_for(ws.recv(), WAIT)
        assert isinstance(data, bytes)
        got.extend(replies(data))
    assert got[0].id == 1 and got[0].connect.client and got[0].connect.ping == 25
    assert got[1].id == 2 and got[1].subscribe.recoverable and got[1].subscribe.epoch
    await ws.send(b"\x00")  # a stray pong is tolerated
    await ws.send("a text frame")  # but text is not Protobuf
    with pytest.raises(ConnectionClosed) as closed:
        while True:
            await asyncio.wait_for(ws.recv(), WAIT)
    assert closed.value.rcvd is not None and closed.value.rcvd.code == 3506


@pytest.mark.parametrize(
    "garbage",
    [
        b"\x05\x01",
        b"\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff",
        b"\x02\x08",
        b"\x03\xff\xff\xff",
    ],
)
async def test_malformed_protobuf_frames_close_3501(server: RunningServer, garbage: bytes) -> None:
    ws = await raw_protobuf_ws(server)
    await ws.send(garbage)
    with pytest.raises(ConnectionClosed) as closed:
        while True:
            await asyncio.wait_for(ws.recv(), WAIT)
    assert closed.value.rcvd is not None and closed.value.rcvd.code == 3501


async def test_format_from_query_parameter(server: RunningServer) -> None:
    ws = await websockets.connect(server.url + "?format=protobuf", open_timeout=WAIT)
    cmd = pb.Command(id=1)
    cmd.connect.token = mint_connection_token(SECRET, "q")
    await ws.send(frame(cmd))
    (reply,) = replies(await asyncio.wait_for(ws.recv(), WAIT))
    assert reply.id == 1 and reply.connect.client
    await ws.close()
