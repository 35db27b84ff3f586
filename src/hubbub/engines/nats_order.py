"""Publications handed on in offset order, when offsets and delivery come from two systems.

With history in Redis and live delivery over NATS, a publisher takes its offset from Redis and
then sends over NATS; two publishers (or two concurrent publishes of one node) can reach a node
in the other order than their offsets. The broker contract wants each channel's publications in
offset order, and a node takes an offset that does not move forward for a stream that went back
(it renews the epoch and makes every subscriber recover). :class:`Reorder` sits in between:

* the next offset is handed on at once, with any held ones that follow it;
* one ahead of a missing offset is held up to ``window`` seconds for it; past that, the held
  ones are handed on and the node sees the gap (its subscribers recover from history);
* an offset that arrives after the node was handed a later one is dropped if it is one the
  window gave up on (or, within the window, one just below the first offset this node saw): the
  subscribers were already told of the gap. Any other offset that does not move forward is
  handed on: the stream really went back, and the node must see it.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass, field

from hubbub.engines.base import StreamPosition
from hubbub.protocol.messages import Publication

Deliver = Callable[[str, Publication, StreamPosition], None]

LOOKBACK = 64
"""How many offsets below the first one a node sees of a channel are taken for late arrivals
of concurrent publishes (dropped within the window), not for a stream that went back."""

MAX_GONE = 1024
"""Most offsets of one gap remembered as given up on."""

GONE_WINDOWS = 20
"""How many windows an offset given up on is remembered: a publication delayed that long
(a paused publisher) is still dropped as late rather than taken for a stream that went
back, which would renew the epoch and make every subscriber of the channel recover."""


@dataclass(slots=True)
class _Channel:
    epoch: str
    last: int
    held: dict[int, tuple[Publication, StreamPosition]] = field(default_factory=dict)
    # Offsets given up on -> loop time until which a late arrival of one is dropped.
    gone: dict[int, float] = field(default_factory=dict)
    timer: asyncio.TimerHandle | None = None


class Reorder:
    """Hands each channel's publications to ``deliver`` in offset order (see the module).

    Args:
        deliver: what receives them (the broker's event handler).
        window: seconds a publication ahead of a missing offset waits for it.
        count: told ``"held"``, ``"gave_up"`` and ``"late_dropped"`` as they happen.
    """

    def __init__(
        self, deliver: Deliver, window: float, count: Callable[[str], None] | None = None
    ) -> None:
        self._deliver = deliver
        self._window = window
        self._count = count or (lambda _: None)
        self._channels: dict[str, _Channel] = {}

    def push(self, channel: str, pub: Publication, position: StreamPosition) -> None:
        """A publication arrived; hand it (and what it releases) on, hold it, or drop it."""
        offset = position.offset
        if offset == 0:  # no stream: nothing to order
            self._deliver(channel, pub, position)
            return
        now = asyncio.get_running_loop().time()
        st = self._channels.get(channel)
        if st is None or st.epoch != position.epoch:
            if st is not None:
                self._release(channel, st, now)
            until = now + self._window
            gone = {o: until for o in range(max(1, offset - LOOKBACK), offset)}
            self._channels[channel] = _Channel(position.epoch, offset, gone=gone)
            self._deliver(channel, pub, position)
            return
        if offset == st.last + 1:
            st.last = offset
            self._deliver(channel, pub, position)
            self._drain(channel, st)
        elif offset > st.last + 1:
            self._count("held")
            st.held[offset] = (pub, position)
            if st.timer is None:
                st.timer = asyncio.get_running_loop().call_later(
                    self._window, self._expire, channel, st
                )
        else:
            if st.gone.pop(offset, 0.0) > now:
                self._count("late_dropped")
                return
            # The stream went back: hand it on, so that the node renews the epoch.
            st.last = offset
            st.gone.clear()
            self._deliver(channel, pub, position)
            self._drain(channel, st)

    def _drain(self, channel: str, st: _Channel) -> None:
        while (nxt := st.held.pop(st.last + 1, None)) is not None:
            st.last += 1
            self._deliver(channel, *nxt)
        if not st.held and st.timer is not None:
            st.timer.cancel()
            st.timer = None

    def _expire(self, channel: str, st: _Channel) -> None:
        st.timer = None
        if self._channels.get(channel) is st:
            self._release(channel, st, asyncio.get_running_loop().time())

    def _release(self, channel: str, st: _Channel, now: float) -> None:
        """Give up waiting: hand on every held publication in order, remembering the gaps."""
        if st.timer is not None:
            st.timer.cancel()
            st.timer = None
        until = now + self._window * GONE_WINDOWS
        st.gone = {o: t for o, t in st.gone.items() if t > now}
        for offset in sorted(st.held):
            self._count("gave_up")
            for missing in range(max(st.last + 1, offset - MAX_GONE), offset):
                st.gone[missing] = until
            st.last = offset
            self._deliver(channel, *st.held[offset])
        st.held.clear()

    def forget(self, channel: str) -> None:
        """The node stopped receiving ``channel``: drop its state and what it held."""
        st = self._channels.pop(channel, None)
        if st is not None and st.timer is not None:
            st.timer.cancel()

    def reset(self) -> None:
        """The transport reconnected: hand on what is held and start every channel afresh
        (publications were lost meanwhile; the node's stream checks find the gaps)."""
        now = asyncio.get_running_loop().time()
        for channel, st in list(self._channels.items()):
            self._release(channel, st, now)
        self._channels.clear()
