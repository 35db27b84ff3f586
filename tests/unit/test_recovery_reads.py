"""Coalesced stream reads (hubbub.recovery_reads): one read serves the subscribers that asked
while the previous one was in flight, each gets exactly what a read of its own would give, and
no one is served by a read issued before it asked."""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Coroutine
from typing import Any, TypeVar

import msgspec
import pytest
from tests.conftest import UNIT

from hubbub.config import ChannelOptions
from hubbub.engines.base import HistoryFilter, HistoryResult, StreamPosition, engine_unavailable
from hubbub.protocol.codes import ProtocolError
from hubbub.protocol.messages import Publication
from hubbub.recovery_reads import RecoveryReads

T = TypeVar("T")
OPTS = ChannelOptions(history_size=100, history_ttl=300)


class Stream:
    """A node whose stream reads wait until the test lets each one complete."""

    def __init__(self, top: int) -> None:
        self.top = top
        self.counters: Counter[str] = Counter()
        self.calls: list[HistoryFilter] = []
        self.gates: list[asyncio.Event] = []
        self.fail = False
        self.spawned: list[asyncio.Task[Any]] = []

    def spawn_task(self, coro: Coroutine[Any, Any, T]) -> asyncio.Task[T]:
        task = asyncio.get_running_loop().create_task(coro)
        self.spawned.append(task)
        return task

    async def read_history(
        self, channel: str, flt: HistoryFilter, opts: ChannelOptions
    ) -> HistoryResult:
        self.calls.append(flt)
        gate = asyncio.Event()
        self.gates.append(gate)
        # The stream as it is when the read is issued (publications may come meanwhile).
        top = self.top
        await gate.wait()
        if self.fail:
            raise engine_unavailable()
        since = flt.since.offset if flt.since is not None else 0
        offsets = range(since + 1, top + 1) if flt.limit else range(0)
        if flt.limit > 0:
            offsets = offsets[: flt.limit]
        pubs = [Publication(msgspec.Raw(b"{}"), offset=o) for o in offsets]
        return HistoryResult(pubs, StreamPosition(top, "epoch"))

    async def release(self, index: int) -> None:
        for _ in range(100):
            if len(self.gates) > index:
                self.gates[index].set()
                return
            await asyncio.sleep(0)
        raise AssertionError(f"read {index} was never issued")


def offsets(result: HistoryResult) -> list[int]:
    return [p.offset for p in result.publications]


async def settle() -> None:
    for _ in range(5):
        await asyncio.sleep(0)


async def test_a_read_alone_goes_straight_through() -> None:
    node = Stream(top=5)
    reads = RecoveryReads(node)
    task = asyncio.create_task(reads.since("room:1", OPTS, 2, 300))
    await node.release(0)
    assert offsets(await task) == [3, 4, 5]
    assert [(c.limit, c.since) for c in node.calls] == [(300, StreamPosition(2, ""))]


async def test_those_asking_meanwhile_share_one_read_from_the_lowest_offset() -> None:
    node = Stream(top=8)
    reads = RecoveryReads(node)
    first = asyncio.create_task(reads.since("room:1", OPTS, 6, 300))
    await settle()
    waiting = [asyncio.create_task(reads.since("room:1", OPTS, o, 300)) for o in (5, 3, 7)]
    top = asyncio.create_task(reads.top("room:1", OPTS))
    await settle()
    assert len(node.calls) == 2  # the first read, and the position read (another key)
    await node.release(0)
    await node.release(1)
    await node.release(2)
    assert offsets(await first) == [7, 8]
    assert [offsets(await t) for t in waiting] == [[6, 7, 8], [4, 5, 6, 7, 8], [8]]
    assert (await top).offset == 8
    assert len(node.calls) == 3
    assert node.calls[2].since == StreamPosition(3, "")
    assert node.counters["history.coalesced_reads"] == 2


async def test_no_one_joins_a_read_already_issued() -> None:
    node = Stream(top=4)
    reads = RecoveryReads(node)
    first = asyncio.create_task(reads.since("room:1", OPTS, 4, 300))
    await settle()
    second = asyncio.create_task(reads.since("room:1", OPTS, 4, 300))
    await node.release(0)
    await settle()
    # The second's read is in flight; what is published now, a third must see.
    node.top = 6
    third = asyncio.create_task(reads.since("room:1", OPTS, 4, 300))
    await node.release(1)
    await node.release(2)
    assert offsets(await first) == []
    assert offsets(await second) == []
    assert offsets(await third) == [5, 6]
    assert len(node.calls) == 3


async def test_a_short_read_serves_the_lowest_offset_only() -> None:
    node = Stream(top=8)
    reads = RecoveryReads(node)
    first = asyncio.create_task(reads.since("room:1", OPTS, 0, 2))
    await settle()
    low = asyncio.create_task(reads.since("room:1", OPTS, 3, 2))
    high = asyncio.create_task(reads.since("room:1", OPTS, 6, 2))
    for i in range(3):
        await node.release(i)
    assert offsets(await first) == [1, 2]
    assert offsets(await low) == [4, 5]  # as its own read would: not up to the top
    assert offsets(await high) == [7, 8]
    assert [c.since for c in node.calls[1:]] == [StreamPosition(3, ""), StreamPosition(6, "")]


async def test_a_waiter_that_leaves_does_not_cancel_the_others() -> None:
    node = Stream(top=3)
    reads = RecoveryReads(node)
    first = asyncio.create_task(reads.since("room:1", OPTS, 3, 300))
    await settle()
    leaving = asyncio.create_task(reads.since("room:1", OPTS, 1, 300))
    staying = asyncio.create_task(reads.since("room:1", OPTS, 2, 300))
    await settle()
    leaving.cancel()
    await node.release(0)
    await node.release(1)
    assert offsets(await staying) == [3]
    assert offsets(await first) == []
    with pytest.raises(asyncio.CancelledError):
        await leaving


async def test_a_failed_read_fails_its_waiters_and_the_next_read_works() -> None:
    node = Stream(top=3)
    reads = RecoveryReads(node)
    first = asyncio.create_task(reads.since("room:1", OPTS, 3, 300))
    await settle()
    waiting = [asyncio.create_task(reads.since("room:1", OPTS, o, 300)) for o in (1, 2)]
    await settle()
    node.fail = True
    await node.release(0)
    await node.release(1)
    for task in (first, *waiting):
        with pytest.raises(ProtocolError):
            await task
    node.fail = False
    later = asyncio.create_task(reads.since("room:1", OPTS, 1, 300))
    await node.release(2)
    assert offsets(await asyncio.wait_for(later, 5 * UNIT)) == [2, 3]


async def test_channels_and_options_are_read_apart() -> None:
    node = Stream(top=2)
    reads = RecoveryReads(node)
    other = ChannelOptions(history_size=10, history_ttl=300)
    tasks = [
        asyncio.create_task(reads.since("room:1", OPTS, 1, 300)),
        asyncio.create_task(reads.since("room:2", OPTS, 1, 300)),
        asyncio.create_task(reads.since("room:1", other, 1, 300)),
    ]
    await settle()
    assert len(node.calls) == 3
    for i in range(3):
        await node.release(i)
    assert [offsets(await t) for t in tasks] == [[2], [2], [2]]


async def test_a_read_cancelled_before_it_ran_cancels_its_waiters_only() -> None:
    node = Stream(top=2)
    reads = RecoveryReads(node)
    first = asyncio.create_task(reads.since("room:1", OPTS, 2, 300))
    await settle()
    waiting = asyncio.create_task(reads.since("room:1", OPTS, 1, 300))
    await settle()
    gate = node.gates[0]
    gate.set()
    # The first read completes and spawns the batch's read; the node stops it at once.
    await asyncio.sleep(0)  # the first read returns and issues the batch's
    assert len(node.spawned) == 1
    node.spawned[0].cancel()
    assert offsets(await first) == []
    with pytest.raises(asyncio.CancelledError):
        await waiting
    later = asyncio.create_task(reads.since("room:1", OPTS, 1, 300))
    await node.release(1)
    assert offsets(await asyncio.wait_for(later, 5 * UNIT)) == [2]
