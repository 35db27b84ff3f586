"""Connection counts are never left behind: failed removals are retried in the background, and
a connect whose count could not be written fails cleanly."""

from __future__ import annotations

import asyncio
import logging
from collections import Counter
from typing import Any

import pytest
from tests.conftest import SECRET, UNIT, suite_settings
from tests.unit.test_session import ListTransport, send, transport

from hubbub.auth import mint_connection_token
from hubbub.clock import FakeClock
from hubbub.engines.base import engine_unavailable
from hubbub.engines.memory import MemoryBroker, MemoryPresenceManager
from hubbub.engines.retry import RetryQueue
from hubbub.index import user_presence_key
from hubbub.node import Node
from hubbub.protocol.messages import ClientInfo
from hubbub.session import Session


class Flaky:
    """An engine call failing its first ``failures`` times, as an unreachable Redis does."""

    def __init__(self, failures: int) -> None:
        self.failures = failures
        self.calls = 0

    async def __call__(self) -> None:
        self.calls += 1
        if self.calls <= self.failures:
            raise engine_unavailable()


class Events(Counter[str]):
    """What a queue counted."""

    def add(self, event: str) -> None:
        self[event] += 1


def queue(events: Events, **kwargs: Any) -> RetryQueue:
    def spawn(coro: Any) -> asyncio.Task[None]:
        return asyncio.get_running_loop().create_task(coro)

    return RetryQueue("uncount", spawn=spawn, count=events.add, **kwargs)


async def settle(retries: RetryQueue) -> None:
    for _ in range(int(200 * UNIT)):
        if not retries.pending:
            return
        await asyncio.sleep(0.01)
    raise AssertionError("calls still waiting")


async def test_retried_until_done_logged_once(caplog: pytest.LogCaptureFixture) -> None:
    events = Events()
    retries = queue(events, first_delay=0.001, max_delay=0.004)
    first, second = Flaky(5), Flaky(0)
    with caplog.at_level(logging.INFO, "hubbub.engines.retry"):
        retries.submit("a", first)
        retries.submit("a", Flaky(0))  # the same removal: already waiting
        retries.submit("b", second)
        await settle(retries)
    assert (first.calls, second.calls) == (6, 1)  # b waited behind a: no hammering
    assert events == {"uncount_deferred": 2}
    assert [r.levelname for r in caplog.records] == ["WARNING", "INFO"]  # start and end


async def test_bounded_drops_beyond_the_limit(caplog: pytest.LogCaptureFixture) -> None:
    events = Events()
    retries = queue(events, limit=2, first_delay=0.001)
    with caplog.at_level(logging.ERROR, "hubbub.engines.retry"):
        for key in "abcd":
            retries.submit(key, Flaky(1))
        assert retries.pending == 2
        await settle(retries)
    assert events == {"uncount_deferred": 2, "uncount_dropped": 2}
    assert len([r for r in caplog.records if r.levelname == "ERROR"]) == 1


class FlakyPresence(MemoryPresenceManager):
    """Memory presence whose connection counts fail to be added or removed a number of times
    (as if Redis were briefly unreachable); channel presence works."""

    def __init__(self, clock: FakeClock) -> None:
        super().__init__(clock=clock)
        self.failing_adds = 0
        self.failing_removes = 0

    async def add_presence(self, channel: str, info: ClientInfo, ttl: float) -> None:
        await super().add_presence(channel, info, ttl)  # applied, but the reply is lost
        if channel.startswith(user_presence_key("")) and self.failing_adds:
            self.failing_adds -= 1
            raise engine_unavailable()

    async def remove_presence(self, channel: str, client_id: str, user: str) -> None:
        if channel.startswith(user_presence_key("")) and self.failing_removes:
            self.failing_removes -= 1
            raise engine_unavailable()
        await super().remove_presence(channel, client_id, user)


async def connect(node: Node, clock: FakeClock) -> tuple[Session, dict[str, Any]]:
    session = Session(node, ListTransport())
    token = mint_connection_token(SECRET, "alice", now=clock.time())
    await send(session, {"id": 1, "connect": {"token": token}})
    return session, transport(session).take()[0]


async def eventually_uncounted(node: Node) -> None:
    for _ in range(int(500 * UNIT)):
        if await node.user_connections_everywhere("alice") == 0:
            return
        await asyncio.sleep(0.01)
    raise AssertionError("alice is still counted")


async def test_failed_removal_at_close_is_retried() -> None:
    clock = FakeClock()
    presence = FlakyPresence(clock)
    node = Node(suite_settings(), broker=MemoryBroker(clock=clock), presence_manager=presence)
    session, reply = await connect(node, clock)
    assert "connect" in reply
    presence.failing_removes = 3
    await session.closed()
    assert await node.user_connections_everywhere("alice") == 1  # not yet
    await eventually_uncounted(node)
    assert node.counters["engine.uncount_deferred"] == 1


async def test_failed_add_at_connect_fails_cleanly() -> None:
    clock = FakeClock()
    presence = FlakyPresence(clock)
    node = Node(suite_settings(), broker=MemoryBroker(clock=clock), presence_manager=presence)
    presence.failing_adds = 1
    presence.failing_removes = 1
    session, reply = await connect(node, clock)
    assert reply["error"]["code"] == 100 and reply["error"]["temporary"] is True
    assert node.user_connections("alice") == 0 and not session.subscriptions
    # Redis applied the add before the reply was lost: removed, if only on the second try.
    await eventually_uncounted(node)
    session, reply = await connect(node, clock)
    assert "connect" in reply
