"""The notification HTTP routes for users (bearer token: the user's own inbox).

* ``GET /notifications?limit=&before=&unread_only=1`` → ``{"notifications": [...], "unread": n}``
  newest first; pass the smallest id you have as ``before`` to page.
* ``GET /notifications/unread`` → ``{"unread": n}``
* ``POST /notifications/read`` with ``{"ids": [...]}`` or ``{"all": true}`` →
  ``{"read": [ids that changed], "unread": n}``; the user's open tabs are told. The body is
  sent as ``Content-Type: application/json``; what a web page could forge is 415 (the rule of
  :mod:`hubbub.api.guard`).
"""

from __future__ import annotations

import logging
from typing import Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from hubbub.api.guard import forged_post_refusal
from hubbub.apps.errors import bad_request, decode_args, error_body
from hubbub.apps.http import Endpoint, guarded, json_response, query_int, read_json, request_user
from hubbub.apps.notify.rpc import ReadArgs
from hubbub.apps.notify.service import NotificationService, notification_view

log = logging.getLogger("hubbub.apps")


def notification_routes(service: NotificationService) -> list[BaseRoute]:
    """The routes, to mount at the site's root."""
    node = service.node

    async def listing(request: Request) -> dict[str, Any]:
        user = request_user(request, node)
        unread_only = request.query_params.get("unread_only", "") in ("1", "true", "yes")
        notes, unread = await service.inbox(
            user,
            limit=query_int(request, "limit"),
            before=query_int(request, "before"),
            unread_only=unread_only,
        )
        return {"notifications": [notification_view(n) for n in notes], "unread": unread}

    async def unread(request: Request) -> dict[str, Any]:
        return {"unread": await service.unread(request_user(request, node))}

    async def read(request: Request) -> dict[str, Any]:
        user = request_user(request, node)
        args = decode_args(await read_json(request), ReadArgs)
        changed, count = await service.mark_read(user, args.target())
        return {"read": changed, "unread": count}

    return [
        Route("/notifications", guarded(node, listing), methods=["GET"]),
        Route("/notifications/unread", guarded(node, unread), methods=["GET"]),
        Route("/notifications/read", _unforgeable(service, guarded(node, read)), methods=["POST"]),
    ]


def _unforgeable(service: NotificationService, endpoint: Endpoint) -> Endpoint:
    """``endpoint``, behind the check that refuses a POST a web page could forge (415)."""
    node = service.node

    async def checked(request: Request) -> Response:
        refusal = forged_post_refusal(request.headers, node.settings.client.allowed_origins)
        if refusal is None:
            return await endpoint(request)
        node.counters["api.unsupported_media_type"] += 1
        log.warning("%s %s refused: %s", request.method, request.url.path, refusal)
        return json_response(error_body(bad_request(refusal)), 415)

    return checked
