"""``uni_sse`` and ``uni_http_stream``: pushes as one long HTTP response, for clients without
an SDK (a browser ``EventSource``, ``curl -N``, ``fetch``).

The request carries a bare JSON ``ConnectRequest``:

- ``uni_http_stream``: ``POST`` with the request as body (``{}`` at least: an empty or invalid
  body is 400); ``OPTIONS`` is the CORS preflight (204); other methods 405.
- ``uni_sse``: ``GET`` with the request in the ``cf_connect`` query parameter, or ``POST``
  with it as body; none means ``{}``; invalid JSON is 400; other methods 405.

Bodies over the endpoint's ``max_request_body_size`` are 413. Then the answer is 200 and the
stream (:class:`~hubbub.transports.streaming.HTTPStream`): the connect push, publications and
the other pushes, ``{}`` pings every ``client.ping_interval``, and before the end the
disconnect push (also the only sign of a failed connect). ``uni_http_stream`` writes one JSON
push per line, ``uni_sse`` one ``data:`` event per push, and an SSE comment after
``sse.keepalive_interval`` of silence, for proxies that cut quiet streams.

CORS as for the bidirectional streams (:mod:`hubbub.transports.cors`): an allowed ``Origin``
(``client.allowed_origins``) is echoed with credentials allowed. The Origin check, the
connection caps and draining are the node's one admission policy
(:mod:`hubbub.transports.admission`): an Origin not allowed is refused (403) as on WebSocket.
"""

from __future__ import annotations

from typing import TYPE_CHECKING
from urllib.parse import parse_qs

from hubbub.protocol.messages import ConnectRequest
from hubbub.transports import uni
from hubbub.transports.admission import Refusal, origin_allowed, scope_knock
from hubbub.transports.cors import cors_headers, header, preflight_headers
from hubbub.transports.emulation import (
    BodyTooLarge,
    ClientGone,
    Receive,
    Scope,
    Send,
    read_body,
    respond,
)
from hubbub.transports.streaming import JSON_LINES, SSE, Framing, HTTPStream

if TYPE_CHECKING:
    from hubbub.node import Node


def _cors(scope: Scope, allowed: list[str]) -> tuple[str, str] | None:
    """The ``Origin`` and the requested headers of a request whose origin may read the
    answer (``client.allowed_origins``); None without an Origin or for one not allowed (no
    CORS headers then: the browser hides the answer)."""
    headers = scope.get("headers", ())
    origin = header(headers, b"origin")
    if not origin or not origin_allowed(origin, header(headers, b"host"), allowed):
        return None
    return origin, header(headers, b"access-control-request-headers")


def _goodbye(code: int, reason: str) -> bytes:
    push = uni.disconnect_push(code, reason)
    assert push is not None  # the stream writes no goodbye for 3000
    return push


class _UniStreamEndpoint:
    """What both endpoints share: methods, body, admission, the stream."""

    transport = ""
    framing: Framing = JSON_LINES
    methods: tuple[str, ...] = ("POST",)
    preflight = False

    def __init__(self, node: Node) -> None:
        self.node = node

    def body_limit(self) -> int:
        raise NotImplementedError

    def keepalive(self) -> float:
        return 0.0

    def request_of(self, method: str, query: str, body: bytes) -> ConnectRequest:
        """The connect request (raises BadConnectRequest: answered 400)."""
        raise NotImplementedError

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            raise RuntimeError(f"{type(self).__name__} serves HTTP requests only")
        node = self.node
        method = scope.get("method", "GET")
        client = scope.get("client") or ("", 0)
        remote = f"{client[0]}:{client[1]}"
        asked = _cors(scope, node.settings.client.allowed_origins)
        cors = cors_headers(asked[0], "") if asked else []
        if method == "OPTIONS" and self.preflight:
            await respond(send, 204, headers=preflight_headers(*asked) if asked else [])
            return
        if method not in self.methods:
            allow = ", ".join((*self.methods, "OPTIONS") if self.preflight else self.methods)
            await respond(send, 405, "method not allowed", [(b"allow", allow.encode()), *cors])
            return
        try:
            body = b""
            if method == "POST":
                body = await read_body(scope, receive, self.body_limit())
        except BodyTooLarge:
            self._bad_input(413, remote, "request body too large")
            await respond(send, 413, "request body too large", cors)
            return
        except ClientGone:
            return
        query = scope.get("query_string", b"").decode("latin-1")
        try:
            request = self.request_of(method, query, body)
        except uni.BadConnectRequest as exc:
            self._bad_input(400, remote, str(exc))
            await respond(send, 400, "bad request: the body must be a JSON connect request", cors)
            return
        knock = scope_knock(scope, self.transport)
        admitted = node.admission.admit(knock, draining=node.draining)
        if isinstance(admitted, Refusal):
            admitted.record(node.counters, remote, self.transport)
            await respond(send, admitted.status, admitted.reason, cors)
            return
        try:
            stream = HTTPStream(
                send,
                receive,
                framing=self.framing,
                max_bytes=node.settings.client.queue_max_size,
                goodbye=_goodbye,
                keepalive=self.keepalive(),
                headers=cors,
                http_version=str(scope.get("http_version", "1.1")),
            )
            session = uni.new_session(node, stream, remote=remote, knock=knock)
            node.counters[f"connections.{session.codec.name}"] += 1
            node.counters[f"transport.{self.transport}"] += 1

            async def start() -> None:
                await uni.connect(session, request)

            await stream.run(session, start)
        finally:
            admitted.release()

    def _bad_input(self, status: int, remote: str, what: str) -> None:
        uni.log.info("refused %s from %s: %s %s", self.transport, remote, status, what)
        self.node.metrics_bad_input(status)


class UniHTTPStreamEndpoint(_UniStreamEndpoint):
    """``uni_http_stream``: ``POST`` a JSON connect request, read JSON lines."""

    transport = "uni_http_stream"
    framing = JSON_LINES
    methods = ("POST",)
    preflight = True

    def body_limit(self) -> int:
        return self.node.settings.uni_http_stream.max_request_body_size

    def request_of(self, method: str, query: str, body: bytes) -> ConnectRequest:
        return uni.decode_connect_request(body)


class UniSSEEndpoint(_UniStreamEndpoint):
    """``uni_sse``: ``GET ?cf_connect=<JSON>`` (an ``EventSource``) or ``POST`` the JSON."""

    transport = "uni_sse"
    framing = SSE
    methods = ("GET", "POST")

    def body_limit(self) -> int:
        return self.node.settings.uni_sse.max_request_body_size

    def keepalive(self) -> float:
        return self.node.settings.sse.keepalive_interval

    def request_of(self, method: str, query: str, body: bytes) -> ConnectRequest:
        if method == "POST":
            data: bytes | str = body
        else:
            # A form value: EventSource URLs built with URLSearchParams encode spaces as "+".
            values = parse_qs(query, keep_blank_values=True).get("cf_connect")
            data = values[0] if values else b""
        if not data:
            return ConnectRequest()
        return uni.decode_connect_request(data)
