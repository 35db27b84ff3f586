"""Redis Cluster: the Redis engine over the masters of one cluster (``[redis] cluster_addresses``).

What differs from one Redis server, and why:

* **Keys.** A Lua script may touch keys of one hash slot only, so every key of a channel (stream,
  meta, idempotency keys, presence hash and expiry set) carries the channel as its hash tag:
  ``<prefix>:<kind>:{<channel>}``, the names a single Redis uses too. A channel (or user id)
  with a brace in it, and idempotency keys, which may hold anything, would break the tag: such
  names get the tag ``{#<digest>}`` followed by the name (:func:`cluster_key`). Node liveness
  keys share the tag ``{nodes}``. The prefix may hold no braces.
* **PUB/SUB.** Sharded PUB/SUB (Redis 7.0+): the publish script ends with ``SPUBLISH`` on a
  shard channel in the channel's own slot, so a publication crosses the cluster bus to no
  other master. The broker (:class:`.redis_cluster_broker.RedisClusterBroker`) holds one
  PUB/SUB connection per master that serves a subscribed channel. The control channel between
  nodes is one more shard channel.
* **Failover.** When a master dies its slots are served by nobody until the cluster promotes
  its replica (after ``cluster-node-timeout`` and a vote). Calls on those slots fail fast with
  error 100 (``temporary``); the PUB/SUB connection drops, and its channels are moved, with
  backoff, to the master that serves them once the cluster map says so; then the node checks
  each recovering stream, as after a Redis restart. Channels on other masters are untouched
  (with ``cluster-require-full-coverage no`` on the servers; with the default ``yes`` every
  slot refuses calls until the promotion).
* **Pool.** The cluster client keeps up to ``pool_size`` connections per master; calls beyond
  ``pool_size`` at once wait for a turn for at most ``pool_timeout``, as with one server.
"""

from __future__ import annotations

import asyncio
import hashlib
from typing import Any, cast

from hubbub.config_redis import parse_address

# Raises MissingExtra, naming the redis extra, when the redis package is absent.
from hubbub.engines.redis_client import POOL_SIZE, POOL_TIMEOUT, guard
from hubbub.engines.redis_codec import pack_info
from hubbub.engines.redis_presence import RedisPresenceManager
from hubbub.engines.redis_scripts import ms
from hubbub.protocol.messages import ClientInfo

import redis.asyncio as aioredis  # isort: skip  (after the import that checks the extra)
from redis.asyncio.cluster import ClusterNode, RedisCluster  # isort: skip
from redis.backoff import NoBackoff  # isort: skip
from redis.asyncio.retry import Retry  # isort: skip

MIN_VERSION = (7, 0)
"""Sharded PUB/SUB (``SSUBSCRIBE``/``SPUBLISH``) came with Redis 7.0."""


def cluster_tag(name: str) -> str:
    """The hash tag of the keys of channel ``name``: the name itself when it can be one, else
    ``#`` and a digest of it (a tag ends at the first ``}``, and an empty one is ignored)."""
    if name and "{" not in name and "}" not in name:
        return name
    return "#" + hashlib.blake2b(name.encode(), digest_size=8).hexdigest()


def cluster_key(prefix: str, kind: str, channel: str) -> str:
    """The key of ``kind`` (``meta``, ``stream``, ``idem:<key>``, ``presence``…) of ``channel``
    in a cluster: in the slot of the channel's tag, whatever ``kind`` and ``channel`` hold.

    The same as a single Redis's ``<prefix>:<kind>:{<channel>}`` whenever that is safe.
    """
    tag = cluster_tag(channel)
    if "{" in kind or "}" in kind:
        kind = kind.partition(":")[0] + ":#" + hashlib.blake2b(kind.encode()).hexdigest()
    if tag == channel:
        return f"{prefix}:{kind}:{{{tag}}}"
    # The name after the tag keeps keys of channels with the same digest apart.
    return f"{prefix}:{kind}:{{{tag}}}{channel}"


class BoundedCluster(RedisCluster):
    """A cluster client whose calls beyond ``limit`` at once wait their turn, for at most
    ``wait`` seconds (then fail like an unreachable Redis): redis-py's cluster pools refuse
    a call at once when a master's connections are all busy, which would turn a burst (a
    thousand clients reconnecting) into errors."""

    def __init__(self, *args: Any, limit: int, wait: float, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._turns = asyncio.Semaphore(limit)
        self._wait = wait

    async def execute_command(self, *args: Any, **kwargs: Any) -> Any:
        try:
            await asyncio.wait_for(self._turns.acquire(), self._wait)
        except TimeoutError:
            raise aioredis.ConnectionError("no free connection to the cluster") from None
        try:
            return await super().execute_command(*args, **kwargs)
        finally:
            self._turns.release()


class ClusterConnector:
    """Makes clients of the cluster that ``addresses`` (any of its nodes) lead to.

    Args:
        addresses: ``host:port`` of some nodes of the cluster; the rest is discovered.
        username: ACL user of the nodes ("" = none).
        password: password of the nodes ("" = none).
    """

    def __init__(self, addresses: list[str], *, username: str = "", password: str = "") -> None:
        if not addresses:
            raise ValueError("at least one cluster address is needed")
        self.nodes = [parse_address(a) for a in addresses]
        self.credentials: dict[str, Any] = {
            "username": username or None,
            "password": password or None,
        }

    def __call__(self, pool_size: int, pool_timeout: float) -> aioredis.Redis:
        """A cluster client with at most ``pool_size`` connections per master (typed as the
        single-server client: it answers every command the engine sends the same way)."""
        client = BoundedCluster(
            startup_nodes=[ClusterNode(host, port) for host, port in self.nodes],
            limit=pool_size,
            wait=pool_timeout,
            max_connections=pool_size,
            # One quick retry, after the client re-read the cluster map: a call that hit a
            # master that just died (or a map from before a failover) fails fast or goes to
            # the new master, never waits out a backoff.
            retry=Retry(NoBackoff(), 1),
            # Bounded waits: a dead master must fail calls in seconds, never hang them.
            socket_connect_timeout=2.0,
            socket_timeout=5.0,
            **self.credentials,
        )
        return cast(aioredis.Redis, client)

    def node_client(self, host: str, port: int) -> aioredis.Redis:
        """A plain client of one master, for its sharded PUB/SUB connection."""
        return aioredis.Redis(
            host=host,
            port=port,
            socket_connect_timeout=2.0,
            socket_timeout=5.0,
            # A lost PUB/SUB connection is reported at once: the broker moves its channels.
            retry=Retry(NoBackoff(), 0),
            **self.credentials,
        )

    def __repr__(self) -> str:
        where = ",".join(f"{host}:{port}" for host, port in self.nodes)
        return f"ClusterConnector({where})"


async def check_version(client: RedisCluster) -> None:
    """Raise RuntimeError unless every master runs Redis 7.0 or later (sharded PUB/SUB)."""
    info = await client.info("server", target_nodes=RedisCluster.PRIMARIES)
    for node, fields in info.items() if isinstance(info, dict) else ():
        version = fields.get("redis_version", "0") if isinstance(fields, dict) else "0"
        if tuple(int(x) for x in str(version).split(".")[:2]) < MIN_VERSION:
            raise RuntimeError(
                f"Redis Cluster needs Redis 7.0 or later (sharded PUB/SUB); {node} runs {version}"
            )


async def settle(*calls: Any) -> list[Any]:
    """Await ``calls`` together (they go to different masters); raise the first failure once
    all ended, so that none is left running unobserved."""
    results = await asyncio.gather(*calls, return_exceptions=True)
    for result in results:
        if isinstance(result, BaseException):
            raise result
    return results


def check_prefix(prefix: str) -> None:
    """Refuse a key prefix with braces: they would change the keys' hash tags (slots).

    Raises:
        ValueError: the prefix holds ``{`` or ``}``.
    """
    if "{" in prefix or "}" in prefix:
        raise ValueError("a Redis Cluster prefix may not hold braces (hash tags)")


class RedisClusterPresenceManager(RedisPresenceManager):
    """A :class:`~hubbub.engines.base.PresenceManager` over a Redis Cluster.

    The single-server manager's scripts, on keys tagged by channel; what it did in one
    pipeline across slots (an entry and its owner's record) becomes concurrent calls.
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

    def _keys(self, channel: str) -> list[str]:
        return [
            cluster_key(self._prefix, "presence", channel),
            cluster_key(self._prefix, "presence:exp", channel),
        ]

    async def add_presence(self, channel: str, info: ClientInfo, ttl: float) -> None:
        packed = pack_info(info)
        keys = self._keys(channel)
        args: list[str | bytes | int] = [info.client, packed, ms(ttl)]
        if not self._owner:
            await guard(lambda: self._add(keys=keys, args=args))
            return
        owned = [self._owned(self._owner)]
        member = f"{info.client}\0{channel}"
        await guard(
            lambda: settle(
                self._add(keys=keys, args=args), self._own(keys=owned, args=[member, ms(ttl)])
            )
        )

    async def remove_presence(self, channel: str, client_id: str, user: str) -> None:
        data, expiry = self._keys(channel)
        redis = self._redis
        calls = [redis.hdel(data, client_id), redis.zrem(expiry, client_id)]
        if self._owner:
            calls.append(redis.srem(self._owned(self._owner), f"{client_id}\0{channel}"))
        await guard(lambda: settle(*calls))

    async def _remove_entries(self, by_channel: dict[str, list[str]]) -> list[list[bytes]]:
        # Channels live in different slots: one call each, concurrently, not one pipeline.
        return await guard(
            lambda: settle(
                *(self._reap(keys=self._keys(c), args=clients) for c, clients in by_channel.items())
            )
        )
