"""Time as the server sees it: wall time for tokens, a monotonic clock and timers for the rest.

Everything that waits or expires (heartbeats, stale connections, token expiry, history TTL,
presence TTL) asks a :class:`Clock`, so tests drive time with :class:`FakeClock` instead of
sleeping.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
import threading
import time
from collections.abc import Callable
from typing import Protocol

_loops: dict[int, asyncio.AbstractEventLoop] = {}


def running_loop() -> asyncio.AbstractEventLoop:
    """The event loop running in this thread, like ``asyncio.get_running_loop``.

    Cheaper on the paths that run per connection or per message: Python 3.11's
    ``get_running_loop`` makes a ``getpid`` system call each time (a tenth of a connection's
    set-up). A thread runs one loop at a time, so the loop last seen running in this thread
    is the running one while it still runs.

    Raises:
        RuntimeError: no loop is running in this thread.
    """
    thread = threading.get_ident()
    loop = _loops.get(thread)
    if loop is None or not loop.is_running():
        loop = _loops[thread] = asyncio.get_running_loop()
    return loop


class Timer(Protocol):
    """A scheduled callback; ``cancel`` is idempotent."""

    def cancel(self) -> None: ...


class Clock(Protocol):
    """The source of time and timers."""

    def time(self) -> float:
        """Wall-clock seconds since the epoch (for JWT ``exp``/``nbf``)."""
        ...

    def monotonic(self) -> float:
        """Seconds on a clock that never goes back (for TTLs and timeouts)."""
        ...

    def call_later(self, delay: float, callback: Callable[[], None]) -> Timer:
        """Run ``callback`` once after ``delay`` seconds, on the event loop thread."""
        ...


class SystemClock:
    """The real clock: ``time.time``, the running loop's monotonic time and ``call_later``."""

    def time(self) -> float:
        return time.time()

    def monotonic(self) -> float:
        return time.monotonic()

    def call_later(self, delay: float, callback: Callable[[], None]) -> Timer:
        return running_loop().call_later(delay, callback)


class _FakeTimer:
    __slots__ = ("callback", "cancelled", "when")

    def __init__(self, when: float, callback: Callable[[], None]) -> None:
        self.when = when
        self.callback = callback
        self.cancelled = False

    def cancel(self) -> None:
        self.cancelled = True


class FakeClock:
    """A clock that moves only when told to: ``advance`` runs the timers that fall due, in order.

    Both ``time`` and ``monotonic`` advance together; ``time`` starts at ``start``.
    """

    def __init__(self, start: float = 1_700_000_000.0) -> None:
        self._start = start
        self._now = 0.0
        self._seq = itertools.count()
        self._heap: list[tuple[float, int, _FakeTimer]] = []

    def time(self) -> float:
        return self._start + self._now

    def monotonic(self) -> float:
        return self._now

    def call_later(self, delay: float, callback: Callable[[], None]) -> Timer:
        timer = _FakeTimer(self._now + max(delay, 0.0), callback)
        heapq.heappush(self._heap, (timer.when, next(self._seq), timer))
        return timer

    def advance(self, seconds: float) -> None:
        """Move time forward by ``seconds``, running every timer due on the way."""
        target = self._now + seconds
        while self._heap and self._heap[0][0] <= target:
            when, _, timer = heapq.heappop(self._heap)
            self._now = max(self._now, when)
            if not timer.cancelled:
                timer.callback()
        self._now = target

    def stall(self, seconds: float) -> None:
        """Move time forward by ``seconds`` without running timers, as a busy event loop does
        (a long garbage collection); the next :meth:`advance` runs the overdue ones late."""
        self._now += seconds

    @property
    def pending(self) -> int:
        """How many timers are scheduled and not cancelled."""
        return sum(1 for _, _, t in self._heap if not t.cancelled)
