"""What a subscription yields, and the client's connection states."""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import Any


class State(enum.Enum):
    """Connection state of a :class:`~hubbub.client.Client`."""

    DISCONNECTED = "disconnected"
    CONNECTING = "connecting"
    CONNECTED = "connected"


@dataclass(frozen=True, slots=True)
class ClientInfo:
    """Who published, joined or left: user id, connection id and their info payloads."""

    user: str
    client: str
    conn_info: Any = None
    chan_info: Any = None


@dataclass(frozen=True, slots=True)
class Publication:
    """One message of a channel. ``offset`` is 0 in channels without history."""

    channel: str
    data: Any
    offset: int = 0
    info: ClientInfo | None = None
    tags: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Gap:
    """Publications may be missing here: the server could not recover them (history too short,
    or the stream was reset). Publications after it continue from ``offset``/``epoch``."""

    channel: str
    offset: int
    epoch: str
    reason: str


@dataclass(frozen=True, slots=True)
class JoinLeave:
    """A client joined (``joined`` true) or left a channel."""

    channel: str
    info: ClientInfo
    joined: bool


class ReplyError(Exception):
    """The server answered a command with an error (``code``, ``message``, ``temporary``)."""

    def __init__(self, code: int, message: str, temporary: bool = False) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message
        self.temporary = temporary


class ClientClosed(Exception):
    """The client is disconnected for good (closed, or a terminal code from the server)."""

    def __init__(self, code: int, reason: str) -> None:
        super().__init__(f"disconnected: {code} {reason}")
        self.code = code
        self.reason = reason
