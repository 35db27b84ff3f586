"""The native WebSocket transport: the client protocol straight on the event loop's sockets.

``hubbub serve`` runs it inside uvicorn as the WebSocket protocol class (``ws=``). An upgrade
to the hubbub endpoint comes straight from the HTTP protocol
(:class:`~hubbub.transports.http_guard.GuardedHTTPProtocol`) as the client sent it, unparsed
(:meth:`NativeWebSocketProtocol.upgrade`); any other upgrade uvicorn parses and hands over. For
the hubbub endpoint this class takes the socket, for any other WebSocket route (the tutorial's
``/ws/{client_id}``, routes of an embedding app) it hands the connection to uvicorn's own
WebSocket protocol, which serves it through the ASGI app as before.

Why a transport of its own: through ASGI every message is an ``await send(...)`` that frames it
again for each subscriber. Here a publication is framed once and written once per connection
per loop iteration, however many messages it got, and channel groups write the same bytes
object to all their members (:mod:`hubbub.transports.flush`).

One connection is one object, :class:`NativeWebSocketProtocol`, in three modules by concern:
this one (the connection's life: the opening handshake, answered by
:mod:`hubbub.transports.handshake` over the request head and admitted by the node's
:class:`~hubbub.transports.admission.Admission`; close; WebSocket-level pings; the
asyncio callbacks), :mod:`hubbub.transports.reading` (frames in, parsed by
:mod:`hubbub.transports.frames`) and :mod:`hubbub.transports.flush` (frames out).
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any, cast

from hubbub.clock import running_loop
from hubbub.protocol.codes import DisconnectCode, disconnect
from hubbub.session import Session
from hubbub.transports.admission import Admitted, Knock, Refusal, header_pairs
from hubbub.transports.app_node import node_of
from hubbub.transports.flush import flusher_for
from hubbub.transports.frames import BINARY, PING, TEXT, FrameReader, close_frame, control_frame
from hubbub.transports.handshake import (
    HandshakeError,
    check_upgrade,
    offered_subprotocols,
    parse_head,
    switching,
)
from hubbub.transports.reading import CLOSE_TIMEOUT, FrameReading
from hubbub.transports.turn_gate import gate_for

log = logging.getLogger("hubbub.transport")


class NativeWebSocketProtocol(FrameReading, asyncio.Protocol):
    """One WebSocket connection: an asyncio protocol with uvicorn's WebSocket class interface.

    As a :class:`~hubbub.transports.base.Transport` it is what its session writes to.
    """

    # Slots: tens of thousands of these live at once; a __dict__ each would cost ~1 KiB. The
    # state of the write and read sides is in the slots of BatchedWrites and FrameReading.
    __slots__ = (
        "_app_state",
        "_config",
        "_other",
        "_ping_timer",
        "_remote",
        "_server_state",
        "_session",
        "_ticket",
        "node",
    )

    takes_raw_heads = True
    """The HTTP protocol may call :meth:`upgrade` with a head as it came from the client."""

    def __init__(
        self,
        config: Any,
        server_state: Any,
        app_state: dict[str, Any] | None = None,
        _loop: asyncio.AbstractEventLoop | None = None,
    ) -> None:
        self._config = config
        self._server_state = server_state
        # uvicorn's own (shared) state, handed on as it is to another route's protocol.
        self._app_state = app_state if app_state is not None else {}
        node = node_of(config.loaded_app)
        if node is None:
            raise RuntimeError("the native transport needs an app made by hubbub.create_app")
        self.node = node
        settings = node.settings
        self._init_writes(flusher_for(settings.write_delay), settings.client.queue_max_size)
        self._init_reading()
        self._session: Session | None = None
        # Its place in the node's connection counts, given back when it is gone.
        self._ticket: Admitted | None = None
        self._remote = ""
        self._ping_timer: asyncio.TimerHandle | None = None
        self._other: asyncio.Protocol | None = None

    # -----------------------------------------------------------------------------------------
    # Transport (what the session sees; writing is BatchedWrites')

    def close(self, code: int, reason: str) -> None:
        if self._closing:
            return
        self._closing = True
        self.flush()
        self._groups = ()  # nothing after the close frame
        if self._frames is None or self._transport is None:
            return
        self._send_out([close_frame(code, reason)])
        # The peer's close frame is awaited (reading goes on), for CLOSE_TIMEOUT at most.
        if self._close_timer is None:
            self._close_timer = running_loop().call_later(CLOSE_TIMEOUT, self._abort)

    def _too_slow(self) -> None:
        if self._session is not None:
            self._session.slow()
        slow = disconnect(DisconnectCode.SLOW)
        self.close(slow.code, slow.reason)

    # -----------------------------------------------------------------------------------------
    # asyncio.Protocol

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports are not asyncio.Transport subclasses but have its interface.
        self._transport = cast(asyncio.Transport, transport)
        peer = self._transport.get_extra_info("peername") or ("", 0)
        self._remote = f"{peer[0]}:{peer[1]}"

    def data_received(self, data: bytes) -> None:
        if self._other is not None:
            self._other.data_received(data)
            return
        if self._frames is None:
            self.upgrade(data, b"")
            return
        if self._backlog:
            # Reading is paused until the next turn; the transport hands over what it had.
            self._backlog += data
            return
        self._receive(data)

    def eof_received(self) -> bool | None:
        if self._other is not None:
            return self._other.eof_received()
        if self._frames is not None:
            # The peer is done sending: after a close handshake as it should, or in the
            # middle of anything (a 1006 for the session). Either way the socket is closed.
            self._frames.stop()
            self._closing = True
            self._groups = ()
            self._pending.clear()
            self._pending_size = 0
            if self._transport is not None:
                self._transport.close()
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
        self._stop_reader()
        self._frames = None
        ticket, self._ticket = self._ticket, None
        if ticket is not None:
            ticket.release()
        session = self._session
        if session is None:
            return
        self._session = None
        self.node.spawn(session.closed())

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

    def upgrade(self, head: bytes, rest: bytes) -> None:
        """Answer the opening handshake in ``head`` (a complete request head, as received), then
        read ``rest``, what the client sent after it, as frames if the upgrade was accepted.

        Beyond ``handshakes_per_turn`` handshakes in this loop turn, the socket is paused and
        all this happens in a later turn (:mod:`hubbub.transports.turn_gate`).
        """
        gate = gate_for(self.node.settings.handshakes_per_turn)
        if gate.enter():
            self._open(head, rest)
            return
        transport = self._transport
        assert transport is not None
        transport.pause_reading()
        gate.wait(lambda: self._open_later(head, rest))

    def _open(self, head: bytes, rest: bytes) -> None:
        self._handshake(head)
        if rest and self._frames is not None and not self._closing:
            self.data_received(rest)

    def _open_later(self, head: bytes, rest: bytes) -> None:
        """The gate's turn came: open, then read again unless something else holds reading
        (a backlog for the next turn, a full inbox)."""
        transport = self._transport
        if transport is None or transport.is_closing() or self._closing:
            return  # gone while it waited
        self._open(head, rest)
        if not (self._backlog or self._paused or self._closing or transport.is_closing()):
            transport.resume_reading()

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
        try:
            accept = check_upgrade(request)
        except HandshakeError as exc:
            self._refuse(exc, "handshake.invalid")
            return
        knock = Knock(
            # The peer's host, from what connection_made read (one system call, not two).
            peer=self._remote.rpartition(":")[0],
            forwarded_for=request.header("x-forwarded-for"),
            origin=request.header("origin"),
            host=request.header("host"),
            subprotocols=offered_subprotocols(request),
            query=request.query,
            headers=header_pairs(request.headers),
        )
        admitted = node.admission.admit(knock, draining=node.draining)
        if isinstance(admitted, Refusal):
            admitted.record(node.counters, self._remote)
            self._refuse(HandshakeError(admitted.status, admitted.reason), "")
            return
        self._ticket = admitted
        transport.write(switching(accept, admitted.subprotocol))
        # From here on only frames.
        client = node.settings.client
        self._frames = FrameReader(client.max_message_size, client.max_fragments)
        codec = admitted.codec
        frame_pings = admitted.frame_pings
        self._binary = codec.binary
        self._opcode = BINARY if codec.binary else TEXT
        limits = node.settings.limits
        self._frame_tokens = float(limits.frame_burst)
        self._byte_tokens = float(limits.frame_byte_burst)
        self._budget_at = node.clock.monotonic()
        self._server_state.connections.add(self)
        # With WebSocket-level pings the client answers at the frame layer; app pings are off.
        session = Session(
            node, self, codec=codec, app_pings=not frame_pings, remote=self._remote, knock=knock
        )
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
        if self._closing or self._frames is None or self._session is None:
            return
        if not self._pong_seen:
            self._session.close(disconnect(DisconnectCode.NO_PONG))
            return
        self._pong_seen = False
        self._send_out([control_frame(PING)])
        self._arm_frame_ping()

    def _serves(self, path: str) -> bool:
        """Whether this transport serves ``path`` (others go to the ASGI app)."""
        return path == self.node.settings.websocket_path

    def _hand_over(self, head: bytes) -> None:
        """Another WebSocket route (``uni_websocket``, the tutorial's ``/ws/…``): uvicorn's
        sans-I/O protocol serves it through the ASGI app, with the same frame budget and
        fragment cap as this transport (a flood on another path must not stall the node)."""
        from hubbub.transports.asgi_frames import LimitedWebSocketProtocol

        assert self._transport is not None
        other = LimitedWebSocketProtocol(
            config=self._config, server_state=self._server_state, app_state=self._app_state
        )
        transport = self._transport
        self._transport = None
        self._other = other
        other.connection_made(transport)
        other.data_received(head)
        # uvicorn installs this object as the socket's protocol after the handshake bytes
        # are fed, so it stays in between and passes every event on.
