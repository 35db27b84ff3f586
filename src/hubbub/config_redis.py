"""Settings of the Redis engine (``[redis]``): one server, shards, or a master found through
Redis Sentinel.

Kept apart from :mod:`hubbub.config`, which holds them as the ``redis`` section of
``Settings``; every option is documented in ``docs/configuration.md``.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field, model_validator


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def parse_address(address: str) -> tuple[str, int]:
    """``"host:port"`` (``"[::1]:26379"`` for IPv6) as a pair; ValueError if malformed."""
    host, sep, port = address.rpartition(":")
    host = host.removeprefix("[").removesuffix("]")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"{address!r} is not host:port")
    return host, int(port)


class RedisSettings(_Section):
    """The Redis engine (``engine = "redis"``)."""

    url: str = "redis://127.0.0.1:6379/0"
    urls: list[str] = []
    prefix: str = "hubbub"
    # Per client (broker, presence) and per shard; the broker's PUB/SUB holds one of them.
    pool_size: int = Field(default=100, ge=2, le=10_000)
    # Bounded, so that a Redis that stopped answering still fails calls in seconds.
    pool_timeout: float = Field(default=5.0, gt=0, le=60)
    sentinel_addresses: list[str] = []
    """``host:port`` of the Sentinels that watch the master (instead of ``url``)."""
    sentinel_master_name: str = ""
    """The name the Sentinels monitor the master under (``sentinel monitor <name> ...``)."""
    sentinel_username: str = ""
    sentinel_password: str = ""
    """Credentials of the Sentinels themselves (their ``requirepass``/ACL)."""
    username: str = ""
    password: str = ""
    db: int = Field(default=0, ge=0)
    """Credentials and database of the master found through Sentinel (with ``url`` they are
    part of the URL)."""
    cluster_addresses: list[str] = []
    """``host:port`` of some nodes of a Redis Cluster (7.0+) to use instead of ``url``; the
    rest of the cluster is discovered. ``username`` and ``password`` are the nodes'."""

    @property
    def shards(self) -> list[str]:
        """The Redis servers channels are spread over (``urls``, or just ``url``)."""
        return list(self.urls) or [self.url]

    @property
    def sentinel(self) -> bool:
        """Whether the master is found through Sentinel."""
        return bool(self.sentinel_addresses)

    @model_validator(mode="after")
    def _cluster(self) -> RedisSettings:
        # As for Sentinel: one source of addresses, refused at start-up when mixed.
        if not self.cluster_addresses:
            return self
        if "url" in self.model_fields_set or self.urls or self.sentinel:
            raise ValueError("set either url/urls, sentinel_addresses or cluster_addresses")
        if "{" in self.prefix or "}" in self.prefix:
            raise ValueError("with cluster_addresses the prefix may not hold braces")
        for address in self.cluster_addresses:
            parse_address(address)
        return self

    @model_validator(mode="after")
    def _sentinel(self) -> RedisSettings:
        # Each mistake refused at start-up, by name: a node that silently talked to the
        # default url instead of the Sentinels' master would split the deployment in two.
        if not self.sentinel:
            if self.sentinel_master_name:
                raise ValueError("sentinel_master_name needs sentinel_addresses")
            if ((self.username or self.password) and not self.cluster_addresses) or self.db:
                raise ValueError(
                    "username, password and db are for the servers found through Sentinel "
                    "(username and password also for cluster_addresses); with url, put them "
                    "in the URL (redis://user:password@host:port/db)"
                )
            return self
        if "url" in self.model_fields_set or self.urls:
            raise ValueError(
                "set either url/urls or sentinel_addresses: with Sentinel, the master's "
                "address comes from the Sentinels"
            )
        if not self.sentinel_master_name:
            raise ValueError("sentinel_addresses needs sentinel_master_name")
        for address in self.sentinel_addresses:
            parse_address(address)
        return self
