"""Messages nodes send each other through the engine's control channel.

User operations (disconnect, unsubscribe, server-side subscribe, refresh, messages) reach the
user's connections on every node, and every node announces itself periodically so that
``info`` sees the whole cluster. Messages are msgpack, tagged by type, and carry the sender's
uid so that a node ignores its own.
"""

from __future__ import annotations

import msgspec


class _Control(msgspec.Struct, tag=True, array_like=True):
    origin: str


class DisconnectUser(_Control, tag="disconnect"):
    user: str
    client: str
    code: int
    reason: str
    whitelist: list[str]


class UnsubscribeUser(_Control, tag="unsubscribe"):
    user: str
    channel: str
    client: str


class SubscribeUser(_Control, tag="subscribe"):
    user: str
    channel: str
    client: str
    info: bytes
    data: bytes
    recover_offset: int
    recover_epoch: str
    recover: bool


class RefreshUser(_Control, tag="refresh"):
    user: str
    client: str
    expired: bool
    expire_at: float


class MessageUser(_Control, tag="message"):
    user: str
    client: str
    data: bytes


class NodeAnnouncement(_Control, tag="node"):
    name: str
    version: str
    num_clients: int
    num_users: int
    num_channels: int
    num_subs: int
    uptime: int


class Emulation(_Control, tag="emulation"):
    """Commands of an HTTP stream's client that reached another node (``POST /emulation``),
    for the node ``target`` that holds the stream ``session``. ``data`` is the request's
    ``data`` as it came: the JSON text of the field when ``json_body``, else its bytes."""

    target: str
    request: int
    session: str
    data: bytes
    json_body: bool


class EmulationDone(_Control, tag="emulation_done"):
    """The answer of ``Emulation`` ``request`` to the node ``target`` that sent it: 0 the
    commands were handed to the session, 1 its data was not readable, 2 no such session."""

    target: str
    request: int
    result: int


Addressed = Emulation | EmulationDone
"""Control messages for one node (``target``, its uid); the others ignore them."""

Control = (
    DisconnectUser
    | UnsubscribeUser
    | SubscribeUser
    | RefreshUser
    | MessageUser
    | NodeAnnouncement
    | Emulation
    | EmulationDone
)

_encoder = msgspec.msgpack.Encoder()
_decoder: msgspec.msgpack.Decoder[Control] = msgspec.msgpack.Decoder(Control)


def encode(message: Control) -> bytes:
    return _encoder.encode(message)


def decode(data: bytes) -> Control:
    """Raises msgspec.DecodeError for anything that is not a control message."""
    return _decoder.decode(data)
