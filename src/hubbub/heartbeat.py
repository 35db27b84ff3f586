"""Server pings and the client's pongs for one connection (the protocol's own keepalive).

A :class:`Heartbeat` sends a ping every ``interval`` seconds, the first one at a random moment
in ``[interval / 2, interval)`` so that connections made together do not ping together. With a
``pong_timeout``, each ping expects a pong within that time, or the connection is closed (3012,
no pong). It only needs a :class:`~hubbub.clock.Clock` and two callbacks, so tests drive it
with a fake clock alone.
"""

from __future__ import annotations

import random
from collections.abc import Callable

from hubbub.clock import Clock, Timer

# A no-pong timer that fires this much later than due (as a share of the pong timeout) means
# the event loop was stalled rather than the client silent.
LATE_SHARE = 0.25
# How long to look again after a late no-pong timer, in seconds.
RECHECK_DELAY = 1.0


class Heartbeat:
    """Pings and pong deadlines of one connection.

    Args:
        clock: time and timers.
        interval: seconds between pings.
        pong_timeout: seconds a pong may take after a ping (0: pongs are not required).
        ping: sends a ping; returns False when the connection can no longer be written to,
            which stops the heartbeat.
        no_pong: closes the connection because a pong did not come in time.
    """

    __slots__ = (
        "_awaiting_pong",
        "_clock",
        "_interval",
        "_no_pong",
        "_ping",
        "_ping_timer",
        "_pong_deadline",
        "_pong_postponed",
        "_pong_timeout",
        "_pong_timer",
    )

    def __init__(
        self,
        clock: Clock,
        *,
        interval: float,
        pong_timeout: float,
        ping: Callable[[], bool],
        no_pong: Callable[[], None],
    ) -> None:
        self._clock = clock
        self._interval = interval
        self._pong_timeout = pong_timeout
        self._ping = ping
        self._no_pong = no_pong
        self._ping_timer: Timer | None = None
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
        self._ping_timer = self._clock.call_later(first, self._on_ping_due)

    def stop(self) -> None:
        """Cancel every timer: no more pings, no pong deadline. Idempotent."""
        for timer in (self._ping_timer, self._pong_timer):
            if timer is not None:
                timer.cancel()
        self._ping_timer = self._pong_timer = None
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
        self._ping_timer = None
        if not self._ping():
            return
        clock = self._clock
        if self._pong_timeout > 0 and not self._awaiting_pong:
            self._awaiting_pong = True
            self._pong_postponed = False
            self._pong_deadline = clock.monotonic() + self._pong_timeout
            self._pong_timer = clock.call_later(self._pong_timeout, self._on_no_pong)
        self._ping_timer = clock.call_later(self._interval, self._on_ping_due)

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
        self._no_pong()
