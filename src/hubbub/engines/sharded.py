"""Several Redis servers working as one engine: each channel lives on one shard.

Channels are spread with jump consistent hashing, so adding a shard moves only about 1/N of
the channels. The control channel (user operations, node announcements) lives on the first
shard. Every node must list the same shards in the same order.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

from hubbub.engines.base import (
    BrokerEventHandler,
    HistoryFilter,
    HistoryResult,
    PresenceStats,
    PublishOptions,
    PublishResult,
    ReapedEntry,
)
from hubbub.engines.redis_broker import RedisBroker
from hubbub.engines.redis_presence import RedisPresenceManager
from hubbub.protocol.messages import ClientInfo, Publication


def jump_hash(key: int, buckets: int) -> int:
    """Jump consistent hash (Lamping and Veach, 2014): the bucket of ``key`` in ``buckets``."""
    b, j = -1, 0
    while j < buckets:
        b = j
        key = (key * 2862933555777941757 + 1) & 0xFFFFFFFFFFFFFFFF
        j = int((b + 1) * (float(1 << 31) / float((key >> 33) + 1)))
    return b


def shard_of(channel: str, shards: int) -> int:
    """The shard index of ``channel`` among ``shards``."""
    digest = hashlib.blake2b(channel.encode(), digest_size=8).digest()
    return jump_hash(int.from_bytes(digest, "big"), shards)


class ShardedBroker:
    """A :class:`~hubbub.engines.base.Broker` over several :class:`RedisBroker` shards."""

    def __init__(self, shards: Sequence[RedisBroker]) -> None:
        if not shards:
            raise ValueError("at least one shard")
        self.shards = list(shards)

    def _shard(self, channel: str) -> RedisBroker:
        return self.shards[shard_of(channel, len(self.shards))]

    def set_event_handler(self, handler: BrokerEventHandler) -> None:
        for shard in self.shards:
            shard.set_event_handler(handler)

    @property
    def healthy(self) -> bool:
        return all(shard.healthy for shard in self.shards)

    async def start(self) -> None:
        for shard in self.shards:
            await shard.start()

    async def close(self) -> None:
        for shard in self.shards:
            await shard.close()

    async def subscribe(self, channel: str) -> None:
        await self._shard(channel).subscribe(channel)

    async def unsubscribe(self, channel: str) -> None:
        await self._shard(channel).unsubscribe(channel)

    async def publish(self, channel: str, pub: Publication, opts: PublishOptions) -> PublishResult:
        return await self._shard(channel).publish(channel, pub, opts)

    async def publish_join(self, channel: str, info: ClientInfo) -> None:
        await self._shard(channel).publish_join(channel, info)

    async def publish_leave(self, channel: str, info: ClientInfo) -> None:
        await self._shard(channel).publish_leave(channel, info)

    async def history(
        self, channel: str, flt: HistoryFilter, opts: PublishOptions
    ) -> HistoryResult:
        return await self._shard(channel).history(channel, flt, opts)

    async def remove_history(self, channel: str) -> None:
        await self._shard(channel).remove_history(channel)

    async def renew_epoch(self, channel: str, epoch: str) -> None:
        await self._shard(channel).renew_epoch(channel, epoch)

    async def publish_control(self, data: bytes) -> None:
        await self.shards[0].publish_control(data)


class ShardedPresenceManager:
    """A :class:`~hubbub.engines.base.PresenceManager` over several Redis shards."""

    def __init__(self, shards: Sequence[RedisPresenceManager]) -> None:
        if not shards:
            raise ValueError("at least one shard")
        self.shards = list(shards)

    def _shard(self, channel: str) -> RedisPresenceManager:
        return self.shards[shard_of(channel, len(self.shards))]

    async def close(self) -> None:
        for shard in self.shards:
            await shard.close()

    # Each shard keeps its own entries' owners, so liveness is renewed and reaped on each.

    def set_owner(self, node: str) -> None:
        for shard in self.shards:
            shard.set_owner(node)

    async def keep_alive(self, lapse: float) -> bool:
        renewed = [await shard.keep_alive(lapse) for shard in self.shards]
        return all(renewed)

    async def reap_lapsed(self) -> list[ReapedEntry]:
        reaped: list[ReapedEntry] = []
        for shard in self.shards:
            reaped.extend(await shard.reap_lapsed())
        return reaped

    async def add_presence(self, channel: str, info: ClientInfo, ttl: float) -> None:
        await self._shard(channel).add_presence(channel, info, ttl)

    async def remove_presence(self, channel: str, client_id: str, user: str) -> None:
        await self._shard(channel).remove_presence(channel, client_id, user)

    async def presence(self, channel: str) -> dict[str, ClientInfo]:
        return await self._shard(channel).presence(channel)

    async def presence_stats(self, channel: str) -> PresenceStats:
        return await self._shard(channel).presence_stats(channel)
