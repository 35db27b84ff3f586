"""The HTTP endpoint of the server API: ``POST {prefix}/{method}`` with an API key.

Authentication: header ``X-API-Key: <key>``, or ``Authorization: apikey <key>``; a missing or
wrong key is 401 with an empty body. Keys are compared in constant time. Without a configured
key the API is off (404) unless ``http_api.insecure`` is set.

The body is JSON, sent as ``Content-Type: application/json``; a request a web page could forge
(another type, from an origin that is not allowed) is 415, see :mod:`hubbub.api.guard`.

Replies are HTTP 200 with ``{"result": …}`` or ``{"error": {"code", "message"}}`` (``batch``:
``{"replies": […]}``). A body that is not JSON is 400, a body over ``max_body_size`` is 413,
an unknown method 404; each with a one-line plain-text explanation.

With ``http_api.docs`` (on by default in development mode only) ``GET {docs_path}`` is an
interactive page of the API (Swagger UI, served from the installed ``swagger-ui-bundle``
package: the page loads nothing from elsewhere).
"""

from __future__ import annotations

import hmac
import html
import logging
from pathlib import Path

import msgspec
from starlette.requests import Request
from starlette.responses import (
    FileResponse,
    HTMLResponse,
    JSONResponse,
    PlainTextResponse,
    Response,
)
from starlette.routing import BaseRoute, Mount, Route
from starlette.staticfiles import StaticFiles

from hubbub.api.guard import forged_post_refusal
from hubbub.api.methods import InvalidJSON, ServerAPI
from hubbub.api.openapi import openapi_document
from hubbub.config import HTTPAPISettings

log = logging.getLogger("hubbub.api")

_encoder = msgspec.json.Encoder()


class _TooLarge(Exception):
    pass


def _authorized(request: Request, settings: HTTPAPISettings) -> bool:
    if settings.insecure and not settings.key:
        return True
    given = request.headers.get("x-api-key")
    if given is None:
        scheme, _, value = request.headers.get("authorization", "").partition(" ")
        if scheme.lower() != "apikey":
            return False
        given = value.strip()
    # Constant time, so response timing does not reveal how much of a guessed key was right.
    return hmac.compare_digest(given.encode(), settings.key.encode())


async def _read_body(request: Request, limit: int) -> bytes:
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise _TooLarge
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise _TooLarge
        chunks.append(chunk)
    return b"".join(chunks)


def api_routes(api: ServerAPI, settings: HTTPAPISettings) -> list[BaseRoute]:
    """The routes of the HTTP API (none when it is disabled)."""
    if not settings.enabled:
        return []
    prefix = settings.prefix.rstrip("/")
    allowed_origins = api.node.settings.client.allowed_origins

    async def endpoint(request: Request) -> Response:
        method = request.path_params["method"]
        if not _authorized(request, settings):
            api.node.counters["api.unauthorized"] += 1
            return Response(status_code=401)
        if method not in api.method_names:
            return PlainTextResponse(f"unknown API method {method!r}\n", status_code=404)
        refusal = forged_post_refusal(request.headers, allowed_origins)
        if refusal is not None:
            api.node.counters["api.unsupported_media_type"] += 1
            log.warning("api %s refused: %s", method, refusal)
            return PlainTextResponse(refusal + "\n", status_code=415)
        try:
            body = await _read_body(request, settings.max_body_size)
        except _TooLarge:
            api.node.counters["api.too_large"] += 1
            return PlainTextResponse(
                f"request body over {settings.max_body_size} bytes (http_api.max_body_size)\n",
                status_code=413,
            )
        try:
            reply = await api.call(method, body)
        except InvalidJSON as exc:
            api.node.counters["api.bad_json"] += 1
            return PlainTextResponse(f"request body is not JSON: {exc}\n", status_code=400)
        if "error" in reply:
            api.node.counters[f"api.error.{reply['error']['code']}"] += 1
            log.info("api %s: error %s", method, reply["error"]["message"])
        return Response(_encoder.encode(reply), media_type="application/json")

    async def openapi(request: Request) -> Response:
        return JSONResponse(openapi_document(prefix, api.request_types))

    async def docs_off(request: Request) -> Response:
        return PlainTextResponse("the API page is off: set http_api.docs = true\n", 404)

    routes: list[BaseRoute] = [Route(f"{prefix}/openapi.json", openapi, methods=["GET"])]
    docs_path = settings.docs_path.rstrip("/")
    if settings.docs_enabled(api.node.settings.development):
        routes += _docs_routes(docs_path, f"{prefix}/openapi.json")
    else:
        routes.append(Route(docs_path, docs_off, methods=["GET"]))
    routes.append(Route(prefix + "/{method}", endpoint, methods=["POST"]))
    return routes


# The API page's own files live with the other pages' files; Swagger UI's come from its package.
_STATIC = Path(__file__).parents[1] / "web" / "static"
_DOCS_HEADERS = {
    "cache-control": "no-cache",
    # Only this server's files; the page sends requests ("Try it out") only to this server.
    "content-security-policy": (
        "default-src 'self'; img-src 'self' data:; connect-src 'self'; "
        "frame-ancestors 'none'; base-uri 'none'; form-action 'self'"
    ),
    "x-content-type-options": "nosniff",
    "referrer-policy": "no-referrer",
}


def _docs_routes(path: str, openapi_url: str) -> list[BaseRoute]:
    """The interactive API page at ``path``: its HTML, its two files and Swagger UI's assets."""
    from swagger_ui_bundle import swagger_ui_path  # type: ignore[import-untyped]

    page = (_STATIC / "api-docs.html").read_text()
    for name, value in {"assets": f"{path}/assets", "docs": path, "openapi": openapi_url}.items():
        page = page.replace("{" + name + "}", html.escape(value, quote=True))

    async def index(request: Request) -> Response:
        return HTMLResponse(page, headers=_DOCS_HEADERS)

    async def script(request: Request) -> Response:
        return FileResponse(_STATIC / "api-docs.js", headers=_DOCS_HEADERS)

    async def style(request: Request) -> Response:
        return FileResponse(_STATIC / "api-docs.css", headers=_DOCS_HEADERS)

    return [
        Route(path, index, methods=["GET"]),
        Route(f"{path}/api-docs.js", script, methods=["GET"]),
        Route(f"{path}/api-docs.css", style, methods=["GET"]),
        Mount(f"{path}/assets", app=StaticFiles(directory=str(swagger_ui_path)), name="api-docs"),
    ]
