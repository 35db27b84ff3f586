"""Error, unsubscribe and disconnect codes of the client protocol, with their client semantics.

One table per kind of code. Clients decide what to do from the numeric range alone:

* reply errors (``{"error": {"code", "message", "temporary"}}``) with ``temporary`` set are
  retried by the client; others are surfaced to the caller;
* unsubscribe pushes with a code below 2500 leave the subscription unsubscribed, codes from 2500
  make the client resubscribe (and recover);
* WebSocket close codes 3000-3499 and 4000-4499 make the client reconnect with backoff;
  3500-3999 and 4500-4999 are terminal.
"""

from __future__ import annotations

from enum import IntEnum


class ProtocolError(Exception):
    """A reply error: sent to the client as ``{"id": n, "error": {...}}``.

    Raising one from a command handler answers that command only; the connection stays open.
    """

    def __init__(self, code: int, message: str, temporary: bool = False) -> None:
        super().__init__(code, message)
        self.code = code
        self.message = message
        self.temporary = temporary

    def __str__(self) -> str:
        return f"{self.code}: {self.message}"


class Disconnect(Exception):
    """A reason to close a connection: sent as a WebSocket close frame with ``code`` and ``reason``.

    Raising one from a command handler closes the connection after what was already queued.
    """

    def __init__(self, code: int, reason: str) -> None:
        super().__init__(code, reason)
        self.code = code
        self.reason = reason

    @property
    def reconnect(self) -> bool:
        """Whether clients reconnect after this code (by range, as the client SDKs decide)."""
        return should_reconnect(self.code)

    def __str__(self) -> str:
        return f"{self.code}: {self.reason}"


def should_reconnect(close_code: int) -> bool:
    """Whether a client reconnects after a WebSocket close with ``close_code``.

    Codes below 3000 are transport-level closes (reconnect); 3000-3499 and 4000-4499 reconnect;
    3500-3999 and 4500-4999 are terminal; 5000 and above reconnect.
    """
    return not (3500 <= close_code <= 3999 or 4500 <= close_code <= 4999)


class ErrorCode(IntEnum):
    """Reply error codes (PROTOCOL.md §6.1). Application codes are 400-1999."""

    INTERNAL = 100
    UNAUTHORIZED = 101
    UNKNOWN_CHANNEL = 102
    PERMISSION_DENIED = 103
    METHOD_NOT_FOUND = 104
    ALREADY_SUBSCRIBED = 105
    LIMIT_EXCEEDED = 106
    BAD_REQUEST = 107
    NOT_AVAILABLE = 108
    TOKEN_EXPIRED = 109
    EXPIRED = 110
    TOO_MANY_REQUESTS = 111
    UNRECOVERABLE_POSITION = 112


_ERROR_MESSAGES: dict[ErrorCode, tuple[str, bool]] = {
    ErrorCode.INTERNAL: ("internal server error", True),
    ErrorCode.UNAUTHORIZED: ("unauthorized", False),
    ErrorCode.UNKNOWN_CHANNEL: ("unknown channel", False),
    ErrorCode.PERMISSION_DENIED: ("permission denied", False),
    ErrorCode.METHOD_NOT_FOUND: ("method not found", False),
    ErrorCode.ALREADY_SUBSCRIBED: ("already subscribed", False),
    ErrorCode.LIMIT_EXCEEDED: ("limit exceeded", False),
    ErrorCode.BAD_REQUEST: ("bad request", False),
    ErrorCode.NOT_AVAILABLE: ("not available", False),
    ErrorCode.TOKEN_EXPIRED: ("token expired", False),
    ErrorCode.EXPIRED: ("expired", False),
    ErrorCode.TOO_MANY_REQUESTS: ("too many requests", True),
    ErrorCode.UNRECOVERABLE_POSITION: ("unrecoverable position", False),
}


def error(code: ErrorCode, message: str | None = None) -> ProtocolError:
    """The standard reply error for ``code``; ``message`` overrides the standard text."""
    text, temporary = _ERROR_MESSAGES[code]
    return ProtocolError(int(code), message or text, temporary)


class UnsubscribeCode(IntEnum):
    """Codes of the ``unsubscribe`` push (PROTOCOL.md §6.2)."""

    SERVER = 2000
    INSUFFICIENT_STATE = 2500
    EXPIRED = 2501
    STATE_INVALIDATED = 2502


UNSUBSCRIBE_REASONS: dict[UnsubscribeCode, str] = {
    UnsubscribeCode.SERVER: "server unsubscribe",
    UnsubscribeCode.INSUFFICIENT_STATE: "insufficient state",
    UnsubscribeCode.EXPIRED: "subscription expired",
    UnsubscribeCode.STATE_INVALIDATED: "state invalidated",
}


class DisconnectCode(IntEnum):
    """WebSocket close codes used by the server (PROTOCOL.md §6.3)."""

    SHUTDOWN = 3001
    INTERNAL = 3004
    EXPIRED = 3005
    SUBSCRIPTION_EXPIRED = 3006
    SLOW = 3008
    WRITE_ERROR = 3009
    INSUFFICIENT_STATE = 3010
    FORCE_RECONNECT = 3011
    NO_PONG = 3012
    TOO_MANY_REQUESTS = 3013
    STATE_INVALIDATED = 3014
    INVALID_TOKEN = 3500
    BAD_REQUEST = 3501
    STALE = 3502
    FORCE_DISCONNECT = 3503
    CONNECTION_LIMIT = 3504
    CHANNEL_LIMIT = 3505
    INAPPROPRIATE_PROTOCOL = 3506
    PERMISSION_DENIED = 3507
    NOT_AVAILABLE = 3508
    TOO_MANY_ERRORS = 3509
    MESSAGE_TOO_BIG = 1009


_DISCONNECT_REASONS: dict[DisconnectCode, str] = {
    DisconnectCode.SHUTDOWN: "shutdown",
    DisconnectCode.INTERNAL: "internal server error",
    DisconnectCode.EXPIRED: "connection expired",
    DisconnectCode.SUBSCRIPTION_EXPIRED: "subscription expired",
    DisconnectCode.SLOW: "slow",
    DisconnectCode.WRITE_ERROR: "write error",
    DisconnectCode.INSUFFICIENT_STATE: "insufficient state",
    DisconnectCode.FORCE_RECONNECT: "force reconnect",
    DisconnectCode.NO_PONG: "no pong",
    DisconnectCode.TOO_MANY_REQUESTS: "too many requests",
    DisconnectCode.STATE_INVALIDATED: "state invalidated",
    DisconnectCode.INVALID_TOKEN: "invalid token",
    DisconnectCode.BAD_REQUEST: "bad request",
    DisconnectCode.STALE: "stale",
    DisconnectCode.FORCE_DISCONNECT: "force disconnect",
    DisconnectCode.CONNECTION_LIMIT: "connection limit",
    DisconnectCode.CHANNEL_LIMIT: "channel limit",
    DisconnectCode.INAPPROPRIATE_PROTOCOL: "inappropriate protocol",
    DisconnectCode.PERMISSION_DENIED: "permission denied",
    DisconnectCode.NOT_AVAILABLE: "not available",
    DisconnectCode.TOO_MANY_ERRORS: "too many errors",
    DisconnectCode.MESSAGE_TOO_BIG: "message too big",
}


def disconnect(code: DisconnectCode, reason: str | None = None) -> Disconnect:
    """The standard disconnect for ``code``; ``reason`` overrides the standard text.

    Reasons travel in a close frame, so they are cut to 123 bytes of UTF-8.
    """
    text = reason or _DISCONNECT_REASONS[code]
    return Disconnect(int(code), text.encode()[:123].decode(errors="ignore"))
