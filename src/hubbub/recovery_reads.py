"""Stream reads of subscribers that recover or take a position, coalesced per channel.

When a node dies its clients come back at once, and the members of a room all recover the same
channel from the same (or nearby) offsets. Each would read the stream on its own: one Redis
round trip and one pooled connection per client, the pool's limit reached at a few hundred.
Here, while a read of a channel is in flight, the subscribers that ask for the same channel
wait together, and one read issued when the previous one completes serves them all: from the
lowest offset any of them asks for, each taking the publications after its own offset.

Why no one joins a read already issued: a subscriber is registered (its live publications
kept aside) before it asks, and the stream must be read after that, or a publication in
between would be neither in the read nor kept aside. A batch is therefore only ever joined
before it is issued.

A read that returns as many publications as asked (it may have stopped short of the top)
serves only the subscribers at the lowest offset; the others read again on their own, so
every subscriber gets what a read of its own would have given it.
"""

from __future__ import annotations

import asyncio
import bisect
from collections import Counter
from collections.abc import Coroutine
from dataclasses import dataclass, field
from typing import Any, Protocol, TypeVar

from hubbub.config import ChannelOptions
from hubbub.engines.base import HistoryFilter, HistoryResult, StreamPosition

T = TypeVar("T")

BATCH_LIMIT = 1000
"""Most subscribers one read serves; those after them read on their own."""


class ReadHost(Protocol):
    """What the coalesced reads need of their node."""

    counters: Counter[str]

    def spawn_task(self, coro: Coroutine[Any, Any, T]) -> asyncio.Task[T]: ...

    async def read_history(
        self, channel: str, flt: HistoryFilter, opts: ChannelOptions
    ) -> HistoryResult: ...


@dataclass(eq=False)
class _Batch:
    """Subscribers waiting for one read of a channel that is not issued yet."""

    host: ReadHost
    channel: str
    opts: ChannelOptions
    limit: int
    since: list[int] = field(default_factory=list)
    """The offsets asked for; a subscriber that only wants the position is not in it."""
    waiters: int = 0
    done: asyncio.Future[HistoryResult] = field(
        default_factory=lambda: asyncio.get_running_loop().create_future()
    )


Key = tuple[str, bool, int, float, float, int]
"""A channel and what a read of it depends on: its history options and the limit."""


class RecoveryReads:
    """Coalesces concurrent reads of a channel's stream (see the module's docstring).

    Args:
        node: the node whose engine is read.
    """

    def __init__(self, node: ReadHost) -> None:
        self.node = node
        self._reading: set[Key] = set()
        """Channels (with their read's options) with a read in flight."""
        self._queued: dict[Key, _Batch] = {}
        """The batch that waits for the read in flight, by channel."""

    async def top(self, channel: str, opts: ChannelOptions) -> StreamPosition:
        """The stream's top position (its epoch made if new), read after this call began."""
        result = await self._read(channel, opts, None, 0)
        return result.position

    async def since(
        self, channel: str, opts: ChannelOptions, offset: int, limit: int
    ) -> HistoryResult:
        """At most ``limit`` (> 0, or -1 for all) publications after ``offset`` and the top,
        as :meth:`~hubbub.node.Node.read_history` with ``since=offset`` would give them,
        read after this call began."""
        return await self._read(channel, opts, offset, limit)

    async def _read(
        self, channel: str, opts: ChannelOptions, offset: int | None, limit: int
    ) -> HistoryResult:
        key: Key = (
            channel,
            opts.use_history,
            opts.history_size,
            opts.history_ttl,
            opts.history_meta_ttl,
            limit,
        )
        if key not in self._reading:
            self._reading.add(key)
            try:
                return await self._fetch(key, opts, offset, limit)
            finally:
                self._next(key)
        batch = self._queued.get(key)
        if batch is None:
            batch = self._queued[key] = _Batch(self.node, channel, opts, limit)
        elif batch.waiters >= BATCH_LIMIT:
            return await self._fetch(key, opts, offset, limit)
        else:
            self.node.counters["history.coalesced_reads"] += 1
        batch.waiters += 1
        if offset is not None:
            batch.since.append(offset)
        # Shielded: a waiter that leaves (its client gone) must not cancel the others' read.
        result = await asyncio.shield(batch.done)
        if offset is None:
            return result
        if offset != min(batch.since) and limit > 0 and len(result.publications) >= limit:
            # The read may stop short of the top: enough for the lowest offset only.
            return await self._fetch(key, opts, offset, limit)
        return _after(result, offset)

    async def _fetch(
        self, key: Key, opts: ChannelOptions, offset: int | None, limit: int
    ) -> HistoryResult:
        since = None if offset is None else StreamPosition(offset, "")
        return await self.node.read_history(key[0], HistoryFilter(limit=limit, since=since), opts)

    def _next(self, key: Key) -> None:
        """The read in flight of ``key`` completed: the batch queued behind it is issued."""
        batch = self._queued.pop(key, None)
        if batch is None:
            self._reading.discard(key)
            return
        # ``key`` stays in ``_reading``: those who ask from now on queue behind this batch.
        task = self.node.spawn_task(self._issue(batch))
        task.add_done_callback(lambda _: self._issued(key, batch))

    def _issued(self, key: Key, batch: _Batch) -> None:
        if not batch.done.done():
            # Cancelled before it could read (the node stopping): its waiters are too.
            batch.done.cancel()
        self._next(key)

    @staticmethod
    async def _issue(batch: _Batch) -> None:
        """Read for ``batch``: from its lowest offset, or only the top if none asked more."""
        offset = min(batch.since) if batch.since else None
        limit = batch.limit if batch.since else 0
        since = None if offset is None else StreamPosition(offset, "")
        try:
            result = await batch.host.read_history(
                batch.channel, HistoryFilter(limit=limit, since=since), batch.opts
            )
        except Exception as exc:
            batch.done.set_exception(exc)
            # Every waiter may have left meanwhile: nobody else would retrieve it.
            batch.done.exception()
        else:
            batch.done.set_result(result)


def _after(result: HistoryResult, offset: int) -> HistoryResult:
    """``result`` with only the publications after ``offset``."""
    pubs = result.publications
    start = bisect.bisect_right(pubs, offset, key=lambda p: p.offset)
    if start == 0:
        return result
    return HistoryResult(publications=pubs[start:], position=result.position)
