"""The ASGI transport's frames under the same per-connection limits as the native transport's.

With ``transport = "asgi"`` (or WebSocket compression) uvicorn's own WebSocket protocol parses
the frames, and by itself it answers every ping, assembles any number of fragments and parses a
whole read at once. This subclass of it, which ``hubbub serve`` hands uvicorn for the ASGI
transport, applies hubbub's limits before uvicorn sees a frame:

- every frame, control frames included, is charged to the connection's frame budget
  (:mod:`hubbub.transports.budget`); over it the connection is closed with 3013;
- a message may have at most ``client.max_fragments`` fragments (1009 beyond);
- a read is parsed a slice at a time, so a flood is cut off after its budget, not after the
  whole read; what the connection sends after that is dropped unparsed;
- one loop turn parses at most about ``TURN_FRAMES`` frames of a connection; the rest of the
  read waits for the next turn with reading paused, so other connections are served between
  the slices of a flood (websockets parses a frame in several microseconds: a budget's worth
  of frames in one turn would hold the loop for milliseconds, tens on a busy machine);
- the pongs it answers count against ``client.queue_max_size`` like any other bytes queued for
  it (3008 beyond, with the socket cut: a client that does not read gets no close frame).

Each such close is counted in ``hubbub_limit_closes`` (or the 3008 disconnects) and logged once.
"""

from __future__ import annotations

import logging
from typing import Any

from uvicorn.protocols.websockets.websockets_sansio_impl import WebSocketsSansIOProtocol
from websockets.frames import Frame, Opcode
from websockets.http11 import Request

from hubbub.protocol.codes import DisconnectCode
from hubbub.transports.app_node import node_of
from hubbub.transports.budget import charge

log = logging.getLogger("hubbub.transport")

SLICE = 1024
"""Bytes parsed at a time: the budget is charged between slices."""
TURN_FRAMES = 128
"""Frames of one connection parsed in one loop turn, about (whole slices are parsed)."""
CUT_AFTER = 0.5
"""Seconds between the close frame of a limit and cutting the socket, unless the peer closes."""


class LimitedWebSocketProtocol(WebSocketsSansIOProtocol):
    """uvicorn's sans-I/O WebSocket protocol with hubbub's per-connection frame limits."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._node = node_of(self.app)
        self._frame_tokens = 0.0
        self._byte_tokens = 0.0
        self._budget_at = 0.0
        self._fragments = 0
        self._cut = False
        self._turn_frames = 0  # frames handled since this turn's read began
        self._backlog: bytes | None = None  # the rest of a read, for the next turn
        if self._node is not None:
            limits = self._node.settings.limits
            self._frame_tokens, self._byte_tokens = limits.frame_burst, limits.frame_byte_burst
            self._budget_at = self._node.clock.monotonic()

    def data_received(self, data: bytes) -> None:
        if self._backlog is not None:
            # Reading resumed (the app drained its queue) while a turn's rest waits: in order.
            self._backlog += data
            return
        self._feed(data)

    def _feed(self, data: bytes) -> None:
        view = memoryview(data)
        self._turn_frames = 0
        for start in range(0, len(view), SLICE):
            if self._cut:
                return  # closed for a limit: the rest is not worth parsing
            self.conn.receive_data(bytes(view[start : start + SLICE]))
            if self.conn.parser_exc is not None:
                self.handle_parser_exception()
                return
            self.handle_events()
            if self._turn_frames >= TURN_FRAMES and start + SLICE < len(view):
                self._backlog = bytes(view[start + SLICE :])
                self.transport.pause_reading()
                self.loop.call_soon(self._next_turn)
                return

    def _next_turn(self) -> None:
        rest, self._backlog = self._backlog, None
        if rest is None or self.transport.is_closing():
            return
        self._feed(rest)
        if self._backlog is None and not self.read_paused:
            # Read on, even when closed for a limit: what the peer still sends is read and
            # dropped until the socket is cut (see _limit). (Paused by uvicorn itself, its
            # queue full: it resumes when the app reads.)
            self.transport.resume_reading()

    def handle_events(self) -> None:
        events = self.conn.events_received()
        node = self._node
        if node is not None and self.handshake_complete:
            frames = sum(isinstance(event, Frame) for event in events)
            self._turn_frames += frames
            if frames:
                now = node.clock.monotonic()
                self._frame_tokens, self._byte_tokens, over = charge(
                    node.settings.limits,
                    self._frame_tokens,
                    self._byte_tokens,
                    now - self._budget_at,
                    frames,
                    sum(len(event.data) + 2 for event in events if isinstance(event, Frame)),
                )
                self._budget_at = now
                if over:
                    self._limit(over, DisconnectCode.TOO_MANY_REQUESTS, "too many frames")
                    return
        for event in events:
            if self._cut:
                return
            if isinstance(event, Request):
                self.handle_connect(event)
            elif isinstance(event, Frame):
                self._dispatch(event)

    def _dispatch(self, event: Frame) -> None:
        opcode = event.opcode
        if opcode is Opcode.TEXT or opcode is Opcode.BINARY:
            self._fragments = 0
            (self.handle_text if opcode is Opcode.TEXT else self.handle_bytes)(event)
        elif opcode is Opcode.CONT:
            self._fragments += 1
            node = self._node
            if node is not None and self._fragments >= node.settings.client.max_fragments:
                # Empty fragments pass the size limit: their number is capped like the size.
                self._limit("max_fragments", 1009, "message in too many fragments")
                return
            self.handle_cont(event)
        elif opcode is Opcode.PING:
            self.handle_ping()
            self._check_queue()
        elif opcode is Opcode.PONG:
            self.handle_pong(event)
        elif opcode is Opcode.CLOSE:
            self.handle_close(event)

    def _check_queue(self) -> None:
        """Pongs are bytes queued for the connection: past ``queue_max_size`` (a client that
        sends pings and reads nothing) it is cut like any slow client."""
        node = self._node
        if node is None or self.transport.is_closing():
            return
        if self.transport.get_write_buffer_size() > node.settings.client.queue_max_size:
            self._cut = True
            node.metrics_disconnect(int(DisconnectCode.SLOW))
            log.warning(
                "closing %s: %d (pongs it does not read)", self._peer(), DisconnectCode.SLOW
            )
            self.queue.put_nowait(
                {"type": "websocket.disconnect", "code": int(DisconnectCode.SLOW), "reason": ""}
            )
            self.transport.abort()

    def _limit(self, limit: str, code: int, reason: str) -> None:
        """Close the connection for going over ``limit``: the close frame out, the app told,
        the socket closed; counted and logged once."""
        self._cut = True
        node = self._node
        if node is not None:
            node.counters[f"limit.{limit}"] += 1
        if code == DisconnectCode.TOO_MANY_REQUESTS:
            # The endpoint reports the bad-input closes (1009 among them) itself: one line each.
            log.warning("closing %s: %d %s (limits: %s)", self._peer(), code, reason, limit)
            if node is not None:
                node.metrics_disconnect(code)
        if not self.close_sent:
            self.conn.send_close(code, reason)
            self.transport.write(b"".join(self.conn.data_to_send()))
            self.close_sent = True
        self.queue.put_nowait({"type": "websocket.disconnect", "code": code, "reason": reason})
        # Closing the socket while the peer still sends would reset it and lose the close
        # frame on its side: what arrives meanwhile is read and dropped, then the socket is cut.
        self.loop.call_later(CUT_AFTER, self.transport.abort)

    def _peer(self) -> str:
        client = self.client
        return f"{client[0]}:{client[1]}" if client else "a client"
