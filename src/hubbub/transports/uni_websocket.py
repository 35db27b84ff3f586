"""``uni_websocket``: a plain WebSocket that sends one connect request and then only receives.

The connect request (a bare JSON ``ConnectRequest``) comes from the ``cf_connect`` query
parameter or, without it, from the first text message. Invalid JSON in ``cf_connect`` is
answered 400 before the upgrade; an invalid first message closes with 3501. Every push is one
text frame (several queued together still leave one per frame: a plain client reads one JSON
document per message). Pings are ``{}`` every ``client.ping_interval`` (no pong expected) and
the server's WebSocket ping frames, which browsers and WebSocket libraries answer by
themselves. Before every close except 3000 the disconnect push is sent, then the close frame
with the same code and reason.

Served through ASGI (:class:`UniWebSocketEndpoint`), under both ``transport`` settings: the
native transport hands every other path to uvicorn's own WebSocket protocol. Admission is the
node's one policy (:mod:`hubbub.transports.admission`); messages after the connect request are
read and dropped.
"""

from __future__ import annotations

from typing import TYPE_CHECKING
from urllib.parse import parse_qs

from hubbub.protocol.codes import DisconnectCode, disconnect
from hubbub.protocol.messages import ConnectRequest
from hubbub.session import Session
from hubbub.transports import uni
from hubbub.transports.admission import Knock, Refusal, scope_knock
from hubbub.transports.asgi import (
    Message,
    Receive,
    Scope,
    Send,
    refuse_handshake,
    serve_messages,
)
from hubbub.transports.outbox import Outbox

if TYPE_CHECKING:
    from hubbub.node import Node

TRANSPORT = "uni_websocket"


class UniOutbox(Outbox):
    """An :class:`~hubbub.transports.outbox.Outbox` that writes the disconnect push before
    its close frame (none for 3000), one push per frame."""

    __slots__ = ()

    def close(self, code: int, reason: str) -> None:
        if not self.closing:
            push = uni.disconnect_push(code, reason)
            if push is not None:
                self.write(push)
        super().close(code, reason)


def _query_request(query: str) -> ConnectRequest | None:
    """The connect request of the ``cf_connect`` query parameter (decoded as a form value),
    or None without one.

    Raises:
        BadConnectRequest: the parameter is not a JSON ``ConnectRequest``.
    """
    values = parse_qs(query, keep_blank_values=True).get("cf_connect")
    if not values:
        return None
    return uni.decode_connect_request(values[0])


class UniWebSocketEndpoint:
    """An ASGI application serving ``uni_websocket`` connections.

    Args:
        node: the node the connections belong to.
    """

    def __init__(self, node: Node) -> None:
        self.node = node

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "websocket":
            raise RuntimeError("UniWebSocketEndpoint serves WebSocket connections only")
        message = await receive()
        if message["type"] != "websocket.connect":
            return
        node = self.node
        client = scope.get("client") or ("", 0)
        remote = f"{client[0]}:{client[1]}"
        query = scope.get("query_string", b"").decode("latin-1")
        try:
            request = _query_request(query)
        except uni.BadConnectRequest as exc:
            node.metrics_bad_input(400)
            uni.log.info("refused %s from %s: %s", TRANSPORT, remote, exc)
            await refuse_handshake(scope, send, 400, "bad request: invalid cf_connect")
            return
        knock = scope_knock(scope, TRANSPORT)
        admitted = node.admission.admit(knock, draining=node.draining)
        if isinstance(admitted, Refusal):
            admitted.record(node.counters, remote, TRANSPORT)
            await refuse_handshake(scope, send, admitted.status, admitted.reason)
            return
        try:
            await send({"type": "websocket.accept"})
            await self._serve(send, receive, remote, request, knock)
        finally:
            admitted.release()

    async def _serve(
        self,
        send: Send,
        receive: Receive,
        remote: str,
        request: ConnectRequest | None,
        knock: Knock,
    ) -> None:
        node = self.node
        limit = node.settings.uni_websocket.message_size_limit

        async def send_frame(data: bytes) -> None:
            await send({"type": "websocket.send", "text": data.decode()})

        async def send_close(code: int, reason: str) -> None:
            await send({"type": "websocket.close", "code": code, "reason": reason})

        # No separator: a plain client reads one JSON document per message.
        outbox = UniOutbox(send_frame, send_close, node.settings.client.queue_max_size, None)
        session = uni.new_session(node, outbox, remote=remote, knock=knock)
        outbox.on_overflow = session.slow
        node.counters[f"connections.{session.codec.name}"] += 1
        node.counters[f"transport.{TRANSPORT}"] += 1
        connected = request is not None

        async def first() -> None:
            if request is not None:
                await uni.connect(session, request)

        async def handle(message: Message) -> None:
            nonlocal connected
            # Anything after the connect request is dropped: the client has nothing to say.
            if not connected:
                connected = True
                asked = self._first_message(session, message, limit)
                if asked is not None:
                    await uni.connect(session, asked)

        await serve_messages(session, outbox, receive, handle, first=first)

    def _first_message(
        self, session: Session, message: Message, limit: int
    ) -> ConnectRequest | None:
        """The connect request of the first message; None (and the session closing, the bad
        input counted) when it is not one."""
        node = self.node
        text = message.get("text")
        if not isinstance(text, str):
            reason = disconnect(DisconnectCode.BAD_REQUEST, "bad request: binary message")
        elif len(text.encode()) > limit:
            reason = disconnect(DisconnectCode.MESSAGE_TOO_BIG)
        else:
            try:
                return uni.decode_connect_request(text)
            except uni.BadConnectRequest as exc:
                session._close_detail = str(exc)
                reason = disconnect(DisconnectCode.BAD_REQUEST)
        node.metrics_bad_input(reason.code)
        session.close(reason)
        return None
