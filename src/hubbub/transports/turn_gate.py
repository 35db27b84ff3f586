"""Opening handshakes admitted a few per loop turn, so that a reconnect storm cannot take the
event loop from the connections already open.

When a node dies, its clients come back at once: thousands of opening handshakes arrive within
a few milliseconds. Each costs a few hundred microseconds of the loop with what follows it (the
``connect`` command and its token, the subscriptions with their recovery), and a loop turn
runs everything that is ready: without a bound, one turn would set up thousands of clients
while every delivery to the others waits for its end, seconds later. A :class:`TurnGate` lets
``per_turn`` handshakes through in one turn; the others wait, their sockets paused, and go
through in order in the next turns, ``per_turn`` at a time. What the admitted clients send next
(their ``connect``, their ``subscribe``) comes a round trip later, so it is spread the same
way. Below ``per_turn`` per turn, a handshake goes through at once, without a callback.
"""

from __future__ import annotations

import asyncio
import weakref
from collections import deque
from collections.abc import Callable

from hubbub.clock import running_loop


class TurnGate:
    """Admits at most ``per_turn`` callers per loop iteration, the others in order later.

    Args:
        loop: the event loop the callers run on.
        per_turn: callers admitted per iteration; 0 admits every caller at once.
    """

    __slots__ = ("_admitted", "_loop", "_reset", "_waiting", "per_turn")

    def __init__(self, loop: asyncio.AbstractEventLoop, per_turn: int) -> None:
        self._loop = loop
        self.per_turn = per_turn
        self._admitted = 0  # in this iteration
        self._reset = False  # the call that starts the next iteration's count is scheduled
        self._waiting: deque[Callable[[], None]] = deque()

    @property
    def waiting(self) -> int:
        """Callers waiting for a later iteration."""
        return len(self._waiting)

    def enter(self) -> bool:
        """Whether the caller may go on now (counted as admitted); False: it must
        :meth:`wait`."""
        if not self.per_turn:
            return True
        if self._waiting or self._admitted >= self.per_turn:
            return False
        self._admitted += 1
        self._schedule()
        return True

    def wait(self, go: Callable[[], None]) -> None:
        """Call ``go`` in a later iteration, after every caller that waited before it."""
        self._waiting.append(go)
        self._schedule()

    def _schedule(self) -> None:
        if not self._reset:
            self._reset = True
            # Handles scheduled now run at the start of the next iteration: one count per turn.
            self._loop.call_soon(self._next_turn)

    def _next_turn(self) -> None:
        self._reset = False
        self._admitted = 0
        waiting = self._waiting
        limit = self.per_turn or len(waiting)  # turned off meanwhile: let everyone through
        try:
            while waiting and self._admitted < limit:
                self._admitted += 1
                waiting.popleft()()
        finally:
            if self._admitted:
                # Count what this iteration admitted against it; the rest waits for the next
                # (even after a caller that raised).
                self._schedule()


_gates: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, TurnGate] = weakref.WeakKeyDictionary()


def gate_for(per_turn: int) -> TurnGate:
    """The handshake gate of the running loop (one per loop: every connection of a node
    shares its turns)."""
    loop = running_loop()
    gate = _gates.get(loop)
    if gate is None:
        gate = _gates[loop] = TurnGate(loop, per_turn)
    gate.per_turn = per_turn
    return gate
