"""The server side of the WebSocket opening handshake (RFC 6455 4.2), for the native transport.

The request head arrives checked for ``Connection: upgrade`` and ``Upgrade: websocket``: either
as the client sent it (:mod:`hubbub.transports.raw_upgrade` found it well-formed), or parsed by
uvicorn and rebuilt as ``METHOD target HTTP/1.1`` and one ``name: value`` line per header. What is
left is small: find the target, check the key and the version, pick a subprotocol and answer
``101``. Doing it here
instead of through a general HTTP parser and response builder is about a quarter of what a
connection costs to set up.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
from dataclasses import dataclass, field
from http import HTTPStatus

_GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
_END = b"\r\n\r\n"


class HandshakeError(Exception):
    """The request cannot be upgraded: answer ``status`` with ``reason`` (plain text)."""

    def __init__(self, status: int, reason: str, headers: tuple[tuple[str, str], ...] = ()) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason
        self.headers = headers

    def response(self) -> bytes:
        """The HTTP response that refuses the upgrade."""
        return refusal(self.status, self.reason, self.headers)


@dataclass(slots=True)
class UpgradeRequest:
    """A parsed request head.

    Attributes:
        method: the request method.
        path: the target before ``?``.
        query: the target after ``?`` (may be empty).
        headers: lower-case name -> values, in the order received.
    """

    method: str
    path: str
    query: str
    headers: dict[str, list[str]] = field(default_factory=dict)

    def header(self, name: str) -> str:
        """The value of header ``name`` (lower case); several are joined with ``, ``."""
        values = self.headers.get(name)
        return ", ".join(values) if values else ""


def parse_head(head: bytes) -> UpgradeRequest:
    """Parse the request line and headers of ``head`` (the bytes before the empty line).

    Raises:
        HandshakeError: 400 when the head is not an HTTP/1.1 request.
    """
    text = head.decode("latin-1")
    lines = text.split("\r\n")
    parts = lines[0].split(" ")
    if len(parts) != 3 or parts[2] != "HTTP/1.1":
        raise HandshakeError(400, "not an HTTP/1.1 request")
    method, target, _ = parts
    path, _, query = target.partition("?")
    request = UpgradeRequest(method=method, path=path, query=query)
    headers = request.headers
    for line in lines[1:]:
        if not line:
            break
        name, sep, value = line.partition(":")
        if not sep:
            raise HandshakeError(400, "invalid header line")
        headers.setdefault(name.strip().lower(), []).append(value.strip())
    return request


def accept_key(key: str) -> str:
    """``Sec-WebSocket-Accept`` for the client's ``Sec-WebSocket-Key``."""
    return base64.b64encode(hashlib.sha1(key.encode() + _GUID).digest()).decode()


def check_upgrade(request: UpgradeRequest) -> str:
    """Check what RFC 6455 asks of an opening handshake; return the accept key.

    Raises:
        HandshakeError: 400 for a missing or malformed key, a method other than GET or a
            missing version; 426 (with the supported version) for another version.
    """
    if request.method != "GET":
        raise HandshakeError(400, f"method {request.method} cannot open a WebSocket")
    keys = request.headers.get("sec-websocket-key", [])
    if len(keys) != 1:
        raise HandshakeError(400, "exactly one Sec-WebSocket-Key header is required")
    try:
        raw = base64.b64decode(keys[0], validate=True)
    except binascii.Error:
        raw = b""
    if len(raw) != 16:
        raise HandshakeError(400, "Sec-WebSocket-Key is not 16 bytes in base64")
    version = request.header("sec-websocket-version")
    if not version:
        raise HandshakeError(400, "missing Sec-WebSocket-Version header")
    if version != "13":
        raise HandshakeError(
            426,
            f"WebSocket version {version[:16]!r} is not supported, only 13",
            (("Sec-WebSocket-Version", "13"), ("Upgrade", "websocket")),
        )
    return accept_key(keys[0])


def offered_subprotocols(request: UpgradeRequest) -> list[str]:
    """The subprotocols the client offered, in its order."""
    offered: list[str] = []
    for value in request.headers.get("sec-websocket-protocol", []):
        offered.extend(name.strip() for name in value.split(",") if name.strip())
    return offered


_SWITCHING = (
    b"HTTP/1.1 101 Switching Protocols\r\n"
    b"Upgrade: websocket\r\n"
    b"Connection: Upgrade\r\n"
    b"Sec-WebSocket-Accept: "
)
_SUBPROTOCOL = b"\r\nSec-WebSocket-Protocol: "


def switching(accept: str, subprotocol: str | None) -> bytes:
    """The ``101 Switching Protocols`` response: a template with the accept key and the
    subprotocol filled in (one per connection, so no general response builder)."""
    if subprotocol:
        return b"".join(
            (_SWITCHING, accept.encode(), _SUBPROTOCOL, subprotocol.encode("latin-1"), _END)
        )
    return _SWITCHING + accept.encode() + _END


def refusal(status: int, text: str, headers: tuple[tuple[str, str], ...] = ()) -> bytes:
    """A plain-text response that refuses the upgrade and closes the connection."""
    body = (text + "\n").encode()
    lines = [
        f"HTTP/1.1 {status} {HTTPStatus(status).phrase}",
        "Content-Type: text/plain; charset=utf-8",
        f"Content-Length: {len(body)}",
        "Connection: close",
        *(f"{name}: {value}" for name, value in headers),
    ]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body
