"""The HTTP proxies as hooks: each proxy of the configuration is a hook implementation that
asks the backend (Centrifugo v6's request and response bodies, :mod:`hubbub.proxy.wire`) and
turns its answer into the hook's result.

What a failure (timeout, network error, non-200, undecodable answer) becomes, per
PROTOCOL-EXTENSIONS 3.6: connect, subscribe, publish and rpc answer error 100 "internal
server error" (temporary; a uni connect closes 3004); refresh and sub_refresh keep the
connection or subscription for 60 s more, then ask again. A backend ``disconnect`` closes
the connection, an ``error`` answers the command with it (both ignored for refresh and
sub_refresh, which read ``result`` only).
"""

from __future__ import annotations

import base64
import binascii
from typing import TYPE_CHECKING, Any, TypeVar

import msgspec

from hubbub.auth import SubscriptionOverride, TokenInvalid
from hubbub.config_proxy import ProxySettings, find_proxy
from hubbub.hook_types import (
    ConnectContext,
    Credentials,
    PublishContext,
    PublishDecision,
    RefreshDecision,
    SubRefreshDecision,
    SubscribeContext,
    SubscribeOptions,
)
from hubbub.payload import to_payload
from hubbub.protocol.codes import (
    Disconnect,
    DisconnectCode,
    ErrorCode,
    ProtocolError,
    disconnect,
    error,
)
from hubbub.protocol.messages import EMPTY
from hubbub.proxy import wire
from hubbub.proxy.client import ProxyClient, ProxyFailed, outgoing_headers
from hubbub.session_hooks import RETRY_DELAY

if TYPE_CHECKING:
    from hubbub.node import Node
    from hubbub.session import Session

T = TypeVar("T")

_ENCODER = msgspec.json.Encoder()
_DECODERS: dict[type[Any], msgspec.json.Decoder[Any]] = {
    kind: msgspec.json.Decoder(wire.Response[kind])  # type: ignore[valid-type]
    for kind in (
        wire.ConnectResult,
        wire.RefreshResult,
        wire.SubscribeResult,
        wire.PublishResult,
        wire.SubRefreshResult,
        wire.RPCResult,
    )
}
_NULL = b"null"


class BadAnswer(Exception):
    """A result field the backend filled wrongly (bad base64, not JSON, bad override)."""


def _payload(raw: msgspec.Raw, b64: str, *, binary: bool = False, b64_wins: bool = True) -> Any:
    """A result payload: the ``b64*`` variant when set (unless ``b64_wins`` is off and the
    JSON one is set), else the JSON one; None when neither."""
    has_raw = len(raw) > 0 and bytes(raw) != _NULL
    if b64 and (b64_wins or not has_raw):
        try:
            data = base64.b64decode(b64, validate=True)
        except (binascii.Error, ValueError):
            raise BadAnswer("not base64") from None
    elif has_raw:
        data = bytes(raw)
    else:
        return None
    try:
        return to_payload(data, binary=binary)
    except ProtocolError:
        raise BadAnswer("not JSON") from None


def _override(value: dict[str, Any] | None) -> SubscriptionOverride | None:
    try:
        return SubscriptionOverride.parse(value)
    except TokenInvalid as exc:
        raise BadAnswer(str(exc)) from None


def _refusal(response: wire.Response[Any]) -> None:
    """Raise the backend's disconnect, else its error (Centrifugo's precedence)."""
    if response.disconnect is not None:
        d = response.disconnect
        raise Disconnect(d.code, d.reason)
    if response.error is not None:
        e = response.error
        raise ProtocolError(e.code, e.message, e.temporary)


class Proxies:
    """The node's proxies: registered as its first hooks by :meth:`install`.

    Attributes:
        client: the pooled HTTP client (closed by :meth:`close`).
    """

    def __init__(self, node: Node) -> None:
        self.node = node
        self.settings = node.settings
        self.client = ProxyClient()

    # -----------------------------------------------------------------------------------------
    # Set-up

    def install(self) -> None:
        """Register the hooks of the proxies the configuration enables, and keep the headers
        they forward with each connection."""
        node, settings = self.node, self.settings
        client = settings.client.proxy
        used: list[ProxySettings] = []
        if client.connect.enabled:
            node.on_connecting(self.connecting)
            used.append(client.connect)
        if client.refresh.enabled:
            node.on_refresh(self.refreshing)
            used.append(client.refresh)
        spaces = [settings.channel.without_namespace, *settings.channel.namespaces]
        for kind, hook in (
            ("subscribe", self.subscribing),
            ("publish", self.publishing),
            ("sub_refresh", self.sub_refreshing),
        ):
            enabled = [ns for ns in spaces if getattr(ns, f"{kind}_proxy_enabled")]
            if not enabled:
                continue
            getattr(node, f"on_{kind}")(hook)
            for ns in enabled:
                used.append(self._proxy(kind, getattr(ns, f"{kind}_proxy_name")))
        rpc = settings.rpc
        if rpc.enabled:
            node.rpc_fallback = self.rpc
            for opts in (rpc.without_namespace, *rpc.namespaces):
                if opts.proxy_enabled:
                    used.append(self._proxy("rpc", opts.proxy_name))
        for proxy in used:
            node.kept_headers.update(name.lower() for name in proxy.http_headers)
            node.kept_emulated.update(name.lower() for name in proxy.emulated_headers)

    async def close(self) -> None:
        await self.client.close()

    def _proxy(self, kind: str, name: str) -> ProxySettings:
        settings = self.settings
        default = {
            "subscribe": settings.channel.proxy.subscribe,
            "publish": settings.channel.proxy.publish,
            "sub_refresh": settings.channel.proxy.sub_refresh,
            "rpc": settings.rpc.proxy,
        }[kind]
        proxy = find_proxy(settings, default, name)
        assert proxy is not None, "checked by config_proxy.check_proxies"
        return proxy

    # -----------------------------------------------------------------------------------------
    # Requests

    def _base(self, session: Session, proxy: ProxySettings) -> dict[str, Any]:
        hs = session.handshake
        return {
            "client": session.client_id,
            "transport": hs.transport,
            "protocol": hs.protocol,
            "encoding": "binary" if proxy.binary_encoding else "json",
        }

    def _data(self, proxy: ProxySettings, data: msgspec.Raw) -> dict[str, Any]:
        """The client's payload as ``data`` (JSON, checked: 107 otherwise) or ``b64data``."""
        if not data:
            return {}
        if proxy.binary_encoding:
            return {"b64data": base64.b64encode(bytes(data)).decode()}
        return {"data": to_payload(bytes(data))}

    def _meta(self, session: Session, proxy: ProxySettings) -> dict[str, Any]:
        if proxy.include_connection_meta and session.meta:
            return {"meta": session.meta}
        return {}

    async def _call(
        self,
        kind: str,
        proxy: ProxySettings,
        session: Session,
        body: msgspec.Struct,
        result: type[T],
    ) -> wire.Response[T]:
        headers = outgoing_headers(proxy, session.handshake)
        decoder: msgspec.json.Decoder[wire.Response[T]] = _DECODERS[result]
        return await self.client.post(kind, proxy, headers, _ENCODER.encode(body), decoder)

    # -----------------------------------------------------------------------------------------
    # The hooks

    async def connecting(self, ctx: ConnectContext) -> Credentials | None:
        """The connect proxy: asked for connections without a token."""
        req, session = ctx.request, ctx.session
        if req.token:
            return None
        proxy = self.settings.client.proxy.connect
        body = wire.ConnectRequest(
            **self._base(session, proxy),
            name=req.name,
            version=req.version,
            channels=list(req.subs),
            **self._data(proxy, req.data),
        )
        try:
            response = await self._call("connect", proxy, session, body, wire.ConnectResult)
        except ProxyFailed:
            raise error(ErrorCode.INTERNAL) from None
        _refusal(response)
        r = response.result
        if r is None:
            return None  # no credentials: anonymous where allowed, else refused (3501)
        try:
            subs = {
                channel: SubscribeOptions(
                    info=_payload(opts.info, opts.b64info),
                    data=_payload(opts.data, opts.b64data),
                    override=_override(opts.override),
                )
                for channel, opts in r.subs.items()
            }
            return Credentials(
                user=r.user,
                expire_at=float(r.expire_at) if r.expire_at > 0 else None,
                info=_payload(r.info, r.b64info),
                data=_payload(r.data, r.b64data),
                channels=r.channels,
                subs=subs,
                meta=_payload(r.meta, ""),
            )
        except BadAnswer:
            raise error(ErrorCode.INTERNAL) from None

    async def refreshing(self, session: Session) -> RefreshDecision | None:
        """The refresh proxy: asked when a connection reaches its expiry."""
        proxy = self.settings.client.proxy.refresh
        body = wire.RefreshRequest(
            **self._base(session, proxy), user=session.user, **self._meta(session, proxy)
        )
        try:
            response = await self._call("refresh", proxy, session, body, wire.RefreshResult)
        except ProxyFailed:
            return RefreshDecision(expire_at=self.node.clock.time() + RETRY_DELAY)
        r = response.result
        if r is None or r.expired:
            return RefreshDecision(expired=True)
        try:
            info = _payload(r.info, r.b64info)
        except BadAnswer:
            raise disconnect(DisconnectCode.INTERNAL) from None
        expire_at = float(r.expire_at) if r.expire_at > 0 else None
        return RefreshDecision(expire_at=expire_at, info=info)

    async def subscribing(self, ctx: SubscribeContext) -> SubscribeOptions | None:
        """The subscribe proxy, in namespaces with ``subscribe_proxy_enabled`` (never for
        user-limited channels)."""
        session, channel = ctx.session, ctx.channel
        rules = self.node.rules
        ns = rules.options(channel)
        if not ns.subscribe_proxy_enabled or rules.user_limited_users(channel) is not None:
            return None
        proxy = self._proxy("subscribe", ns.subscribe_proxy_name)
        body = wire.ChannelRequest(
            **self._base(session, proxy),
            user=session.user,
            channel=channel,
            **self._data(proxy, ctx.data),
            **self._meta(session, proxy),
        )
        try:
            response = await self._call("subscribe", proxy, session, body, wire.SubscribeResult)
        except ProxyFailed:
            raise error(ErrorCode.INTERNAL) from None
        _refusal(response)
        r = response.result
        if r is None:
            return SubscribeOptions(refresh_on_server=ns.sub_refresh_proxy_enabled)
        try:
            return SubscribeOptions(
                info=_payload(r.info, r.b64info),
                data=_payload(r.data, r.b64data),
                expire_at=float(r.expire_at) if r.expire_at > 0 else None,
                override=_override(r.override),
                refresh_on_server=ns.sub_refresh_proxy_enabled,
            )
        except BadAnswer:
            raise error(ErrorCode.INTERNAL) from None

    async def publishing(self, ctx: PublishContext) -> PublishDecision | None:
        """The publish proxy, in namespaces with ``publish_proxy_enabled``."""
        session, channel = ctx.session, ctx.channel
        ns = self.node.rules.options(channel)
        if not ns.publish_proxy_enabled:
            return None
        proxy = self._proxy("publish", ns.publish_proxy_name)
        body = wire.ChannelRequest(
            **self._base(session, proxy),
            user=session.user,
            channel=channel,
            **self._data(proxy, ctx.data),
            **self._meta(session, proxy),
        )
        try:
            response = await self._call("publish", proxy, session, body, wire.PublishResult)
        except ProxyFailed:
            raise error(ErrorCode.INTERNAL) from None
        _refusal(response)
        r = response.result
        if r is None:
            return PublishDecision()
        try:
            data = _payload(r.data, r.b64data, binary=ns.binary, b64_wins=False)
        except BadAnswer:
            raise error(ErrorCode.INTERNAL) from None
        return PublishDecision(
            data=data,
            skip_history=r.skip_history,
            tags=r.tags or None,
            idempotency_key=r.idempotency_key,
            delta=r.delta,
        )

    async def sub_refreshing(self, session: Session, channel: str) -> SubRefreshDecision | None:
        """The sub_refresh proxy, in namespaces with ``sub_refresh_proxy_enabled``."""
        ns = self.node.rules.options(channel)
        if not ns.sub_refresh_proxy_enabled:
            return None
        proxy = self._proxy("sub_refresh", ns.sub_refresh_proxy_name)
        body = wire.ChannelRequest(
            **self._base(session, proxy),
            user=session.user,
            channel=channel,
            **self._meta(session, proxy),
        )
        try:
            response = await self._call("sub_refresh", proxy, session, body, wire.SubRefreshResult)
        except ProxyFailed:
            return SubRefreshDecision(expire_at=self.node.clock.time() + RETRY_DELAY)
        r = response.result
        if r is None or r.expired:
            return SubRefreshDecision(expired=True)
        try:
            info = _payload(r.info, r.b64info)
        except BadAnswer:
            return SubRefreshDecision(expired=True)
        expire_at = float(r.expire_at) if r.expire_at > 0 else None
        return SubRefreshDecision(expire_at=expire_at, info=info)

    async def rpc(self, session: Session, method: str, data: msgspec.Raw) -> msgspec.Raw:
        """RPC methods without a Python handler, routed by namespace (PROTOCOL-EXTENSIONS 5):
        ``rpc.ping``; 104 for an unknown namespace (or when only ping is on); 108 where the
        namespace's proxy is off; else the namespace's proxy answers."""
        rpc = self.settings.rpc
        if rpc.ping.enabled and method == rpc.ping.method:
            return EMPTY
        name, sep, _ = method.partition(rpc.namespace_boundary)
        opts = rpc.namespace(name if sep else "")
        proxied = rpc.without_namespace.proxy_enabled or any(
            ns.proxy_enabled for ns in rpc.namespaces
        )
        if opts is None or not proxied:
            raise error(ErrorCode.METHOD_NOT_FOUND)
        if not opts.proxy_enabled:
            raise error(ErrorCode.NOT_AVAILABLE)
        proxy = self._proxy("rpc", opts.proxy_name)
        body = wire.RPCRequest(
            **self._base(session, proxy),
            user=session.user,
            method=method,
            **self._data(proxy, data),
            **self._meta(session, proxy),
        )
        try:
            response = await self._call("rpc", proxy, session, body, wire.RPCResult)
        except ProxyFailed:
            raise error(ErrorCode.INTERNAL) from None
        _refusal(response)
        r = response.result
        if r is None:
            return EMPTY
        try:
            result = _payload(r.data, r.b64data)
        except BadAnswer:
            raise error(ErrorCode.INTERNAL) from None
        return EMPTY if result is None else result
