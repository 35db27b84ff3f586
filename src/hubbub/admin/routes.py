"""The console's HTTP routes, under ``admin.path`` (``/admin``):

* ``GET {path}`` the page, ``GET {path}/static/<file>`` its script, styles and the npm
  ``centrifuge`` SDK it connects with;
* ``GET {path}/api/session`` → ``{"who", "how", "csrf", "expires"}``, or 401
  ``{"error", "sign_in": [...]}`` naming the ways to sign in;
* ``POST {path}/api/sign-in`` ``{"secret"}`` (the password or the admin token) → the session,
  with its cookie; 401 wrong, 429 rate-limited (``Retry-After``);
* ``POST {path}/api/sign-out`` → ``{}``, the cookie cleared;
* ``POST {path}/api/live`` → ``{"token", "channel", "websocket", "http_stream", "sse",
  "emulation", "interval"}``: what the page connects with (``token`` null when the server has
  no HMAC secret to sign one: the page then polls ``info``);
* ``POST {path}/api/call/{method}`` → the server API's reply to ``method`` (the allow-list
  :data:`READS` and :data:`ACTIONS`), as ``POST /api/{method}`` answers it: the same code path.

Every POST needs a signed-in principal (401), ``Content-Type: application/json`` and, when
the browser sends an ``Origin``, this server's own (403), and the session's CSRF token in
``X-CSRF-Token`` (403; not for a bearer token). Each call is written to the
``hubbub.admin.audit`` log with who made it: the actions at INFO, the reads at DEBUG.
"""

from __future__ import annotations

import asyncio
import html
import logging
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import msgspec
from starlette.requests import Request
from starlette.responses import FileResponse, HTMLResponse, Response
from starlette.routing import BaseRoute, Route

from hubbub.admin import passwords
from hubbub.admin.access import Access
from hubbub.admin.live import live_channel
from hubbub.admin.sessions import COOKIE, Principal
from hubbub.api.guard import media_type
from hubbub.api.methods import InvalidJSON, ServerAPI
from hubbub.apps.http import json_response
from hubbub.auth import mint_connection_token

log = logging.getLogger("hubbub.admin")
audit = logging.getLogger("hubbub.admin.audit")

READS = frozenset(
    {
        "info",
        "channels",
        "presence",
        "presence_stats",
        "history",
        "chat_rooms",
        "chat_history",
        "user_connections",
        "notifications_recent",
    }
)
ACTIONS = frozenset(
    {"publish", "broadcast", "subscribe", "unsubscribe", "disconnect", "refresh", "history_remove"}
)
LIVE_TOKEN_TTL = 600.0
MAX_SECRET = 1024

STATIC = Path(__file__).parents[1] / "web" / "static"
_FILES = {
    "admin.js": STATIC / "admin.js",
    "admin.css": STATIC / "admin.css",
    "centrifuge.js": STATIC / "vendor" / "centrifuge.js",
}
HEADERS = {
    "cache-control": "no-store",
    # Only this server's files; connections only to this server (its WebSocket and streams).
    "content-security-policy": (
        "default-src 'self'; img-src 'self' data:; connect-src 'self'; "
        "frame-ancestors 'none'; base-uri 'none'; form-action 'self'"
    ),
    "x-content-type-options": "nosniff",
    "referrer-policy": "no-referrer",
    "x-frame-options": "DENY",
}


class _SignIn(msgspec.Struct, forbid_unknown_fields=True):
    secret: str


def _error(status: int, code: int, message: str, **extra: Any) -> Response:
    response = json_response({"error": {"code": code, "message": message}, **extra}, status)
    response.headers.update(HEADERS)
    return response


def _summary(body: bytes) -> str:
    """The parts of a call's body worth an audit line: whom and where, never the payload."""
    try:
        fields = msgspec.json.decode(body or b"{}")
    except (msgspec.DecodeError, RecursionError, UnicodeDecodeError):
        return "(not JSON)"
    if not isinstance(fields, dict):
        return ""
    parts = []
    for name in ("channel", "channels", "user", "client", "pattern", "room"):
        if name in fields:
            parts.append(f"{name}={str(fields[name])[:200]!r}")
    return " ".join(parts)


class AdminRoutes:
    """The console's endpoints for one node's API.

    Args:
        api: the server API the console calls (the one ``/api`` serves).
        access: who requests are.
    """

    def __init__(self, api: ServerAPI, access: Access) -> None:
        self.api = api
        self.node = api.node
        self.access = access
        self.settings = api.node.settings.admin
        self._page: str | None = None

    # -----------------------------------------------------------------------------------------
    # Checks

    def _https(self, request: Request) -> bool:
        if request.url.scheme == "https":
            return True
        proto = request.headers.get("x-forwarded-proto", "").lower()
        return proto == "https" and self.access.from_trusted_proxy(request)

    def _post_refusal(self, request: Request) -> Response | None:
        """Refuse what a browser on another site could send (a forged request)."""
        if media_type(request.headers) != "application/json":
            return _error(415, 107, "send the body as Content-Type: application/json")
        origin = request.headers.get("origin", "")
        if origin and urlsplit(origin).netloc.lower() != request.headers.get("host", "").lower():
            self.node.counters["admin.foreign_origin"] += 1
            log.warning("admin: POST %s from origin %r refused", request.url.path, origin)
            return _error(403, 103, "permission denied: another origin")
        return None

    def _signed_in(self, request: Request) -> Principal | Response:
        principal = self.access.principal(request)
        if principal is None:
            self.node.counters["admin.unauthorized"] += 1
            return _error(401, 101, "unauthorized: sign in", sign_in=self._ways())
        refusal = self._post_refusal(request)
        if refusal is not None:
            return refusal
        if not self.access.keys.csrf_ok(principal, request.headers.get("x-csrf-token", "")):
            self.node.counters["admin.csrf"] += 1
            log.warning("admin: %s without its CSRF token refused", request.url.path)
            return _error(403, 103, "permission denied: missing or wrong CSRF token")
        return principal

    def _ways(self) -> list[str]:
        ways = []
        if self.settings.password_hash:
            ways.append("password")
        if self.settings.token_hash:
            ways.append("token")
        if self.settings.proxy_user_header:
            ways.append("proxy")
        return ways

    async def _body(self, request: Request) -> bytes | None:
        limit = self.node.settings.http_api.max_body_size
        declared = request.headers.get("content-length", "")
        if declared.isdigit() and int(declared) > limit:
            return None
        chunks, size = [], 0
        async for chunk in request.stream():
            size += len(chunk)
            if size > limit:
                return None
            chunks.append(chunk)
        return b"".join(chunks)

    @staticmethod
    def _session_body(principal: Principal) -> dict[str, Any]:
        return {
            "who": principal.who,
            "how": principal.how,
            "csrf": principal.csrf,
            "expires": principal.expires,
        }

    # -----------------------------------------------------------------------------------------
    # Endpoints

    async def page(self, request: Request) -> Response:
        if self._page is None:
            text = (STATIC / "admin.html").read_text()
            self._page = text.replace("{base}", html.escape(self.settings.path, quote=True))
        return HTMLResponse(self._page, headers=HEADERS)

    async def static(self, request: Request) -> Response:
        path = _FILES.get(request.path_params["name"])
        if path is None:
            return Response(status_code=404)
        return FileResponse(path, headers={**HEADERS, "cache-control": "no-cache"})

    async def session(self, request: Request) -> Response:
        principal = self.access.principal(request)
        if principal is None:
            return _error(401, 101, "unauthorized: sign in", sign_in=self._ways())
        return json_response(self._session_body(principal))

    async def sign_in(self, request: Request) -> Response:
        refusal = self._post_refusal(request)
        if refusal is not None:
            return refusal
        address = self.access.address(request)
        refused = self.access.limiter.allow(address)
        if refused:
            self.node.counters["admin.sign_in_limited"] += 1
            response = _error(429, 111, "too many requests: too many sign-in attempts")
            response.headers["retry-after"] = "60"
            return response
        body = await self._body(request)
        try:
            secret = msgspec.json.decode(body or b"", type=_SignIn).secret
        except (msgspec.DecodeError, msgspec.ValidationError, RecursionError):
            self.node.metrics_bad_input(107)
            return _error(400, 107, 'bad request: send {"secret": "<password or token>"}')
        how = await self._check_secret(secret[:MAX_SECRET])
        if not how:
            self.node.counters["admin.sign_in_failed"] += 1
            audit.warning("admin sign-in failed from %s", address)
            return _error(401, 101, "unauthorized: wrong password or token", sign_in=self._ways())
        cookie, principal = self.access.keys.issue("admin", how, self.node.clock.time())
        audit.info("admin signed in with the %s from %s", how, address)
        response = json_response(self._session_body(principal))
        response.set_cookie(
            COOKIE,
            cookie,
            max_age=int(self.settings.session_ttl),
            path=self.settings.path,
            secure=self._https(request),
            httponly=True,
            samesite="strict",
        )
        response.headers.update(HEADERS)
        return response

    async def _check_secret(self, secret: str) -> str:
        """``password``, ``token`` or "" (wrong); scrypt runs in a thread."""
        checks: tuple[tuple[str, str], ...] = (
            ("password", self.settings.password_hash),
            ("token", self.settings.token_hash),
        )
        for how, stored in checks:
            if not stored:
                continue
            matched: bool = await asyncio.to_thread(passwords.verify, secret, stored)
            if matched:
                return how
        return ""

    async def sign_out(self, request: Request) -> Response:
        principal = self._signed_in(request)
        if isinstance(principal, Response):
            return principal
        audit.info("admin %s (%s) signed out", principal.who, principal.how)
        response = json_response({})
        response.delete_cookie(COOKIE, path=self.settings.path, httponly=True, samesite="strict")
        return response

    async def live(self, request: Request) -> Response:
        principal = self._signed_in(request)
        if isinstance(principal, Response):
            return principal
        settings = self.node.settings
        token = None
        if settings.token.hmac_secret_key and settings.channel.private_prefix:
            token = mint_connection_token(
                settings.token.hmac_secret_key,
                "",  # no user: an admin connection is nobody's connection
                ttl=LIVE_TOKEN_TTL,
                channels=[live_channel(self.node)],
                info={"admin": principal.who},
                audience=settings.token.audience,
                issuer=settings.token.issuer,
            )
        streams = settings.http_stream, settings.sse
        return json_response(
            {
                "token": token,
                "channel": live_channel(self.node),
                "websocket": settings.websocket_path,
                "http_stream": settings.http_stream.path if settings.http_stream.enabled else None,
                "sse": settings.sse.path if settings.sse.enabled else None,
                "emulation": settings.emulation.path if any(s.enabled for s in streams) else None,
                "interval": self.settings.live_interval,
            }
        )

    async def call(self, request: Request) -> Response:
        method = request.path_params["method"]
        principal = self._signed_in(request)
        if isinstance(principal, Response):
            return principal
        if method not in READS and method not in ACTIONS:
            return _error(404, 104, f"not found: the console does not call {method!r}")
        if method not in self.api.method_names:
            return _error(404, 108, f"not available: {method!r} is off on this server")
        body = await self._body(request)
        if body is None:
            return _error(413, 107, "bad request: body over http_api.max_body_size")
        who = f"{principal.who} ({principal.how}) from {self.access.address(request)}"
        try:
            reply = await self.api.call(method, body)
        except InvalidJSON:
            self.node.metrics_bad_input(107)
            return _error(400, 107, "bad request: the body is not JSON")
        outcome = "ok"
        if "error" in reply:
            outcome = f"error {reply['error']['code']} {reply['error']['message']}"
        level = logging.INFO if method in ACTIONS else logging.DEBUG
        audit.log(level, "admin %s: %s %s -> %s", who, method, _summary(body), outcome)
        return json_response(reply)

    def routes(self) -> list[BaseRoute]:
        path = self.settings.path
        return [
            Route(path, self.page, methods=["GET"]),
            Route(f"{path}/static/{{name}}", self.static, methods=["GET"]),
            Route(f"{path}/api/session", self.session, methods=["GET"]),
            Route(f"{path}/api/sign-in", self.sign_in, methods=["POST"]),
            Route(f"{path}/api/sign-out", self.sign_out, methods=["POST"]),
            Route(f"{path}/api/live", self.live, methods=["POST"]),
            Route(f"{path}/api/call/{{method}}", self.call, methods=["POST"]),
        ]
