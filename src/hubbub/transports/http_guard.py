"""uvicorn's HTTP protocol with limits on request heads: a deadline and a size.

A client that opens connections and sends its request headers a byte at a time holds a socket
and a protocol object each for as long as it likes; thousands of them exhaust the file
descriptors. Here every request's headers must be complete within ``limits.header_timeout``
seconds of the connection opening (first request) or of the request's first byte (later
requests on a kept-alive connection); otherwise the connection is closed and counted.

The HTTP parser keeps a request's headers in memory until the empty line that ends them, with
no limit of its own. So the request line and headers together may be at most
``limits.max_header_size`` bytes and ``limits.max_headers`` lines: the bytes are counted as
they arrive, before the parser sees them, and a request over either limit is answered
``431 Request Header Fields Too Large`` and its connection closed. WebSocket upgrades go
through here first, so the limits hold for every transport.

An upgrade to the native transport's own path takes a shorter way
(:mod:`hubbub.transports.raw_upgrade`): its head is held back from httptools until it is
complete and, when it is a plain well-formed request, handed to the WebSocket protocol as it
came, without an HTTP parse or an ASGI scope; anything else goes through httptools as if nothing
had been held back.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from uvicorn.logging import TRACE_LOG_LEVEL
from uvicorn.protocols.http.flow_control import FlowControl
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol
from uvicorn.protocols.utils import is_ssl

from hubbub.transports.app_node import node_of
from hubbub.transports.handshake import refusal
from hubbub.transports.raw_upgrade import HELD, TAKE, address, judge, peer_address

log = logging.getLogger("hubbub.transport")

_END = b"\r\n\r\n"

_LINGER = 0.5
"""Seconds a refused client's further bytes are read and dropped before the socket is cut.
Closing at once, with its bytes unread, would reset the connection, and the reset can destroy
the refusal before the client reads it."""


class GuardedHTTPProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol plus the header deadline and the header size limits."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._node = node_of(self.app)
        limits = self._node.settings.limits if self._node else None
        self._timeout = limits.header_timeout if limits else 10.0
        self._max_head = limits.max_header_size if limits else 0
        self._max_lines = limits.max_headers if limits else 0
        self._deadline: asyncio.TimerHandle | None = None
        # The head of the current request so far: whether it is still arriving, its size,
        # its line count and its last bytes (to find the empty line across two reads).
        self._in_head = True
        self._head_size = 0
        self._head_lines = 0
        self._tail = b""
        self._refused: asyncio.TimerHandle | None = None
        # The first request's bytes held back from httptools while they may still be an upgrade
        # to the native transport's path; None once they cannot (or when it serves no path).
        self._held: bytes | None = None
        self._raw_path = b""
        if self._node is not None and getattr(self.ws_protocol_class, "takes_raw_heads", False):
            self._held = b""
            self._raw_path = self._node.settings.websocket_path.encode("latin-1")

    def _arm(self) -> None:
        if self._deadline is None and self._timeout > 0:
            self._deadline = self.loop.call_later(self._timeout, self._expired)

    def _disarm(self) -> None:
        if self._deadline is not None:
            self._deadline.cancel()
            self._deadline = None

    def _expired(self) -> None:
        self._deadline = None
        peer = self.client or ("?", 0)
        log.info("closing %s:%s: request headers not complete in %s s", *peer, self._timeout)
        if self._node is not None:
            self._node.counters["http.header_timeout"] += 1
        self.transport.close()

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        # uvicorn's connection_made, but with both addresses from what the transport read when
        # it was made (uvloop and asyncio both keep them): uvicorn asks the socket again, two
        # system calls each, for every connection.
        self.connections.add(self)
        self.transport = transport
        self.flow = FlowControl(transport)
        self.server = address(transport.get_extra_info("sockname"))
        self.client = peer_address(transport.get_extra_info("peername"))
        self.scheme = "https" if is_ssl(transport) else "http"
        if self.logger.level <= TRACE_LOG_LEVEL:
            prefix = f"{self.client[0]}:{self.client[1]} - " if self.client else ""
            self.logger.log(TRACE_LOG_LEVEL, "%sHTTP connection made", prefix)
        self._arm()

    def data_received(self, data: bytes) -> None:
        if self._refused is not None:
            return  # dropped: see _LINGER
        if self._in_head and (self._max_head or self._max_lines):
            over = self._count_head(data)
            if over:
                self._refuse_head(over)
                return
        if self._held is not None:
            data = self._held + data
            verdict = judge(data, self._raw_path)
            if verdict == HELD:
                self._held = data
                return
            self._held = None
            if verdict != TAKE:
                super().data_received(data)
                return
            end = data.index(b"\r\n\r\n") + 4
            self._take_raw(data[:end], data[end:])
            return
        super().data_received(data)

    def _take_raw(self, head: bytes, rest: bytes) -> None:
        """Hand a complete upgrade head for the native transport's path, and whatever came
        after it (the first frames), to a new WebSocket protocol, which takes the socket."""
        self._disarm()
        self.connections.discard(self)
        protocol: Any = self.ws_protocol_class(  # type: ignore[call-arg, misc]
            config=self.config, server_state=self.server_state, app_state=self.app_state
        )
        transport = self.transport
        protocol.connection_made(transport)
        transport.set_protocol(protocol)
        # As in handle_websocket_upgrade: this object is never called again.
        self.parser = None  # type: ignore[assignment]
        protocol.upgrade(head, rest)

    def _count_head(self, data: bytes) -> str:
        """Add the part of ``data`` that belongs to the request head to its size and line
        count; the name of the limit it goes over, or "" while it fits."""
        seen = self._tail + data
        end = seen.find(_END)
        if end < 0:
            part = data
            self._tail = seen[-(len(_END) - 1) :]
        else:
            # The head ends in this read: what follows (a body, the next request) is not
            # counted; the next request's head is counted from its own start.
            part = data[: max(0, end + len(_END) - len(self._tail))]
            self._tail = b""
        self._head_size += len(part)
        self._head_lines += part.count(b"\n")
        if self._max_head and self._head_size > self._max_head:
            return "max_header_size"
        # The request line and the empty line are lines too, not headers.
        if self._max_lines and self._head_lines > self._max_lines + 2:
            return "max_headers"
        return ""

    def _refuse_head(self, limit: str) -> None:
        """Answer 431, then drop what the client still sends until it closes, or for
        ``_LINGER`` seconds at most."""
        self._disarm()
        peer = self.client or ("?", 0)
        log.info("refused request from %s:%s: headers over limits.%s", *peer, limit)
        if self._node is not None:
            self._node.counters[f"limit.{limit}"] += 1
        transport = self.transport
        transport.write(refusal(431, f"request headers over limits.{limit}"))
        if transport.can_write_eof():
            transport.write_eof()
        self._refused = self.loop.call_later(_LINGER, transport.abort)

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._arm()

    def on_headers_complete(self) -> None:
        self._disarm()
        self._in_head = False
        super().on_headers_complete()

    def on_message_complete(self) -> None:
        super().on_message_complete()
        # A kept-alive connection's next request: its head is counted afresh.
        self._in_head = True
        self._head_size = self._head_lines = 0
        self._tail = b""

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        if self._refused is not None:
            self._refused.cancel()
        super().connection_lost(exc)

    def handle_websocket_upgrade(self) -> None:
        super().handle_websocket_upgrade()
        # The socket is the WebSocket protocol's now and this object is never called again
        # (no connection_lost, where uvicorn drops the parser). The parser refers back to it:
        # a cycle, holding the transport and the request, that only the cyclic collector
        # would free. Dropped here, reference counting frees it at once.
        self._disarm()
        self.parser = None  # type: ignore[assignment]
