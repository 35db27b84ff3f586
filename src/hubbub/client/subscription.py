"""A client-side channel subscription: an async iterator that never skips or repeats.

The subscription remembers its stream position (offset and epoch). Whenever it has to subscribe
again (after a reconnect, after the server asks with a code >= 2500, or after the consumer fell
behind) it asks the server to recover from that position; recovered publications are queued
before live ones, duplicates are dropped by offset, and when the server cannot recover a
:class:`~hubbub.client.events.Gap` is queued instead, so the consumer knows.

Slow consumers: the queue holds at most ``max_queue`` items. When it is full, new publications
are not queued; once the consumer has drained the queue, the subscription resubscribes with
recovery from the last queued offset, so nothing is lost while history covers the gap (and a
``Gap`` says so when it does not). Channels without history have no position to recover from:
there a full queue drops publications and queues a ``Gap``.
"""

from __future__ import annotations

import asyncio
import enum
from collections.abc import AsyncIterator, Callable
from typing import TYPE_CHECKING, Any

from hubbub.client.events import ClientClosed, ClientInfo, Gap, JoinLeave, Publication

if TYPE_CHECKING:
    from hubbub.client.client import Client

Item = Publication | Gap


class SubState(enum.Enum):
    UNSUBSCRIBED = "unsubscribed"
    SUBSCRIBING = "subscribing"
    SUBSCRIBED = "subscribed"


def client_info(raw: dict[str, Any] | None) -> ClientInfo | None:
    if not raw:
        return None
    return ClientInfo(
        user=raw.get("user", ""),
        client=raw.get("client", ""),
        conn_info=raw.get("conn_info"),
        chan_info=raw.get("chan_info"),
    )


class Subscription:
    """A channel subscription; iterate it with ``async for item in sub``.

    Items are :class:`Publication` and, when the server cannot recover missed ones,
    :class:`Gap`. Iteration ends when the subscription is unsubscribed (by you or by the server
    with a code below 2500) and raises :class:`ClientClosed` when the client is closed.
    """

    def __init__(
        self,
        client: Client,
        channel: str,
        *,
        token: str = "",
        join_leave: bool = False,
        max_queue: int = 1000,
    ) -> None:
        self.client = client
        self.channel = channel
        self.token = token
        self.join_leave = join_leave
        self.state = SubState.UNSUBSCRIBED
        self.offset = 0
        self.epoch = ""
        self.recoverable = False
        self.max_queue = max_queue
        self._queue: asyncio.Queue[Item | None] = asyncio.Queue()
        self._overflow = False
        self._subscribed = asyncio.Event()
        self._listeners: list[Callable[[JoinLeave], None]] = []
        self._closed: ClientClosed | None = None
        # Publications that arrived after the server sent the subscribe reply but before this
        # client applied it (the reader runs ahead of the task awaiting the reply): applied
        # right after the reply, never dropped.
        self._early: list[dict[str, Any]] = []

    # -----------------------------------------------------------------------------------------
    # Public API

    async def publish(self, data: Any) -> None:
        """Publish ``data`` (any JSON value) to this channel."""
        await self.client.publish(self.channel, data)

    async def unsubscribe(self) -> None:
        """Stop receiving; the iterator ends after what is queued."""
        if self.state is not SubState.UNSUBSCRIBED:
            self.state = SubState.UNSUBSCRIBED
            self.client._forget(self)
            await self.client._call_if_connected("unsubscribe", {"channel": self.channel})
        self._queue.put_nowait(None)

    def on_join_leave(self, listener: Callable[[JoinLeave], None]) -> None:
        """Call ``listener`` for every join and leave of the channel (ask with ``join_leave``)."""
        self._listeners.append(listener)

    def __aiter__(self) -> AsyncIterator[Item]:
        return self

    async def __anext__(self) -> Item:
        if self._queue.empty():
            if self._closed is not None:
                raise self._closed
            if self._overflow:
                # The consumer has caught up: fetch what was not queued from history.
                self._overflow = False
                self.client._spawn(self._resubscribe())
        item = await self._queue.get()
        if item is None:
            if self._closed is not None:
                raise self._closed
            raise StopAsyncIteration
        return item

    # -----------------------------------------------------------------------------------------
    # Driven by the client

    def subscribe_request(self) -> dict[str, Any]:
        request: dict[str, Any] = {"channel": self.channel}
        if self.token:
            request["token"] = self.token
        if self.join_leave:
            request["join_leave"] = True
        if self.recoverable:
            request.update(recover=True, offset=self.offset, epoch=self.epoch)
        return request

    def on_subscribed(self, result: dict[str, Any]) -> None:
        """Apply a subscribe result (or a server-side subscribe push)."""
        self.state = SubState.SUBSCRIBED
        was_recovering = self.recoverable and bool(result.get("was_recovering"))
        if result.get("recoverable"):
            self.recoverable = True
        epoch = str(result.get("epoch", ""))
        offset = int(result.get("offset", 0))
        if was_recovering and not result.get("recovered"):
            self._queue.put_nowait(Gap(self.channel, offset, epoch, "not recoverable"))
            self.offset, self.epoch = offset, epoch
        elif result.get("recovered"):
            for pub in result.get("publications", []):
                self.on_publication(pub)
        elif self.recoverable or result.get("positioned"):
            self.offset, self.epoch = offset, epoch
        early, self._early = self._early, []
        for pub in early:
            self.on_publication(pub)  # offsets the reply covered are skipped there
        self._subscribed.set()

    def hold(self, raw: dict[str, Any]) -> None:
        """Keep a publication that arrived while the subscribe reply is being applied."""
        if len(self._early) < self.max_queue:
            self._early.append(raw)
        elif self.recoverable:
            self._overflow = True  # fetched from history once the consumer catches up
        else:
            offset = int(raw.get("offset", 0))
            self._queue.put_nowait(Gap(self.channel, offset, self.epoch, "consumer too slow"))

    def on_publication(self, raw: dict[str, Any]) -> None:
        offset = int(raw.get("offset", 0))
        if offset and offset <= self.offset:
            return  # already queued: recovered, or delivered before a resubscribe
        if self._overflow:
            return  # not queued now: fetched from history once the consumer catches up
        if self._queue.qsize() >= self.max_queue:
            if self.recoverable and offset:
                self._overflow = True
                return
            self._queue.put_nowait(Gap(self.channel, offset, self.epoch, "consumer too slow"))
            return
        if offset:
            self.offset = offset
        self._queue.put_nowait(
            Publication(
                channel=self.channel,
                data=raw.get("data"),
                offset=offset,
                info=client_info(raw.get("info")),
                tags=dict(raw.get("tags") or {}),
            )
        )

    def handle_join_leave(self, raw: dict[str, Any], joined: bool) -> None:
        info = client_info(raw.get("info"))
        if info is None:
            return
        event = JoinLeave(self.channel, info, joined)
        for listener in self._listeners:
            listener(event)

    def on_unsubscribed(self, code: int) -> None:
        """The server unsubscribed us: below 2500 for good, from 2500 resubscribe."""
        if code >= 2500:
            self.client._spawn(self._resubscribe())
        else:
            self.state = SubState.UNSUBSCRIBED
            self.client._forget(self)
            self._queue.put_nowait(None)

    def on_disconnected(self) -> None:
        """The connection dropped: the client resubscribes (with recovery) on reconnect."""
        if self.state is SubState.SUBSCRIBED:
            self.state = SubState.SUBSCRIBING
        self._early.clear()
        self._subscribed.clear()

    def on_closed(self, reason: ClientClosed) -> None:
        self._closed = reason
        self.state = SubState.UNSUBSCRIBED
        self._queue.put_nowait(None)

    async def _resubscribe(self) -> None:
        if self.state is SubState.UNSUBSCRIBED:
            return
        self.state = SubState.SUBSCRIBING
        await self.client._call_if_connected("unsubscribe", {"channel": self.channel})
        await self.client._subscribe_now(self)
