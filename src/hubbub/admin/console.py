"""How the admin console is wired into the server app: its routes, the live numbers while the
hub runs, and the API methods it adds."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import Any

from starlette.routing import BaseRoute

from hubbub.admin.access import Access
from hubbub.admin.live import LiveNumbers
from hubbub.admin.methods import register_admin_methods
from hubbub.admin.routes import AdminRoutes
from hubbub.api.methods import ServerAPI
from hubbub.hub import Hub

Lifespan = Callable[[Any], AbstractAsyncContextManager[None]]


class AdminConsole:
    """The console of one hub, serving through ``api``.

    Args:
        hub: the hub (its node, and its store for the live store health and the
            notification list).
        api: the server API the console's actions go through.
    """

    def __init__(self, hub: Hub, api: ServerAPI) -> None:
        node = hub.node
        register_admin_methods(api, hub.store, hub.notifications is not None)
        self.access = Access(node.settings, node.clock)
        self._routes = AdminRoutes(api, self.access)
        self.live = LiveNumbers(node, hub.store)

    @classmethod
    def create(cls, hub: Hub, api: ServerAPI) -> AdminConsole | None:
        """The console when ``[admin] enabled``, else None."""
        return cls(hub, api) if hub.node.settings.admin.enabled else None

    def routes(self) -> list[BaseRoute]:
        return self._routes.routes()

    def lifespan(self, inner: Lifespan) -> Lifespan:
        """``inner`` (the hub's lifespan) with the live numbers published while it runs."""

        @asynccontextmanager
        async def lifespan(app: Any) -> AsyncIterator[None]:
            async with inner(app):
                self.live.start()
                try:
                    yield
                finally:
                    await self.live.stop()

        return lifespan
