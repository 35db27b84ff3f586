"""Typed messages of the client protocol (PROTOCOL.md §2-§3), shared by every wire format.

Field names are the wire names. Every struct omits fields equal to their default when encoded,
which gives the JSON omission rules of PROTOCOL.md §1.5; the few fields that must always be
present (``ClientInfo.user``/``client``, presence maps, history results) have no default.

Payload fields (``data``, ``info``, ``conn_info``, ``chan_info``) are :class:`msgspec.Raw`: the
JSON value exactly as received, embedded verbatim when encoded, never parsed by the server.
"""

from __future__ import annotations

from typing import Annotated

import msgspec
from msgspec import Meta, Raw, Struct, field

Uint32 = Annotated[int, Meta(ge=0, le=2**32 - 1)]
Uint64 = Annotated[int, Meta(ge=0, le=2**63 - 1)]
"""Offsets: unsigned on the wire; bounded by int64 here, far beyond any real stream."""

EMPTY: Raw = Raw()
"""The absent payload. Payload fields default to this very object, and only it is omitted when
encoding; use it (never a new ``Raw()``) for "no data"."""

# ---------------------------------------------------------------------------------------------
# Shared values


class ClientInfo(Struct, omit_defaults=True, frozen=True):
    """Who a connection is: carried in presence, join/leave pushes and client publications."""

    user: str
    client: str
    conn_info: Raw = EMPTY
    chan_info: Raw = EMPTY


class Publication(Struct, omit_defaults=True, frozen=True):
    """One message of a channel. ``offset`` is 0 when the channel keeps no history."""

    data: Raw
    info: ClientInfo | None = None
    offset: int = 0
    tags: dict[str, str] | None = None
    time: int = 0
    delta: bool = False
    """``data`` is a Fossil delta (subscribers that negotiated delta); on the way from the
    publisher to the fan-out: the publication may be sent as a delta (see hubbub.delta)."""


class StreamPositionMsg(Struct, omit_defaults=False):
    """A position in a channel stream, as clients send it in ``since``."""

    offset: Uint64 = 0
    epoch: str = ""


# ---------------------------------------------------------------------------------------------
# Requests (client -> server)


class SubscribeRequest(Struct, omit_defaults=True):
    channel: str = ""
    token: str = ""
    recover: bool = False
    epoch: str = ""
    offset: Uint64 = 0
    data: Raw = EMPTY
    positioned: bool = False
    recoverable: bool = False
    join_leave: bool = False
    delta: str = ""
    tf: Raw = EMPTY
    flag: int = 0
    # Subscription type (0 stream, 1 map, 2 map_clients, 3 map_users, 4 shared_poll): hubbub
    # serves streams only and refuses the others (session_subscribe.check_subscription_type).
    type: int = 0


class ConnectRequest(Struct, omit_defaults=True):
    token: str = ""
    data: Raw = EMPTY
    subs: dict[str, SubscribeRequest] = field(default_factory=dict)
    name: str = ""
    version: str = ""
    headers: dict[str, str] = field(default_factory=dict)
    flag: int = 0


class ChannelRequest(Struct, omit_defaults=True):
    """Requests that carry only a channel: unsubscribe, presence, presence_stats."""

    channel: str = ""


class PublishRequest(Struct, omit_defaults=True):
    channel: str = ""
    data: Raw = EMPTY


class HistoryRequest(Struct, omit_defaults=True):
    channel: str = ""
    limit: int = 0
    since: StreamPositionMsg | None = None
    reverse: bool = False


class RPCRequest(Struct, omit_defaults=True):
    data: Raw = EMPTY
    method: str = ""


class SendRequest(Struct, omit_defaults=True):
    data: Raw = EMPTY


class RefreshRequest(Struct, omit_defaults=True):
    token: str = ""


class SubRefreshRequest(Struct, omit_defaults=True):
    channel: str = ""
    token: str = ""


class PingRequest(Struct):
    pass


class Command(Struct, omit_defaults=True):
    """A client command: an ``id`` and at most one request field (the first set one counts)."""

    id: Uint32 = 0
    connect: ConnectRequest | None = None
    subscribe: SubscribeRequest | None = None
    unsubscribe: ChannelRequest | None = None
    publish: PublishRequest | None = None
    presence: ChannelRequest | None = None
    presence_stats: ChannelRequest | None = None
    history: HistoryRequest | None = None
    ping: PingRequest | None = None
    send: SendRequest | None = None
    rpc: RPCRequest | None = None
    refresh: RefreshRequest | None = None
    sub_refresh: SubRefreshRequest | None = None


# ---------------------------------------------------------------------------------------------
# Results (server -> client)


class Error(Struct, omit_defaults=True):
    code: int
    message: str
    temporary: bool = False


class SubscribeResult(Struct, omit_defaults=True):
    expires: bool = False
    ttl: int = 0
    recoverable: bool = False
    epoch: str = ""
    publications: list[Publication] = field(default_factory=list)
    recovered: bool = False
    offset: int = 0
    positioned: bool = False
    data: Raw = EMPTY
    was_recovering: bool = False
    delta: bool = False


class ConnectResult(Struct, omit_defaults=True):
    client: str
    version: str
    expires: bool = False
    ttl: int = 0
    data: Raw = EMPTY
    subs: dict[str, SubscribeResult] = field(default_factory=dict)
    ping: int = 0
    pong: bool = False
    # Emulation and unidirectional transports only: the stream's session id (and its node).
    session: str = ""
    node: str = ""


class EmptyResult(Struct):
    """``{}``: the result of unsubscribe and publish."""


class PresenceResult(Struct):
    presence: dict[str, ClientInfo]


class PresenceStatsResult(Struct):
    num_clients: int
    num_users: int


class HistoryResult(Struct):
    publications: list[Publication]
    epoch: str
    offset: int


class RPCResult(Struct, omit_defaults=True):
    data: Raw = EMPTY


class RefreshResult(Struct, omit_defaults=True):
    client: str = ""
    version: str = ""
    expires: bool = False
    ttl: int = 0


class SubRefreshResult(Struct, omit_defaults=True):
    expires: bool = False
    ttl: int = 0


# ---------------------------------------------------------------------------------------------
# Pushes (server -> client, no id)


class JoinLeave(Struct):
    info: ClientInfo


class UnsubscribePush(Struct):
    code: int
    reason: str


class SubscribePush(Struct, omit_defaults=True):
    recoverable: bool = False
    epoch: str = ""
    offset: int = 0
    positioned: bool = False
    data: Raw = EMPTY


class MessagePush(Struct):
    data: Raw


class DisconnectPush(Struct, omit_defaults=True):
    code: int
    reason: str
    reconnect: bool = False


class RefreshPush(Struct, omit_defaults=True):
    expires: bool = False
    ttl: int = 0


class Push(Struct, omit_defaults=True):
    channel: str = ""
    pub: Publication | None = None
    join: JoinLeave | None = None
    leave: JoinLeave | None = None
    unsubscribe: UnsubscribePush | None = None
    message: MessagePush | None = None
    subscribe: SubscribePush | None = None
    # Unidirectional transports only: the connect result as the first push, and expiry
    # changes made by the server.
    connect: ConnectResult | None = None
    disconnect: DisconnectPush | None = None
    refresh: RefreshPush | None = None


class Reply(Struct, omit_defaults=True):
    """A server message: a command reply (``id`` > 0), a push, or a ping (``{}``)."""

    id: int = 0
    error: Error | None = None
    push: Push | None = None
    connect: ConnectResult | None = None
    subscribe: SubscribeResult | None = None
    unsubscribe: EmptyResult | None = None
    publish: EmptyResult | None = None
    presence: PresenceResult | None = None
    presence_stats: PresenceStatsResult | None = None
    history: HistoryResult | None = None
    rpc: RPCResult | None = None
    refresh: RefreshResult | None = None
    sub_refresh: SubRefreshResult | None = None


def raw(value: object) -> Raw:
    """Encode a Python value as an embedded JSON payload."""
    return Raw(msgspec.json.encode(value))


def raw_from_json(data: bytes) -> Raw:
    """Wrap JSON text received from a trusted path as a payload, dropping raw newlines.

    Raw newlines can only stand between JSON tokens (inside strings they are escaped), so
    dropping them keeps the value and keeps the ``\\n``-delimited framing intact.
    """
    if not data:
        return EMPTY
    if b"\n" in data:
        data = data.replace(b"\n", b"")
    return Raw(data)
