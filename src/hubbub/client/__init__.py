"""The hubbub Python client: reconnecting, recovering, typed. See :mod:`hubbub.client.client`."""

from hubbub.client.client import Client, connect
from hubbub.client.events import (
    ClientClosed,
    ClientInfo,
    Gap,
    JoinLeave,
    Publication,
    ReplyError,
    State,
)
from hubbub.client.subscription import Subscription

__all__ = [
    "Client",
    "ClientClosed",
    "ClientInfo",
    "Gap",
    "JoinLeave",
    "Publication",
    "ReplyError",
    "State",
    "Subscription",
    "connect",
]
