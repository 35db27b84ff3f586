"""Finding the node behind the ASGI app uvicorn serves.

The protocol classes uvicorn builds per connection (the native WebSocket transport, the HTTP
guard) get uvicorn's config, not the node: they look it up here. A module of its own so that
those transports and :mod:`hubbub.transports.serving`, which names them, do not import each
other.
"""

from __future__ import annotations

from typing import Any

from hubbub.node import Node

_last_found: tuple[Any, Node] | None = None


def node_of(app: Any) -> Node | None:
    """The node behind the app uvicorn serves (hubbub's app, perhaps wrapped in uvicorn's
    middleware, each holding the next one as ``app``), or None. Asked once per connection:
    the last answer is kept."""
    global _last_found
    found = _last_found
    if found is not None and found[0] is app:
        return found[1]
    start = app
    for _ in range(16):
        node = getattr(getattr(app, "state", None), "node", None)
        if isinstance(node, Node):
            _last_found = (start, node)
            return node
        app = getattr(app, "app", None)
        if app is None:
            break
    return None
