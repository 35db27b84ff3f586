"""The live numbers of the console: every node publishes its own to the admin channel.

Every ``admin.live_interval`` each node publishes a snapshot of itself (:func:`snapshot`) to
:func:`live_channel` (``$hubbub.admin`` with the default private prefix), without history. The
console page is a client of the cluster like any other: it connects with a short-lived token
the console mints (see :mod:`hubbub.admin.routes`) and is subscribed to that channel by the
token, so whichever node it is connected to it hears every node.

What the admin connection may see and do: its token names no user (an anonymous
connection: no personal channel, nobody's notifications, no per-user limits) and grants
only the admin channel, which is private (a client subscribing on its own needs a
subscription token nobody else is given). Every action of the console goes through the
server API over HTTP with the admin session, never through this connection.
"""

from __future__ import annotations

import asyncio
import heapq
import logging
import os
import resource
import sys
import time
from contextlib import suppress
from typing import Any

from hubbub.node import Node
from hubbub.protocol.codes import ProtocolError
from hubbub.store import Store

log = logging.getLogger("hubbub.admin")

TOP_CHANNELS = 200
"""How many of a node's channels (those with the most subscribers) a snapshot carries."""

STORE_CHECK_TIMEOUT = 2.0


def live_channel(node: Node) -> str:
    """The admin channel: private (the configured private prefix), without a namespace."""
    return node.settings.channel.private_prefix + "hubbub.admin"


def resident_memory() -> int:
    """This process's resident memory in bytes (its peak where /proc is not available)."""
    try:
        with open("/proc/self/statm") as statm:
            return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        return peak if sys.platform == "darwin" else peak * 1024


async def store_health(store: Store | None) -> str:
    """``ok``, ``down`` or ``none`` (no store: chat and notifications are off)."""
    if store is None:
        return "none"
    try:
        await asyncio.wait_for(store.room_count(), STORE_CHECK_TIMEOUT)
    except Exception:
        return "down"
    return "ok"


async def snapshot(node: Node, store: Store | None) -> dict[str, Any]:
    """What one node publishes about itself: ``{"node": {...}, "engine", "engine_ready",
    "store", "memory", "channels": {name: subscribers}, "channels_total", "at"}``."""
    counts = node.channels()
    top = heapq.nlargest(TOP_CHANNELS, counts.items(), key=lambda item: item[1])
    me = node.describe()
    return {
        "node": {
            "uid": me.uid,
            "name": me.name,
            "version": me.version,
            "num_clients": me.num_clients,
            "num_users": me.num_users,
            "num_channels": me.num_channels,
            "num_subs": me.num_subs,
            "uptime": me.uptime,
        },
        "engine": node.settings.engine,
        "engine_ready": node.ready,
        "store": await store_health(store),
        "memory": resident_memory(),
        "channels": dict(top),
        "channels_total": len(counts),
        "at": time.time(),
    }


async def publish_forever(node: Node, store: Store | None) -> None:
    """Publish this node's snapshot every ``admin.live_interval`` until cancelled."""
    channel = live_channel(node)
    interval = node.settings.admin.live_interval
    failing = False
    while True:
        try:
            await node.publish(channel, await snapshot(node, store), skip_history=True)
            failing = False
        except ProtocolError as exc:
            # The engine is down: the console shows this node's numbers as stale meanwhile.
            if not failing:
                log.warning("admin: live numbers not published: %s", exc.message)
            failing = True
        except Exception:
            log.exception("admin: live numbers not published")
        await asyncio.sleep(interval)


class LiveNumbers:
    """Runs :func:`publish_forever` while the node is up."""

    def __init__(self, node: Node, store: Store | None) -> None:
        self._node = node
        self._store = store
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(publish_forever(self._node, self._store))

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with suppress(asyncio.CancelledError):
                await self._task
            self._task = None
