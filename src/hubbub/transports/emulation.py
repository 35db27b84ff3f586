"""Bidirectional emulation: the client protocol over plain HTTP, for clients whose network
breaks WebSocket (centrifuge-js transports ``http_stream`` and ``sse``).

The server's messages go out on one long-lived response (:mod:`hubbub.transports.streaming`):

* ``POST /connection/http_stream``: the body is the first frame of commands (the connect);
  Protobuf when the request's Content-Type is exactly ``application/octet-stream``, else JSON.
  ``OPTIONS`` answers the CORS preflight (204); other methods 405.
* ``GET /connection/sse?cf_connect=<commands>`` (EventSource) or ``POST`` with the commands
  as body: JSON only. A GET without ``cf_connect`` answers 400; other methods 405.

The answer is 200 and the stream starts before the connect is processed: a failed connect
arrives in the stream (an error reply or a disconnect push), never as an HTTP status. The
connect result carries ``session`` (the stream's id) and ``node`` (this node's uid); the
client's later commands (subscribe, publish, pongs …) come as ``POST /emulation`` requests
naming both (:mod:`hubbub.transports.emulation_routing`), answered 204 once handed to the
session, whose replies go out on the stream.

Admission, limits, heartbeats, metrics and logs are those of a WebSocket: the same
:class:`~hubbub.transports.admission.Admission` (503 while draining or full, 403 for an Origin
not in ``client.allowed_origins``) and the same :class:`~hubbub.session.Session`.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, MutableMapping
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qs

from starlette.routing import BaseRoute, Route

from hubbub.protocol.codec import Codec
from hubbub.protocol.messages import DisconnectPush, Push
from hubbub.session import Session
from hubbub.transports.admission import Knock, Refusal, origin_allowed, scope_knock
from hubbub.transports.cors import cors_headers, header, preflight_headers
from hubbub.transports.emulation_routing import EmulationRouter, Routed, decode_request
from hubbub.transports.streaming import JSON_LINES, PROTOBUF_STREAM, SSE, HTTPStream

if TYPE_CHECKING:
    from hubbub.node import Node

log = logging.getLogger("hubbub.transport")

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]

OCTET_STREAM = "application/octet-stream"


class BodyTooLarge(Exception):
    """The request body is over its limit (answered 413)."""


class ClientGone(Exception):
    """The client went away while its body was read (Centrifugo's 499: nobody to answer)."""


async def read_body(scope: Scope, receive: Receive, limit: int) -> bytes:
    """The whole request body, at most ``limit`` bytes.

    Raises:
        BodyTooLarge: the declared or the received length is over ``limit``.
        ClientGone: the client disconnected before the end of the body.
    """
    declared = header(scope.get("headers", ()), b"content-length")
    if declared.isdigit() and int(declared) > limit:
        raise BodyTooLarge
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise ClientGone
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            raise BodyTooLarge
        chunks.append(chunk)
        if not message.get("more_body", False):
            return b"".join(chunks)


async def respond(
    send: Send, status: int, text: str = "", headers: list[tuple[bytes, bytes]] | None = None
) -> None:
    """A complete small response: ``text`` as plain text (none for 204)."""
    body = (text + "\n").encode() if text and status != 204 else b""
    all_headers = list(headers or [])
    if body:
        all_headers.append((b"content-type", b"text/plain; charset=utf-8"))
    all_headers.append((b"content-length", str(len(body)).encode()))
    await send({"type": "http.response.start", "status": status, "headers": all_headers})
    await send({"type": "http.response.body", "body": body})


def _remote(scope: Scope) -> tuple[str, str]:
    client = scope.get("client") or ("", 0)
    return str(client[0]), f"{client[0]}:{client[1]}"


class _HTTPEndpoint:
    """What the HTTP endpoints share: their node, the request facts, bad-input accounting."""

    def __init__(self, node: Node, name: str) -> None:
        self.node = node
        self.name = name

    def bad_request(self, status: int, remote: str, why: str) -> None:
        """Log (one line) and count a request refused for what the client sent."""
        log.info("refused %s request from %s: %s %s", self.name, remote, status, why)
        self.node.metrics_bad_input(status)

    async def refuse(self, send: Send, status: int, remote: str, why: str) -> None:
        self.bad_request(status, remote, why)
        await respond(send, status, why)


class StreamEndpoint(_HTTPEndpoint):
    """The ASGI app of ``/connection/http_stream`` (``transport="http_stream"``) or
    ``/connection/sse`` (``transport="sse"``): one stream per request.

    Args:
        node: the node the sessions belong to.
        transport: ``http_stream`` or ``sse``.
    """

    def __init__(self, node: Node, transport: str) -> None:
        super().__init__(node, transport)
        if transport not in ("http_stream", "sse"):
            raise ValueError(f"unknown stream transport {transport!r}")
        self.sse = transport == "sse"
        settings = node.settings.sse if self.sse else node.settings.http_stream
        self.body_limit = settings.max_request_body_size

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return
        headers = scope.get("headers", ())
        method = scope["method"]
        _, remote = _remote(scope)
        origin = header(headers, b"origin")
        requested = header(headers, b"access-control-request-headers")
        if method == "OPTIONS" and not self.sse:
            await respond(send, 204, headers=preflight_headers(origin, requested))
            return
        allowed = ("GET", "POST") if self.sse else ("POST",)
        if method not in allowed:
            await self.refuse(send, 405, remote, f"method {method} not allowed")
            return
        if method == "GET":
            values = parse_qs(scope.get("query_string", b"").decode("latin-1"), True)
            if "cf_connect" not in values:
                await self.refuse(send, 400, remote, "cf_connect missing")
                return
            body = values["cf_connect"][0].encode()
        else:
            try:
                body = await read_body(scope, receive, self.body_limit)
            except BodyTooLarge:
                await self.refuse(send, 413, remote, "request body too large")
                return
            except ClientGone:
                return
        knock = scope_knock(scope, self.name)
        node = self.node
        admitted = node.admission.admit(knock, draining=node.draining)
        if isinstance(admitted, Refusal):
            admitted.record(node.counters, remote, self.name)
            await respond(send, admitted.status, admitted.reason)
            return
        try:
            await self._serve(scope, receive, send, body, remote, admitted.codec, origin, knock)
        finally:
            admitted.release()

    async def _serve(
        self,
        scope: Scope,
        receive: Receive,
        send: Send,
        body: bytes,
        remote: str,
        codec: Codec,
        origin: str,
        knock: Knock,
    ) -> None:
        node = self.node
        if self.sse:
            framing, keepalive = SSE, node.settings.sse.keepalive_interval
        else:
            framing, keepalive = (PROTOBUF_STREAM if codec.binary else JSON_LINES), 0.0

        def goodbye(code: int, reason: str) -> bytes:
            return codec.encode_push(Push(disconnect=DisconnectPush(code, reason)))

        stream = HTTPStream(
            send,
            receive,
            framing=framing,
            max_bytes=node.settings.client.queue_max_size,
            goodbye=goodbye,
            keepalive=keepalive,
            headers=cors_headers(origin, ""),
            http_version=scope.get("http_version", "1.1"),
        )
        session = Session(
            node, stream, codec=codec, remote=remote, stream_session=stream.id, knock=knock
        )
        node.counters[f"connections.{codec.name}"] += 1
        node.counters[f"transport.{self.name}"] += 1

        async def connect() -> None:
            # The first frame, as a WebSocket's first: anything but a connect closes (3501).
            await session.handle_frame(body)

        await stream.run(session, connect)


class EmulationEndpoint(_HTTPEndpoint):
    """The ASGI app of ``POST /emulation``: the commands of a stream's client.

    Answers 204 once the commands are handed to the session (or the session is gone, or its
    data unreadable: the client learns on its stream), 400 for a body that is not an
    emulation request, 404 for a node that is neither this one nor a live peer, 500 when the
    peer did not take them in ``emulation.timeout``, 413 over the body limit, 405 for a
    method other than POST (OPTIONS: the CORS preflight, 204), 403 for an Origin that
    ``client.allowed_origins`` does not allow.

    Args:
        node: this node.
        router: the node's router (one per node: it takes the cluster's addressed messages).
    """

    def __init__(self, node: Node, router: EmulationRouter) -> None:
        super().__init__(node, "emulation")
        self.router = router

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return
        headers = scope.get("headers", ())
        method = scope["method"]
        _, remote = _remote(scope)
        origin = header(headers, b"origin")
        requested = header(headers, b"access-control-request-headers")
        if method == "OPTIONS":
            await respond(send, 204, headers=preflight_headers(origin, requested))
            return
        if method != "POST":
            await self.refuse(send, 405, remote, f"method {method} not allowed")
            return
        settings = self.node.settings
        if not origin_allowed(origin, header(headers, b"host"), settings.client.allowed_origins):
            self.node.counters["handshake.origin_refused"] += 1
            log.warning("refused emulation from %s: origin %r not allowed", remote, origin)
            await respond(send, 403, "origin not allowed")
            return
        cors = cors_headers(origin, "")
        try:
            body = await read_body(scope, receive, settings.emulation.max_request_body_size)
        except BodyTooLarge:
            self.bad_request(413, remote, "request body too large")
            await respond(send, 413, "request body too large", cors)
            return
        except ClientGone:
            return
        protobuf = header(headers, b"content-type") == OCTET_STREAM
        try:
            req = decode_request(body, protobuf)
        except ValueError as exc:
            self.bad_request(400, remote, f"not an emulation request ({exc})")
            await respond(send, 400, "bad request", cors)
            return
        routed = await self.router.route(req)
        if routed is Routed.UNKNOWN_NODE:
            await respond(send, 404, "unknown node", cors)
        elif routed is Routed.FAILED:
            await respond(send, 500, "node not reachable", cors)
        else:
            await respond(send, 204, headers=cors)


def emulation_routes(node: Node) -> list[BaseRoute]:
    """The routes of the enabled emulation endpoints (``http_stream.enabled``,
    ``sse.enabled``) and, with either, ``/emulation``; none when both are off."""
    settings = node.settings
    routes: list[BaseRoute] = []
    if settings.http_stream.enabled:
        routes.append(Route(settings.http_stream.path, StreamEndpoint(node, "http_stream")))
    if settings.sse.enabled:
        routes.append(Route(settings.sse.path, StreamEndpoint(node, "sse")))
    if routes:
        router = EmulationRouter(node)
        routes.append(Route(settings.emulation.path, EmulationEndpoint(node, router)))
    return routes
