"""The notification HTTP routes for users (bearer token: the user's own inbox).

* ``GET /notifications?limit=&before=&unread_only=1`` → ``{"notifications": [...], "unread": n}``
  newest first; pass the smallest id you have as ``before`` to page.
* ``GET /notifications/unread`` → ``{"unread": n}``
* ``POST /notifications/read`` with ``{"ids": [...]}`` or ``{"all": true}`` →
  ``{"read": [ids that changed], "unread": n}``; the user's open tabs are told.
"""

from __future__ import annotations

from typing import Any

from starlette.requests import Request
from starlette.routing import BaseRoute, Route

from hubbub.apps.errors import decode_args
from hubbub.apps.http import guarded, query_int, read_json, request_user
from hubbub.apps.notify.rpc import ReadArgs
from hubbub.apps.notify.service import NotificationService, notification_view


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
        Route("/notifications/read", guarded(node, read), methods=["POST"]),
    ]
