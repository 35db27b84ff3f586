"""The standalone server application: the WebSocket endpoint plus health routes.

``create_app(settings)`` builds a Starlette app around one :class:`~hubbub.node.Node`; the node
is reachable as ``app.state.node``. Applications that have their own FastAPI/Starlette app
mount :class:`~hubbub.transports.asgi.WebSocketEndpoint` instead (see ``examples/``).
"""

from __future__ import annotations

import os

from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import BaseRoute, Route, WebSocketRoute

from hubbub import logs
from hubbub.admin.console import AdminConsole
from hubbub.api.http import api_routes
from hubbub.api.methods import ServerAPI
from hubbub.apps.api import register_chat, register_notify
from hubbub.apps.chat.routes import chat_routes
from hubbub.apps.notify.routes import notification_routes
from hubbub.config import Settings
from hubbub.hub import Hub
from hubbub.metrics import registry_for
from hubbub.node import Node
from hubbub.transports.asgi import WebSocketEndpoint
from hubbub.transports.emulation import emulation_routes
from hubbub.transports.tutorial import TutorialEndpoint
from hubbub.transports.uni_routes import uni_routes
from hubbub.web import page_routes

SETTINGS_ENV = "HUBBUB_SETTINGS_JSON"
"""Environment variable through which ``hubbub serve --workers N`` hands its settings to the
worker processes."""


def app_from_environment() -> Starlette:
    """The app of one worker of ``hubbub serve --workers N``."""
    settings = Settings.model_validate_json(os.environ[SETTINGS_ENV])
    logs.configure(settings.log_level, settings.log_format)
    return create_app(settings)


def create_app(
    settings: Settings | None = None, *, node: Node | None = None, hub: Hub | None = None
) -> Starlette:
    """Build the server app: the WebSocket endpoint, the HTTP API, health and metrics, the
    chat and notification applications and their pages (as the settings enable them).

    Pass ``node`` or ``hub`` to serve an existing one (it is started and closed with the app's
    lifespan). The hub is ``app.state.hub``, its node ``app.state.node``.
    """
    hub = hub or Hub(settings, node=node)
    node = hub.node

    async def healthz(request: Request) -> Response:
        return PlainTextResponse("ok")

    async def readyz(request: Request) -> Response:
        ready = node.ready
        return JSONResponse(
            {"ready": ready, "node": node.name, "engine": node.settings.engine},
            status_code=200 if ready else 503,
        )

    registry = registry_for(node)

    async def metrics(request: Request) -> Response:
        return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)

    async def info(request: Request) -> Response:
        info = node.info()[0]
        return JSONResponse(
            {
                "server": "hubbub",
                "version": node.version,
                "node": info.name,
                "websocket": node.settings.websocket_path,
                "clients": info.num_clients,
                "channels": info.num_channels,
            }
        )

    api = ServerAPI(node)
    app_routes: list[BaseRoute] = []
    if hub.chat is not None:
        register_chat(api, hub.chat)
        app_routes += chat_routes(hub.chat)
    if hub.notifications is not None:
        register_notify(api, hub.notifications)
        app_routes += notification_routes(hub.notifications)
    if hub.chat is not None:
        app_routes += page_routes(node)
    admin = AdminConsole.create(hub, api)  # None unless [admin] enabled
    if admin is not None:
        app_routes += admin.routes()
    app = Starlette(
        routes=[
            Route("/info", info),
            Route("/healthz", healthz),
            Route("/readyz", readyz),
            Route("/metrics", metrics),
            WebSocketRoute(node.settings.websocket_path, WebSocketEndpoint(node)),
            *emulation_routes(node),
            WebSocketRoute("/ws/{client_id}", TutorialEndpoint(node)),
            *uni_routes(node),
            *api_routes(api, node.settings.http_api),
            *app_routes,
        ],
        lifespan=hub.lifespan if admin is None else admin.lifespan(hub.lifespan),
    )
    app.state.hub = hub
    app.state.node = node
    app.state.api = api
    return app
