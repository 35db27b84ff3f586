"""``hubbub serve`` with two more routes: WebSocket echoes at ``/autobahn`` (through the ASGI app,
served by uvicorn's WebSocket protocol) and ``/autobahn-native`` (the native transport).

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
from websockets.frames import Opcode

import hubbub.app
from hubbub.cli import main
from hubbub.transports import native
from hubbub.transports.flush import frame
from hubbub.transports.native import NativeWebSocketProtocol

ECHO_PATH = "/autobahn"
NATIVE_ECHO_PATH = "/autobahn-native"

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


class NativeEcho(NativeWebSocketProtocol):
    """The native transport, serving one more path on which every complete message is sent
    back as it came instead of going to a session. Handshake, parsing, fragments, UTF-8
    checks, control frames, the close handshake and outgoing framing are the transport's own;
    only the hand-off of a message differs."""

    __slots__ = ("_echo",)

    def _serves(self, path: str) -> bool:
        self._echo = path == NATIVE_ECHO_PATH
        return self._echo or super()._serves(path)

    def _accepts(self, opcode: Opcode) -> bool:
        return True if self._echo else super()._accepts(opcode)

    def _message(self, opcode: Opcode, data: bytes) -> None:
        if not self._echo:
            super()._message(opcode, data)
        elif not self.closing and self._transport is not None:
            self._transport.write(frame(opcode.value, data))


if __name__ == "__main__":
    # ``hubbub serve`` looks create_app and the transport up when it starts serving, so it
    # builds these.
    hubbub.app.create_app = create_app_with_echo
    native.NativeWebSocketProtocol = NativeEcho  # type: ignore[misc]
    sys.exit(main(sys.argv[1:]))
