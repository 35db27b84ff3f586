"""A live subscriber whose stream stops continuing its position is told, never left behind.

In process, with the memory engine: the node is handed the publications a Redis that lost data
would deliver (an offset that went back, another epoch), and a check after a reconnect whose
first engine calls fail.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import msgspec
import pytest
from tests.conftest import UNIT, suite_settings
from tests.unit.test_session import Harness, send, transport

from hubbub.clock import FakeClock
from hubbub.engines.base import (
    HistoryFilter,
    HistoryResult,
    PublishOptions,
    StreamPosition,
    engine_unavailable,
)
from hubbub.engines.memory import MemoryBroker
from hubbub.node import Node
from hubbub.protocol.messages import Publication
from hubbub.session import Session


class FlakyBroker(MemoryBroker):
    """A memory broker whose next ``failures`` position reads fail as with a dead connection."""

    def __init__(self, clock: FakeClock) -> None:
        super().__init__(clock=clock)
        self.failures = 0

    async def history(
        self, channel: str, flt: HistoryFilter, opts: PublishOptions
    ) -> HistoryResult:
        if self.failures and flt.limit == 0:
            self.failures -= 1
            raise engine_unavailable()
        return await super().history(channel, flt, opts)


@pytest.fixture
async def h() -> AsyncIterator[Harness]:
    clock = FakeClock()
    # No pings: a test moves the clock a month on.
    settings = suite_settings(client={"pong_timeout": 0, "ping_interval": 1e9})
    node = Node(settings, clock=clock, broker=FlakyBroker(clock))
    yield Harness(node, clock)
    await node.close()


async def subscribed(h: Harness, publications: int) -> tuple[Session, str]:
    """A session subscribed to "news" that received ``publications`` publications."""
    session = await h.session()
    await send(session, {"id": 2, "subscribe": {"channel": "news"}})
    epoch: str = transport(session).take()[0]["subscribe"]["epoch"]
    for n in range(1, publications + 1):
        await h.node.publish("news", n)
    assert [p["pub"]["data"] for p in transport(session).pushes("pub")] == list(
        range(1, publications + 1)
    )
    transport(session).take()
    return session, epoch


def live(h: Harness, data: Any, offset: int, epoch: str) -> None:
    """Hand the node a publication as the engine would deliver it."""
    pub = Publication(data=msgspec.Raw(msgspec.json.encode(data)), offset=offset)
    h.node.events.handle_publication("news", pub, StreamPosition(offset, epoch))


async def unsubscribe_push(session: Session) -> dict[str, Any]:
    for _ in range(int(200 * UNIT)):
        pushes = transport(session).pushes("unsubscribe")
        if pushes:
            return pushes[0]["unsubscribe"]  # type: ignore[no-any-return]
        await asyncio.sleep(0.01)
    raise AssertionError(f"no unsubscribe push; sent: {transport(session).sent}")


async def recover(session: Session, offset: int, epoch: str) -> dict[str, Any]:
    recover = {"channel": "news", "recover": True, "offset": offset, "epoch": epoch}
    await send(session, {"id": 9, "subscribe": recover})
    reply = next(m for m in transport(session).take() if m.get("id") == 9)
    return reply["subscribe"]  # type: ignore[no-any-return]


async def test_an_offset_that_went_back_is_not_taken_for_one_already_sent(h: Harness) -> None:
    session, epoch = await subscribed(h, 3)
    # The engine went back (restarted from an older snapshot): offset 2 again, new content.
    live(h, "new 2", 2, epoch)
    live(h, "new 3", 3, epoch)
    live(h, "new 4", 4, epoch)  # would look like the next one: must not be sent either
    assert await unsubscribe_push(session) == {"code": 2500, "reason": "insufficient state"}
    assert transport(session).pushes("pub") == []
    # The stream got a new epoch first, so the client's old position cannot pass for valid.
    top = await h.node.history("news")
    assert top.position.epoch != epoch and h.node.counters["engine.epoch_renewed"] == 1
    result = await recover(session, 3, epoch)
    assert result["was_recovering"] is True and "recovered" not in result
    assert h.node.counters["engine.stream_behind"] == 1


async def test_another_epoch_is_another_stream(h: Harness) -> None:
    session, _ = await subscribed(h, 3)
    # Redis restarted empty: a new epoch whose offset happens to follow the subscriber's.
    live(h, "other 4", 4, "other")
    assert await unsubscribe_push(session) == {"code": 2500, "reason": "insufficient state"}
    assert transport(session).pushes("pub") == []
    assert h.node.counters["engine.stream_new_epoch"] == 1


async def test_the_check_after_a_reconnect_retries_until_it_completes(h: Harness) -> None:
    session, _ = await subscribed(h, 3)
    broker = h.node.broker
    assert isinstance(broker, FlakyBroker)
    # The stream was lost while the engine was away (its position outlived): a new epoch.
    h.clock.advance(31 * 24 * 3600)
    broker.failures = 3  # the first reads fail, as on connections that died with the server
    h.node.events.handle_reconnect(["news"])
    assert await unsubscribe_push(session) == {"code": 2500, "reason": "insufficient state"}
    assert h.node.counters["engine.gap_check_retries"] == 3
    assert h.node.counters["engine.stream_new_epoch"] == 1


async def test_the_check_after_a_reconnect_leaves_continuing_subscribers_alone(
    h: Harness,
) -> None:
    session, _ = await subscribed(h, 3)
    h.node.events.handle_reconnect(["news"])
    for _ in range(int(20 * UNIT)):
        await asyncio.sleep(0.01)
    assert transport(session).sent == []
    await h.node.publish("news", 4)
    assert [p["pub"]["data"] for p in transport(session).pushes("pub")] == [4]
