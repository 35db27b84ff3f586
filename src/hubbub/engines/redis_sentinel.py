"""Redis behind Sentinel: the engine's clients find the master through the Sentinels.

A :class:`SentinelConnector` is what the broker and the presence manager get instead of a URL
(:data:`~.redis_client.Connector`). Every new connection asks the Sentinels for the current
master, so following a failover needs nothing else from the engine:

* calls on connections to the dead master fail (error 100, as with a single Redis that went
  away), and so do calls while no Sentinel names a reachable master;
* the broker's PUB/SUB reader sees its connection drop (a killed master; a demoted one is made
  to close its clients by the Sentinels) and reconnects with backoff, now to the promoted
  replica, resubscribes, and has the node check every recovering stream: a replica that was
  behind shows lower offsets, which the node turns into a new epoch (``recovery.py``);
* once a Sentinel names a new master, the pool drops its idle connections to the old one.
"""

from __future__ import annotations

from typing import Any

from hubbub.config_redis import RedisSettings, parse_address
from hubbub.extras import missing

try:
    import redis.asyncio as aioredis
    from redis.asyncio.sentinel import Sentinel, SentinelConnectionPool
except ImportError as exc:  # without the redis extra: one line that names it
    raise missing("redis", exc) from None

SENTINEL_TIMEOUT = 1.0
"""Seconds to connect to, or wait for, one Sentinel: they are asked in turn, so a dead one
must not hold up the next."""


class _BlockingSentinelPool(SentinelConnectionPool, aioredis.BlockingConnectionPool):
    """A pool of connections to the master the Sentinels name, that waits for a free
    connection like :func:`~.redis_client.pooled_client`'s instead of refusing at once."""


class _SentinelRedis(aioredis.Redis):
    """A client of the master that also closes its own clients of the Sentinels."""

    sentinels: Sentinel | None = None

    async def aclose(self, close_connection_pool: bool | None = None) -> None:
        await super().aclose(close_connection_pool)
        if self.sentinels is not None:
            await self.sentinels.aclose()
            self.sentinels = None


class SentinelConnector:
    """Makes clients of the master that Sentinels monitor under ``master_name``.

    Args:
        sentinels: ``(host, port)`` of each Sentinel; they are asked in order, the first that
            answers with a master in good standing wins.
        master_name: the name the Sentinels monitor the master under.
        sentinel_username: ACL user of the Sentinels ("" = none).
        sentinel_password: password of the Sentinels ("" = none).
        username: ACL user of the master ("" = none).
        password: password of the master ("" = none).
        db: the database number on the master.
    """

    def __init__(
        self,
        sentinels: list[tuple[str, int]],
        master_name: str,
        *,
        sentinel_username: str = "",
        sentinel_password: str = "",
        username: str = "",
        password: str = "",
        db: int = 0,
    ) -> None:
        if not sentinels:
            raise ValueError("at least one Sentinel is needed")
        self._sentinels = list(sentinels)
        self.master_name = master_name
        self._sentinel_kwargs: dict[str, Any] = {
            "socket_connect_timeout": SENTINEL_TIMEOUT,
            "socket_timeout": SENTINEL_TIMEOUT,
            "username": sentinel_username or None,
            "password": sentinel_password or None,
        }
        self._master_kwargs: dict[str, Any] = {
            "username": username or None,
            "password": password or None,
            "db": db,
        }

    def __call__(self, pool_size: int, pool_timeout: float) -> aioredis.Redis:
        """A client on a pool of at most ``pool_size`` connections to the current master,
        each call waiting at most ``pool_timeout`` seconds for a free one."""
        # One Sentinel manager per client, closed with it (the pools do not share sockets).
        sentinel = Sentinel(self._sentinels, sentinel_kwargs=self._sentinel_kwargs)  # type: ignore[no-untyped-call]
        client: _SentinelRedis = sentinel.master_for(
            self.master_name,
            redis_class=_SentinelRedis,
            connection_pool_class=_BlockingSentinelPool,
            max_connections=pool_size,
            timeout=pool_timeout,
            # Bounded waits, as for one Redis: a dead master fails calls in seconds.
            socket_connect_timeout=2.0,
            socket_timeout=5.0,
            **self._master_kwargs,
        )
        client.sentinels = sentinel
        return client

    def __repr__(self) -> str:
        where = ",".join(f"{host}:{port}" for host, port in self._sentinels)
        return f"SentinelConnector({self.master_name!r} via {where})"


def connector_from_settings(cfg: RedisSettings) -> SentinelConnector:
    """The connector of ``[redis]`` with ``sentinel_addresses`` (validated by the settings)."""
    return SentinelConnector(
        [parse_address(a) for a in cfg.sentinel_addresses],
        cfg.sentinel_master_name,
        sentinel_username=cfg.sentinel_username,
        sentinel_password=cfg.sentinel_password,
        username=cfg.username,
        password=cfg.password,
        db=cfg.db,
    )
