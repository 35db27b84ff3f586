"""Server pings and the client's pongs for one connection (the protocol's own keepalive).

A :class:`Heartbeat` sends a ping every ``interval`` seconds, the first one at a random moment
in ``[interval / 2, interval)`` so that connections made together do not ping together. With a
``pong_timeout``, each ping expects a pong within that time, or the connection is closed (3012,
no pong). It only needs a :class:`~hubbub.clock.Clock` and the connection it pings
(:class:`Pinged`), so tests drive it with a fake clock alone.

The pings of all the heartbeats of one clock share a :class:`PingWheel`: one timer per slot
of :data:`RESOLUTION` seconds in use rather than one per connection, since an idle
connection's timer handle would cost more memory than the rest of its heartbeat. A ping is
then sent up to :data:`RESOLUTION` seconds after it is due. Pong deadlines, which exist only
between a ping and its pong, keep a timer each.
"""

from __future__ import annotations

import math
import random
import weakref
from typing import Protocol

from hubbub.clock import Clock, Timer

RESOLUTION = 0.1
"""Seconds of one slot of the :class:`PingWheel`: how late a ping may be sent."""

# A no-pong timer that fires this much later than due (as a share of the pong timeout) means
# the event loop was stalled rather than the client silent.
LATE_SHARE = 0.25
# How long to look again after a late no-pong timer, in seconds.
RECHECK_DELAY = 1.0


class Pinged(Protocol):
    """What a :class:`Heartbeat` pings: a connection."""

    def send_ping(self) -> bool:
        """Send a ping; False when the connection can no longer be written to, which stops
        the heartbeat."""
        ...

    def pong_missed(self) -> None:
        """Close the connection: a pong did not come in time."""
        ...


class PingWheel:
    """The ping timers of the heartbeats of one clock, grouped in slots of :data:`RESOLUTION`
    seconds: a slot has one timer, armed while some heartbeat waits in it.

    It holds no reference to its clock (every call names it), so a wheel kept per clock in a
    weak mapping goes with its clock.
    """

    __slots__ = ("__weakref__", "_slots")

    def __init__(self) -> None:
        # Slot number (its due time in RESOLUTION units) -> its timer and members, in order.
        self._slots: dict[int, tuple[Timer, dict[Heartbeat, None]]] = {}

    def add(self, clock: Clock, delay: float, heartbeat: Heartbeat) -> int:
        """Call ``heartbeat``'s ping once, at the end of the slot ``delay`` seconds from now
        falls in; returns the slot, for :meth:`discard`."""
        now = clock.monotonic()
        key = math.ceil((now + delay) / RESOLUTION)
        slot = self._slots.get(key)
        if slot is None:
            timer = clock.call_later(key * RESOLUTION - now, lambda: self._fire(key))
            slot = self._slots[key] = (timer, {})
        slot[1][heartbeat] = None
        return key

    def discard(self, key: int, heartbeat: Heartbeat) -> None:
        """Forget ``heartbeat`` in slot ``key``; the slot's timer goes with its last member."""
        slot = self._slots.get(key)
        if slot is None:
            return
        slot[1].pop(heartbeat, None)
        if not slot[1]:
            slot[0].cancel()
            del self._slots[key]

    def _fire(self, key: int) -> None:
        slot = self._slots.pop(key, None)
        if slot is None:
            return
        # Nothing changes this dict any more (discard finds no slot ``key``); a member that a
        # ping before its own stopped is skipped.
        for heartbeat in slot[1]:
            if heartbeat._ping_slot == key:
                heartbeat._on_ping_due()


# One wheel per clock, made on first use; weak, so that a clock dropped takes its wheel along.
_WHEELS: weakref.WeakKeyDictionary[Clock, PingWheel] = weakref.WeakKeyDictionary()


def wheel_for(clock: Clock) -> PingWheel:
    """The :class:`PingWheel` of ``clock`` (a wheel of its own for a clock that cannot be
    weakly referenced: correct, only not shared)."""
    try:
        wheel = _WHEELS.get(clock)
        if wheel is None:
            wheel = _WHEELS[clock] = PingWheel()
    except TypeError:
        return PingWheel()
    return wheel


class Heartbeat:
    """Pings and pong deadlines of one connection.

    Args:
        clock: time and timers.
        interval: seconds between pings.
        pong_timeout: seconds a pong may take after a ping (0: pongs are not required).
        peer: the connection (one reference, not two bound methods per connection).
    """

    __slots__ = (
        "_awaiting_pong",
        "_clock",
        "_interval",
        "_peer",
        "_ping_slot",
        "_pong_deadline",
        "_pong_postponed",
        "_pong_timeout",
        "_pong_timer",
        "_wheel",
    )

    def __init__(
        self,
        clock: Clock,
        *,
        interval: float,
        pong_timeout: float,
        peer: Pinged,
    ) -> None:
        self._clock = clock
        self._interval = interval
        self._pong_timeout = pong_timeout
        self._peer = peer
        self._wheel = wheel_for(clock)
        # The wheel slot of the next ping (None: none scheduled).
        self._ping_slot: int | None = None
        self._pong_timer: Timer | None = None
        self._awaiting_pong = False
        self._pong_deadline = 0.0
        self._pong_postponed = False

    @property
    def awaiting_pong(self) -> bool:
        """A ping was sent and its pong has not come yet."""
        return self._awaiting_pong

    def start(self) -> None:
        """Schedule the first ping, at a random moment in ``[interval / 2, interval)``."""
        first = random.uniform(self._interval / 2, self._interval)
        self._ping_slot = self._wheel.add(self._clock, first, self)

    def stop(self) -> None:
        """Cancel every timer: no more pings, no pong deadline. Idempotent."""
        if self._ping_slot is not None:
            self._wheel.discard(self._ping_slot, self)
            self._ping_slot = None
        if self._pong_timer is not None:
            self._pong_timer.cancel()
            self._pong_timer = None
        self._awaiting_pong = False

    def pong(self) -> None:
        """The client answered: clear the pong deadline.

        A pong without an outstanding ping is tolerated, since a client may answer a ping
        that crossed a timeout; only the *absence* of a pong is an error.
        """
        if not self._awaiting_pong:
            return
        self._awaiting_pong = False
        if self._pong_timer is not None:
            self._pong_timer.cancel()
            self._pong_timer = None

    def _on_ping_due(self) -> None:
        """The wheel's call: send the ping, arm its pong deadline, schedule the next one."""
        self._ping_slot = None
        if not self._peer.send_ping():
            return
        clock = self._clock
        if self._pong_timeout > 0 and not self._awaiting_pong:
            self._awaiting_pong = True
            self._pong_postponed = False
            self._pong_deadline = clock.monotonic() + self._pong_timeout
            self._pong_timer = clock.call_later(self._pong_timeout, self._on_no_pong)
        self._ping_slot = self._wheel.add(clock, self._interval, self)

    def _on_no_pong(self) -> None:
        self._pong_timer = None
        if not self._awaiting_pong:
            return
        clock = self._clock
        late = clock.monotonic() - self._pong_deadline
        if late > LATE_SHARE * self._pong_timeout and not self._pong_postponed:
            # The event loop was stalled (a long garbage collection, a slow callback): timers
            # run before sockets are read, so the pong may be waiting unread. Look again
            # after the sockets had their turn instead of closing a healthy connection; once
            # per ping, so a loop that stays late cannot keep a silent client forever.
            self._pong_postponed = True
            self._pong_deadline = clock.monotonic() + RECHECK_DELAY
            self._pong_timer = clock.call_later(RECHECK_DELAY, self._on_no_pong)
            return
        self._peer.pong_missed()
