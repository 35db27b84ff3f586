"""How the Redis engine reaches Redis: the pooled client, and the guard around every call.

Importing this module is what checks for the ``redis`` extra: without it, the import raises
:class:`~hubbub.extras.MissingExtra` with one line that names the extra. Every engine module
that talks to Redis imports this one first, so they all fail the same way.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import TypeVar

from hubbub.extras import missing

try:
    import redis.asyncio as aioredis
    from redis.exceptions import ClusterError, RedisClusterException, TryAgainError
    from redis.exceptions import NoScriptError as NoScriptError  # for .redis_batch
except ImportError as exc:  # without the redis extra: one line that names it
    raise missing("redis", exc) from None

from hubbub.engines.base import engine_unavailable

# One logger for the whole engine, whichever module of it logs.
log = logging.getLogger("hubbub.engines.redis")

T = TypeVar("T")

REDIS_ERRORS = (
    aioredis.ConnectionError,
    aioredis.TimeoutError,
    OSError,
    # A Redis Cluster while a master is replaced: CLUSTERDOWN, TRYAGAIN, no node for a slot.
    ClusterError,
    RedisClusterException,
    TryAgainError,
)
"""What an unreachable or unresponsive Redis (or a Redis Cluster in a failover) raises."""

POOL_SIZE = 100
"""Default most connections one client (a broker's or a presence manager's) opens to Redis."""

POOL_TIMEOUT = 5.0
"""Default seconds a call waits for a free pooled connection before it fails (error 100)."""


async def guard(call: Callable[[], Awaitable[T]]) -> T:
    """Run a Redis call; an unreachable Redis becomes the engine's temporary error (100)."""
    try:
        return await call()
    except REDIS_ERRORS as exc:
        log.warning("Redis call failed: %s", exc)
        raise engine_unavailable() from None


def one_server(client: object) -> bool:
    """Whether ``client`` talks to one Redis server (or Sentinel's master), not a Cluster:
    then its non-transactional pipelines may carry commands on any keys."""
    return isinstance(client, aioredis.Redis)


Connector = Callable[[int, float], aioredis.Redis]
"""Makes a client of a Redis that is not reached at one URL (a master found through Sentinel,
:mod:`.redis_sentinel`), from ``pool_size`` and ``pool_timeout``, with the same pool contract
as :func:`pooled_client`."""


def pooled_client(url: str | Connector, pool_size: int, pool_timeout: float) -> aioredis.Redis:
    """A client on a pool of at most ``pool_size`` connections to ``url``.

    A call that finds every connection busy waits up to ``pool_timeout`` seconds for one to be
    released (back-pressure on a burst), then fails like an unreachable Redis would. A pool
    that refused at once would turn every burst larger than the pool into errors.
    ``url`` may be a :data:`Connector` instead, which makes the client.
    """
    if not isinstance(url, str):
        return url(pool_size, pool_timeout)
    pool = aioredis.BlockingConnectionPool.from_url(
        url,
        max_connections=pool_size,
        timeout=pool_timeout,
        # Bounded waits: a dead Redis must fail calls in seconds, never hang them.
        socket_connect_timeout=2.0,
        socket_timeout=5.0,
    )
    return aioredis.Redis.from_pool(pool)
