"""The node's public Python API, on the memory engine with a fake clock."""

from __future__ import annotations

import msgspec
import pytest
from tests.conftest import suite_settings
from tests.unit.test_session import ListTransport, send, transport

from hubbub.clock import FakeClock
from hubbub.engines.base import StreamPosition
from hubbub.node import Node
from hubbub.payload import to_payload
from hubbub.protocol.codes import ProtocolError
from hubbub.session import Session


@pytest.fixture
def node() -> Node:
    return Node(suite_settings(client={"pong_timeout": 0}), clock=FakeClock())


async def test_publish_returns_position_and_validates(node: Node) -> None:
    first = await node.publish("news", {"a": 1})
    second = await node.publish("news", b'{"b": 2}')
    assert first.offset == 1 and second == StreamPosition(2, first.epoch)
    assert await node.publish("live:x", 1) == StreamPosition(0, "")
    assert await node.publish("news", 3, skip_history=True) == StreamPosition(0, "")
    for channel, data, code in [
        ("nope:x", 1, 102),
        ("", 1, 107),
        ("news", b"not json", 107),
        ("news", object(), 107),
        ("news", b"", 107),
    ]:
        with pytest.raises(ProtocolError) as exc_info:
            await node.publish(channel, data)
        assert exc_info.value.code == code, (channel, data)


async def test_idempotent_publish(node: Node) -> None:
    first = await node.publish("news", 1, idempotency_key="k")
    again = await node.publish("news", 1, idempotency_key="k")
    assert first == again
    history = await node.history("news", limit=-1)
    assert len(history.publications) == 1


async def test_broadcast(node: Node) -> None:
    results = await node.broadcast(["news", "nope:x", "chat:a"], {"x": 1})
    assert isinstance(results[0], StreamPosition) and results[0].offset == 1
    assert isinstance(results[1], ProtocolError) and results[1].code == 102
    assert isinstance(results[2], StreamPosition)


async def test_history_and_remove(node: Node) -> None:
    for n in range(4):
        await node.publish("news", n)
    hist = await node.history("news", limit=2, reverse=True)
    assert [msgspec.json.decode(p.data) for p in hist.publications] == [3, 2]
    since = await node.history("news", limit=-1, since=StreamPosition(2, hist.position.epoch))
    assert [p.offset for p in since.publications] == [3, 4]
    await node.history_remove("news")
    hist = await node.history("news", limit=-1)
    assert hist.publications == [] and hist.position.offset == 4
    with pytest.raises(ProtocolError) as exc_info:
        await node.history("live:x")
    assert exc_info.value.code == 108
    with pytest.raises(ProtocolError) as exc_info:
        await node.history("news", reverse=True, since=StreamPosition(0, ""))
    assert exc_info.value.code == 107


async def connected(node: Node, user: str) -> Session:
    from tests.conftest import SECRET

    from hubbub.auth import mint_connection_token

    session = Session(node, ListTransport())
    token = mint_connection_token(SECRET, user, now=node.clock.time())
    await send(session, {"id": 1, "connect": {"token": token}})
    transport(session).take()
    return session


async def test_channels_info_presence(node: Node) -> None:
    a, b = await connected(node, "alice"), await connected(node, "bob")
    await send(a, {"id": 2, "subscribe": {"channel": "chat:one"}})
    await send(b, {"id": 2, "subscribe": {"channel": "chat:one"}})
    await send(b, {"id": 3, "subscribe": {"channel": "news"}})
    assert node.channels("chat:*") == {"chat:one": 2}
    assert node.channels()["#alice"] == 1
    (info,) = node.info()
    assert (info.num_clients, info.num_users, info.num_subs) == (2, 2, 5)
    assert info.num_channels == 4 and info.uid == node.uid
    assert set(await node.presence("chat:one")) == {a.client_id, b.client_id}
    stats = await node.presence_stats("chat:one")
    assert (stats.num_clients, stats.num_users) == (2, 2)
    with pytest.raises(ProtocolError):
        await node.presence("live:x")


async def test_targeting_one_client_and_whitelist(node: Node) -> None:
    first, second = await connected(node, "alice"), await connected(node, "alice")
    await node.disconnect("alice", client=second.client_id)
    assert transport(second).close_code == 3503 and transport(first).close_code is None
    third = await connected(node, "alice")
    await node.disconnect("alice", 4000, "bye", whitelist=[first.client_id])
    assert transport(third).close_code == 4000 and transport(third).close_reason == "bye"
    assert transport(first).close_code is None


async def test_send_message_push(node: Node) -> None:
    session = await connected(node, "alice")
    await node.send_message("alice", {"hello": 1})
    assert transport(session).sent == [{"push": {"message": {"data": {"hello": 1}}}}]


async def test_failing_handler_costs_one_command(node: Node) -> None:
    @node.rpc("boom")
    async def boom(session: Session, data: msgspec.Raw) -> msgspec.Raw:
        raise RuntimeError("bug")

    session = await connected(node, "alice")
    await send(
        session,
        {"id": 2, "rpc": {"method": "boom"}},
        {"id": 3, "presence_stats": {"channel": "chat:a"}},
    )
    replies = transport(session).take()
    assert replies[0]["error"]["code"] == 100 and replies[0]["error"]["temporary"] is True
    assert "presence_stats" in replies[1]
    assert transport(session).close_code is None


def test_to_payload() -> None:
    assert bytes(to_payload({"a": [1]})) == b'{"a":[1]}'
    assert bytes(to_payload(b'{\n"a": 1}')) == b'{"a": 1}'


async def test_idempotency_window_is_configurable() -> None:
    clock = FakeClock()
    node = Node(suite_settings(http_api={"key": "k", "idempotent_result_ttl": 10}), clock=clock)
    first = await node.publish("news", 1, idempotency_key="k")
    clock.advance(5)
    assert await node.publish("news", 1, idempotency_key="k") == first
    clock.advance(6)
    assert (await node.publish("news", 1, idempotency_key="k")).offset == 2


async def test_drain_closes_in_batches_with_3001(node: Node) -> None:
    import time

    sessions = [await connected(node, f"u{i}") for i in range(20)]
    await node.start()
    assert node.ready
    started = time.monotonic()
    await node.drain(0.3)
    assert 0.2 < time.monotonic() - started < 2.0  # spread over the period, and bounded
    assert not node.ready and node.draining
    assert {transport(s).close_code for s in sessions} == {3001}
    await node.close()
