"""The channel commands of a session (subscribe, publish, presence, history) and recovery,
driven with plain objects: a list transport and a fake clock (the harness of test_session)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest
from tests.conftest import SECRET, suite_settings
from tests.unit.test_session import Harness, ListTransport, send, transport

from hubbub.auth import mint_connection_token, mint_subscription_token
from hubbub.clock import FakeClock
from hubbub.engines.base import HistoryFilter, HistoryResult, PublishOptions
from hubbub.engines.memory import MemoryBroker
from hubbub.node import Node
from hubbub.protocol.codes import DisconnectCode
from hubbub.session import Session


@pytest.fixture
async def h() -> AsyncIterator[Harness]:
    """Sessions without pong checks, so long clock jumps test one timer at a time."""
    clock = FakeClock()
    node = Node(suite_settings(client={"pong_timeout": 0}), clock=clock)
    yield Harness(node, clock)


# ---------------------------------------------------------------------------------------------
# subscribe and friends


@pytest.mark.parametrize(
    ("channel", "code"),
    [("nope:x", 102), ("locked:x", 103), ("x" * 300, 107), ("caf\u00e9", 107)],
)
async def test_subscribe_errors(h: Harness, channel: str, code: int) -> None:
    session = await h.session()
    await send(session, {"id": 2, "subscribe": {"channel": channel}})
    assert transport(session).take()[0]["error"]["code"] == code
    assert transport(session).close_code is None


async def test_subscribe_empty_channel_closes(h: Harness) -> None:
    session = await h.session()
    await send(session, {"id": 2, "subscribe": {"channel": ""}})
    assert transport(session).close_code == DisconnectCode.BAD_REQUEST


async def test_already_subscribed_and_limit() -> None:
    clock = FakeClock()
    node = Node(suite_settings(client={"channel_limit": 2, "personal_channel": False}), clock=clock)
    session = Session(node, ListTransport())
    token = mint_connection_token(SECRET, "u", now=clock.time())
    await send(session, {"id": 1, "connect": {"token": token}})
    await send(
        session,
        {"id": 2, "subscribe": {"channel": "a"}},
        {"id": 3, "subscribe": {"channel": "a"}},
        {"id": 4, "subscribe": {"channel": "b"}},
        {"id": 5, "subscribe": {"channel": "c"}},
    )
    errors = {m["id"]: m["error"]["code"] for m in transport(session).sent if "error" in m}
    assert errors == {3: 105, 5: 106}


async def test_private_channel_needs_token(h: Harness) -> None:
    session = await h.session()
    await send(session, {"id": 2, "subscribe": {"channel": "$locked:vip"}})
    assert transport(session).take()[0]["error"]["code"] == 103
    token = mint_subscription_token(SECRET, "alice", "$locked:vip", now=h.clock.time())
    await send(session, {"id": 3, "subscribe": {"channel": "$locked:vip", "token": token}})
    assert "subscribe" in transport(session).take()[0]
    bad = mint_subscription_token("other-secret-other-secret-other!!", "alice", "$locked:v2")
    await send(session, {"id": 4, "subscribe": {"channel": "$locked:v2", "token": bad}})
    assert transport(session).take()[0]["error"]["code"] == 103


async def test_subscription_token_for_other_user_closes(h: Harness) -> None:
    session = await h.session()
    token = mint_subscription_token(SECRET, "bob", "$locked:vip", now=h.clock.time())
    await send(session, {"id": 3, "subscribe": {"channel": "$locked:vip", "token": token}})
    assert transport(session).close_code == DisconnectCode.INVALID_TOKEN


async def test_user_limited_channel(h: Harness) -> None:
    alice = await h.session("alice")
    await send(alice, {"id": 2, "subscribe": {"channel": "dialog:#alice,bob"}})
    assert "subscribe" in transport(alice).take()[0]
    eve = await h.session("eve")
    await send(eve, {"id": 2, "subscribe": {"channel": "dialog:#alice,bob"}})
    assert transport(eve).take()[0]["error"]["code"] == 103


async def test_publish_fans_out_with_offsets(h: Harness) -> None:
    alice, bob = await h.session("alice"), await h.session("bob")
    await send(bob, {"id": 2, "subscribe": {"channel": "news"}})
    transport(bob).take()
    await send(alice, {"id": 2, "publish": {"channel": "news", "data": {"n": 1}}})
    assert transport(alice).take() == [{"id": 2, "publish": {}}]
    (pub,) = transport(bob).pushes("pub")
    assert pub["channel"] == "news"
    assert pub["pub"]["data"] == {"n": 1} and pub["pub"]["offset"] == 1
    assert pub["pub"]["info"]["user"] == "alice"


async def test_publish_errors(h: Harness) -> None:
    session = await h.session()
    await send(
        session,
        {"id": 2, "publish": {"channel": "news"}},
        {"id": 3, "publish": {"channel": "locked:x", "data": 1}},
        {"id": 4, "publish": {"channel": "nope:x", "data": 1}},
        {"id": 5, "publish": {"channel": "", "data": 1}},
    )
    codes = {m["id"]: m["error"]["code"] for m in transport(session).sent}
    assert codes == {2: 107, 3: 103, 4: 102, 5: 107}


async def test_join_leave_pushes_include_own_join(h: Harness) -> None:
    alice, bob = await h.session("alice"), await h.session("bob")
    await send(alice, {"id": 2, "subscribe": {"channel": "chat:room"}})
    await send(bob, {"id": 2, "subscribe": {"channel": "chat:room"}})
    joins = [p["join"]["info"]["user"] for p in transport(alice).pushes("join")]
    assert joins == ["alice", "bob"]
    await send(bob, {"id": 3, "unsubscribe": {"channel": "chat:room"}})
    assert transport(bob).sent[-1] == {"id": 3, "unsubscribe": {}}
    (leave,) = transport(alice).pushes("leave")
    assert leave["leave"]["info"]["client"] == bob.client_id


async def test_presence_and_stats(h: Harness) -> None:
    alice, bob = await h.session("alice"), await h.session("bob")
    bob2 = await h.session("bob")
    for s in (alice, bob, bob2):
        await send(s, {"id": 2, "subscribe": {"channel": "chat:p"}})
    await send(alice, {"id": 3, "presence": {"channel": "chat:p"}})
    await send(alice, {"id": 4, "presence_stats": {"channel": "chat:p"}})
    replies = {m["id"]: m for m in transport(alice).sent if m.get("id") in (3, 4)}
    assert set(replies[3]["presence"]["presence"]) == {s.client_id for s in (alice, bob, bob2)}
    assert replies[4]["presence_stats"] == {"num_clients": 3, "num_users": 2}
    await bob2.closed()
    stats = await h.node.presence_stats("chat:p")
    assert (stats.num_clients, stats.num_users) == (2, 2)


async def test_presence_not_available(h: Harness) -> None:
    session = await h.session()
    await send(session, {"id": 3, "presence": {"channel": "live:x"}})
    assert transport(session).take()[0]["error"]["code"] == 108


async def test_history_command(h: Harness) -> None:
    session = await h.session()
    for n in range(1, 6):
        await h.node.publish("news", {"n": n})
    await send(session, {"id": 2, "history": {"channel": "news", "limit": 2}})
    await send(session, {"id": 3, "history": {"channel": "news", "limit": 2, "reverse": True}})
    await send(
        session,
        {"id": 4, "history": {"channel": "news", "limit": -1, "since": {"offset": 3}}},
    )
    await send(session, {"id": 5, "history": {"channel": "news"}})
    replies = {m["id"]: m["history"] for m in transport(session).take()}
    assert [p["offset"] for p in replies[2]["publications"]] == [1, 2]
    assert [p["offset"] for p in replies[3]["publications"]] == [5, 4]
    assert [p["data"]["n"] for p in replies[4]["publications"]] == [4, 5]
    assert replies[5] == {"publications": [], "epoch": replies[2]["epoch"], "offset": 5}


async def test_history_errors(h: Harness) -> None:
    session = await h.session()
    await h.node.publish("news", 1)
    await send(
        session,
        {"id": 2, "history": {"channel": "news", "since": {"offset": 1, "epoch": "other"}}},
        {"id": 3, "history": {"channel": "live:x", "limit": 1}},
        {"id": 4, "history": {"channel": "news", "reverse": True, "since": {"offset": 0}}},
    )
    codes = {m["id"]: m["error"]["code"] for m in transport(session).sent}
    assert codes == {2: 112, 3: 108, 4: 107}


# ---------------------------------------------------------------------------------------------
# recovery


async def test_recovery_after_missed_publications(h: Harness) -> None:
    first = await h.session("alice")
    await send(first, {"id": 2, "subscribe": {"channel": "news"}})
    sub = transport(first).take()[0]["subscribe"]
    epoch = sub["epoch"]
    await h.node.publish("news", "a")
    await first.closed()
    await h.node.publish("news", "b")
    await h.node.publish("news", "c")
    again = await h.session("alice")
    await send(
        again,
        {"id": 2, "subscribe": {"channel": "news", "recover": True, "offset": 1, "epoch": epoch}},
    )
    result = transport(again).take()[0]["subscribe"]
    assert result["recovered"] is True and result["was_recovering"] is True
    assert result["offset"] == 1 and result["epoch"] == epoch
    assert [p["data"] for p in result["publications"]] == ["b", "c"]


async def test_recovery_fails_when_history_is_exceeded(h: Harness) -> None:
    session = await h.session()
    await send(session, {"id": 2, "subscribe": {"channel": "small:x"}})
    epoch = transport(session).take()[0]["subscribe"]["epoch"]
    for n in range(6):
        await h.node.publish("small:x", n)
    await send(session, {"id": 3, "unsubscribe": {"channel": "small:x"}})
    recover = {"channel": "small:x", "recover": True, "offset": 1, "epoch": epoch}
    await send(session, {"id": 4, "subscribe": recover})
    result = next(m for m in transport(session).take() if m.get("id") == 4)["subscribe"]
    assert result["was_recovering"] is True and "recovered" not in result
    assert result["offset"] == 6 and "publications" not in result
    await send(session, {"id": 5, "unsubscribe": {"channel": "small:x"}})
    await send(session, {"id": 6, "subscribe": {**recover, "flag": 3}})
    assert transport(session).sent[-1]["error"]["code"] == 112


async def test_recovery_with_wrong_epoch(h: Harness) -> None:
    session = await h.session()
    await h.node.publish("news", 1)
    recover = {"channel": "news", "recover": True, "offset": 1, "epoch": "_"}
    await send(session, {"id": 2, "subscribe": recover})
    result = transport(session).take()[0]["subscribe"]
    assert "recovered" not in result and result["offset"] == 1


class GatedBroker(MemoryBroker):
    """A memory broker whose history reads wait for a gate, so publications can land while a
    subscriber is between registering and reading history."""

    def __init__(self, clock: FakeClock) -> None:
        super().__init__(clock=clock)
        self.gate: asyncio.Event | None = None
        self.reading = asyncio.Event()

    async def history(
        self, channel: str, flt: HistoryFilter, opts: PublishOptions
    ) -> HistoryResult:
        if self.gate is not None and flt.limit != 0:
            self.reading.set()
            await self.gate.wait()
        return await super().history(channel, flt, opts)


async def test_recovery_merges_concurrent_publications() -> None:
    clock = FakeClock()
    broker = GatedBroker(clock)
    node = Node(suite_settings(), clock=clock, broker=broker)
    h = Harness(node, clock)
    watcher = await h.session("bob")
    await send(watcher, {"id": 2, "subscribe": {"channel": "news"}})
    epoch = transport(watcher).take()[0]["subscribe"]["epoch"]
    for n in (1, 2, 3):
        await node.publish("news", n)

    session = await h.session("alice")
    broker.gate = asyncio.Event()
    recover = {"channel": "news", "recover": True, "offset": 1, "epoch": epoch}
    task = asyncio.create_task(send(session, {"id": 2, "subscribe": recover}))
    await broker.reading.wait()
    # Publications 4 and 5 arrive live while the history read is in flight.
    await node.publish("news", 4)
    await node.publish("news", 5)
    broker.gate.set()
    await task
    messages = transport(session).take()
    result = messages[0]["subscribe"]
    assert result["recovered"] is True
    recovered = [p["data"] for p in result["publications"]]
    live = [m["push"]["pub"]["data"] for m in messages[1:] if "pub" in m.get("push", {})]
    # Every publication after offset 1 exactly once, in order, reply first.
    assert recovered + live == [2, 3, 4, 5]
