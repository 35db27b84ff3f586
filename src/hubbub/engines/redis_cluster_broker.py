"""The Redis broker over a Redis Cluster: sharded PUB/SUB, one connection per master.

The single-server broker's publish, history and epoch logic runs unchanged on the cluster
client, with keys tagged by channel (:func:`.redis_cluster.cluster_key`) and ``SPUBLISH``
instead of ``PUBLISH``. What is new is who listens: a shard channel is heard only on the master
that serves its slot, so the broker keeps one PUB/SUB *link* per master it has channels on, and
remembers where each channel lives. When a link drops (its master died, or was demoted), its
channels are *moved*: with backoff, the broker re-reads the cluster map and subscribes each on
the master that serves it now, then tells the node, which checks the streams for what was
missed meanwhile. A channel whose slot Redis moves elsewhere (resharding) is moved the same way.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, cast

from hubbub.engines.base import PublishOptions, PublishResult, engine_unavailable
from hubbub.engines.redis_broker import RedisBroker

# Raises MissingExtra, naming the redis extra, when the redis package is absent.
from hubbub.engines.redis_client import POOL_SIZE, POOL_TIMEOUT, guard, log
from hubbub.engines.redis_cluster import (
    ClusterConnector,
    check_prefix,
    check_version,
    cluster_key,
)
from hubbub.engines.redis_codec import pack_info
from hubbub.engines.redis_scripts import HISTORY, PUBLISH, RENEW_EPOCH
from hubbub.protocol.messages import ClientInfo, Publication

if TYPE_CHECKING:
    import redis.asyncio as aioredis
    from redis.asyncio.client import PubSub
    from redis.asyncio.cluster import ClusterNode, RedisCluster

CLUSTER_PUBLISH = PUBLISH.replace("redis.call('PUBLISH'", "redis.call('SPUBLISH'")
"""The publish script with a sharded publish: the shard channel is in the channel's slot."""
assert CLUSTER_PUBLISH != PUBLISH

MOVE_BACKOFF_CAP = 1.0
"""Most seconds between two tries to move a lost master's channels: a failover takes about
``cluster-node-timeout`` plus a vote, and the channels should follow soon after."""


@dataclass
class _Link:
    """The sharded PUB/SUB connection to one master, and the task that reads it."""

    node: str
    client: aioredis.Redis
    pubsub: PubSub
    reader: asyncio.Task[None] | None = None

    async def close(self) -> None:
        if self.reader is not None and self.reader is not asyncio.current_task():
            self.reader.cancel()
            await asyncio.gather(self.reader, return_exceptions=True)
        with contextlib.suppress(Exception):
            await self.pubsub.aclose()  # type: ignore[no-untyped-call]
        with contextlib.suppress(Exception):
            await self.client.aclose()


class RedisClusterBroker(RedisBroker):
    """A :class:`~hubbub.engines.base.Broker` over a Redis Cluster (Redis 7.0 or later).

    Args:
        connector: the cluster (:class:`~.redis_cluster.ClusterConnector`).
        prefix: prefix of every key and shard channel; no braces.
        pool_size: most connections per master (the PUB/SUB links are extra, one per master).
        pool_timeout: seconds a call waits for its turn before it fails.
    """

    def __init__(
        self,
        connector: ClusterConnector,
        *,
        prefix: str = "hubbub",
        pool_size: int = POOL_SIZE,
        pool_timeout: float = POOL_TIMEOUT,
    ) -> None:
        check_prefix(prefix)
        super().__init__(connector, prefix=prefix, pool_size=pool_size, pool_timeout=pool_timeout)
        self._connector = connector
        self._links: dict[str, _Link] = {}
        self._opening = asyncio.Lock()
        # shard channel -> the master (node name) it is subscribed on
        self._homes: dict[str, str] = {}
        # shard channel (as Redis sends it) -> channel; the control channel maps to ""
        self._names: dict[bytes, str] = {}
        # masters whose channels are being moved (their link dropped)
        self._moving: set[str] = set()
        self._moves: set[asyncio.Task[None]] = set()

    @property
    def healthy(self) -> bool:
        return self._healthy and not self._moving

    @property
    def _cluster(self) -> RedisCluster:
        return cast("RedisCluster", self.redis)

    def _key(self, kind: str, channel: str) -> str:
        return cluster_key(self._prefix, kind, channel)

    def _pubsub_channel(self, channel: str) -> str:
        return cluster_key(self._prefix, "ch", channel)

    async def start(self) -> None:
        self._redis = self._connector(*self._pool)
        self._publish = self._redis.register_script(CLUSTER_PUBLISH)
        self._history = self._redis.register_script(HISTORY)
        self._renew_epoch = self._redis.register_script(RENEW_EPOCH)
        await check_version(self._cluster)
        self._names[self._control.encode()] = ""
        await self._listen(self._control)
        self._healthy = True

    async def close(self) -> None:
        self._healthy = False
        for task in list(self._moves):
            task.cancel()
        await asyncio.gather(*self._moves, return_exceptions=True)
        links, self._links = list(self._links.values()), {}
        for link in links:
            await link.close()
        if self._redis is not None:
            await self._redis.aclose()
            self._redis = None

    # -- links ----------------------------------------------------------------------------

    async def _link(self, node: ClusterNode) -> _Link:
        """The PUB/SUB link to ``node``, opened on first use."""
        async with self._opening:
            link = self._links.get(node.name)
            if link is not None:
                return link
            client = self._connector.node_client(node.host, int(node.port))
            pubsub = client.pubsub()
            try:
                await pubsub.connect()  # type: ignore[no-untyped-call]
            except BaseException:
                await _Link(node.name, client, pubsub).close()
                raise
            link = _Link(node.name, client, pubsub)
            link.reader = asyncio.create_task(self._read(link))
            self._links[node.name] = link
            return link

    async def _listen(self, name: str) -> None:
        """Subscribe shard channel ``name`` on the master that serves it; return once Redis
        confirmed (from then on nothing published to it is missed)."""
        node = self._cluster.get_node_from_key(name)
        if node is None:
            raise engine_unavailable()  # no master serves the slot (mid-failover)
        link = await self._link(node)
        waiter = asyncio.get_running_loop().create_future()
        self._confirming[name] = waiter
        try:
            await link.pubsub.ssubscribe(name)
            await asyncio.wait_for(waiter, 5.0)
        except TimeoutError:
            raise engine_unavailable() from None
        finally:
            self._confirming.pop(name, None)
        self._homes[name] = node.name

    async def _read(self, link: _Link) -> None:
        while True:
            try:
                message = await link.pubsub.get_message(timeout=1.0)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.warning("Redis Cluster PUB/SUB link to %s lost (%s)", link.node, exc)
                if self._links.get(link.node) is link:
                    del self._links[link.node]
                await link.close()
                self._start_move(link.node)
                return
            if message is not None:
                self._on_shard_message(message)

    def _on_shard_message(self, message: dict[str, Any]) -> None:
        kind = message["type"]
        raw: bytes = message["channel"]
        if kind == "smessage":
            channel = self._names.get(raw)
            if channel:
                self._dispatch(channel, message["data"])
            elif channel == "" and self._handler is not None:
                self._handler.handle_control(message["data"])
        elif kind == "ssubscribe":
            waiter = self._confirming.pop(raw.decode(), None)
            if waiter is not None and not waiter.done():
                waiter.set_result(None)
        elif kind == "sunsubscribe":
            name = raw.decode()
            home = self._homes.get(name)
            # Not asked for (ours drop the home first): Redis moved the slot to another master.
            if home is not None and name not in self._confirming:
                log.warning("Redis Cluster moved %s away from %s", name, home)
                self._homes[name] = f"{home} (slot moved)"
                self._start_move(f"{home} (slot moved)")

    def _start_move(self, home: str) -> None:
        """Move the channels of ``home`` in the background (once at a time per home)."""
        if home in self._moving:
            return
        self._moving.add(home)
        task = asyncio.create_task(self._move(home))
        self._moves.add(task)
        task.add_done_callback(self._moves.discard)

    async def _move(self, home: str) -> None:
        """Subscribe every channel that lived on ``home`` where the cluster now serves it,
        retrying with backoff until all are; then have the node check their streams."""
        delay = 0.05
        moved: list[str] = []
        try:
            while True:
                names = [n for n, h in self._homes.items() if h == home]
                if not names:
                    break
                await asyncio.sleep(random.uniform(delay / 2, delay))
                delay = min(delay * 2, MOVE_BACKOFF_CAP)
                try:
                    # The map as the cluster has it now (a replica promoted, or not yet).
                    await self._cluster.nodes_manager.initialize()
                    for name in names:
                        if self._homes.get(name) == home:  # not unsubscribed meanwhile
                            await self._listen(name)
                            moved.append(name)
                except Exception as exc:
                    log.info("Redis Cluster channels of %s not moved yet (%s)", home, exc)
        finally:
            self._moving.discard(home)
        channels = [c for c in (self._names.get(n.encode()) for n in moved) if c]
        log.warning("Redis Cluster: %d channels of %s resubscribed", len(moved), home)
        if self._handler is not None and self._healthy:
            self._handler.handle_reconnect([c for c in channels if c in self._channels])

    def _on_lost_master(self, channel: str) -> bool:
        """Whether ``channel`` lives on a master whose link dropped (calls would fail)."""
        return self._homes.get(self._pubsub_channel(channel)) in self._moving

    # -- the broker -----------------------------------------------------------------------

    async def subscribe(self, channel: str) -> None:
        if not self._healthy:
            raise engine_unavailable()
        name = self._pubsub_channel(channel)
        self._channels.add(channel)
        self._names[name.encode()] = channel
        try:
            await guard(lambda: self._listen(name))
        except BaseException:
            self._channels.discard(channel)
            self._names.pop(name.encode(), None)
            raise

    async def unsubscribe(self, channel: str) -> None:
        self._channels.discard(channel)
        name = self._pubsub_channel(channel)
        self._names.pop(name.encode(), None)
        link = self._links.get(self._homes.pop(name, ""))
        if link is not None and self._healthy:
            with contextlib.suppress(Exception):
                await link.pubsub.sunsubscribe(name)

    async def publish(self, channel: str, pub: Publication, opts: PublishOptions) -> PublishResult:
        if self._moving and self._on_lost_master(channel):
            raise engine_unavailable()  # fail fast while its master is being replaced
        return await super().publish(channel, pub, opts)

    async def publish_control(self, data: bytes) -> None:
        if not self._healthy:
            raise engine_unavailable()
        await guard(lambda: self.redis.spublish(self._control, data))

    async def _publish_info(self, tag: bytes, channel: str, info: ClientInfo) -> None:
        if not self._healthy or (self._moving and self._on_lost_master(channel)):
            raise engine_unavailable()
        data = tag + pack_info(info)
        await guard(lambda: self.redis.spublish(self._pubsub_channel(channel), data))
