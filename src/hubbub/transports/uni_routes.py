"""The routes of the unidirectional transports the settings enable (see
:mod:`hubbub.config_uni`: unset ``enabled`` means on in development mode only)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from starlette.routing import BaseRoute, Route, WebSocketRoute

from hubbub.transports.uni_streams import UniHTTPStreamEndpoint, UniSSEEndpoint
from hubbub.transports.uni_websocket import UniWebSocketEndpoint

if TYPE_CHECKING:
    from hubbub.node import Node


def uni_routes(node: Node) -> list[BaseRoute]:
    """``uni_websocket``, ``uni_sse`` and ``uni_http_stream``, those that are enabled."""
    settings = node.settings
    routes: list[BaseRoute] = []
    if settings.uni_websocket.serves(settings.development):
        routes.append(WebSocketRoute(settings.uni_websocket.path, UniWebSocketEndpoint(node)))
    if settings.uni_sse.serves(settings.development):
        routes.append(Route(settings.uni_sse.path, UniSSEEndpoint(node)))
    if settings.uni_http_stream.serves(settings.development):
        routes.append(Route(settings.uni_http_stream.path, UniHTTPStreamEndpoint(node)))
    return routes
