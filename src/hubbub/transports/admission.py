"""Admission: whether a connection may open, and in which wire format; one policy for every
transport.

A transport reads the facts of a request (client address, Origin, Host, the offered
subprotocols, the query string) into a :class:`Knock` and asks the node's :class:`Admission`.
The answer is an :class:`Admitted` ticket (the chosen codec and subprotocol; the connection is
counted until the ticket is released) or a :class:`Refusal` (the HTTP status, the reason, the
counter and the log line). Only the way of refusing is left to the transport: an HTTP response
on the socket, an ASGI denial response, a close.

The policy is pure: no socket, no node, no clock. Checks run in this order, the first that
fails answers: draining (503), the per-node and per-address connection caps (503), the Origin
allow-list (403).
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qs, urlsplit

from hubbub.config import Settings
from hubbub.limits import client_address
from hubbub.protocol.codec import JSON, PROTOBUF, Codec

log = logging.getLogger("hubbub.transport")

JSON_SUBPROTOCOL = "centrifuge-json"
PROTOBUF_SUBPROTOCOL = "centrifuge-protobuf"


def origin_allowed(origin: str, host: str, allowed: list[str]) -> bool:
    """Whether a browser request from ``origin`` may connect.

    No Origin header (non-browser clients) is allowed. Otherwise the origin must match an entry
    of ``allowed`` (``*`` allows any; ``https://*.example.com`` style wildcards match
    subdomains), or, with an empty list, be the same host as the request.
    """
    if not origin:
        return True
    if not allowed:
        return urlsplit(origin).netloc.lower() == host.lower()
    origin = origin.lower()
    for pattern in allowed:
        pattern = pattern.lower()
        if pattern in ("*", origin):
            return True
        if "*" in pattern:
            prefix, _, suffix = pattern.partition("*")
            if origin.startswith(prefix) and origin.endswith(suffix):
                return True
    return False


@dataclass(frozen=True, slots=True)
class Knock:
    """What a transport knows of a request before it accepts it.

    Attributes:
        peer: the address of the socket's peer (perhaps a proxy).
        forwarded_for: the ``X-Forwarded-For`` header ("" when absent); believed only from
            ``limits.trusted_proxies``.
        origin: the ``Origin`` header ("" for non-browser clients).
        host: the ``Host`` header.
        subprotocols: the subprotocols the client offered, in its order.
        query: the query string of the request target (after ``?``).
        transport: the transport's name as proxies see it (``websocket``, ``http_stream``,
            ``sse``, ...): HTTP streams choose their format by ``content_type``, not by
            subprotocol.
        content_type: the request's ``Content-Type`` (HTTP streams): exactly
            ``application/octet-stream`` asks for Protobuf on ``http_stream``.
        headers: every header of the request, names in lower case, in the order received
            (cookies included): what the application's hooks and the proxies see of the
            handshake (:func:`asgi_headers`, :func:`header_pairs`).
    """

    peer: str
    forwarded_for: str = ""
    origin: str = ""
    host: str = ""
    subprotocols: Sequence[str] = ()
    query: str = ""
    transport: str = "websocket"
    content_type: str = ""
    headers: Sequence[tuple[str, str]] = ()


def asgi_headers(scope: Mapping[str, Any]) -> tuple[tuple[str, str], ...]:
    """The headers of an ASGI connection scope as :attr:`Knock.headers`."""
    return tuple(
        (bytes(name).decode("latin-1").lower(), bytes(value).decode("latin-1"))
        for name, value in scope.get("headers", ())
    )


def scope_knock(scope: Mapping[str, Any], transport: str = "websocket") -> Knock:
    """The :class:`Knock` of an ASGI request or WebSocket scope, for ``transport``: what every
    ASGI endpoint (WebSocket, HTTP streams, unidirectional) hands to the one policy."""
    headers = asgi_headers(scope)
    first: dict[str, str] = {}
    for name, value in headers:
        first.setdefault(name, value)
    client = scope.get("client") or ("", 0)
    return Knock(
        peer=str(client[0]),
        forwarded_for=first.get("x-forwarded-for", ""),
        origin=first.get("origin", ""),
        host=first.get("host", ""),
        subprotocols=list(scope.get("subprotocols") or ()),
        query=bytes(scope.get("query_string", b"")).decode("latin-1"),
        transport=transport,
        content_type=first.get("content-type", ""),
        headers=headers,
    )


def header_pairs(headers: Mapping[str, Sequence[str]]) -> tuple[tuple[str, str], ...]:
    """Headers parsed as lower-case name -> values (the native handshake's) as
    :attr:`Knock.headers`."""
    return tuple((name, value) for name, values in headers.items() for value in values)


@dataclass(frozen=True, slots=True)
class Refusal:
    """A request the policy turns away.

    Attributes:
        status: the HTTP status to answer (503: retry later, elsewhere; 403: never).
        reason: the plain-text reason sent with it.
        counter: the node counter that counts it ("" for none).
        note: what the warning line says after "refused WebSocket from <peer>: " ("" for no
            line).
    """

    status: int
    reason: str
    counter: str = ""
    note: str = ""

    def record(self, counters: Counter[str], remote: str, what: str = "WebSocket") -> None:
        """Count and log this refusal of a request (a ``what``) from ``remote``
        (``host:port``)."""
        if self.counter:
            counters[self.counter] += 1
        if self.note:
            log.warning("refused %s from %s: %s", what, remote, self.note)


class Admitted:
    """A connection let in: its wire format, and its place in the connection counts until
    :meth:`release` (which the transport calls once the connection is gone; a second call does
    nothing).

    Attributes:
        address: the client address the per-address cap counts it under.
        codec: the wire format, chosen once per connection.
        subprotocol: the subprotocol to answer with, or None.
        frame_pings: the client asked for WebSocket-level pings instead of app-level ones.
    """

    __slots__ = ("_admission", "address", "codec", "frame_pings", "subprotocol")

    def __init__(
        self,
        admission: Admission,
        address: str,
        codec: Codec,
        subprotocol: str | None,
        frame_pings: bool,
    ) -> None:
        self._admission: Admission | None = admission
        self.address = address
        self.codec = codec
        self.subprotocol = subprotocol
        self.frame_pings = frame_pings

    def release(self) -> None:
        admission, self._admission = self._admission, None
        if admission is not None:
            admission.leave(self.address)


SHUTTING_DOWN = Refusal(503, "shutting down")
CONNECTION_LIMIT = Refusal(
    503, "connection limit", "handshake.connection_limit", "connection limit"
)


class Admission:
    """The node's admission policy and its connection counts.

    Args:
        settings: the node's settings (``limits.max_connections``,
            ``limits.connections_per_ip``, ``limits.trusted_proxies``,
            ``client.allowed_origins``).

    Attributes:
        connections: connections admitted and not yet released, on this node.
        by_address: the same per client address (addresses with none are not kept).
    """

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.connections = 0
        self.by_address: Counter[str] = Counter()

    def admit(self, knock: Knock, *, draining: bool = False) -> Admitted | Refusal:
        """Let the connection ``knock`` describes in, or say why not.

        Args:
            knock: the facts of the request.
            draining: the node is shutting down (its clients should reconnect elsewhere).

        Returns:
            An :class:`Admitted` ticket, already counted, or a :class:`Refusal`.
        """
        if draining:
            return SHUTTING_DOWN
        limits = self.settings.limits
        address = client_address(knock.peer, knock.forwarded_for, limits.trusted_proxies)
        if (limits.max_connections and self.connections >= limits.max_connections) or (
            limits.connections_per_ip and self.by_address[address] >= limits.connections_per_ip
        ):
            return CONNECTION_LIMIT
        if not origin_allowed(knock.origin, knock.host, self.settings.client.allowed_origins):
            return Refusal(
                403,
                "origin not allowed",
                "handshake.origin_refused",
                f"origin {knock.origin!r} not allowed",
            )
        offered = knock.subprotocols
        subprotocol = next(
            (name for name in (PROTOBUF_SUBPROTOCOL, JSON_SUBPROTOCOL) if name in offered), None
        )
        query = parse_qs(knock.query)
        # The format is chosen once per connection: the subprotocol, or a query parameter for
        # clients that cannot set one; an HTTP stream by its request's exact Content-Type (SSE
        # and the other streams are JSON only).
        if knock.transport == "websocket":
            wants_protobuf = subprotocol == PROTOBUF_SUBPROTOCOL or "protobuf" in (
                query.get("format", []) + query.get("cf_protocol", [])
            )
        else:
            subprotocol = None
            wants_protobuf = (
                knock.transport == "http_stream"
                and knock.content_type == "application/octet-stream"
            )
        frame_pings = query.get("cf_ws_frame_ping_pong", [""])[0] == "true"
        self.connections += 1
        self.by_address[address] += 1
        return Admitted(
            self, address, PROTOBUF if wants_protobuf else JSON, subprotocol, frame_pings
        )

    def leave(self, address: str) -> None:
        """A connection counted under ``address`` is gone (see :meth:`Admitted.release`)."""
        self.connections -= 1
        self.by_address[address] -= 1
        if not self.by_address[address]:
            del self.by_address[address]
