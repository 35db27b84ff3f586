"""``hubbub serve`` with one more route: a WebSocket echo at ``/autobahn``.

The Autobahn|Testsuite cases test a WebSocket implementation by having it echo every message
back; hubbub's own endpoint speaks the client protocol and would close on the first case's
payload. So this runs the real command line (``hubbub.cli.main``: the same settings, the same
uvicorn server and options, the same app with every route of ``hubbub serve``) with one plain
ASGI echo route added to the app, the way an embedding application adds its own routes. What
serves that route is whatever ``hubbub serve`` uses for WebSocket routes of the app.

Run:  python -m tests.integration.autobahn_server serve --config FILE
"""

from __future__ import annotations

import sys
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from starlette.applications import Starlette
from starlette.routing import WebSocketRoute

import hubbub.app
from hubbub.cli import main

ECHO_PATH = "/autobahn"

Message = MutableMapping[str, Any]


class Echo:
    """An ASGI app (a class, like hubbub's endpoint, so Starlette routes it as raw ASGI) that
    accepts, then sends every message back as it came: text as text, binary as binary."""

    async def __call__(
        self,
        scope: MutableMapping[str, Any],
        receive: Callable[[], Awaitable[Message]],
        send: Callable[[Message], Awaitable[None]],
    ) -> None:
        message = await receive()
        if message["type"] != "websocket.connect":
            return
        await send({"type": "websocket.accept"})
        while True:
            message = await receive()
            if message["type"] != "websocket.receive":
                return  # websocket.disconnect: the close handshake is the transport's
            if message.get("text") is not None:
                await send({"type": "websocket.send", "text": message["text"]})
            else:
                await send({"type": "websocket.send", "bytes": message["bytes"]})


_create_app = hubbub.app.create_app


def create_app_with_echo(*args: Any, **kwargs: Any) -> Starlette:
    app = _create_app(*args, **kwargs)
    app.router.routes.insert(0, WebSocketRoute(ECHO_PATH, Echo()))
    return app


if __name__ == "__main__":
    # ``hubbub serve`` looks create_app up when it starts serving, so it builds this one.
    hubbub.app.create_app = create_app_with_echo
    sys.exit(main(sys.argv[1:]))
