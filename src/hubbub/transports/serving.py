"""How hubbub's app is served by uvicorn: the options every entry point shares.

``hubbub serve``, ``hubbub.testing.run_hub`` and the test suite all serve through these, so
the transport under test is the one users run.
"""

from __future__ import annotations

from typing import Any

from hubbub.config import Settings


def uvicorn_options(settings: Settings) -> dict[str, Any]:
    """Options for ``uvicorn.Config`` besides the app, host, port and logging.

    The native transport serves the hubbub endpoint unless ``transport = "asgi"`` or
    WebSocket compression is on (which only uvicorn's own protocol implements).
    """
    from hubbub.transports.http_guard import GuardedHTTPProtocol

    options: dict[str, Any] = {
        "ws_max_size": settings.client.max_message_size,
        # Compression costs CPU per connection per message and defeats encode-once fan-out.
        "ws_per_message_deflate": settings.websocket_compression,
        "http": GuardedHTTPProtocol,
        # hubbub decides whose X-Forwarded-For to believe (limits.trusted_proxies); uvicorn's
        # own rewrite would believe it from any local process and hide the real peer.
        "proxy_headers": False,
        "backlog": settings.listen_backlog,
    }
    if settings.transport == "native" and not settings.websocket_compression:
        from hubbub.transports.native import NativeWebSocketProtocol

        options["ws"] = NativeWebSocketProtocol
    else:
        from hubbub.transports.asgi_frames import LimitedWebSocketProtocol

        options["ws"] = LimitedWebSocketProtocol
    return options
