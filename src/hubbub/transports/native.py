"""The native WebSocket transport: the client protocol straight on the event loop's sockets.

``hubbub serve`` runs it inside uvicorn as the WebSocket protocol class (``ws=``): uvicorn
parses the HTTP request and hands an upgrade over; for the hubbub endpoint this class takes the
socket, for any other WebSocket route (the tutorial's ``/ws/{client_id}``, routes of an
embedding app) it hands the connection to uvicorn's own WebSocket protocol, which serves it
through the ASGI app as before.

Why a transport of its own: through ASGI every message is an ``await send(...)`` that frames it
again for each subscriber. Here a publication is framed once (the fan-out hands every
subscriber the same bytes object, so a one-entry cache turns thousands of frame builds into
one), appended to each connection's pending list without a task, future or await, and all
connections touched in one loop iteration are flushed together: one ``transport.write`` per
connection per iteration, however many messages it got. Under load that batches several
messages into one write, which is where the kernel's per-``send`` cost is saved. Live
subscribers with nothing to check per publication go further: they are members of a channel
group (``_Group``), which takes a publication with no work per member and writes all its new
frames to every member as one shared bytes object at the flush.

The opening handshake is answered by :mod:`hubbub.transports.handshake` over the request head
uvicorn already parsed. Incoming frames go through the sans-I/O protocol of ``websockets``
(masking, fragmentation, size limits, control frames and the close handshake), which is strict
and well tested; only the outgoing data path is written here.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import struct
import weakref
from typing import Any, cast
from urllib.parse import parse_qs

from websockets.exceptions import InvalidState
from websockets.frames import Frame, Opcode
from websockets.protocol import Protocol, Side, State

from hubbub.clock import running_loop
from hubbub.limits import client_address
from hubbub.logs import WEBSOCKETS_LOGGER
from hubbub.protocol.codec import JSON, PROTOBUF, Codec
from hubbub.protocol.codes import DisconnectCode, disconnect
from hubbub.session import Session
from hubbub.transports.asgi import JSON_SUBPROTOCOL, PROTOBUF_SUBPROTOCOL, origin_allowed
from hubbub.transports.handshake import (
    HandshakeError,
    check_upgrade,
    offered_subprotocols,
    parse_head,
    switching,
)
from hubbub.transports.serving import node_of

log = logging.getLogger("hubbub.transport")
_ws_log = logging.getLogger(WEBSOCKETS_LOGGER)
if _ws_log.level == logging.NOTSET:
    # Quiet unless asked (hubbub.logs.configure at debug), also in an app that configures
    # logging itself: otherwise every connection closed is a line at INFO.
    _ws_log.setLevel(logging.WARNING)

CLOSE_TIMEOUT = 5.0
"""Seconds a closing connection waits for the peer's close frame before the socket is cut."""

FLOOD_CLOSE_TIMEOUT = 0.5
"""The same for a connection closed for sending more than its budget: long enough to read the
close frame, short enough that a flooder which does not read holds nothing for long."""

_INBOX_HIGH = 64  # received messages waiting for the session before reading pauses

# One loop turn parses at most about this many frames of one connection; the rest of what was
# read waits for the next turn, so a flood of tiny frames (a few microseconds each to parse)
# cannot hold the event loop: a 256 KiB read of empty frames is 40,000 of them.
_TURN_FRAMES = 128
_SLICE = 1024  # bytes parsed between two looks at the turn's count (at most 170 frames)

_MAX_WAIT = 0.05  # the adaptive wait between flushes never exceeds 50 ms
_MIN_COST = 0.005  # flushes shorter than this (a few thousand sockets) never delay the next
_GATHER = 0.1  # after a long flush, the next waits this fraction of it to gather more


def frame(opcode: int, payload: bytes) -> bytes:
    """One unfragmented, unmasked server frame (RFC 6455 5.2)."""
    size = len(payload)
    if size < 126:
        return bytes((0x80 | opcode, size)) + payload
    if size < 65536:
        return struct.pack("!BBH", 0x80 | opcode, 126, size) + payload
    return struct.pack("!BBQ", 0x80 | opcode, 127, size) + payload


class _FrameCache:
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


_cache = _FrameCache()


class _Flusher:
    """Writes what connections and groups queued, one write per connection, as soon as the
    loop is free, or a little later when the last flush took long.

    Under light load a flush runs at the end of the loop iteration, so latency is one
    iteration. A flush to many sockets takes milliseconds (10,000 sockets: about 20 ms, most
    of it the kernel's ``send``); after such a flush the next one waits a fraction of that
    (``_GATHER``, at most ``_MAX_WAIT``) from its first message, so publications that follow
    each other closely leave together: every connection gets them in one write instead of one
    write each, and the kernel's per-call cost, most of the time at that size, is shared.

    One per event loop (and write delay), taken when a connection is made, so marking a
    connection costs no loop lookup (``asyncio.get_running_loop`` is a ``getpid`` system call
    on every call).

    Args:
        loop: the event loop the connections run on.
        delay: the least time between two flushes (``write_delay``); 0 = only the adaptive wait.
    """

    __slots__ = ("_dirty", "_groups", "_last_cost", "_last_end", "_loop", "_scheduled", "delay")

    def __init__(self, loop: asyncio.AbstractEventLoop, delay: float) -> None:
        self._loop = loop
        self.delay = delay
        self._dirty: list[NativeWebSocketProtocol] = []
        self._groups: list[_Group] = []
        self._scheduled = False
        self._last_end = 0.0
        self._last_cost = 0.0

    def mark(self, conn: NativeWebSocketProtocol) -> None:
        self._dirty.append(conn)
        if not self._scheduled:
            self._schedule()

    def mark_group(self, group: _Group) -> None:
        self._groups.append(group)
        if not self._scheduled:
            self._schedule()

    def _schedule(self) -> None:
        self._scheduled = True
        now = self._loop.time()
        wait = self.delay - (now - self._last_end)
        # Only a flush that took long is worth gathering for: below _MIN_COST the next one
        # runs at the end of the iteration, as if there were no adaptive wait.
        if self._last_cost > _MIN_COST:
            wait = max(wait, min(self._last_cost * _GATHER, _MAX_WAIT))
        if wait > 0:
            self._loop.call_later(wait, self._run)
        else:
            self._loop.call_soon(self._run)

    def _run(self) -> None:
        loop = self._loop
        started = loop.time()
        groups, self._groups = self._groups, []
        dirty, self._dirty = self._dirty, []
        self._scheduled = False
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


class _Group:
    """A :class:`~hubbub.transports.base.Group` of native connections (one channel, one wire
    format) on one flusher.

    ``frames`` are the group's publications since the last flush, framed. A member with no
    message of its own in that time is written ``b"".join(frames)``, the same bytes object as
    every other such member. A member that wrote something of its own, or joined, in between
    holds a cursor into ``frames`` (what it already took, in order, into its own queue) and
    takes the rest at its own flush.
    """

    __slots__ = ("_flusher", "frames", "members", "opcode")

    def __init__(self, flusher: _Flusher, opcode: int) -> None:
        self._flusher = flusher
        self.opcode = opcode
        self.frames: list[bytes] = []
        self.members: dict[str, NativeWebSocketProtocol] = {}

    def __len__(self) -> int:
        return len(self.members)

    def send(self, data: bytes) -> None:
        if not self.frames:
            self._flusher.mark_group(self)
        self.frames.append(frame(self.opcode, data))

    def add(self, key: str, member: Any) -> None:
        conn = cast(NativeWebSocketProtocol, member)
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


_flushers: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, dict[float, _Flusher]] = (
    weakref.WeakKeyDictionary()
)


def _flusher_for(delay: float) -> _Flusher:
    """The flusher of the running loop for ``delay``."""
    loop = running_loop()
    per_loop = _flushers.get(loop)
    if per_loop is None:
        per_loop = _flushers[loop] = {}
    flusher = per_loop.get(delay)
    if flusher is None:
        flusher = per_loop[delay] = _Flusher(loop, delay)
    return flusher


class NativeWebSocketProtocol(asyncio.Protocol):
    """One WebSocket connection: an asyncio protocol with uvicorn's WebSocket class interface.

    As a :class:`~hubbub.transports.base.Transport` it is what its session writes to.
    """

    # Slots: tens of thousands of these live at once; a __dict__ each would cost ~1 KiB.
    __slots__ = (
        "_app_state",
        "_backlog",
        "_binary",
        "_budget_at",
        "_byte_tokens",
        "_close_timer",
        "_closing",
        "_config",
        "_dirty",
        "_flusher",
        "_fragment_opcode",
        "_fragments",
        "_frame_tokens",
        "_groups",
        "_inbox",
        "_ip",
        "_max_bytes",
        "_opcode",
        "_other",
        "_paused",
        "_pending",
        "_pending_size",
        "_ping_timer",
        "_pong_seen",
        "_reader",
        "_remote",
        "_server_state",
        "_session",
        "_taken",
        "_transport",
        "_ws",
        "node",
    )

    def __init__(
        self,
        config: Any,
        server_state: Any,
        app_state: dict[str, Any] | None = None,
        _loop: asyncio.AbstractEventLoop | None = None,
    ) -> None:
        self._config = config
        self._server_state = server_state
        self._app_state = app_state or {}
        node = node_of(config.loaded_app)
        if node is None:
            raise RuntimeError("the native transport needs an app made by hubbub.create_app")
        self.node = node
        settings = self.node.settings
        self._max_bytes = settings.client.queue_max_size
        self._flusher = _flusher_for(settings.write_delay)
        self._transport: asyncio.Transport | None = None
        self._ws: Protocol | None = None
        self._session: Session | None = None
        self._opcode = Opcode.TEXT.value
        self._binary = False
        self._pending: list[bytes] = []
        self._pending_size = 0
        self._dirty = False
        # The groups this connection is in, and while it has messages of its own waiting,
        # how many of each group's frames it already took into them (see _Group).
        self._groups: tuple[_Group, ...] = ()
        self._taken: dict[_Group, int] | None = None
        self._closing = False
        self._close_timer: asyncio.TimerHandle | None = None
        self._fragments: list[bytes] = []
        self._fragment_opcode = Opcode.TEXT
        # What was read but not parsed yet: the rest of a turn that used its share of frames.
        self._backlog = b""
        # The frame budget (limits.frame_rate and frame_byte_rate): token buckets inline,
        # three floats instead of two objects per connection.
        self._frame_tokens = 0.0
        self._byte_tokens = 0.0
        self._budget_at = 0.0
        # A list, not a deque: an empty deque is a 64-slot block (~600 B) per connection.
        self._inbox: list[bytes] = []
        self._reader: asyncio.Task[None] | None = None
        self._paused = False
        self._ip = ""
        self._remote = ""
        self._ping_timer: asyncio.TimerHandle | None = None
        self._pong_seen = True
        self._other: asyncio.Protocol | None = None

    # -----------------------------------------------------------------------------------------
    # Transport (what the session sees)

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

    def new_group(self) -> _Group:
        return _Group(self._flusher, self._opcode)

    def _take(self, group: _Group, upto: int) -> None:
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
        if self._session is not None:
            self._session.slow()
        slow = disconnect(DisconnectCode.SLOW)
        self.close(slow.code, slow.reason)

    def close(self, code: int, reason: str) -> None:
        if self._closing:
            return
        self._closing = True
        self.flush()
        self._groups = ()  # nothing after the close frame
        ws, transport = self._ws, self._transport
        if ws is None or transport is None:
            return
        # The peer may have closed first: the close handshake is then already under way.
        with contextlib.suppress(InvalidState):
            ws.send_close(code, reason)
        self._send_out()
        self._close_timer = running_loop().call_later(CLOSE_TIMEOUT, self._abort)

    def _abort(self) -> None:
        if self._transport is not None:
            self._transport.abort()

    # -----------------------------------------------------------------------------------------
    # asyncio.Protocol

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports are not asyncio.Transport subclasses but have its interface.
        self._transport = cast(asyncio.Transport, transport)
        peer = self._transport.get_extra_info("peername") or ("", 0)
        self._remote = f"{peer[0]}:{peer[1]}"
        self._ip = str(peer[0])

    def data_received(self, data: bytes) -> None:
        if self._other is not None:
            self._other.data_received(data)
            return
        if self._ws is None:
            self._handshake(data)
            return
        if self._backlog:
            # Reading is paused until the next turn; the transport hands over what it had.
            self._backlog += data
            return
        self._receive(data)

    def eof_received(self) -> bool | None:
        if self._other is not None:
            return self._other.eof_received()
        if self._ws is not None:
            self._ws.receive_eof()
            self._events()
        return None

    def connection_lost(self, exc: Exception | None) -> None:
        if self._other is not None:
            self._other.connection_lost(exc)
            return
        self._closing = True
        self._pending.clear()
        self._groups = ()
        self._server_state.connections.discard(self)
        for timer in (self._close_timer, self._ping_timer):
            if timer is not None:
                timer.cancel()
        if self._reader is not None:
            self._reader.cancel()
        self._release_ws()
        session = self._session
        if session is None:
            return
        self._session = None
        node = self.node
        node.open_sockets -= 1
        node.sockets_by_ip[self._ip] -= 1
        if not node.sockets_by_ip[self._ip]:
            del node.sockets_by_ip[self._ip]
        node.spawn(session.closed())

    def _release_ws(self) -> None:
        """Drop websockets' protocol so reference counting frees it now.

        It refers to itself through its parser (a generator whose frame holds ``self``) and,
        after bad input, through the traceback of ``parser_exc``: a cycle only the cyclic
        collector would free, which in ``hubbub serve`` (frozen start-up objects, high
        thresholds) runs a full collection only after tens of thousands of others. Closing
        the generator and dropping the exception break the cycle.
        """
        ws, self._ws = self._ws, None
        if ws is None:
            return
        ws.parser.close()
        ws.parser_exc = None

    def pause_writing(self) -> None:
        # Ours: the buffer size is checked at every flush instead.
        if self._other is not None:
            self._other.pause_writing()

    def resume_writing(self) -> None:
        if self._other is not None:
            self._other.resume_writing()

    def shutdown(self) -> None:
        """uvicorn is stopping: close like a drain does (3001, clients reconnect elsewhere)."""
        if self._session is not None:
            self._session.close(disconnect(DisconnectCode.SHUTDOWN))
        elif self._transport is not None:
            self._transport.close()

    # -----------------------------------------------------------------------------------------
    # Handshake

    def _handshake(self, head: bytes) -> None:
        node = self.node
        transport = self._transport
        assert transport is not None
        try:
            request = parse_head(head)
        except HandshakeError as exc:
            self._refuse(exc, "handshake.invalid")
            return
        if not self._serves(request.path):
            self._hand_over(head)
            return
        limits = node.settings.limits
        self._ip = client_address(
            self._ip, request.header("x-forwarded-for"), limits.trusted_proxies
        )
        try:
            accept = check_upgrade(request)
        except HandshakeError as exc:
            self._refuse(exc, "handshake.invalid")
            return
        if node.draining:
            # Shutting down: refuse, so the client's reconnect lands on another node.
            self._refuse(HandshakeError(503, "shutting down"), "")
            return
        if (limits.max_connections and node.open_sockets >= limits.max_connections) or (
            limits.connections_per_ip and node.sockets_by_ip[self._ip] >= limits.connections_per_ip
        ):
            log.warning("refused WebSocket from %s: connection limit", self._remote)
            self._refuse(HandshakeError(503, "connection limit"), "handshake.connection_limit")
            return
        origin = request.header("origin")
        if not origin_allowed(origin, request.header("host"), node.settings.client.allowed_origins):
            log.warning("refused WebSocket from %s: origin %r not allowed", self._remote, origin)
            self._refuse(HandshakeError(403, "origin not allowed"), "handshake.origin_refused")
            return
        offered = offered_subprotocols(request)
        subprotocol = next(
            (name for name in (PROTOBUF_SUBPROTOCOL, JSON_SUBPROTOCOL) if name in offered), None
        )
        transport.write(switching(accept, subprotocol))
        # From here on only frames: websockets' protocol, already open, parses them (masking,
        # fragments, control frames, limits) and makes the close handshake.
        self._ws = Protocol(
            Side.SERVER,
            state=State.OPEN,
            max_size=node.settings.client.max_message_size,
            # Its per-connection lines ("connection closed") are routine: a logger of their
            # own, which hubbub.logs shows at debug only.
            logger=_ws_log,
        )
        query = parse_qs(request.query)
        wants_protobuf = subprotocol == PROTOBUF_SUBPROTOCOL
        wants_protobuf = wants_protobuf or "protobuf" in (
            query.get("format", []) + query.get("cf_protocol", [])
        )
        codec: Codec = PROTOBUF if wants_protobuf else JSON
        self._binary = codec.binary
        self._opcode = Opcode.BINARY.value if codec.binary else Opcode.TEXT.value
        frame_pings = query.get("cf_ws_frame_ping_pong", [""])[0] == "true"
        self._frame_tokens = float(limits.frame_burst)
        self._byte_tokens = float(limits.frame_byte_burst)
        self._budget_at = node.clock.monotonic()
        node.open_sockets += 1
        node.sockets_by_ip[self._ip] += 1
        self._server_state.connections.add(self)
        # With WebSocket-level pings the client answers at the frame layer; app pings are off.
        session = Session(node, self, codec=codec, app_pings=not frame_pings, remote=self._remote)
        self._session = session
        session.start()
        node.counters[f"connections.{codec.name}"] += 1
        if frame_pings:
            self._arm_frame_ping()

    def _refuse(self, refusal: HandshakeError, counter: str) -> None:
        """Answer the upgrade request with an HTTP error and close."""
        if counter:
            self.node.counters[counter] += 1
        if refusal.status == 400 or refusal.status == 426:
            log.info("bad WebSocket handshake from %s: %s", self._remote, refusal.reason)
        assert self._transport is not None
        self._transport.write(refusal.response())
        self._transport.close()

    def _arm_frame_ping(self) -> None:
        interval = self.node.settings.client.ping_interval
        self._ping_timer = running_loop().call_later(interval, self._frame_ping)

    def _frame_ping(self) -> None:
        """WebSocket-level heartbeat for clients that asked for it: a ping per interval; no
        pong since the previous one closes the connection (3012)."""
        if self._closing or self._ws is None or self._session is None:
            return
        if not self._pong_seen:
            self._session.close(disconnect(DisconnectCode.NO_PONG))
            return
        self._pong_seen = False
        self._ws.send_ping(b"")
        self._send_out()
        self._arm_frame_ping()

    def _serves(self, path: str) -> bool:
        """Whether this transport serves ``path`` (others go to the ASGI app)."""
        return path == self.node.settings.websocket_path

    def _hand_over(self, head: bytes) -> None:
        """Another WebSocket route: uvicorn's own protocol serves it through the ASGI app."""
        from uvicorn.protocols.websockets.auto import AutoWebSocketsProtocol

        assert AutoWebSocketsProtocol is not None and self._transport is not None
        other = AutoWebSocketsProtocol(
            config=self._config, server_state=self._server_state, app_state=self._app_state
        )
        transport = self._transport
        self._transport = None
        self._other = other
        other.connection_made(transport)
        other.data_received(head)
        # uvicorn installs this object as the socket's protocol after the handshake bytes
        # are fed, so it stays in between and passes every event on.

    # -----------------------------------------------------------------------------------------
    # Frames in

    def _receive(self, data: bytes) -> None:
        """Parse ``data`` a slice at a time, handling each slice's frames and charging them to
        the connection's budget. Once this turn handled ``_TURN_FRAMES`` frames, the rest
        waits for the next loop iteration with reading paused: other connections and timers
        run in between, however much this one sends."""
        ws = self._ws
        assert ws is not None
        if ws.eof_sent:
            # Failed (websockets discards whatever comes now): not even buffered.
            return
        size = len(data)
        pos = frames = 0
        while pos < size:
            chunk = data if size <= _SLICE else data[pos : pos + _SLICE]
            pos += _SLICE
            ws.receive_data(chunk)
            handled = self._events()
            frames += handled
            if not self._spend(handled, len(chunk)):
                return
            transport = self._transport
            if transport is None or transport.is_closing() or ws.eof_sent:
                return  # closed or failed: the rest is not needed
            if pos < size and frames >= _TURN_FRAMES:
                self._hold(data[pos:])
                return

    def _hold(self, rest: bytes) -> None:
        """Keep ``rest`` for the next loop iteration and read nothing more until then."""
        transport = self._transport
        if transport is None or transport.is_closing():
            return
        self._backlog = rest
        transport.pause_reading()
        running_loop().call_soon(self._next_turn)

    def _next_turn(self) -> None:
        rest, self._backlog = self._backlog, b""
        transport = self._transport
        if transport is None or transport.is_closing():
            return
        self._receive(rest)
        if not self._backlog and not self._paused and not transport.is_closing():
            transport.resume_reading()

    def _spend(self, frames: int, size: int) -> bool:
        """Charge ``frames`` frames and ``size`` bytes read to the connection's budget
        (``limits.frame_rate``/``frame_burst`` and ``frame_byte_rate``/``frame_byte_burst``,
        token buckets). Control frames count like any other: a flood of pings, pongs or
        empty continuation frames costs the server as much per frame as messages do. Over
        the budget the connection is closed (3013) and reading stops; returns False then."""
        limits = self.node.settings.limits
        now = self.node.clock.monotonic()
        elapsed = now - self._budget_at
        self._budget_at = now
        over = ""
        if limits.frame_rate > 0:
            tokens = min(limits.frame_burst, self._frame_tokens + elapsed * limits.frame_rate)
            self._frame_tokens = tokens - frames
            if self._frame_tokens < 0:
                over = "frame_rate"
        if limits.frame_byte_rate > 0:
            tokens = min(
                limits.frame_byte_burst, self._byte_tokens + elapsed * limits.frame_byte_rate
            )
            self._byte_tokens = tokens - size
            if self._byte_tokens < 0:
                over = over or "frame_byte_rate"
        if not over:
            return True
        self._over_budget(over)
        return False

    def _over_budget(self, limit: str) -> None:
        """Close a connection that sends more than its budget allows: 3013, counted under
        ``limit``. What it sends after that is dropped unparsed, and the socket is cut after
        ``FLOOD_CLOSE_TIMEOUT`` unless the peer closes first."""
        self._backlog = b""
        if not self._closing:
            self.node.counters[f"limit.{limit}"] += 1
            self._fail(DisconnectCode.TOO_MANY_REQUESTS, f"too many frames (limits.{limit})")
        elif self._ws is not None and not self._ws.eof_sent:
            self._ws.fail(DisconnectCode.TOO_MANY_REQUESTS)  # already closing: stop parsing
            self._send_out()
        if self._close_timer is not None:
            self._close_timer.cancel()
        self._close_timer = running_loop().call_later(FLOOD_CLOSE_TIMEOUT, self._abort)

    def _events(self) -> int:
        """Handle the frames the parser has produced; how many there were."""
        ws = self._ws
        assert ws is not None
        events = ws.events_received()
        answers = False
        for event in events:
            if self._closing:
                break  # nothing the peer sent after the close counts (pongs already left)
            if isinstance(event, Frame):
                control = event.opcode.value >= 8
                if answers and not control:
                    # The answers to control frames (pongs, close) leave before anything
                    # the messages after them produce, in the order the peer sent them;
                    # those of a run of control frames leave in one write.
                    self._send_out()
                answers = control
                self._frame(event)
        self._send_out()
        exc = ws.parser_exc
        if (
            exc is not None
            and not isinstance(exc, EOFError)  # the peer went away: a 1006, not bad input
            and self._session is not None
            and not self._closing
        ):
            # Invalid framing, bad UTF-8, an oversized message: websockets already queued the
            # close frame (1002, 1007, 1009); one line per offending connection, no traceback.
            code = ws.close_sent.code if ws.close_sent is not None else 1002
            self._session.log.info("closing %s: %s (%s)", self._remote, code, exc)
            self.node.metrics_bad_input(code)
            self.node.metrics_disconnect(code)
        if ws.state is not State.OPEN:
            self._closing = True
            # The close frame is out: nothing may follow it.
            self._groups = ()
            self._pending.clear()
            self._pending_size = 0
            if ws.state is State.CLOSED and self._transport is not None:
                self._transport.close()
            elif self._close_timer is None:
                self._close_timer = running_loop().call_later(CLOSE_TIMEOUT, self._abort)
        return len(events)

    def _frame(self, event: Frame) -> None:
        opcode = event.opcode
        if opcode is Opcode.TEXT or opcode is Opcode.BINARY:
            if not self._accepts(opcode):
                return
            if event.fin:
                self._complete(opcode, bytes(event.data))
            else:
                self._fragments = [bytes(event.data)]
                self._fragment_opcode = opcode
        elif opcode is Opcode.PONG:
            self._pong_seen = True
        elif opcode is Opcode.CONT:
            if len(self._fragments) >= self.node.settings.client.max_fragments:
                # Empty fragments pass the size limit: their number is capped like the size.
                self.node.counters["limit.max_fragments"] += 1
                self._fragments = []
                self._fail(1009, "message in too many fragments")
                return
            self._fragments.append(bytes(event.data))
            if event.fin:
                data = b"".join(self._fragments)
                self._fragments = []
                self._complete(self._fragment_opcode, data)

    def _accepts(self, opcode: Opcode) -> bool:
        """Whether a message of this type fits the connection's format (text for JSON, binary
        for Protobuf); closes with 3506 when it does not."""
        if self._binary == (opcode is Opcode.BINARY):
            return True
        if self._session is not None:
            kind = "text" if self._binary else "binary"
            codec = "protobuf" if self._binary else "json"
            self.node.metrics_bad_input(DisconnectCode.INAPPROPRIATE_PROTOCOL)
            self._session.close(
                disconnect(
                    DisconnectCode.INAPPROPRIATE_PROTOCOL,
                    f"inappropriate protocol: {kind} frame on a {codec} connection",
                )
            )
        return False

    def _complete(self, opcode: Opcode, data: bytes) -> None:
        """A whole message arrived: text must be UTF-8 (1007 otherwise)."""
        if opcode is Opcode.TEXT:
            try:
                data.decode()
            except UnicodeDecodeError:
                self._fail(1007, "invalid UTF-8 in a text message")
                return
        self._message(opcode, data)

    def _message(self, opcode: Opcode, data: bytes) -> None:
        """Queue a valid message for the session."""
        session = self._session
        if self._closing or session is None:
            return
        if self._reader is None and session.take_pong(data):
            return  # the usual message of an idle connection, answered without a task
        self._inbox.append(data)
        if self._reader is None:
            self._reader = running_loop().create_task(self._read())
        if len(self._inbox) > _INBOX_HIGH and not self._paused and self._transport is not None:
            # A client sending faster than its commands are handled waits in its own TCP
            # buffer, not in our memory.
            self._paused = True
            self._transport.pause_reading()

    async def _read(self) -> None:
        """Hand received messages to the session in order. A task exists only while there is
        something to handle, so idle connections cost no task."""
        session = self._session
        try:
            while self._inbox and session is not None and not self._closing:
                await session.handle_frame(self._inbox.pop(0))
                if self._paused and len(self._inbox) < _INBOX_HIGH // 2:
                    self._paused = False
                    if self._transport is not None and not self._backlog:
                        # (With a backlog, the next turn resumes reading after parsing it.)
                        self._transport.resume_reading()
        except Exception:
            if session is not None:
                session.log.exception("connection failed")
                session.close(disconnect(DisconnectCode.INTERNAL))
        finally:
            self._reader = None
            if self._closing:
                self._inbox.clear()

    def _fail(self, code: int, reason: str) -> None:
        """Close for a violation of the WebSocket protocol itself (not of the client protocol)."""
        ws = self._ws
        assert ws is not None
        # One line, with the connection's id when it has a session (it always has here).
        (self._session.log if self._session is not None else log).info(
            "closing %s: %s (%s)", self._remote, code, reason
        )
        self.node.metrics_bad_input(code)
        self.node.metrics_disconnect(code)
        self.flush()
        self._closing = True
        self._groups = ()
        ws.fail(code, reason)
        self._send_out()
        if self._close_timer is None:
            self._close_timer = running_loop().call_later(CLOSE_TIMEOUT, self._abort)

    def _send_out(self) -> None:
        ws, transport = self._ws, self._transport
        if ws is None or transport is None:
            return
        for data in ws.data_to_send():
            if data:
                transport.write(data)
            elif transport.can_write_eof():
                # websockets' signal that the close handshake is done on our side.
                transport.write_eof()
        if not self._closing and transport.get_write_buffer_size() > self._max_bytes:
            # Pongs to a flood of pings, written here rather than through write(), count
            # against queue_max_size too: a peer that sends pings and never reads is slow.
            self._overflow()
