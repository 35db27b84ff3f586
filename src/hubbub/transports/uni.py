"""The unidirectional session core: a connection that sends one connect request and then only
receives (``uni_websocket``, ``uni_sse``, ``uni_http_stream``; JSON only).

It is the ordinary :class:`~hubbub.session.Session` with ``unidirectional=True`` (pings expect
no pong; the channels named in the request's ``subs`` are subscribed on the server side when
the client could subscribe to them itself) and the :data:`UNI_JSON` codec, which writes bare
``Push`` objects: the connect result as ``{"connect":{…}}`` first, then ``{"channel":…,
"pub":…}`` and the other pushes, ``{}`` pings. How each transport frames them is its own
business (:mod:`hubbub.transports.uni_websocket`, :mod:`hubbub.transports.uni_streams`).

A failed connect is told as a disconnect (:func:`connect_failure`), in the stream, since the
client has no reply to read: the transports write ``{"disconnect":{"code","reason"}}`` before
every close except 3000 (:func:`disconnect_push`).
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from typing import TYPE_CHECKING

import msgspec

from hubbub import session_connect
from hubbub.protocol.codec import PING
from hubbub.protocol.codes import (
    Disconnect,
    DisconnectCode,
    ErrorCode,
    ProtocolError,
    disconnect,
)
from hubbub.protocol.messages import (
    Command,
    ConnectRequest,
    DisconnectPush,
    Push,
    Reply,
)
from hubbub.session import Session

if TYPE_CHECKING:
    from hubbub.node import Node
    from hubbub.transports.admission import Knock
    from hubbub.transports.base import Transport

__all__ = [
    "UNI_JSON",
    "BadConnectRequest",
    "UniJsonCodec",
    "connect",
    "connect_failure",
    "decode_connect_request",
    "disconnect_push",
    "new_session",
]

log = logging.getLogger("hubbub.transport")

_encoder = msgspec.json.Encoder()
_request_decoder = msgspec.json.Decoder(ConnectRequest)

CLOSED = 3000
"""The client went away: nothing is pushed, the connection is only cleaned up."""


class BadConnectRequest(ValueError):
    """The connect request is not a JSON ``ConnectRequest`` object."""


def decode_connect_request(data: bytes | str) -> ConnectRequest:
    """Decode a bare JSON ``ConnectRequest`` (``{"token": "…", "subs": {…}}``).

    Raises:
        BadConnectRequest: empty, not JSON, not an object, or fields of the wrong type.
    """
    if not data:
        raise BadConnectRequest("empty connect request")
    try:
        return _request_decoder.decode(data)
    except (msgspec.DecodeError, RecursionError, UnicodeDecodeError) as exc:
        raise BadConnectRequest(f"invalid connect request: {exc}") from None


class UniJsonCodec:
    """The JSON format of uni transports: every message a bare ``Push``, pings ``{}``.

    A uni client sends no commands, so decoding any refuses (3501). Fan-out encodes a
    publication once for every uni connection, whatever its transport, since the framing
    (a WebSocket frame, a line, an SSE event) is added by the transport.
    """

    name = "json"
    binary = False
    separator = b"\n"
    ping = PING

    def split_frame(self, frame: bytes) -> list[bytes]:
        raise disconnect(DisconnectCode.BAD_REQUEST, "bad request: unidirectional connection")

    def decode_command(self, data: bytes) -> Command:
        raise disconnect(DisconnectCode.BAD_REQUEST, "bad request: unidirectional connection")

    def encode_reply(self, reply: Reply) -> bytes:
        # The only reply a uni session writes is its connect result: sent as the connect push.
        if reply.push is not None:
            return _encoder.encode(reply.push)
        return _encoder.encode(Push(connect=reply.connect))

    def encode_push(self, push: Push) -> bytes:
        return _encoder.encode(push)


UNI_JSON = UniJsonCodec()


def disconnect_push(code: int, reason: str) -> bytes | None:
    """The encoded disconnect push a uni transport writes before closing with ``code``, or
    None for 3000 (the client went away: there is no one to tell)."""
    if code == CLOSED:
        return None
    return _encoder.encode(Push(disconnect=DisconnectPush(code=code, reason=reason)))


# Connect errors as the disconnects a uni client gets (it has no reply to read).
_FAILURES: dict[int, DisconnectCode] = {
    ErrorCode.TOKEN_EXPIRED: DisconnectCode.EXPIRED,
    ErrorCode.EXPIRED: DisconnectCode.EXPIRED,
    ErrorCode.TOO_MANY_REQUESTS: DisconnectCode.TOO_MANY_REQUESTS,
    ErrorCode.PERMISSION_DENIED: DisconnectCode.PERMISSION_DENIED,
}


def connect_failure(exc: ProtocolError | Disconnect) -> Disconnect:
    """The disconnect a failed uni connect ends with: a disconnect as is; reply errors 109
    and 110 → 3005, 111 → 3013, 103 → 3507, any other → 3004 (internal server error)."""
    if isinstance(exc, Disconnect):
        return exc
    return disconnect(_FAILURES.get(exc.code, DisconnectCode.INTERNAL))


def new_session(
    node: Node, transport: Transport, *, remote: str = "", knock: Knock | None = None
) -> Session:
    """A uni session writing bare pushes to ``transport`` (``knock``: its handshake, for the
    hooks); :meth:`Session.start` is the caller's (it arms the stale timer: a request that
    never comes closes with 3502)."""
    return Session(
        node,
        transport,
        codec=UNI_JSON,
        remote=remote,
        knock=knock,
        unidirectional=True,
        stream_session=str(uuid.uuid4()),
    )


async def connect(session: Session, request: ConnectRequest) -> bool:
    """Connect ``session`` with ``request``: the connect push and the subscriptions on
    success (True); on failure the session is closing with :func:`connect_failure`'s
    disconnect, logged and counted once (False)."""
    node = session.node
    try:
        await session_connect.connect(session, 0, request)
    except asyncio.CancelledError:
        raise
    except (ProtocolError, Disconnect) as exc:
        if isinstance(exc, ProtocolError):
            node.metrics_reply_error(exc.code)
            session._close_detail = f"connect error {exc.code}: {exc.message}"
        session.close(connect_failure(exc))
        return False
    except Exception:
        # A server bug costs this connection, never the process.
        session.log.exception("uni connect failed")
        session.close(disconnect(DisconnectCode.INTERNAL))
        return False
    return True
