"""The native transport's write path: frame once, queue, write once per connection per loop
iteration.

A publication is framed once (the fan-out hands every subscriber the same bytes object, so a
one-entry :class:`FrameCache` turns thousands of frame builds into one), appended to each
connection's pending list without a task, future or await, and all connections touched in one
loop iteration are written by the loop's :class:`Flusher` together: one ``transport.write`` per
connection per iteration, however many messages it got. Under load that batches several
messages into one write, which is where the kernel's per-``send`` cost is saved.

Live subscribers with nothing to check per publication go further: they are members of a
:class:`FrameGroup` (one channel, one format), which takes a publication with no work per member
and writes all its new frames to every member as one shared bytes object at the flush.

:class:`BatchedWrites` is the connection's side of it (the session's ``write``), a mixin of
:class:`~hubbub.transports.native.NativeWebSocketProtocol`.
"""

from __future__ import annotations

import asyncio
import struct
import weakref
from typing import Any, cast

from websockets.frames import Opcode

from hubbub.clock import running_loop

_MAX_WAIT = 0.05  # the adaptive wait between flushes never exceeds 50 ms
_MIN_COST = 0.005  # flushes shorter than this (a few thousand sockets) never delay the next
_GATHER = 0.1  # after a long flush, the next waits this fraction of it to gather more
_GATHER_MORE = 2.0  # ... and again while publications keep coming, up to this fraction
_MAX_GATHER = 0.1  # ... and at most this long (saturated: see Flusher)


def frame(opcode: int, payload: bytes) -> bytes:
    """One unfragmented, unmasked server frame (RFC 6455 5.2)."""
    size = len(payload)
    if size < 126:
        return bytes((0x80 | opcode, size)) + payload
    if size < 65536:
        return struct.pack("!BBH", 0x80 | opcode, 126, size) + payload
    return struct.pack("!BBQ", 0x80 | opcode, 127, size) + payload


class FrameCache:
    """The last payload framed: fan-out passes one bytes object to every subscriber in turn."""

    __slots__ = ("framed", "opcode", "payload")

    def __init__(self) -> None:
        self.payload: bytes | None = None
        self.opcode = 0
        self.framed = b""

    def get(self, payload: bytes, opcode: int) -> bytes:
        if payload is self.payload and opcode == self.opcode:
            return self.framed
        self.payload, self.opcode = payload, opcode
        self.framed = frame(opcode, payload)
        return self.framed


_cache = FrameCache()


class Flusher:
    """Writes what connections and groups queued, one write per connection, as soon as the
    loop is free, or a little later when the last flush took long.

    Under light load a flush runs at the end of the loop iteration, so latency is one
    iteration. While a connection holds input already read for its next turn (a burst of
    commands longer than one turn parses), the flush waits for it, up to ``_MAX_WAIT``.
    A flush to many sockets takes milliseconds (10,000 sockets: about 20 ms, most
    of it the kernel's ``send``); after such a flush the next one waits a fraction of that
    (``_GATHER``, at most ``_MAX_WAIT``) from its first message, so publications that follow
    each other closely leave together: every connection gets them in one write instead of one
    write each, and the kernel's per-call cost, most of the time at that size, is shared. When
    the loop is saturated (a connection sent more than one turn parses since the last flush)
    and more publications came meanwhile, mostly to groups that already had one (a stream over
    many small rooms, where a connection gets one publication in hundreds), it waits that long
    again, up to twice the flush's own cost (``_GATHER_MORE``, at most ``_MAX_GATHER``): one
    write per member then carries several. One burst (a few publications, then nothing), or
    publications spread over more groups than they fill, leave after one step.

    One per event loop (and write delay), taken when a connection is made, so marking a
    connection costs no loop lookup (``asyncio.get_running_loop`` is a ``getpid`` system call
    on every call).

    Args:
        loop: the event loop the connections run on.
        delay: the least time between two flushes (``write_delay``); 0 = only the adaptive wait.
    """

    __slots__ = (
        "_dirty",
        "_first",
        "_gather_until",
        "_groups",
        "_last_cost",
        "_last_end",
        "_loop",
        "_scheduled",
        "_seen",
        "_seen_groups",
        "arrivals",
        "delay",
        "held",
        "pressed",
    )

    def __init__(self, loop: asyncio.AbstractEventLoop, delay: float) -> None:
        self._loop = loop
        self.delay = delay
        self._dirty: list[BatchedWrites] = []
        self._groups: list[FrameGroup] = []
        self._scheduled = False
        self._last_end = 0.0
        self._last_cost = 0.0
        # Connections holding input already read for their next turn (see _run), and when
        # the first message of the coming flush was queued.
        self.held = 0
        self.pressed = False  # some connection held input since the last flush
        self._first = 0.0
        # Publications queued into groups so far, the count at the last look, and until when
        # the coming flush may wait for more while they keep coming.
        self.arrivals = 0
        self._seen = 0
        self._seen_groups = 0
        self._gather_until = 0.0

    def mark(self, conn: BatchedWrites) -> None:
        self._dirty.append(conn)
        if not self._scheduled:
            self._schedule()

    def mark_group(self, group: FrameGroup) -> None:
        self._groups.append(group)
        if not self._scheduled:
            self._schedule()

    def _schedule(self) -> None:
        self._scheduled = True
        now = self._first = self._loop.time()
        wait = self.delay - (now - self._last_end)
        # Only a flush that took long is worth gathering for: below _MIN_COST the next one
        # runs at the end of the iteration, as if there were no adaptive wait.
        self._gather_until = 0.0
        if self._last_cost > _MIN_COST:
            wait = max(wait, min(self._last_cost * _GATHER, _MAX_WAIT))
            self._gather_until = now + min(self._last_cost * _GATHER_MORE, _MAX_GATHER)
            self._seen = self.arrivals
            self._seen_groups = len(self._groups)
        if wait > 0:
            self._loop.call_later(wait, self._run)
        else:
            self._loop.call_soon(self._run)

    def _run(self) -> None:
        loop = self._loop
        started = loop.time()
        if self.held and started - self._first < _MAX_WAIT:
            # A connection has read more than one turn parses (a publisher's burst): what the
            # rest produces leaves with this flush, so each subscriber gets all of it in one
            # write instead of one write per turn. Bounded: a flood never holds a flush
            # longer than _MAX_WAIT. (What came until now is not "more" for the test below:
            # it judges what comes after.)
            self._seen = self.arrivals
            self._seen_groups = len(self._groups)
            loop.call_soon(self._run)
            return
        came = self.arrivals - self._seen
        new_groups = len(self._groups) - self._seen_groups
        if self.pressed and started < self._gather_until and came and new_groups * 2 <= came:
            # Input comes faster than one turn parses (the loop is saturated), publications
            # came while this flush waited to gather (a stream, not one burst), and most of
            # them went to groups that already had one: waiting as long again makes each
            # member's write carry more of them. (Below saturation nothing is held; and where
            # most publications go to groups with none yet, waiting would only add latency.)
            self._seen = self.arrivals
            self._seen_groups = len(self._groups)
            step = min(self._last_cost * _GATHER, self._gather_until - started)
            loop.call_later(step, self._run)
            return
        groups, self._groups = self._groups, []
        dirty, self._dirty = self._dirty, []
        self._scheduled = False
        self.pressed = False
        # Groups first: their members with nothing of their own get the shared bytes; the
        # others are in `dirty` and take the groups' frames behind their own messages.
        for group in groups:
            group.write_members()
        for conn in dirty:
            conn.flush()
        for group in groups:
            group.frames = []
        self._last_end = loop.time()
        self._last_cost = self._last_end - started


class FrameGroup:
    """A :class:`~hubbub.transports.base.Group` of native connections (one channel, one wire
    format) on one flusher.

    ``frames`` are the group's publications since the last flush, framed. A member with no
    message of its own in that time is written ``b"".join(frames)``, the same bytes object as
    every other such member. A member that wrote something of its own, or joined, in between
    holds a cursor into ``frames`` (what it already took, in order, into its own queue) and
    takes the rest at its own flush.
    """

    __slots__ = ("_flusher", "frames", "members", "opcode")

    def __init__(self, flusher: Flusher, opcode: int) -> None:
        self._flusher = flusher
        self.opcode = opcode
        self.frames: list[bytes] = []
        self.members: dict[str, BatchedWrites] = {}

    def __len__(self) -> int:
        return len(self.members)

    def send(self, data: bytes) -> None:
        self._flusher.arrivals += 1
        if not self.frames:
            self._flusher.mark_group(self)
        self.frames.append(frame(self.opcode, data))

    def add(self, key: str, member: Any) -> None:
        conn = cast(BatchedWrites, member)
        if conn._closing:
            return
        self.members[key] = conn
        conn._groups = (*conn._groups, self)
        if self.frames:
            # Sent before it joined: not for it.
            conn._take(self, len(self.frames))

    def discard(self, key: str) -> bool:
        conn = self.members.pop(key, None)
        if conn is None:
            return False
        conn._catch_up()
        conn._groups = tuple(g for g in conn._groups if g is not self)
        return True

    def write_members(self) -> None:
        frames = self.frames
        if not frames:
            return
        shared = frames[0] if len(frames) == 1 else b"".join(frames)
        for conn in list(self.members.values()):
            if conn._dirty or conn._closing:
                continue
            transport = conn._transport
            if transport is None or transport.is_closing():
                continue
            transport.write(shared)
            if transport.get_write_buffer_size() > conn._max_bytes:
                conn._overflow()


_flushers: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, dict[float, Flusher]] = (
    weakref.WeakKeyDictionary()
)


def flusher_for(delay: float) -> Flusher:
    """The flusher of the running loop for ``delay``."""
    loop = running_loop()
    per_loop = _flushers.get(loop)
    if per_loop is None:
        per_loop = _flushers[loop] = {}
    flusher = per_loop.get(delay)
    if flusher is None:
        flusher = per_loop[delay] = Flusher(loop, delay)
    return flusher


class BatchedWrites:
    """The write side of a native connection: :meth:`write` queues a framed message and marks
    the connection for the flusher; :meth:`flush` writes the queue in one go.

    A mixin of :class:`~hubbub.transports.native.NativeWebSocketProtocol`, which provides
    :meth:`close` and :meth:`_too_slow`; the state of this side is in the slots below, so a
    connection stays one object without a ``__dict__``.
    """

    __slots__ = (
        "_closing",
        "_dirty",
        "_flusher",
        "_groups",
        "_max_bytes",
        "_opcode",
        "_pending",
        "_pending_size",
        "_taken",
        "_transport",
    )

    _transport: asyncio.Transport | None
    _flusher: Flusher
    _opcode: int
    _max_bytes: int
    _pending: list[bytes]
    _pending_size: int
    _dirty: bool
    _closing: bool
    # The groups this connection is in, and while it has messages of its own waiting, how
    # many of each group's frames it already took into them (see FrameGroup).
    _groups: tuple[FrameGroup, ...]
    _taken: dict[FrameGroup, int] | None

    def _init_writes(self, flusher: Flusher, max_bytes: int) -> None:
        """Set up the write side: nothing queued, in no group, text frames until told."""
        self._transport = None
        self._flusher = flusher
        self._opcode = Opcode.TEXT.value
        self._max_bytes = max_bytes
        self._pending = []
        self._pending_size = 0
        self._dirty = False
        self._closing = False
        self._groups = ()
        self._taken = None

    def close(self, code: int, reason: str) -> None:
        """Close the connection (the connection's own: it knows the WebSocket protocol)."""
        raise NotImplementedError

    def _too_slow(self) -> None:
        """Close the connection of a peer that reads too slowly (the connection's own)."""
        raise NotImplementedError

    @property
    def closing(self) -> bool:
        return self._closing

    def write(self, data: bytes) -> None:
        if self._closing:
            return
        if self._groups:
            self._catch_up()
        framed = _cache.get(data, self._opcode)
        self._pending.append(framed)
        self._pending_size += len(framed)
        if self._pending_size > self._max_bytes:
            self._overflow()
            return
        if not self._dirty:
            self._dirty = True
            self._flusher.mark(self)

    def new_group(self) -> FrameGroup:
        return FrameGroup(self._flusher, self._opcode)

    def _take(self, group: FrameGroup, upto: int) -> None:
        """Record that this connection has ``group``'s frames before ``upto`` (or must not
        get them); it then flushes on its own this time."""
        taken = self._taken
        if taken is None:
            taken = self._taken = {}
        taken[group] = upto
        if not self._dirty:
            self._dirty = True
            self._flusher.mark(self)

    def _catch_up(self) -> None:
        """Queue the groups' frames not yet taken, so what is queued next comes after them."""
        if self._closing:
            return
        taken = self._taken
        for group in self._groups:
            frames = group.frames
            start = taken.get(group, 0) if taken is not None else 0
            if start < len(frames):
                for framed in frames[start:]:
                    self._pending.append(framed)
                    self._pending_size += len(framed)
                self._take(group, len(frames))

    def flush(self) -> None:
        """Write everything pending in one go (called once per loop iteration)."""
        self._dirty = False
        taken, self._taken = self._taken, None
        pending = self._pending
        # The groups skipped this connection: the rest of their frames go behind its own.
        for group in self._groups:
            frames = group.frames
            start = taken.get(group, 0) if taken is not None else 0
            if start < len(frames):
                pending.extend(frames[start:])
        transport = self._transport
        if not pending or transport is None or transport.is_closing():
            pending.clear()
            self._pending_size = 0
            return
        transport.write(pending[0] if len(pending) == 1 else b"".join(pending))
        pending.clear()
        self._pending_size = 0
        if not self._closing and transport.get_write_buffer_size() > self._max_bytes:
            # The peer reads slower than we publish: its kernel buffer is full and ours keeps
            # growing. Drop it rather than hold unbounded memory; it reconnects and recovers.
            self._overflow()

    def _overflow(self) -> None:
        self._pending.clear()
        self._pending_size = 0
        # Closing as too slow: nothing more of the groups either (it leaves them when its
        # session closes).
        self._groups = ()
        self._taken = None
        self._too_slow()
