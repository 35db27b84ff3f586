"""The memory engine: broker and presence for a single process.

Streams, presence and idempotency keys live in dictionaries of this process. Time comes from a
:class:`~hubbub.clock.Clock`, so TTLs are testable with a fake clock; expired entries are pruned
lazily, on the next access, rather than by timers.
"""

from __future__ import annotations

import random
import string
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass, field

import msgspec

from hubbub.clock import Clock, SystemClock
from hubbub.engines.base import (
    BrokerEventHandler,
    HistoryFilter,
    HistoryResult,
    PresenceStats,
    PublishOptions,
    PublishResult,
    ReapedEntry,
    StreamPosition,
)
from hubbub.protocol.codes import ErrorCode, error
from hubbub.protocol.messages import ClientInfo, Publication


def new_epoch() -> str:
    """A random stream identity: 8 ASCII letters."""
    return "".join(random.choices(string.ascii_letters, k=8))


@dataclass(slots=True)
class _Stream:
    epoch: str
    top: int = 0
    # (expires_at, publication) oldest first; publications carry their offsets.
    items: deque[tuple[float, Publication]] = field(default_factory=deque)
    meta_expires_at: float = 0.0

    def prune(self, now: float) -> None:
        items = self.items
        while items and items[0][0] <= now:
            items.popleft()


class MemoryBroker:
    """A :class:`~hubbub.engines.base.Broker` for one process.

    Publishing appends and delivers in the same synchronous step, so the contract's atomicity
    and per-channel order hold trivially; nothing is ever lost between publish and delivery.
    """

    def __init__(self, clock: Clock | None = None) -> None:
        self._clock: Clock = clock or SystemClock()
        self._handler: BrokerEventHandler | None = None
        self._subscribed: set[str] = set()
        self._streams: dict[str, _Stream] = {}
        self._idempotency: dict[tuple[str, str], tuple[float, PublishResult]] = {}
        self._next_sweep = 0.0

    def set_event_handler(self, handler: BrokerEventHandler) -> None:
        self._handler = handler

    async def start(self) -> None:
        return None

    async def close(self) -> None:
        self._subscribed.clear()

    async def subscribe(self, channel: str) -> None:
        self._subscribed.add(channel)

    async def unsubscribe(self, channel: str) -> None:
        self._subscribed.discard(channel)

    @property
    def stream_count(self) -> int:
        """How many channel streams are kept (for tests and statistics)."""
        return len(self._streams)

    def _stream(self, channel: str, opts: PublishOptions, now: float) -> _Stream:
        stream = self._streams.get(channel)
        if stream is not None and stream.meta_expires_at <= now:
            # The stream was idle past its meta TTL: forget it, so a new epoch starts.
            del self._streams[channel]
            stream = None
        if stream is None:
            stream = _Stream(epoch=new_epoch())
            self._streams[channel] = stream
        stream.meta_expires_at = now + opts.history_meta_ttl
        stream.prune(now)
        return stream

    def _forget_idempotency_keys(self, now: float) -> None:
        # Keys are stored in the order they were first seen, so with one window the oldest come
        # first: dropping from the front until a live one costs O(expired), not O(all).
        keys = self._idempotency
        while keys:
            key = next(iter(keys))
            if keys[key][0] > now:
                break
            del keys[key]

    def _sweep(self, now: float) -> None:
        """Forget streams idle past their meta TTL (at most once a minute: O(channels))."""
        if now < self._next_sweep:
            return
        self._next_sweep = now + 60.0
        for channel in [c for c, s in self._streams.items() if s.meta_expires_at <= now]:
            del self._streams[channel]

    async def publish(self, channel: str, pub: Publication, opts: PublishOptions) -> PublishResult:
        return self.publish_now(channel, pub, opts)

    def publish_now(self, channel: str, pub: Publication, opts: PublishOptions) -> PublishResult:
        """:meth:`publish` without awaiting: nothing in it waits (see
        :class:`~hubbub.engines.base.ImmediatePublisher`)."""
        now = self._clock.monotonic()
        key = (channel, opts.idempotency_key)
        if opts.idempotency_key:
            self._forget_idempotency_keys(now)
            seen = self._idempotency.get(key)
            if seen is not None and seen[0] > now:
                return PublishResult(position=seen[1].position, suppressed=True)
        if opts.use_history:
            self._sweep(now)
            stream = self._stream(channel, opts, now)
            stream.top += 1
            pub = msgspec.structs.replace(pub, offset=stream.top)
            stream.items.append((now + opts.history_ttl, pub))
            while len(stream.items) > opts.history_size:
                stream.items.popleft()
            position = StreamPosition(stream.top, stream.epoch)
        else:
            position = StreamPosition(0, "")
        result = PublishResult(position=position)
        if opts.idempotency_key:
            self._idempotency[key] = (now + opts.idempotent_result_ttl, result)
        if self._handler is not None and channel in self._subscribed:
            self._handler.handle_publication(channel, pub, position)
        return result

    async def publish_join(self, channel: str, info: ClientInfo) -> None:
        if self._handler is not None and channel in self._subscribed:
            self._handler.handle_join(channel, info)

    async def publish_leave(self, channel: str, info: ClientInfo) -> None:
        if self._handler is not None and channel in self._subscribed:
            self._handler.handle_leave(channel, info)

    async def history(
        self, channel: str, flt: HistoryFilter, opts: PublishOptions
    ) -> HistoryResult:
        now = self._clock.monotonic()
        if not opts.use_history:
            # No stream is kept for this channel: an empty stream without identity.
            return HistoryResult(publications=[], position=StreamPosition(0, ""))
        stream = self._streams.get(channel)
        if stream is None or stream.meta_expires_at <= now:
            self._sweep(now)
            stream = self._stream(channel, opts, now)
            if stream.top == 0:
                # Created by a read (every subscribe reads the position): until something is
                # published it only needs to outlive the history TTL, not the meta TTL, or
                # every channel ever subscribed (each user's personal channel) stays for days.
                stream.meta_expires_at = now + min(opts.history_ttl, opts.history_meta_ttl)
        else:
            stream.prune(now)
        position = StreamPosition(stream.top, stream.epoch)
        since = flt.since
        if since is not None and since.epoch and since.epoch != stream.epoch:
            raise error(ErrorCode.UNRECOVERABLE_POSITION)
        if flt.limit == 0:
            return HistoryResult(publications=[], position=position)
        pubs = [pub for _, pub in stream.items]
        if flt.reverse:
            if since is not None and since.offset:
                pubs = [p for p in pubs if p.offset < since.offset]
            pubs.reverse()
        elif since is not None:
            pubs = [p for p in pubs if p.offset > since.offset]
        if flt.limit > 0:
            pubs = pubs[: flt.limit]
        return HistoryResult(publications=pubs, position=position)

    async def remove_history(self, channel: str) -> None:
        stream = self._streams.get(channel)
        if stream is not None:
            stream.items.clear()

    async def renew_epoch(self, channel: str, epoch: str) -> None:
        stream = self._streams.get(channel)
        if stream is not None and stream.epoch == epoch:
            stream.epoch = new_epoch()

    def renew_epochs(self, channels: Iterable[str] | None = None) -> list[str]:
        """Give a new epoch to the streams of ``channels`` (every stream when None), whatever
        their epoch: their publications may be incomplete (a node that keeps streams of what
        it receives from other nodes missed some). Returns the channels renewed."""
        names = list(self._streams) if channels is None else list(channels)
        renewed = [c for c in names if c in self._streams]
        for channel in renewed:
            self._streams[channel].epoch = new_epoch()
        return renewed

    async def publish_control(self, data: bytes) -> None:
        return None  # one process: there is no other node

    @property
    def healthy(self) -> bool:
        return True


class MemoryPresenceManager:
    """A :class:`~hubbub.engines.base.PresenceManager` for one process."""

    def __init__(self, clock: Clock | None = None) -> None:
        self._clock: Clock = clock or SystemClock()
        # channel -> client id -> (expires_at, info)
        self._channels: dict[str, dict[str, tuple[float, ClientInfo]]] = {}
        self._alive = False

    def set_owner(self, node: str) -> None:
        return None  # one process: every entry is this node's

    async def keep_alive(self, lapse: float) -> bool:
        # One process: the owner cannot lapse while it runs; only its first call is "new".
        alive, self._alive = self._alive, True
        return alive

    async def reap_lapsed(self) -> list[ReapedEntry]:
        return []  # one process: no other node can die and leave entries behind

    def _live(self, channel: str) -> dict[str, tuple[float, ClientInfo]]:
        entries = self._channels.get(channel)
        if entries is None:
            return {}
        now = self._clock.monotonic()
        expired = [client for client, (until, _) in entries.items() if until <= now]
        for client in expired:
            del entries[client]
        if not entries:
            del self._channels[channel]
        return entries

    async def add_presence(self, channel: str, info: ClientInfo, ttl: float) -> None:
        until = self._clock.monotonic() + ttl
        self._channels.setdefault(channel, {})[info.client] = (until, info)

    async def remove_presence(self, channel: str, client_id: str, user: str) -> None:
        entries = self._channels.get(channel)
        if entries is not None:
            entries.pop(client_id, None)
            if not entries:
                del self._channels[channel]

    async def presence(self, channel: str) -> dict[str, ClientInfo]:
        return {client: info for client, (_, info) in self._live(channel).items()}

    async def presence_stats(self, channel: str) -> PresenceStats:
        entries = self._live(channel)
        users = {info.user for _, info in entries.values()}
        return PresenceStats(num_clients=len(entries), num_users=len(users))
