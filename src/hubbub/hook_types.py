"""What the application's hooks receive and return (:mod:`hubbub.hooks`).

Payload fields typed ``object`` take any JSON-encodable value, or JSON text as ``bytes`` /
``msgspec.Raw`` (validated); ``None`` means "none". Times are unix seconds.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence, Set
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING

import msgspec

from hubbub.auth import SubscriptionOverride
from hubbub.protocol.messages import EMPTY, ConnectRequest

if TYPE_CHECKING:
    from hubbub.session import Session

__all__ = [
    "ConnectContext",
    "Credentials",
    "Handshake",
    "PublishContext",
    "PublishDecision",
    "RefreshDecision",
    "SubRefreshDecision",
    "SubscribeContext",
    "SubscribeOptions",
    "SubscriptionOverride",
]


@dataclass(frozen=True, slots=True)
class Handshake:
    """What the transport saw of a connection's opening HTTP request.

    Attributes:
        transport: ``websocket``, ``http_stream``, ``sse``, ``uni_websocket``, ``uni_sse``,
            ``uni_http_stream`` (the names Centrifugo's proxies use).
        protocol: ``json`` or ``protobuf``.
        remote: the peer's ``host:port``.
        headers: the request's headers, names in lower case, in the order received (the
            WebSocket upgrade, or the request that opened an HTTP stream). Once connected,
            only those the proxies forward and those named in ``node.kept_headers`` are kept.
        emulated: the headers the client sent inside its connect request (``headers``, for
            clients that cannot set real ones): client-controlled.
    """

    transport: str = "websocket"
    protocol: str = "json"
    remote: str = ""
    headers: tuple[tuple[str, str], ...] = ()
    emulated: tuple[tuple[str, str], ...] = ()

    def keep(self, names: Set[str], emulated: Set[str]) -> Handshake:
        """This handshake with only the headers named in ``names`` and the emulated headers
        named in ``emulated`` (lower-case names)."""
        return replace(
            self,
            headers=tuple(pair for pair in self.headers if pair[0] in names),
            emulated=tuple(pair for pair in self.emulated if pair[0].lower() in emulated),
        )

    def header(self, name: str) -> str:
        """The value of header ``name`` (any case); several are joined with ``, ``; "" when
        absent."""
        name = name.lower()
        return ", ".join(value for key, value in self.headers if key == name)

    @property
    def cookies(self) -> dict[str, str]:
        """The request's cookies by name (from every ``Cookie`` header)."""
        found: dict[str, str] = {}
        for key, value in self.headers:
            if key != "cookie":
                continue
            for part in value.split(";"):
                name, sep, val = part.strip().partition("=")
                if sep and name:
                    found.setdefault(name, val.strip().strip('"'))
        return found


@dataclass(slots=True)
class ConnectContext:
    """A client asking to connect (``on_connecting``).

    Attributes:
        session: the connection (``session.client_id``; not connected yet).
        handshake: its opening request (transport, protocol, remote address, headers).
        request: the client's connect request: ``token``, ``data``, ``name``, ``version``,
            ``subs`` (channels it would like, with recovery positions) and ``headers``
            (headers the client emulates, sent inside the request: client-controlled).
    """

    session: Session
    handshake: Handshake
    request: ConnectRequest

    @property
    def cookies(self) -> dict[str, str]:
        """The handshake's cookies by name."""
        return self.handshake.cookies


@dataclass(slots=True)
class SubscribeOptions:
    """How a subscription is made (a subscription allowed by ``on_subscribe``, or a
    server-side one of :attr:`Credentials.subs`).

    Attributes:
        info: channel info, seen by others in presence, join/leave and publications.
        data: sent to the client in the subscribe result.
        expire_at: when the subscription ends unless refreshed (None: never). It is refreshed
            on the server by the ``on_sub_refresh`` hooks when ``refresh_on_server``, else the
            client is told to refresh it with a subscription token.
        override: channel options changed for this subscription only.
        refresh_on_server: see ``expire_at``.
    """

    info: object = None
    data: object = None
    expire_at: float | None = None
    override: SubscriptionOverride | None = None
    refresh_on_server: bool = True


@dataclass(slots=True)
class Credentials:
    """Who a connection is, decided by ``on_connecting`` instead of a token.

    Attributes:
        user: the user id ("" = anonymous).
        expire_at: when the connection expires (None: never); refreshed by the ``on_refresh``
            hooks when there are any, else by the client with a new token.
        info: connection info, seen by others in presence, join/leave and publications.
        data: sent to the client in the connect result.
        channels: channels to subscribe the connection to on the server's side, with their
            namespace's options.
        subs: likewise, each with its own options.
        meta: data kept on the server only (``session.meta``; sent to the proxies with
            ``include_connection_meta``).
    """

    user: str
    expire_at: float | None = None
    info: object = None
    data: object = None
    channels: Sequence[str] = ()
    subs: Mapping[str, SubscribeOptions] = field(default_factory=dict)
    meta: object = None


@dataclass(slots=True)
class SubscribeContext:
    """A client subscribing to a channel without a subscription token (``on_subscribe``).

    Attributes:
        session: the connection.
        channel: the channel.
        data: the data of the subscribe request (``EMPTY`` when none).
    """

    session: Session
    channel: str
    data: msgspec.Raw = field(default_factory=lambda: EMPTY)


@dataclass(slots=True)
class PublishContext:
    """A client publishing into a channel (``on_publish``).

    Attributes:
        session: the connection.
        channel: the channel.
        data: the publication's data as the client sent it.
    """

    session: Session
    channel: str
    data: msgspec.Raw


@dataclass(slots=True)
class PublishDecision:
    """A publication ``on_publish`` allows.

    Attributes:
        data: the data to publish instead of the client's (None: the client's).
        skip_history: do not keep it in the channel's history.
        tags: the publication's tags.
        idempotency_key: publications with the same key within ``idempotent_result_ttl``
            are published once.
        delta: may be sent as a delta to subscribers that negotiated it.
    """

    data: object = None
    skip_history: bool = False
    tags: dict[str, str] | None = None
    idempotency_key: str = ""
    delta: bool = False


@dataclass(slots=True)
class RefreshDecision:
    """The answer of ``on_refresh`` when a connection reaches its expiry.

    Attributes:
        expired: end the connection now (close 3005).
        expire_at: the next expiry (None: never); one not in the future expires it.
        info: new connection info (None: unchanged), for subscriptions made from now on.
    """

    expired: bool = False
    expire_at: float | None = None
    info: object = None


@dataclass(slots=True)
class SubRefreshDecision:
    """The answer of ``on_sub_refresh`` when a subscription reaches its expiry.

    Attributes:
        expired: end the subscription now (unsubscribe 2501, or close 3006 for a
            server-side subscription).
        expire_at: the next expiry (None: never); one not in the future expires it.
        info: new channel info (None: unchanged).
    """

    expired: bool = False
    expire_at: float | None = None
    info: object = None
