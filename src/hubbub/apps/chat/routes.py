"""The chat's HTTP routes for users (bearer token): rooms, history pages, who is online.

* ``GET /chat/rooms?after=&limit=`` → ``{"rooms": [{"name", "channel", "messages", "online",
  ...}], "next", "total"}``: one page sorted by name; pass ``next`` as ``after`` for the next.
* ``GET /chat/rooms/{room}/messages?limit=&before=`` → ``{"messages": [...]}`` oldest first;
  pass the smallest id you have as ``before`` to page backwards.
* ``GET /chat/rooms/{room}/online`` → ``{"users": [...]}``
"""

from __future__ import annotations

from typing import Any

from starlette.requests import Request
from starlette.routing import BaseRoute, Route

from hubbub.apps.chat.service import ChatService, message_view
from hubbub.apps.http import guarded, query_int, request_user


def chat_routes(chat: ChatService) -> list[BaseRoute]:
    """The routes, to mount at the site's root."""
    node = chat.node

    async def rooms(request: Request) -> dict[str, Any]:
        request_user(request, node)
        page = await chat.room_page(
            after=request.query_params.get("after", ""), limit=query_int(request, "limit")
        )
        return page.as_dict()

    async def messages(request: Request) -> dict[str, Any]:
        request_user(request, node)
        msgs = await chat.history(
            request.path_params["room"],
            limit=query_int(request, "limit"),
            before=query_int(request, "before"),
        )
        return {"messages": [message_view(m) for m in msgs]}

    async def online(request: Request) -> dict[str, Any]:
        request_user(request, node)
        return {"users": await chat.online(request.path_params["room"])}

    return [
        Route("/chat/rooms", guarded(node, rooms), methods=["GET"]),
        Route("/chat/rooms/{room}/messages", guarded(node, messages), methods=["GET"]),
        Route("/chat/rooms/{room}/online", guarded(node, online), methods=["GET"]),
    ]
