"""The engine chosen by the settings: its broker and presence manager.

The memory engine is the default. The Redis engine (``engine = "redis"``) is imported only
when chosen: without the redis extra its import raises
:class:`~hubbub.extras.MissingExtra`, with the command that installs it.
"""

from __future__ import annotations

from typing import Any

from hubbub.clock import Clock
from hubbub.config import Settings
from hubbub.engines.base import Broker, PresenceManager
from hubbub.engines.memory import MemoryBroker, MemoryPresenceManager


def engine_from_settings(settings: Settings, clock: Clock) -> tuple[Broker, PresenceManager]:
    """A new broker and presence manager of the engine ``settings`` name.

    Args:
        settings: the node's settings (``engine`` and, for Redis, ``redis``).
        clock: the time source of the memory engine (history and presence expiry).

    Raises:
        MissingExtra: Redis is chosen and the redis extra is not installed.
    """
    if settings.engine == "nats":
        from hubbub.engines.nats import nats_engine

        return nats_engine(settings, clock)
    if settings.engine == "redis":
        from hubbub.engines.redis import RedisBroker, RedisPresenceManager
        from hubbub.engines.sharded import ShardedBroker, ShardedPresenceManager

        cfg = settings.redis
        # Each shard's broker and presence manager get a pool of their own.
        pool: dict[str, Any] = {
            "prefix": cfg.prefix,
            "pool_size": cfg.pool_size,
            "pool_timeout": cfg.pool_timeout,
        }
        if cfg.sentinel:
            from hubbub.engines.redis_sentinel import connector_from_settings

            master = connector_from_settings(cfg)
            return RedisBroker(master, **pool), RedisPresenceManager(master, **pool)
        if cfg.cluster_addresses:
            from hubbub.engines.redis_cluster import ClusterConnector, RedisClusterPresenceManager
            from hubbub.engines.redis_cluster_broker import RedisClusterBroker

            cluster = ClusterConnector(
                cfg.cluster_addresses, username=cfg.username, password=cfg.password
            )
            return (
                RedisClusterBroker(cluster, **pool),
                RedisClusterPresenceManager(cluster, **pool),
            )
        if len(cfg.shards) == 1:
            url = cfg.shards[0]
            return RedisBroker(url, **pool), RedisPresenceManager(url, **pool)
        return (
            ShardedBroker([RedisBroker(u, **pool) for u in cfg.shards]),
            ShardedPresenceManager([RedisPresenceManager(u, **pool) for u in cfg.shards]),
        )
    return MemoryBroker(clock=clock), MemoryPresenceManager(clock=clock)
