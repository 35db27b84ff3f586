"""The NATS engine (``engine = "nats"``): a :class:`~.nats_broker.NatsBroker` for live
traffic, history and presence where ``[nats] history`` and ``presence`` say.

Importing this module raises :class:`~hubbub.extras.MissingExtra` when the ``nats`` extra is
not installed (and, for history or presence in Redis, building the engine does so for the
``redis`` extra).
"""

from __future__ import annotations

from hubbub.clock import Clock
from hubbub.config import Settings
from hubbub.engines.base import Broker, PresenceManager
from hubbub.engines.memory import MemoryPresenceManager
from hubbub.engines.nats_broker import NatsBroker

__all__ = ["NatsBroker", "nats_engine"]


def nats_engine(settings: Settings, clock: Clock) -> tuple[Broker, PresenceManager]:
    """The broker and presence manager of ``settings`` (``engine = "nats"``).

    History and presence in Redis use the ``[redis]`` section as the Redis engine does (one
    server, shards or Sentinel): the same keys, so a deployment can move between the Redis and
    the NATS engine without losing streams.
    """
    cfg = settings.nats
    streams: Broker | None = None
    presence: PresenceManager = MemoryPresenceManager(clock=clock)
    if cfg.uses_redis:
        from hubbub.engines.factory import engine_from_settings

        redis_broker, redis_presence = engine_from_settings(
            settings.model_copy(update={"engine": "redis"}), clock
        )
        if cfg.history == "redis":
            streams = redis_broker
        if cfg.presence == "redis":
            presence = redis_presence
    broker = NatsBroker(
        cfg.servers,
        prefix=cfg.prefix,
        history=cfg.history,
        streams=streams,
        clock=clock,
        reorder_window=cfg.reorder_window,
        connect_timeout=cfg.connect_timeout,
        name=f"hubbub {settings.name}".strip(),
    )
    return broker, presence
