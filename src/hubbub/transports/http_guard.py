"""uvicorn's HTTP protocol with a deadline for request headers (slowloris protection).

A client that opens connections and sends its request headers a byte at a time holds a socket
and a protocol object each for as long as it likes; thousands of them exhaust the file
descriptors. Here every request's headers must be complete within ``limits.header_timeout``
seconds of the connection opening (first request) or of the request's first byte (later
requests on a kept-alive connection); otherwise the connection is closed and counted.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from hubbub.transports.serving import node_of

log = logging.getLogger("hubbub.transport")


class GuardedHTTPProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol plus the header deadline."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._node = node_of(self.app)
        self._timeout = self._node.settings.limits.header_timeout if self._node else 10.0
        self._deadline: asyncio.TimerHandle | None = None

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
        super().connection_made(transport)
        self._arm()

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._arm()

    def on_headers_complete(self) -> None:
        self._disarm()
        super().on_headers_complete()

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        super().connection_lost(exc)
