"""The local index without a node: fan-out, the empty-channel rule, connections by user.

Subscribers are small fakes that record what they are given; the broker is the memory engine,
told to fail a subscribe where a test needs it.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import msgspec
import pytest

from hubbub.clock import FakeClock
from hubbub.engines.base import StreamPosition, engine_unavailable
from hubbub.engines.memory import MemoryBroker
from hubbub.index import EngineEvents, LocalIndex
from hubbub.protocol.codec import JSON, PROTOBUF, Codec
from hubbub.protocol.messages import ClientInfo, Publication


class CountingCodec:
    """A wire format that counts how often it encodes."""

    def __init__(self, inner: Codec) -> None:
        self.inner = inner
        self.pushes = 0

    def encode_push(self, push: Any) -> bytes:
        self.pushes += 1
        return self.inner.encode_push(push)


@dataclass(eq=False)
class Fake:
    """A subscriber that records its deliveries."""

    client_id: str
    codec: Any = JSON
    subscriptions: dict[str, Any] = field(default_factory=dict)
    delivered: list[tuple[str, bytes, str]] = field(default_factory=list)
    joins_leaves: list[tuple[str, bytes]] = field(default_factory=list)

    def deliver(self, channel: str, pub: Publication, data: bytes, epoch: str) -> None:
        self.delivered.append((channel, data, epoch))

    def deliver_join_leave(self, channel: str, data: bytes) -> None:
        self.joins_leaves.append((channel, data))

    async def recover_gap(self, sub: Any) -> None:
        raise AssertionError("not expected")


@dataclass(eq=False)
class FakeSession:
    """Just what the connection maps read of a session."""

    client_id: str
    user: str
    stream_session: str = ""


class RefusingBroker(MemoryBroker):
    """Refuses the next ``refusals`` subscribes as an unreachable engine would."""

    def __init__(self) -> None:
        super().__init__(clock=FakeClock())
        self.refusals = 0
        self.unsubscribed: list[str] = []

    async def subscribe(self, channel: str) -> None:
        if self.refusals:
            self.refusals -= 1
            raise engine_unavailable()
        await super().subscribe(channel)

    async def unsubscribe(self, channel: str) -> None:
        self.unsubscribed.append(channel)
        await super().unsubscribe(channel)


@pytest.fixture
def broker() -> RefusingBroker:
    return RefusingBroker()


@pytest.fixture
def index(broker: RefusingBroker) -> LocalIndex:
    return LocalIndex(broker, Counter())


def pub(data: bytes = b'{"n":1}', offset: int = 1) -> Publication:
    return Publication(data=msgspec.Raw(data), offset=offset)


async def test_a_publication_is_encoded_once_per_wire_format(index: LocalIndex) -> None:
    json, pb = CountingCodec(JSON), CountingCodec(PROTOBUF)
    subs = [Fake("a", json), Fake("b", json), Fake("c", pb), Fake("d", json)]
    for sub in subs:
        await index.add_subscriber("news", sub)
    index.handle_publication("news", pub(), StreamPosition(1, "e1"))
    assert (json.pushes, pb.pushes) == (1, 1)
    assert all(len(sub.delivered) == 1 for sub in subs)
    assert subs[0].delivered[0][1] is subs[1].delivered[0][1]  # the same bytes, not a copy
    assert subs[0].delivered[0][2] == "e1"
    assert index.counters["deliveries"] == 4


async def test_joins_and_leaves_reach_every_subscriber(index: LocalIndex) -> None:
    a, b = Fake("a"), Fake("b")
    await index.add_subscriber("room", a)
    await index.add_subscriber("room", b)
    info = ClientInfo(user="u", client="c")
    index.handle_join("room", info)
    index.handle_leave("room", info)
    index.handle_join("elsewhere", info)
    assert [len(a.joins_leaves), len(b.joins_leaves)] == [2, 2]
    assert b'"join"' in a.joins_leaves[0][1] and b'"leave"' in a.joins_leaves[1][1]


async def test_the_last_subscriber_leaving_unsubscribes_the_node(
    index: LocalIndex, broker: RefusingBroker
) -> None:
    a, b = Fake("a"), Fake("b")
    await index.add_subscriber("news", a)
    await index.add_subscriber("news", b)
    await index.remove_subscriber("news", a)
    assert broker.unsubscribed == [] and index.channel_counts() == {"news": 1}
    await index.remove_subscriber("news", b)
    await index.remove_subscriber("news", b)  # twice: nothing more happens
    assert broker.unsubscribed == ["news"]
    assert "news" not in index.channels and "news" not in index.direct
    assert "news" not in index.groups


async def test_a_refused_subscribe_leaves_no_trace(
    index: LocalIndex, broker: RefusingBroker
) -> None:
    broker.refusals = 1
    with pytest.raises(Exception, match="unavailable"):
        await index.add_subscriber("news", Fake("a"))
    assert (index.channels, index.direct, index.groups) == ({}, {}, {})
    assert broker.unsubscribed == []  # never subscribed: nothing to undo in the engine
    await index.add_subscriber("news", Fake("a"))
    assert index.channel_counts("n*") == {"news": 1} and index.channel_counts("x*") == {}


def test_connections_by_user_and_their_shared_bucket(index: LocalIndex) -> None:
    clock = FakeClock()
    sessions: list[Any] = [
        FakeSession("c1", "ann"),
        FakeSession("c2", "ann"),
        FakeSession("c3", "bo"),
    ]
    one, two, _ = sessions
    for session in sessions:
        index.register(session)
    assert index.user_connections("ann") == 2
    assert index.targets("ann") == [one, two]
    assert index.targets("ann", "c2") == [two]
    assert index.targets("ann", "c3") == []  # another user's connection
    bucket = index.user_bucket("ann", 10, 5, clock)
    assert index.user_bucket("ann", 5, 5, clock) is bucket and bucket.rate == 5
    index.unregister(one)
    assert index.user_bucket("ann", 5, 5, clock) is bucket  # ann is still here
    index.unregister(two)
    assert "ann" not in index.users and index.user_connections("ann") == 0
    assert index.user_bucket("ann", 5, 5, clock) is not bucket  # forgotten with her


async def test_engine_events_go_straight_to_their_handlers(index: LocalIndex) -> None:
    controls: list[bytes] = []
    reconnects: list[list[str]] = []
    events = EngineEvents(index, controls.append, reconnects.append)
    sub = Fake("a")
    await index.add_subscriber("news", sub)
    events.handle_publication("news", pub(), StreamPosition(1, "e"))
    events.handle_control(b"x")
    events.handle_reconnect(["news"])
    assert len(sub.delivered) == 1 and controls == [b"x"] and reconnects == [["news"]]
