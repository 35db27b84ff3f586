"""What the applications' HTTP routes share: the user's token, errors, query parameters.

User routes authenticate with the user's connection token (the same JWT the WebSocket
connect uses) in ``Authorization: Bearer <token>``; a missing, invalid or expired token is 401.
Errors are ``{"error": {"code", "message"}}`` with the status of :func:`http_status`.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Any

import msgspec
from starlette.requests import Request
from starlette.responses import Response

from hubbub.apps.errors import bad_request, error_body, http_status
from hubbub.auth import TokenError
from hubbub.node import Node
from hubbub.protocol.codes import ErrorCode, ProtocolError, error

log = logging.getLogger("hubbub.apps")

_encoder = msgspec.json.Encoder()
MAX_BODY = 64 * 1024


def json_response(body: object, status: int = 200) -> Response:
    """A JSON response encoded with msgspec (so embedded raw JSON stays as it is)."""
    return Response(_encoder.encode(body), status_code=status, media_type="application/json")


def error_response(exc: ProtocolError) -> Response:
    return json_response(error_body(exc), http_status(exc))


def request_user(request: Request, node: Node) -> str:
    """The user of the request's bearer token.

    Raises:
        ProtocolError: 101 no token, or one that is invalid or expired.
    """
    scheme, _, token = request.headers.get("authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise error(ErrorCode.UNAUTHORIZED, "unauthorized: send 'Authorization: Bearer <token>'")
    try:
        claims = node.verifier.verify_connection(token.strip())
    except TokenError as exc:
        raise error(ErrorCode.UNAUTHORIZED, f"unauthorized: {exc}") from None
    if not claims.user:
        raise error(ErrorCode.UNAUTHORIZED, "unauthorized: the token names no user")
    return claims.user


def query_int(request: Request, name: str) -> int | None:
    """Optional integer query parameter ``name``. Raises 107 when it is not an integer."""
    value = request.query_params.get(name)
    if value is None or value == "":
        return None
    try:
        return int(value)
    except ValueError:
        raise bad_request(f"{name} must be an integer") from None


async def read_json(request: Request) -> bytes:
    """The request body (at most 64 KiB). Raises 107 when it is larger."""
    body = await request.body()
    if len(body) > MAX_BODY:
        raise bad_request(f"request body over {MAX_BODY} bytes")
    return body


Endpoint = Callable[[Request], Awaitable[Response]]


def guarded(node: Node, handler: Callable[[Request], Awaitable[Any]]) -> Endpoint:
    """An endpoint running ``handler``: its result as JSON, a :class:`ProtocolError` as an
    error response, anything else as a logged 500 (never a traceback to the client)."""

    async def endpoint(request: Request) -> Response:
        try:
            return json_response(await handler(request))
        except ProtocolError as exc:
            node.counters[f"app.error.{exc.code}"] += 1
            return error_response(exc)
        except Exception:
            log.exception("%s %s failed", request.method, request.url.path)
            return error_response(error(ErrorCode.INTERNAL))

    return endpoint
