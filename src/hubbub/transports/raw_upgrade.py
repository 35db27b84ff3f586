"""Recognising an upgrade to the native transport's path from the raw bytes of a request head.

A WebSocket connection to the hubbub endpoint is one request head and then frames. Parsing that
head with httptools, building an ASGI scope for it and rebuilding the head for the WebSocket
protocol is a good part of what a connection costs to set up. :func:`judge` decides, from the
bytes received so far, whether the first request on a connection is such an upgrade, strictly:
only a head any HTTP parser would read the same way is taken (``GET`` on exactly the path,
``HTTP/1.1``, CRLF line ends, token header names, printable values, ``Connection: upgrade``,
``Upgrade: websocket``, no body headers). Anything else, well-formed or not, is left to the
HTTP parser, which answers it exactly as it would have without this.
"""

from __future__ import annotations

import re
from typing import Any, Final

HELD: Final = "held"
"""The head is not complete and may still be an upgrade to the path: keep the bytes back."""
TAKE: Final = "take"
"""The head is complete (the bytes hold it and perhaps frames after it) and is an upgrade."""
PASS: Final = "pass"
"""Not for the shorter way: give every byte held back to the HTTP parser."""

_TOKEN = rb"[!#$%&'*+\-.^_`|~0-9A-Za-z]+"
_VALUE = rb"[\t\x20-\x7e]*"
_HEADERS = re.compile(rb"(?:" + _TOKEN + rb":" + _VALUE + rb"\r\n)*")
_LINE = re.compile(rb"GET ([!-~]+) HTTP/1\.1\r\n")
_HEAD = re.compile(_LINE.pattern + _HEADERS.pattern + rb"\r\n")
_PARTIAL = re.compile(_VALUE + rb"\r?")
_END = b"\r\n\r\n"
# Header lines found in a head already known to be well-formed (each after a line end).
_CONNECTION = re.compile(rb"\r\nconnection:([^\r]*)", re.IGNORECASE)
_UPGRADE = re.compile(rb"\r\nupgrade:([^\r]*)", re.IGNORECASE)
# Headers that announce a body: a request with one is not a plain upgrade.
_BODY = re.compile(rb"\r\n(?:content-length|transfer-encoding):", re.IGNORECASE)


def address(info: Any) -> tuple[str, int | None] | None:
    """A socket address as uvicorn's scopes hold it: ``(host, port)`` for IP sockets, the path
    and None for Unix sockets, None when unknown."""
    if isinstance(info, tuple) and len(info) >= 2:
        return (str(info[0]), int(info[1]))
    if isinstance(info, str):
        return (info, None)
    return None


def peer_address(info: Any) -> tuple[str, int] | None:
    """The peer's address as uvicorn's scopes hold it: ``(host, port)`` for IP sockets, None
    otherwise (Unix sockets, unknown)."""
    if isinstance(info, tuple) and len(info) >= 2:
        return (str(info[0]), int(info[1]))
    return None


def judge(data: bytes, path: bytes) -> str:
    """Whether ``data``, the first bytes of a connection, is an upgrade to ``path``.

    Returns :data:`HELD`, :data:`TAKE` or :data:`PASS`. :data:`HELD` only while every complete
    line is well-formed and the first line is (or can still become) ``GET`` of ``path``, so a
    malformed request reaches the HTTP parser as soon as it is malformed.
    """
    end = data.find(_END)
    if end < 0:
        return _judge_partial(data, path)
    # The usual case, the whole head in one read: checked by one match, not line by line.
    head = _HEAD.fullmatch(data, 0, end + 4)
    if head is None:
        return PASS
    target = head.group(1)
    if target != path and not target.startswith(path + b"?"):
        return PASS
    block = data[head.end(1) : end + 2]
    if _BODY.search(block):
        return PASS
    # What uvicorn asks of an upgrade: its last Connection header lists "upgrade" and its last
    # Upgrade header is "websocket".
    connection = _CONNECTION.findall(block)
    upgrade = _UPGRADE.findall(block)
    if not connection or not upgrade:
        return PASS
    tokens = [token.strip().lower() for token in connection[-1].split(b",")]
    if b"upgrade" not in tokens or upgrade[-1].lstrip(b" \t").lower() != b"websocket":
        return PASS
    return TAKE


def _judge_partial(data: bytes, path: bytes) -> str:
    """:func:`judge` of a head that is not complete yet: HELD or PASS."""
    line_end = data.find(b"\r\n")
    if line_end < 0:
        start = b"GET " + path
        if start.startswith(data):
            return HELD
        if data.startswith(start) and data[len(start) : len(start) + 1] in (b" ", b"?"):
            return HELD if _PARTIAL.fullmatch(data) else PASS
        return PASS
    line = _LINE.match(data)
    if line is None:
        return PASS
    target = line.group(1)
    if target != path and not target.startswith(path + b"?"):
        return PASS
    stop = data.rfind(b"\r\n") + 2
    if not _HEADERS.fullmatch(data, line.end(), stop):
        return PASS
    return HELD if _PARTIAL.fullmatch(data, stop) else PASS
