"""Routes of the web pages: the chat page at ``/``, its static files, and what it asks for.

* ``GET /`` → the chat page; ``GET /static/...`` → its script, styles and the npm
  ``centrifuge`` SDK's browser build (``/static/vendor/centrifuge.js``, ``make vendor-js``).
* ``GET /web/config`` → ``{"websocket", "http_stream", "sse", "emulation", "development"}``:
  the paths the page's client connects to (``http_stream`` and ``sse`` null when off).
* ``POST /web/token`` ``{"user": "alice"}`` → ``{"user", "token"}``: development mode only
  (404 otherwise): anyone may be anyone there. In production the application that embeds the
  page hands it a token in the URL fragment (``/#token=…``).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import msgspec
from starlette.requests import Request
from starlette.responses import FileResponse, Response
from starlette.routing import BaseRoute, Mount, Route
from starlette.staticfiles import StaticFiles

from hubbub.apps.errors import bad_request, decode_args
from hubbub.apps.http import guarded, read_json
from hubbub.auth import mint_connection_token
from hubbub.node import Node

STATIC = Path(__file__).parent / "static"
DEV_TOKEN_TTL = 24 * 3600.0
_USER = re.compile(r"^[-a-zA-Z0-9_.]{1,32}$")


class _TokenRequest(msgspec.Struct, forbid_unknown_fields=True):
    user: str


class _Static(StaticFiles):
    """Static files that browsers revalidate, so a new version is never hidden by a cache."""

    def file_response(self, *args: Any, **kwargs: Any) -> Response:
        response = super().file_response(*args, **kwargs)
        response.headers["cache-control"] = "no-cache"
        return response


def page_routes(node: Node) -> list[BaseRoute]:
    """The routes of the pages, for the node's settings."""
    settings = node.settings
    headers = {
        "cache-control": "no-cache",
        # The page loads only its own files and talks only to its own server: its WebSocket
        # (CSP 3 matches ws:/wss: of the page's own host with 'self'; a browser that does not
        # falls back to HTTP streaming), the HTTP-streaming and SSE endpoints and /emulation.
        "content-security-policy": (
            "default-src 'self'; img-src 'self' data:; connect-src 'self'; "
            "frame-ancestors 'none'; base-uri 'none'; form-action 'self'"
        ),
        "x-content-type-options": "nosniff",
        "referrer-policy": "no-referrer",
    }

    async def index(request: Request) -> Response:
        return FileResponse(STATIC / "index.html", headers=headers)

    streams = settings.http_stream, settings.sse
    page_config = {
        "websocket": settings.websocket_path,
        "http_stream": settings.http_stream.path if settings.http_stream.enabled else None,
        "sse": settings.sse.path if settings.sse.enabled else None,
        "emulation": settings.emulation.path if any(s.enabled for s in streams) else None,
        "development": settings.development,
    }

    async def config(request: Request) -> dict[str, Any]:
        return page_config

    async def token(request: Request) -> dict[str, Any]:
        args = decode_args(await read_json(request), _TokenRequest)
        user = args.user.strip()
        if not _USER.match(user):
            raise bad_request("a name is 1-32 letters, digits, '-', '_' or '.'")
        cfg = settings.token
        token = mint_connection_token(
            cfg.hmac_secret_key,
            user,
            ttl=DEV_TOKEN_TTL,
            audience=cfg.audience,
            issuer=cfg.issuer,
        )
        return {"user": user, "token": token}

    routes: list[BaseRoute] = [
        Route("/", index, methods=["GET"]),
        Route("/web/config", guarded(node, config), methods=["GET"]),
        Mount("/static", app=_Static(directory=STATIC), name="static"),
    ]
    if settings.development and settings.token.hmac_secret_key:
        routes.append(Route("/web/token", guarded(node, token), methods=["POST"]))
    return routes
