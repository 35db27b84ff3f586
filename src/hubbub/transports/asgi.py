"""The ASGI WebSocket transport: serves the client protocol inside any ASGI server or app.

Route it in Starlette or FastAPI with ``WebSocketRoute(path, WebSocketEndpoint(node))`` (see
``examples/fastapi_app.py``); ``hubbub serve`` runs it under uvicorn.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, MutableMapping
from contextvars import ContextVar
from typing import TYPE_CHECKING, Any

from hubbub.protocol.codec import Codec
from hubbub.protocol.codes import DisconnectCode, disconnect
from hubbub.session import Session
from hubbub.transports.admission import Knock, Refusal, scope_knock
from hubbub.transports.outbox import Outbox

if TYPE_CHECKING:
    from hubbub.node import Node

log = logging.getLogger("hubbub.transport")

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]


_refused: ContextVar[bool] = ContextVar("hubbub_handshake_refused", default=False)


class _RefusalFilter(logging.Filter):
    """Drops the ERROR uvicorn's websockets-sansio protocol logs when an app returns after a
    complete denial response (it does not count that response as the end of the handshake);
    only for handshakes this endpoint refused on purpose (already logged as a warning)."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not (_refused.get() and record.getMessage().startswith("ASGI callable returned"))


_REFUSAL_FILTER = _RefusalFilter()


async def refuse_handshake(scope: Scope, send: Send, status: int, reason: str) -> None:
    """Refuse a WebSocket handshake with HTTP ``status`` and ``reason`` as plain text: the
    answer of the native transport (503 when the node drains or is full, so clients retry;
    403 for an origin that is not allowed). A server without the ASGI denial-response
    extension can only close, which it answers with HTTP 403."""
    if "websocket.http.response" not in (scope.get("extensions") or {}):
        await send({"type": "websocket.close", "code": 1013 if status == 503 else 1008})
        return
    # The server awaits the app in the same task: it logs with this flag still set.
    _refused.set(True)
    logging.getLogger("uvicorn.error").addFilter(_REFUSAL_FILTER)  # a no-op after the first
    body = (reason + "\n").encode()
    headers = [
        (b"content-type", b"text/plain; charset=utf-8"),
        (b"content-length", str(len(body)).encode()),
    ]
    await send({"type": "websocket.http.response.start", "status": status, "headers": headers})
    await send({"type": "websocket.http.response.body", "body": body})


def _frame(message: Message, codec: Codec) -> bytes | None:
    """The payload of a received frame, or None when its type does not fit the format."""
    if codec.binary:
        data = message.get("bytes")
        return bytes(data) if data is not None else None
    text = message.get("text")
    return text.encode() if text is not None else None


# Closes the ASGI server's WebSocket layer makes for bad input (framing, invalid UTF-8, an
# oversized message); the app only sees the disconnect.
_BAD_INPUT_CLOSES = {1002: "invalid framing", 1007: "invalid UTF-8", 1009: "message too big"}


def _log_bad_close(session: Session, remote: str, code: object) -> None:
    """Log and count a disconnect for bad input: the one line about that connection (the
    server's own line is dropped by :class:`hubbub.logs.RoutineFilter`)."""
    if not isinstance(code, int) or code not in _BAD_INPUT_CLOSES or session.transport.closing:
        return
    session.log.info("closing %s: %s (%s)", remote, code, _BAD_INPUT_CLOSES[code])
    session.node.metrics_bad_input(code)
    session.node.metrics_disconnect(code)


MessageHandler = Callable[[Message], Awaitable[None]]
"""Handles one ``websocket.receive`` message of a connection that is not closing."""


async def serve_messages(
    session: Session,
    outbox: Outbox,
    receive: Receive,
    handle: MessageHandler,
    *,
    on_disconnect: Callable[[Message], None] | None = None,
    first: Callable[[], Awaitable[None]] | None = None,
) -> None:
    """Serve one accepted ASGI WebSocket connection until either side ends it: start the
    outbox's writer and the session, await ``first`` (if any), hand every received message to
    ``handle`` while the connection is not closing, and stop when the client disconnects
    (``on_disconnect`` sees its message) or the writer finished (the close frame is out, or
    the peer is gone). A failure closes the session with 3004, never the server. Returns once
    the writer finished (a bounded wait) and ``session.closed()`` released everything."""
    writer = asyncio.create_task(outbox.run())
    session.start()
    try:
        if first is not None:
            await first()
        while True:
            receive_task = asyncio.ensure_future(receive())
            done, _ = await asyncio.wait(
                (receive_task, writer), return_when=asyncio.FIRST_COMPLETED
            )
            if receive_task not in done:
                receive_task.cancel()
                break
            message = receive_task.result()
            kind = message["type"]
            if kind == "websocket.disconnect":
                if on_disconnect is not None:
                    on_disconnect(message)
                break
            if kind == "websocket.receive" and not outbox.closing:
                await handle(message)
    except Exception:
        session.log.exception("connection failed")
        session.close(disconnect(DisconnectCode.INTERNAL))
    finally:
        if not writer.done():
            if not outbox.closing:
                outbox.abort()
            try:
                # Bounded: a peer that stopped reading must not hold the connection open.
                await asyncio.wait_for(writer, timeout=5.0)
            except Exception:
                session.log.debug("writer did not finish cleanly")
        elif not writer.cancelled() and writer.exception() is not None:
            session.log.debug("write failed: %s", writer.exception())
        await session.closed()


class WebSocketEndpoint:
    """An ASGI application serving one WebSocket connection per call with the client protocol.

    Args:
        node: the node the connections belong to.
    """

    def __init__(self, node: Node) -> None:
        self.node = node

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "websocket":
            raise RuntimeError("WebSocketEndpoint serves WebSocket connections only")
        message = await receive()
        if message["type"] != "websocket.connect":
            return
        client = scope.get("client") or ("", 0)
        remote = f"{client[0]}:{client[1]}"
        knock = scope_knock(scope)
        admitted = self.node.admission.admit(knock, draining=self.node.draining)
        if isinstance(admitted, Refusal):
            admitted.record(self.node.counters, remote)
            await refuse_handshake(scope, send, admitted.status, admitted.reason)
            return
        try:
            accept: Message = {"type": "websocket.accept"}
            if admitted.subprotocol is not None:
                accept["subprotocol"] = admitted.subprotocol
            await send(accept)
            await self._serve(send, receive, remote, admitted.codec, admitted.frame_pings, knock)
        finally:
            admitted.release()

    async def _serve(
        self,
        send: Send,
        receive: Receive,
        remote: str,
        codec: Codec,
        frame_pings: bool,
        knock: Knock,
    ) -> None:
        node = self.node
        max_size = node.settings.client.max_message_size

        async def send_frame(data: bytes) -> None:
            if codec.binary:
                await send({"type": "websocket.send", "bytes": data})
            else:
                await send({"type": "websocket.send", "text": data.decode()})

        async def send_close(code: int, reason: str) -> None:
            await send({"type": "websocket.close", "code": code, "reason": reason})

        outbox = Outbox(
            send_frame, send_close, node.settings.client.queue_max_size, codec.separator
        )
        session = Session(
            node, outbox, codec=codec, app_pings=not frame_pings, remote=remote, knock=knock
        )
        outbox.on_overflow = session.slow
        node.counters[f"connections.{codec.name}"] += 1

        async def handle(message: Message) -> None:
            data = _frame(message, codec)
            if data is None:
                kind = "text" if codec.binary else "binary"
                session.close(
                    disconnect(
                        DisconnectCode.INAPPROPRIATE_PROTOCOL,
                        f"inappropriate protocol: {kind} frame on a {codec.name} connection",
                    )
                )
                node.metrics_bad_input(DisconnectCode.INAPPROPRIATE_PROTOCOL)
            elif len(data) > max_size:
                node.metrics_bad_input(DisconnectCode.MESSAGE_TOO_BIG)
                session.close(disconnect(DisconnectCode.MESSAGE_TOO_BIG))
            else:
                await session.handle_frame(data)

        await serve_messages(
            session,
            outbox,
            receive,
            handle,
            on_disconnect=lambda message: _log_bad_close(session, remote, message.get("code")),
        )
