"""hubbub: real-time messaging for Python.

The public API: a :class:`Node` (connections, channels, publish, presence, history), its
:class:`Settings`, the ASGI :class:`WebSocketEndpoint` to mount it into any app, the
:class:`Hub` (a node with the chat and notification applications and their store), and
:func:`create_app` for the standalone server.
"""

__version__ = "0.1.0"

from hubbub.app import create_app
from hubbub.config import ChannelOptions, ConfigError, Namespace, Settings, load_settings
from hubbub.engines.base import StreamPosition
from hubbub.hub import Hub
from hubbub.node import Node, NodeInfo
from hubbub.protocol.codes import Disconnect, DisconnectCode, ErrorCode, ProtocolError
from hubbub.transports.asgi import WebSocketEndpoint

__all__ = [
    "ChannelOptions",
    "ConfigError",
    "Disconnect",
    "DisconnectCode",
    "ErrorCode",
    "Hub",
    "Namespace",
    "Node",
    "NodeInfo",
    "ProtocolError",
    "Settings",
    "StreamPosition",
    "WebSocketEndpoint",
    "__version__",
    "create_app",
    "load_settings",
]
