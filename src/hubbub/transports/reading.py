"""The native transport's read side: frames in, through :mod:`hubbub.transports.frames`, to
the session.

:class:`~hubbub.transports.frames.FrameReader` parses (masking, fragmentation, size limits,
UTF-8, control frames); this side answers pings and makes the close handshake. Around it, what
a server with tens of thousands of connections needs: one loop turn parses at most about
``_TURN_FRAMES`` frames of a connection (the rest waits, with reading paused), every slice read
is charged to the connection's frame budget (:mod:`hubbub.transports.budget`), text must be of
the connection's format, and complete messages reach the session in order through a task that
exists only while there is something to handle.

:class:`FrameReading` is a mixin of :class:`~hubbub.transports.native.NativeWebSocketProtocol`.
It builds on the write side (:class:`~hubbub.transports.flush.BatchedWrites`) because reading
answers: pongs, close frames, and what is queued must leave before a close.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Coroutine
from typing import TYPE_CHECKING, Any

from websockets.frames import Opcode

from hubbub.clock import running_loop
from hubbub.protocol.codes import DisconnectCode, disconnect
from hubbub.transports.budget import charge
from hubbub.transports.flush import BatchedWrites
from hubbub.transports.frames import (
    CLOSE,
    PING,
    PONG,
    Event,
    FrameReader,
    close_frame,
    control_frame,
)

if TYPE_CHECKING:
    from hubbub.node import Node
    from hubbub.session import Session

log = logging.getLogger("hubbub.transport")

CLOSE_TIMEOUT = 5.0
"""Seconds a closing connection waits for the peer's close frame before the socket is cut."""

FLOOD_CLOSE_TIMEOUT = 0.5
"""The same for a connection closed for sending more than its budget: long enough to read the
close frame, short enough that a flooder which does not read holds nothing for long."""

_INBOX_HIGH = 64  # received messages waiting for the session before reading pauses

# What an idle connection holds instead of a list of its own (a list is 56 bytes): shared, so
# never appended to. The first message that has to wait for the session starts a list of its own.
_NO_INBOX: list[bytes] = []

# The opcodes of messages, as the hooks below take them.
_MESSAGE_OPCODES = (Opcode.CONT, Opcode.TEXT, Opcode.BINARY)

# One loop turn parses at most about this many frames of one connection; the rest of what was
# read waits for the next turn, so a flood of tiny frames (a few microseconds each to parse)
# cannot hold the event loop: a 256 KiB read of empty frames is 40,000 of them.
_TURN_FRAMES = 128
_SLICE = 1024  # bytes parsed between two looks at the turn's count (at most 170 frames)


class FrameReading(BatchedWrites):
    """The read side of a native connection: :meth:`_receive` takes what the socket read."""

    __slots__ = (
        "_backlog",
        "_binary",
        "_budget_at",
        "_byte_tokens",
        "_close_timer",
        "_frame_tokens",
        "_frames",
        "_inbox",
        "_paused",
        "_pong_seen",
        "_reader",
        "_waiting",
    )

    # The connection class's own, used here.
    node: Node
    _session: Session | None
    _remote: str

    # The frame parser, from the end of the opening handshake until the connection is gone.
    _frames: FrameReader | None
    _close_timer: asyncio.TimerHandle | None
    # What was read but not parsed yet: the rest of a turn that used its share of frames.
    _backlog: bytes
    # The frame budget: the two token buckets and when they were last charged.
    _frame_tokens: float
    _byte_tokens: float
    _budget_at: float
    _binary: bool
    _inbox: list[bytes]
    _reader: asyncio.Task[None] | None
    # What the reader task finishes first: the rest of a message that had to wait.
    _waiting: Coroutine[Any, Any, None] | None
    _paused: bool
    _pong_seen: bool

    def _init_reading(self) -> None:
        """Set up the read side: nothing read, no parser until the handshake is done."""
        self._frames = None
        self._close_timer = None
        self._backlog = b""
        self._frame_tokens = 0.0
        self._byte_tokens = 0.0
        self._budget_at = 0.0
        self._binary = False
        # A list, not a deque: an empty deque is a 64-slot block (~600 B) per connection.
        self._inbox = _NO_INBOX
        self._reader = None
        self._waiting = None
        self._paused = False
        self._pong_seen = True

    def _receive(self, data: bytes) -> None:
        """Parse ``data`` a slice at a time, handling each slice's frames and charging them to
        the connection's budget. Once this turn handled ``_TURN_FRAMES`` frames, the rest
        waits for the next loop iteration with reading paused: other connections and timers
        run in between, however much this one sends."""
        reader = self._frames
        assert reader is not None
        if reader.done:
            # Failed or closed by the peer: what comes now is not even buffered.
            return
        size = len(data)
        pos = frames = 0
        while pos < size:
            chunk = data if size <= _SLICE else data[pos : pos + _SLICE]
            pos += _SLICE
            events: list[Event] = []
            handled = reader.feed(chunk, events)
            self._events(reader, events)
            frames += handled
            if not self._spend(handled, len(chunk)):
                return
            transport = self._transport
            if transport is None or transport.is_closing() or reader.done:
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
        flusher = self._flusher
        flusher.held += 1  # the flush waits for what the rest produces
        flusher.pressed = True
        running_loop().call_soon(self._next_turn)

    def _next_turn(self) -> None:
        self._flusher.held -= 1
        rest, self._backlog = self._backlog, b""
        transport = self._transport
        if transport is None or transport.is_closing():
            return
        self._receive(rest)
        if not self._backlog and not self._paused and not transport.is_closing():
            transport.resume_reading()

    def _spend(self, frames: int, size: int) -> bool:
        """Charge ``frames`` frames and ``size`` bytes read to the connection's budget (see
        :mod:`hubbub.transports.budget`). Over the budget the connection is closed (3013) and
        reading stops; returns False then."""
        now = self.node.clock.monotonic()
        self._frame_tokens, self._byte_tokens, over = charge(
            self.node.settings.limits,
            self._frame_tokens,
            self._byte_tokens,
            now - self._budget_at,
            frames,
            size,
        )
        self._budget_at = now
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
        elif self._frames is not None and not self._frames.done:
            # Already closing (our close frame is out): stop parsing, and say so with an EOF.
            self._frames.stop()
            self._write_eof()
        if self._close_timer is not None:
            self._close_timer.cancel()
        self._close_timer = running_loop().call_later(FLOOD_CLOSE_TIMEOUT, self._abort)

    def _events(self, reader: FrameReader, events: list[Event]) -> None:
        """Handle what the reader produced: messages, pings, pongs, a close; then its error."""
        answers: list[bytes] = []
        for opcode, payload in events:
            if opcode == CLOSE:
                self._send_out(answers)
                self._peer_closed(payload)
                return
            if self._closing:
                continue  # nothing the peer sent after our close counts, but its close
            if opcode == PING:
                answers.append(control_frame(PONG, payload))
            elif opcode == PONG:
                self._pong_seen = True
            else:
                if answers:
                    # The answers to control frames (pongs) leave before anything the
                    # messages after them produce, in the order the peer sent them; those of
                    # a run of control frames leave in one write.
                    self._send_out(answers)
                    answers = []
                message = _MESSAGE_OPCODES[opcode]
                if self._accepts(message):
                    self._message(message, payload)
        self._send_out(answers)
        error = reader.error
        if error is not None:
            reader.error = None
            if error.limit == "max_fragments":
                self.node.counters["limit.max_fragments"] += 1
            if self._closing:
                # Our close frame is out already: nothing more to say but the EOF.
                self._write_eof()
            else:
                self._fail(error.code, error.reason)

    def _peer_closed(self, payload: bytes) -> None:
        """The peer's close frame arrived (the reader parses nothing after it): answer it with
        the same code and reason unless we closed first, then half-close; the socket is
        closed when the peer's EOF comes, or cut after ``CLOSE_TIMEOUT``."""
        if not self._closing:
            # What the messages before the close produced leaves before the answer.
            self.flush()
            self._closing = True
            self._send_out([control_frame(CLOSE, payload)])
        # The close frame is out: nothing may follow it.
        self._groups = ()
        self._pending.clear()
        self._pending_size = 0
        self._write_eof()
        if self._close_timer is None:
            self._close_timer = running_loop().call_later(CLOSE_TIMEOUT, self._abort)

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

    def _message(self, opcode: Opcode, data: bytes) -> None:
        """Queue a valid message for the session."""
        session = self._session
        if self._closing or session is None:
            return
        if self._reader is None:
            if session.take_pong(data):
                return  # the usual message of an idle connection, answered without a task
            # With nothing queued before it, the message is handled here and now as far as
            # nothing in it waits (a publication on the memory engine: no task, no await);
            # only what has to wait gets a task, and what arrives meanwhile waits behind it.
            try:
                rest = session.receive(data)
            except Exception:
                session.log.exception("connection failed")
                session.close(disconnect(DisconnectCode.INTERNAL))
                return
            if rest is not None:
                self._waiting = rest
                self._reader = running_loop().create_task(self._read())
            return
        if self._inbox is _NO_INBOX:
            self._inbox = []
        self._inbox.append(data)
        if len(self._inbox) > _INBOX_HIGH and not self._paused and self._transport is not None:
            # A client sending faster than its commands are handled waits in its own TCP
            # buffer, not in our memory.
            self._paused = True
            self._transport.pause_reading()

    async def _read(self) -> None:
        """Finish the message being handled (what waits of it), then hand the messages
        received meanwhile to the session in order. A task exists only while there is
        something to wait on, so idle connections cost no task."""
        session = self._session
        first, self._waiting = self._waiting, None
        try:
            if first is not None:
                await first
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
            if self._closing or not self._inbox:
                self._inbox = _NO_INBOX

    def _stop_reader(self) -> None:
        """The connection is gone: stop handling what it sent (a task not started yet drops
        the message it was to finish)."""
        if self._reader is not None:
            self._reader.cancel()
        waiting, self._waiting = self._waiting, None
        if waiting is not None:
            waiting.close()

    def _fail(self, code: int, reason: str) -> None:
        """Fail the connection for a violation of the WebSocket protocol itself (not of the
        client protocol): a close frame with ``code``, an EOF, and nothing parsed after."""
        # One line, with the connection's id when it has a session (it always has here).
        (self._session.log if self._session is not None else log).info(
            "closing %s: %s (%s)", self._remote, code, reason
        )
        self.node.metrics_bad_input(code)
        self.node.metrics_disconnect(code)
        self.flush()
        self._closing = True
        self._groups = ()
        if self._frames is not None:
            self._frames.stop()
        self._send_out([close_frame(code, reason)])
        self._write_eof()
        if self._close_timer is None:
            self._close_timer = running_loop().call_later(CLOSE_TIMEOUT, self._abort)

    def _send_out(self, frames: list[bytes]) -> None:
        """Write control frames (pongs, a close) now, in one write, ahead of what is queued."""
        transport = self._transport
        if not frames or transport is None:
            return
        transport.write(frames[0] if len(frames) == 1 else b"".join(frames))
        if not self._closing and transport.get_write_buffer_size() > self._max_bytes:
            # Pongs to a flood of pings, written here rather than through write(), count
            # against queue_max_size too: a peer that sends pings and never reads is slow.
            self._overflow()

    def _write_eof(self) -> None:
        """Half-close: our side of the close handshake is done (RFC 6455 7.1.1)."""
        transport = self._transport
        if transport is not None and not transport.is_closing() and transport.can_write_eof():
            transport.write_eof()

    def _abort(self) -> None:
        if self._transport is not None:
            self._transport.abort()
