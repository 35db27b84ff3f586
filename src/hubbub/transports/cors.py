"""CORS for the HTTP transports (streams and ``/emulation``): which headers a browser needs to
read a response of another origin, and the answer to its preflight.

Whether an origin is allowed is the admission policy's rule
(:func:`hubbub.transports.admission.origin_allowed`, ``client.allowed_origins``); here only
the headers: an allowed ``Origin`` is echoed with credentials allowed, and the headers the
preflight asked for are allowed.
"""

from __future__ import annotations

from collections.abc import Iterable

Headers = list[tuple[bytes, bytes]]

PREFLIGHT_MAX_AGE = b"300"
"""Seconds a browser may cache a preflight answer (Centrifugo's value)."""


def header(headers: Iterable[tuple[bytes, bytes]], name: bytes) -> str:
    """The first value of header ``name`` (lower case) in ASGI ``headers``, or ""."""
    for key, value in headers:
        if key == name:
            return bytes(value).decode("latin-1")
    return ""


def cors_headers(origin: str, requested_headers: str) -> Headers:
    """The CORS headers of a response to an allowed request from ``origin`` (none without
    an Origin: not a cross-origin browser request)."""
    if not origin:
        return []
    headers = [
        (b"access-control-allow-origin", origin.encode("latin-1")),
        (b"access-control-allow-credentials", b"true"),
        (b"vary", b"Origin"),
    ]
    if requested_headers and requested_headers != "null":
        headers.append((b"access-control-allow-headers", requested_headers.encode("latin-1")))
    return headers


def preflight_headers(origin: str, requested_headers: str) -> Headers:
    """The headers of the 204 answer to an ``OPTIONS`` preflight."""
    return [
        *cors_headers(origin, requested_headers),
        (b"access-control-allow-methods", b"POST, OPTIONS"),
        (b"access-control-max-age", PREFLIGHT_MAX_AGE),
    ]
