"""Engine writes that must not be lost: retried in the background until each succeeds.

A connection that closed while Redis was briefly unreachable (or too slow to answer in time)
still has to leave its user's connection count, or the user is refused on reconnect until the
entry expires. :class:`RetryQueue` takes such calls and repeats them with backoff.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Awaitable, Callable, Coroutine, Hashable
from typing import Any

log = logging.getLogger("hubbub.engines.retry")

Spawn = Callable[[Coroutine[Any, Any, None]], "asyncio.Task[None]"]


class RetryQueue:
    """Idempotent engine calls, retried in the background until each succeeds.

    One worker task runs while calls wait. It makes them in the order they came; a failure
    makes it wait (exponential backoff with jitter, from ``first_delay`` up to ``max_delay``)
    and retry that same call, so an engine that is down is not hammered with every waiting
    call. An outage is logged twice: when the first call is deferred, and when every deferred
    call went through.

    Args:
        name: what the calls do, for the log ("uncount").
        spawn: starts the worker (the node's ``spawn_task``, so that closing the node stops it).
        count: told ``"<name>_deferred"`` for each call queued and ``"<name>_dropped"`` for
            each call refused because ``limit`` calls already wait.
        limit: most calls waiting at once. Beyond it a call is dropped (and logged): memory
            stays bounded, and what the call would have removed expires by itself.
    """

    def __init__(
        self,
        name: str,
        *,
        spawn: Spawn,
        count: Callable[[str], None],
        limit: int = 10_000,
        first_delay: float = 0.1,
        max_delay: float = 5.0,
    ) -> None:
        self.name = name
        self._spawn = spawn
        self._count = count
        self._limit = limit
        self._first_delay = first_delay
        self._max_delay = max_delay
        self._calls: dict[Hashable, Callable[[], Awaitable[None]]] = {}
        self._worker: asyncio.Task[None] | None = None
        self._failing = False
        self._dropping = False

    @property
    def pending(self) -> int:
        """How many calls wait."""
        return len(self._calls)

    def submit(self, key: Hashable, call: Callable[[], Awaitable[None]]) -> None:
        """Make ``call`` in the background until it succeeds; a call with the same ``key``
        already waiting stands for it."""
        if key in self._calls:
            return
        if len(self._calls) >= self._limit:
            self._count(f"{self.name}_dropped")
            if not self._dropping:  # once per outage, however many follow
                self._dropping = True
                log.error("%s: %d calls already wait; dropping more", self.name, self._limit)
            return
        self._calls[key] = call
        self._count(f"{self.name}_deferred")
        if not self._failing:
            self._failing = True
            log.warning("%s deferred: the engine failed; retrying in the background", self.name)
        if self._worker is None or self._worker.done():
            self._worker = self._spawn(self._run())

    async def _run(self) -> None:
        delay = self._first_delay
        done = 0
        while self._calls:
            key, call = next(iter(self._calls.items()))
            try:
                await call()
            except Exception:
                # Logged when the outage started; each failure is one more wait, not a line.
                await asyncio.sleep(random.uniform(delay / 2, delay))
                delay = min(delay * 2, self._max_delay)
                continue
            del self._calls[key]
            done += 1
            delay = self._first_delay
        self._failing = self._dropping = False
        log.info("%s: %d deferred calls went through", self.name, done)
