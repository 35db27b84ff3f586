"""One long-lived HTTP response as a session's transport: HTTP streaming and Server-Sent Events.

The server's messages to a client go out as the body of one streaming ASGI HTTP response, each
framed for its kind of stream (:class:`Framing`: JSON lines, SSE events, or length-prefixed
Protobuf as the codec encodes it). Used by the bidirectional emulation endpoints
(:mod:`hubbub.transports.emulation`) and the unidirectional ones.

An :class:`HTTPStream` is a :class:`~hubbub.transports.base.Transport`: ``write`` queues into a
bounded queue (3008 past ``max_bytes``), and one writer coroutine sends what queued up while it
was busy as one body chunk. ``close`` sends what is queued, then a disconnect message (made by
the ``goodbye`` callable: a ``{"push":{"disconnect":…}}`` reply, a bare push, …) unless the
code is 3000, then ends the body. The client going away (``http.disconnect``) drops the queue.

Typical use, from an ASGI endpoint that has read the request body and admitted the request::

    stream = HTTPStream(send, receive, framing=JSON_LINES, max_bytes=..., goodbye=...)
    session = Session(node, stream, codec=JSON, stream_session=stream.id)
    await stream.run(session, lambda: session.handle_frame(body))

``run`` answers 200 with the headers of :func:`stream_headers`, starts the session, runs until
either side ends the stream, and returns after ``await session.closed()``.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import Awaitable, Callable, MutableMapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from hubbub.clock import running_loop
from hubbub.protocol.codes import DisconnectCode, disconnect
from hubbub.transports.outbox import BoundedQueue

if TYPE_CHECKING:
    from hubbub.session import Session

log = logging.getLogger("hubbub.transport")

Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
Headers = Sequence[tuple[bytes, bytes]]

CLIENT_GONE = 3000
"""The close code of a stream whose client went away: no disconnect message is written."""

_WRITER_GRACE = 5.0
"""Seconds the writer may take to finish once the client is gone (a bounded wait)."""


@dataclass(frozen=True, slots=True)
class Framing:
    """How one kind of stream carries messages.

    Attributes:
        content_type: the response's ``Content-Type``.
        preamble: written right after the headers (SSE: ``\\r\\n``, so that the headers
            leave at once and EventSource fires ``open``).
        prefix: written before each message.
        suffix: written after each message.
        keepalive: written after ``keepalive`` seconds of silence; ``b""`` when this kind of
            stream has nothing a client ignores (a blank JSON line breaks centrifuge-js).
    """

    content_type: bytes
    preamble: bytes = b""
    prefix: bytes = b""
    suffix: bytes = b""
    keepalive: bytes = b""

    def frame(self, messages: Sequence[bytes]) -> bytes:
        """``messages`` framed, back to back, as one body chunk."""
        if len(messages) == 1:
            return self.prefix + messages[0] + self.suffix
        return self.prefix + (self.suffix + self.prefix).join(messages) + self.suffix


JSON_LINES = Framing(b"text/plain; charset=utf-8", suffix=b"\n")
"""http_stream (JSON): one message per line. Encoded JSON never holds a raw newline."""

SSE = Framing(
    b"text/event-stream; charset=utf-8",
    preamble=b"\r\n",
    prefix=b"data: ",
    suffix=b"\n\n",
    keepalive=b":\n\n",
)
"""Server-Sent Events: ``data: <json>`` events; an SSE comment line as keep-alive."""

PROTOBUF_STREAM = Framing(b"application/octet-stream")
"""http_stream (Protobuf): the codec's varint-length-prefixed messages, back to back."""

NO_CACHE: Headers = (
    (b"cache-control", b"private, no-cache, no-store, must-revalidate, max-age=0"),
    (b"pragma", b"no-cache"),
    (b"expire", b"0"),  # sic: the header name Centrifugo sends
    # nginx would otherwise buffer the response and hold messages back.
    (b"x-accel-buffering", b"no"),
)


def stream_headers(
    framing: Framing, http_version: str, extra: Headers = ()
) -> list[tuple[bytes, bytes]]:
    """The headers of a stream response: its content type, no caching anywhere, no proxy
    buffering, ``Connection: keep-alive`` on HTTP/1.x, then ``extra`` (CORS)."""
    headers = [(b"content-type", framing.content_type), *NO_CACHE]
    if http_version.startswith("1"):
        headers.append((b"connection", b"keep-alive"))
    headers.extend(extra)
    return headers


class HTTPStream(BoundedQueue):
    """A streaming HTTP response serving as one session's transport.

    Args:
        send: the ASGI ``send`` of the request; the response must not have started.
        receive: the ASGI ``receive`` of the request, whose body was read to the end: what
            it returns next is ``http.disconnect`` when the client goes away.
        framing: how messages are carried (:data:`JSON_LINES`, :data:`SSE`,
            :data:`PROTOBUF_STREAM`, or a caller's own).
        max_bytes: queued bytes above this drop the queue and close the stream with 3008.
        goodbye: encodes the message that tells the client why the stream ends (code,
            reason); written before the end of the body on every close but 3000. None: none.
        keepalive: seconds of silence after which ``framing.keepalive`` is written (0 or an
            empty ``framing.keepalive``: never).
        headers: extra response headers (CORS).
        http_version: the request's HTTP version (``scope["http_version"]``).

    Attributes:
        id: a random id of this stream (what emulation requests name as ``session``).
        on_overflow: called when the queue overflowed (the session logs and counts it).
    """

    __slots__ = (
        "_fed",
        "_feeding",
        "_framing",
        "_gone",
        "_goodbye",
        "_headers",
        "_keepalive",
        "_receive",
        "_send",
        "_session",
        "id",
    )

    def __init__(
        self,
        send: Send,
        receive: Receive,
        *,
        framing: Framing,
        max_bytes: int,
        goodbye: Callable[[int, str], bytes] | None = None,
        keepalive: float = 0.0,
        headers: Headers = (),
        http_version: str = "1.1",
    ) -> None:
        super().__init__(max_bytes, overhead=len(framing.prefix) + len(framing.suffix))
        self._send = send
        self._receive = receive
        self._framing = framing
        self._goodbye = goodbye
        self._keepalive = keepalive if framing.keepalive else 0.0
        self._headers = stream_headers(framing, http_version, headers)
        self.id = str(uuid.uuid4())
        self._gone = False
        self._session: Session | None = None
        # Frames of commands handed over out of band (emulation), processed in order.
        self._fed: list[bytes] = []
        self._feeding = False

    # -----------------------------------------------------------------------------------------
    # Commands received out of band

    def feed(self, frame: bytes) -> bool:
        """Hand the session one frame of commands received elsewhere (an ``/emulation``
        request); frames are processed one at a time, in the order fed. Never awaits.

        Returns:
            False when the stream is closing or has no session yet (the frame is dropped).
        """
        if self._close_reason is not None or self._session is None:
            return False
        self._fed.append(frame)
        if not self._feeding:
            self._feeding = True
            # One task per burst of frames, not per frame.
            running_loop().create_task(self._process_fed(self._session))
        return True

    @property
    def fed_pending(self) -> int:
        """Frames fed and not yet processed."""
        return len(self._fed)

    async def _process_fed(self, session: Session) -> None:
        try:
            while self._fed and self._close_reason is None:
                frame = self._fed.pop(0)
                await session.handle_frame(frame)
        except Exception:
            session.log.exception("processing commands failed")
            session.close(disconnect(DisconnectCode.INTERNAL))
        finally:
            if self._close_reason is not None:
                self._fed.clear()
            self._feeding = False

    # -----------------------------------------------------------------------------------------
    # The response

    async def run(self, session: Session, start: Callable[[], Awaitable[None]]) -> None:
        """Answer 200 with the stream's headers, start ``session`` (its stale timer) and call
        ``start`` (which feeds it the connect), then serve until the session closes the stream
        or the client goes away; return once ``session.closed()`` released it."""
        self._session = session
        self.on_overflow = session.slow
        send = self._send
        await send({"type": "http.response.start", "status": 200, "headers": self._headers})
        if self._framing.preamble:
            await send(
                {"type": "http.response.body", "body": self._framing.preamble, "more_body": True}
            )
        writer = asyncio.ensure_future(self._write_loop())
        watcher = asyncio.ensure_future(self._watch_client())
        try:
            session.start()
            await start()
            await asyncio.wait((writer, watcher), return_when=asyncio.FIRST_COMPLETED)
        except Exception:
            session.log.exception("stream failed")
            session.close(disconnect(DisconnectCode.INTERNAL))
        finally:
            if watcher.done() and not writer.done():
                self._abort()
            watcher.cancel()
            try:
                # Bounded: a client that stopped reading must not hold the stream open.
                await asyncio.wait_for(writer, timeout=_WRITER_GRACE)
            except Exception:
                session.log.debug("stream writer did not finish cleanly")
            await session.closed()

    async def _watch_client(self) -> None:
        """Returns when the client went away (its request body was read already)."""
        while True:
            message = await self._receive()
            if message["type"] == "http.disconnect":
                return

    def _abort(self) -> None:
        """The client is gone: nothing more is written, no disconnect message."""
        self._gone = True
        self._drop((CLIENT_GONE, "connection closed"))

    async def _write_loop(self) -> None:
        """Send queued messages, a batch per body chunk, until closed; then the goodbye and
        the end of the body."""
        send, framing = self._send, self._framing
        loop = running_loop()
        silent: list[bool] = []

        def keepalive_due() -> None:
            silent.append(True)
            self._wake.set()

        while True:
            idle: asyncio.TimerHandle | None = None
            if self._keepalive and not self._queue and self._close_reason is None:
                idle = loop.call_later(self._keepalive, keepalive_due)
            await self._wake.wait()
            self._wake.clear()
            if idle is not None:
                idle.cancel()
                if silent and not self._queue and self._close_reason is None:
                    # Silent for the keep-alive period: a line the client ignores.
                    silent.clear()
                    await send(
                        {"type": "http.response.body", "body": framing.keepalive, "more_body": True}
                    )
                    continue
                silent.clear()
            while self._queue:
                queue, self._queue, self._size = self._queue, [], 0
                body = framing.frame(queue)
                await send({"type": "http.response.body", "body": body, "more_body": True})
            if self._close_reason is not None:
                break
        if self._gone:
            return
        code, reason = self._close_reason
        body = b""
        if code != CLIENT_GONE and self._goodbye is not None:
            body = framing.frame([self._goodbye(code, reason)])
        await send({"type": "http.response.body", "body": body, "more_body": False})
