"""The Redis presence manager: who is in a channel, shared by every node on one Redis server.

Each entry expires unless its session renews it. A node also records the entries it added and
renews its own liveness; when a node lapses (it died without removing its entries), one live
node wins a lock and removes them, so that the leaves are sent (:mod:`.redis_scripts` has the
layout).
"""

from __future__ import annotations

from hubbub.engines.base import PresenceStats, ReapedEntry

# Raises MissingExtra, naming the redis extra, when the redis package is absent.
from hubbub.engines.redis_client import (
    POOL_SIZE,
    POOL_TIMEOUT,
    Connector,
    guard,
    log,
    pooled_client,
)
from hubbub.engines.redis_codec import pack_info, unpack_info
from hubbub.engines.redis_scripts import (
    ADD_PRESENCE,
    CLAIM,
    FORGET,
    KEEP_ALIVE,
    LAPSED,
    OWN,
    PRESENCE,
    REAP,
    REAP_LOCK_MS,
    ms,
)
from hubbub.protocol.messages import ClientInfo


class RedisPresenceManager:
    """A :class:`~hubbub.engines.base.PresenceManager` over one Redis server.

    Args:
        url: the Redis URL, e.g. ``redis://127.0.0.1:6379/0``, or the
            :data:`~.redis_client.Connector` of a master found through Sentinel.
        prefix: prefix of every key, to share a Redis between deployments.
        pool_size: most connections to Redis.
        pool_timeout: seconds a call waits for a free connection before it fails.
    """

    def __init__(
        self,
        url: str | Connector = "redis://127.0.0.1:6379/0",
        *,
        prefix: str = "hubbub",
        pool_size: int = POOL_SIZE,
        pool_timeout: float = POOL_TIMEOUT,
    ) -> None:
        self._redis = pooled_client(url, pool_size, pool_timeout)
        self._prefix = prefix
        self._owner = ""
        self._presence = self._redis.register_script(PRESENCE)
        self._add = self._redis.register_script(ADD_PRESENCE)
        self._own = self._redis.register_script(OWN)
        # Liveness is renewed on a connection of its own: behind a burst that fills the pool a
        # live node would otherwise wait its turn past ``node_lapse`` and be taken for dead.
        self._liveness = pooled_client(url, 1, pool_timeout)
        self._keep_alive = self._liveness.register_script(KEEP_ALIVE)
        self._lapsed = self._redis.register_script(LAPSED)
        self._claim = self._redis.register_script(CLAIM)
        self._reap = self._redis.register_script(REAP)
        self._forget = self._redis.register_script(FORGET)

    def _keys(self, channel: str) -> list[str]:
        return [
            f"{self._prefix}:presence:{{{channel}}}",
            f"{self._prefix}:presence:exp:{{{channel}}}",
        ]

    @property
    def _nodes(self) -> str:
        return f"{self._prefix}:{{nodes}}"

    def _owned(self, node: str) -> str:
        return f"{self._prefix}:{{nodes}}:owned:{node}"

    async def close(self) -> None:
        await self._redis.aclose()
        await self._liveness.aclose()

    def set_owner(self, node: str) -> None:
        self._owner = node

    async def keep_alive(self, lapse: float) -> bool:
        renewed = await guard(
            lambda: self._keep_alive(keys=[self._nodes], args=[self._owner, ms(lapse)])
        )
        return bool(renewed)

    async def add_presence(self, channel: str, info: ClientInfo, ttl: float) -> None:
        packed = pack_info(info)
        if not self._owner:
            await guard(
                lambda: self._add(keys=self._keys(channel), args=[info.client, packed, ms(ttl)])
            )
            return
        owned = self._owned(self._owner)

        async def add() -> None:
            # One round trip: the entry, and its owner's record of it (which lives as long as
            # the longest-lived entry it lists).
            async with self._redis.pipeline(transaction=False) as pipe:
                await self._add(
                    keys=self._keys(channel), args=[info.client, packed, ms(ttl)], client=pipe
                )
                await self._own(
                    keys=[owned], args=[f"{info.client}\0{channel}", ms(ttl)], client=pipe
                )
                await pipe.execute()

        await guard(add)

    async def remove_presence(self, channel: str, client_id: str, user: str) -> None:
        data, expiry = self._keys(channel)

        async def remove() -> None:
            async with self._redis.pipeline(transaction=False) as pipe:
                pipe.hdel(data, client_id)
                pipe.zrem(expiry, client_id)
                if self._owner:
                    pipe.srem(self._owned(self._owner), f"{client_id}\0{channel}")
                await pipe.execute()

        await guard(remove)

    async def reap_lapsed(self) -> list[ReapedEntry]:
        lapsed = await guard(lambda: self._lapsed(keys=[self._nodes], args=[self._owner]))
        reaped: list[ReapedEntry] = []
        for raw_uid in lapsed:
            reaped.extend(await self._reap_node(raw_uid.decode()))
        return reaped

    async def _reap_node(self, node: str) -> list[ReapedEntry]:
        """Remove the entries of the lapsed ``node`` if this caller wins its lock."""
        lock = f"{self._prefix}:{{nodes}}:reap:{node}"
        claimed = await guard(
            lambda: self._claim(
                keys=[self._nodes, lock], args=[node, self._owner or "-", REAP_LOCK_MS]
            )
        )
        if not claimed:
            return []
        owned = self._owned(node)
        members = await guard(lambda: self._redis.smembers(owned))
        by_channel: dict[str, list[str]] = {}
        for member in members:
            text = member.decode() if isinstance(member, bytes) else member
            client, _, channel = text.partition("\0")
            by_channel.setdefault(channel, []).append(client)
        channels = list(by_channel)
        infos = await self._remove_entries(by_channel) if channels else []
        await guard(lambda: self._forget(keys=[self._nodes, owned], args=[node]))
        if members:
            log.info("node %s lapsed: removed its %d presence entries", node, len(members))
        return [
            ReapedEntry(channel, unpack_info(packed))
            for channel, removed in zip(channels, infos, strict=True)
            for packed in removed
        ]

    async def _remove_entries(self, by_channel: dict[str, list[str]]) -> list[list[bytes]]:
        """Remove the given clients' entries, channel by channel (in the order of
        ``by_channel``); the packed infos removed from each channel."""

        async def remove() -> list[list[bytes]]:
            async with self._redis.pipeline(transaction=False) as pipe:
                for channel, clients in by_channel.items():
                    await self._reap(keys=self._keys(channel), args=clients, client=pipe)
                return list(await pipe.execute())

        return await guard(remove)

    async def presence(self, channel: str) -> dict[str, ClientInfo]:
        flat = await guard(lambda: self._presence(keys=self._keys(channel), args=[]))
        return {flat[i].decode(): unpack_info(flat[i + 1]) for i in range(0, len(flat), 2)}

    async def presence_stats(self, channel: str) -> PresenceStats:
        clients = await self.presence(channel)
        return PresenceStats(
            num_clients=len(clients), num_users=len({i.user for i in clients.values()})
        )
