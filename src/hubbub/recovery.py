"""Gap checks: after the engine reconnects, which subscribers may have missed publications.

While the engine was unreachable, publications may have been lost on their way to this node.
When it is back, every positioned subscriber of the channels it subscribed to again is
compared with its stream's top; those whose position the stream does not continue are
stopped and made to recover (or learn that they cannot). A stream that went back in place
(a Redis restart without persistence) gets a new epoch first, so that recovery reports the
loss instead of taking an old position for a valid one.

The checker never imports the node: it asks what it needs of it through :class:`StreamHost`.
It also keeps the node's coalesced stream reads of subscribers that recover or take a position
(:mod:`hubbub.recovery_reads`), which sessions reach as ``node.gaps.reads``.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections import Counter
from collections.abc import Coroutine
from typing import TYPE_CHECKING, Any, Protocol, TypeVar

from hubbub.config import ChannelOptions
from hubbub.engines.base import Broker, HistoryFilter, HistoryResult, StreamPosition
from hubbub.index import LocalIndex, Subscriber
from hubbub.protocol.codes import ProtocolError
from hubbub.recovery_reads import RecoveryReads
from hubbub.subscription import Verdict, judge_top

if TYPE_CHECKING:
    from hubbub.subscription import Subscription

log = logging.getLogger("hubbub.node")

T = TypeVar("T")


class StreamHost(Protocol):
    """What the gap checks need of their node."""

    broker: Broker
    counters: Counter[str]
    index: LocalIndex

    def spawn_task(self, coro: Coroutine[Any, Any, T]) -> asyncio.Task[T]: ...

    async def stream_top(self, channel: str, opts: ChannelOptions) -> StreamPosition: ...

    async def read_history(
        self, channel: str, flt: HistoryFilter, opts: ChannelOptions
    ) -> HistoryResult: ...


class GapChecker:
    """Checks positioned subscribers against their streams after engine reconnects.

    Args:
        node: the node whose subscribers it checks.
    """

    BACKOFF = (0.05, 5.0)
    """First and longest pause (seconds, jittered) between tries of a check or a renewal."""

    def __init__(self, node: StreamHost) -> None:
        self.node = node
        self.reconnects = 0
        """How many times the engine reconnected since the node started."""
        # Channels to check against their streams -> the latest request for it.
        self._unchecked: dict[str, int] = {}
        self._check_requests = 0
        self._gap_check: asyncio.Task[None] | None = None
        self._renewing: dict[tuple[str, str], asyncio.Task[None]] = {}
        self._lost_logged: set[tuple[str, str, Verdict]] = set()
        self.reads = RecoveryReads(node)
        """The stream reads of subscribers that recover or take a position, coalesced."""

    def handle_reconnect(self, channels: list[str]) -> None:
        """The engine's event: it is back, subscribed to ``channels`` again."""
        self.node.counters["engine.reconnects"] += 1
        self.reconnects += 1
        for channel in channels:
            self.check_stream(channel)

    def check_stream(self, channel: str) -> None:
        """Compare ``channel``'s positioned subscribers with its stream in the background
        (see :meth:`_check_gaps`)."""
        self._check_requests += 1
        self._unchecked[channel] = self._check_requests
        if self._gap_check is None or self._gap_check.done():
            self._gap_check = self.node.spawn_task(self._check_gaps())

    async def _check_gaps(self) -> None:
        """After an engine outage: compare every positioned subscriber with its stream's top.

        Tries again, with backoff, until every channel was checked: right after a Redis
        restart the first calls may fail (connections that died with the old server), and
        giving up would leave subscribers silently behind. A reconnect while checking adds its
        channels to the same loop.
        """
        first, longest = self.BACKOFF
        delay = first
        while self._unchecked:
            channel, asked = next(iter(self._unchecked.items()))
            try:
                await self._check_channel(channel)
            except ProtocolError as exc:
                self.node.counters["engine.gap_check_retries"] += 1
                log.info("stream check of %s failed (%s); retrying", channel, exc.message)
                await asyncio.sleep(random.uniform(delay / 2, delay))
                delay = min(delay * 2, longest)
                continue
            delay = first
            if self._unchecked.get(channel) == asked:
                del self._unchecked[channel]

    async def _check_channel(self, channel: str) -> None:
        """Stop every positioned subscriber of ``channel`` whose stream does not continue its
        position any more (see :func:`~hubbub.subscription.judge_top`)."""
        index = self.node.index
        subs = index.channels.get(channel)
        if not subs:
            return
        # Those sharing a position are checked one by one, each at the shared position.
        index.ungroup_positioned(channel)
        # Positions as before the read: live publications may move them on meanwhile.
        tracked = [
            (session, sub, sub.epoch, sub.offset)
            for session in list(subs.values())
            if (sub := session.subscriptions.get(channel)) is not None
            and sub.recoverable
            and sub.pending is None
            and not sub.stale
        ]
        if not tracked:
            return
        top = await self.node.stream_top(channel, tracked[0][1].options)
        for session, sub, epoch, offset in tracked:
            verdict = judge_top(epoch, offset, top.epoch, top.offset)
            if verdict is Verdict.MISSED and sub.offset >= top.offset:
                continue  # what was published meanwhile reached it live, in order
            if verdict.lost:
                self.stream_lost(session, sub, verdict)
        for session, sub, _, _ in tracked:
            # Those the stream still continues share their position again (the transport:
            # sessions have one; other subscribers are never positioned).
            transport = getattr(session, "transport", None)
            if transport is not None and session.subscriptions.get(channel) is sub:
                index.group_subscriber(channel, session.client_id, session.codec, transport)

    def stream_lost(self, session: Subscriber, sub: Subscription, verdict: Verdict) -> None:
        """The stream stopped continuing ``sub``'s position (``verdict``): send nothing more on
        it, and make the client recover, or learn that it cannot. Never awaits."""
        if sub.stale or session.subscriptions.get(sub.channel) is not sub:
            return
        sub.stale = True
        self.node.counters[f"engine.stream_{verdict.value}"] += 1
        seen = (sub.channel, sub.epoch, verdict)
        if seen not in self._lost_logged:
            # Once per channel, epoch and kind, not once per subscriber.
            if len(self._lost_logged) > 1000:
                self._lost_logged.clear()
            self._lost_logged.add(seen)
            log.warning(
                "stream of %s does not continue epoch %s (%s): subscribers recover",
                sub.channel,
                sub.epoch,
                verdict.value,
            )
        self.node.spawn_task(self._tell_lost(session, sub, verdict))

    async def _tell_lost(self, session: Subscriber, sub: Subscription, verdict: Verdict) -> None:
        if verdict is Verdict.BEHIND:
            # The stream lost publications yet keeps its epoch: the client's position could
            # later be taken for a valid one (and "recovered" past the lost ones) once offsets
            # climb again. A new epoch first, so that its recovery reports the loss.
            try:
                await self._renew_epoch(sub.channel, sub.epoch)
            except Exception:
                # Telling the client matters more than the epoch: a stopped subscription that
                # is never told would stall silently.
                log.exception("renewing the epoch of %s failed", sub.channel)
        await session.recover_gap(sub)

    async def _renew_epoch(self, channel: str, epoch: str) -> None:
        """Renew ``channel``'s epoch once for all the subscribers that found it went back."""
        key = (channel, epoch)
        task = self._renewing.get(key)
        if task is None:
            task = self._renewing[key] = self.node.spawn_task(
                self._renew_epoch_retrying(channel, epoch)
            )
            task.add_done_callback(lambda _: self._renewing.pop(key, None))
        await asyncio.shield(task)

    async def _renew_epoch_retrying(self, channel: str, epoch: str) -> None:
        first, longest = self.BACKOFF
        delay = first
        for _ in range(10):
            try:
                await self.node.broker.renew_epoch(channel, epoch)
            except ProtocolError as exc:
                log.info("renewing the epoch of %s failed (%s); retrying", channel, exc.message)
                await asyncio.sleep(random.uniform(delay / 2, delay))
                delay = min(delay * 2, longest)
                continue
            self.node.counters["engine.epoch_renewed"] += 1
            return
        log.error("could not renew the epoch of %s; its subscribers are told anyway", channel)
