"""The client protocol: messages, the JSON codec, and the tables of codes."""

from hubbub.protocol.codes import (
    Disconnect,
    DisconnectCode,
    ErrorCode,
    ProtocolError,
    UnsubscribeCode,
    disconnect,
    error,
    should_reconnect,
)

__all__ = [
    "Disconnect",
    "DisconnectCode",
    "ErrorCode",
    "ProtocolError",
    "UnsubscribeCode",
    "disconnect",
    "error",
    "should_reconnect",
]
