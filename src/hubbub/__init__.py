"""hubbub: real-time messaging for Python.

The public API: a :class:`Node` (connections, channels, publish, presence, history), its
:class:`Settings`, the ASGI :class:`WebSocketEndpoint` to mount it into any app, the
:class:`Hub` (a node with the chat and notification applications and their store),
:func:`create_app` for the standalone server, and the types the application's hooks take and
return (:class:`ConnectContext`, :class:`Credentials`, … from :mod:`hubbub.hook_types`).

The names are resolved on first use (a module ``__getattr__``), so ``import hubbub.client``
or ``import hubbub.protocol.codes`` loads neither the server nor its dependencies (Starlette,
pydantic, the stores, the engines). ``from hubbub import Node`` works as usual and imports the
server the first time.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

if TYPE_CHECKING:
    from hubbub.app import create_app
    from hubbub.apps.errors import UnknownUsers
    from hubbub.config import ChannelOptions, ConfigError, Namespace, Settings, load_settings
    from hubbub.engines.base import StreamPosition
    from hubbub.hook_types import (
        ConnectContext,
        Credentials,
        Handshake,
        PublishContext,
        PublishDecision,
        RefreshDecision,
        SubRefreshDecision,
        SubscribeContext,
        SubscribeOptions,
    )
    from hubbub.hub import Hub
    from hubbub.node import Node, NodeInfo
    from hubbub.protocol.codes import Disconnect, DisconnectCode, ErrorCode, ProtocolError
    from hubbub.transports.asgi import WebSocketEndpoint

# Each public name and the module that defines it.
_EXPORTS: dict[str, str] = {
    "ChannelOptions": "hubbub.config",
    "ConfigError": "hubbub.config",
    "ConnectContext": "hubbub.hook_types",
    "Credentials": "hubbub.hook_types",
    "Disconnect": "hubbub.protocol.codes",
    "DisconnectCode": "hubbub.protocol.codes",
    "ErrorCode": "hubbub.protocol.codes",
    "Handshake": "hubbub.hook_types",
    "Hub": "hubbub.hub",
    "Namespace": "hubbub.config",
    "Node": "hubbub.node",
    "NodeInfo": "hubbub.node",
    "ProtocolError": "hubbub.protocol.codes",
    "PublishContext": "hubbub.hook_types",
    "PublishDecision": "hubbub.hook_types",
    "RefreshDecision": "hubbub.hook_types",
    "Settings": "hubbub.config",
    "StreamPosition": "hubbub.engines.base",
    "SubRefreshDecision": "hubbub.hook_types",
    "SubscribeContext": "hubbub.hook_types",
    "SubscribeOptions": "hubbub.hook_types",
    "UnknownUsers": "hubbub.apps.errors",
    "WebSocketEndpoint": "hubbub.transports.asgi",
    "create_app": "hubbub.app",
    "load_settings": "hubbub.config",
}

__all__ = [
    "ChannelOptions",
    "ConfigError",
    "ConnectContext",
    "Credentials",
    "Disconnect",
    "DisconnectCode",
    "ErrorCode",
    "Handshake",
    "Hub",
    "Namespace",
    "Node",
    "NodeInfo",
    "ProtocolError",
    "PublishContext",
    "PublishDecision",
    "RefreshDecision",
    "Settings",
    "StreamPosition",
    "SubRefreshDecision",
    "SubscribeContext",
    "SubscribeOptions",
    "UnknownUsers",
    "WebSocketEndpoint",
    "__version__",
    "create_app",
    "load_settings",
]


def __getattr__(name: str) -> Any:
    """Import the module defining the public ``name`` and return it (then kept as a global,
    so this runs once per name).

    Raises:
        AttributeError: ``name`` is not part of the public API.
    """
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'hubbub' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})
