"""Settings of the HTTP proxies to the application's backend (:mod:`hubbub.proxy`), under
Centrifugo v6's names: ``[client.proxy.connect]``, ``[client.proxy.refresh]``,
``[channel.proxy.subscribe]``, ``[channel.proxy.publish]``, ``[channel.proxy.sub_refresh]``,
``[rpc.proxy]`` with ``[rpc.without_namespace]`` / ``[[rpc.namespaces]]``, named
``[[proxies]]``, and the namespace flags (``subscribe_proxy_enabled``...).

Kept apart from :mod:`hubbub.config`, which holds them as sections of ``Settings``; every
option is documented in ``docs/configuration.md`` and ``docs/proxy.md``.

``timeout`` takes seconds as a number, or a Go-style duration string as Centrifugo's
configuration writes it (``"1s"``, ``"500ms"``, ``"1m30s"``), so a copied configuration works.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

if TYPE_CHECKING:
    from hubbub.config import Settings

_NAME = re.compile(r"^[-a-zA-Z0-9_.]{2,}$")
_DURATION = re.compile(r"(\d+(?:\.\d*)?|\.\d+)(ns|us|µs|ms|s|m|h)")
_UNITS = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0}

DEFAULT = "default"
"""The ``*_proxy_name`` of the default proxy of each kind (the un-named sections)."""


def parse_duration(value: object) -> object:
    """Seconds from a number, or from a Go duration string (``"1s"``, ``"250ms"``,
    ``"1m30s"``); anything else is returned for pydantic to refuse."""
    if not isinstance(value, str):
        return value
    text = value.strip()
    try:
        return float(text)
    except ValueError:
        pass
    parts = _DURATION.findall(text)
    if not parts or "".join(number + unit for number, unit in parts) != text:
        raise ValueError(f"{value!r} is not a duration (seconds, or like '1s', '500ms')")
    return sum(float(number) * _UNITS[unit] for number, unit in parts)


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ErrorTransform(_Section):
    """An error reply (``{"code", "message", "temporary"}``)."""

    code: int = Field(ge=0)
    message: str = ""
    temporary: bool = False


class DisconnectTransform(_Section):
    """A disconnect (``{"code", "reason"}``)."""

    code: int = Field(ge=0)
    reason: str = ""


class StatusTransform(_Section):
    """A non-200 HTTP status of the backend read as an error or a disconnect."""

    status_code: int = Field(ge=100, le=599)
    to_error: ErrorTransform | None = None
    to_disconnect: DisconnectTransform | None = None

    @model_validator(mode="after")
    def _one(self) -> StatusTransform:
        if (self.to_error is None) == (self.to_disconnect is None):
            raise ValueError("a status transform needs exactly one of to_error, to_disconnect")
        return self


class ProxyHTTP(_Section):
    """``http.*`` of a proxy: headers added to every request, statuses remapped."""

    static_headers: dict[str, str] = {}
    status_to_code_transforms: list[StatusTransform] = []


class ProxySettings(_Section):
    """One proxy: where requests go and what they carry.

    Attributes:
        endpoint: ``http://`` or ``https://`` URL the requests are POSTed to.
        timeout: seconds for the whole request (or a duration string, ``"1s"``).
        http_headers: headers of the connection's opening request to forward (case
            insensitive; ``Cookie`` for session cookies).
        emulated_headers: headers the client sent in its connect request's ``headers`` to
            forward (client-controlled: never trust them for authentication).
        binary_encoding: payloads as base64 ``b64data`` instead of embedded JSON.
        include_connection_meta: send the connection's ``meta`` (not to the connect proxy).
        http: static headers and status remapping.
    """

    endpoint: str = ""
    timeout: float = Field(default=1.0, gt=0, le=300)
    http_headers: list[str] = []
    emulated_headers: list[str] = []
    binary_encoding: bool = False
    include_connection_meta: bool = False
    http: ProxyHTTP = ProxyHTTP()

    _timeout = field_validator("timeout", mode="before")(parse_duration)

    @model_validator(mode="after")
    def _endpoint(self) -> ProxySettings:
        if self.endpoint and not self.endpoint.startswith(("http://", "https://")):
            raise ValueError(
                f"endpoint {self.endpoint!r}: only http:// and https:// proxies are supported"
            )
        return self


class ClientProxy(ProxySettings):
    """The connect or refresh proxy (off unless ``enabled``)."""

    enabled: bool = False


class ClientProxies(_Section):
    """``[client.proxy.*]``."""

    connect: ClientProxy = ClientProxy()
    refresh: ClientProxy = ClientProxy()


class ChannelProxies(_Section):
    """``[channel.proxy.*]``: the default proxy of each kind, used by the namespaces whose
    ``*_proxy_enabled`` flag is on."""

    subscribe: ProxySettings = ProxySettings()
    publish: ProxySettings = ProxySettings()
    sub_refresh: ProxySettings = ProxySettings()


class NamedProxy(ProxySettings):
    """One of ``[[proxies]]``, referred to by a ``*_proxy_name``."""

    name: str

    @model_validator(mode="after")
    def _name(self) -> NamedProxy:
        if not _NAME.match(self.name) or self.name == DEFAULT:
            raise ValueError(f"proxy name {self.name!r}: 2+ letters, digits, - _ ., not 'default'")
        if not self.endpoint:
            raise ValueError(f"proxy {self.name!r} needs an endpoint")
        return self


class ProxyFlags(_Section):
    """The proxy flags of a namespace (a base of :class:`hubbub.config.ChannelOptions`)."""

    subscribe_proxy_enabled: bool = False
    subscribe_proxy_name: str = DEFAULT
    publish_proxy_enabled: bool = False
    publish_proxy_name: str = DEFAULT
    sub_refresh_proxy_enabled: bool = False
    sub_refresh_proxy_name: str = DEFAULT


class RPCNamespaceOptions(_Section):
    """Whether the methods of an RPC namespace go to a proxy, and which."""

    proxy_enabled: bool = False
    proxy_name: str = DEFAULT


class RPCNamespace(RPCNamespaceOptions):
    """``[[rpc.namespaces]]``: methods ``<name><namespace_boundary><method>``."""

    name: str

    @model_validator(mode="after")
    def _name(self) -> RPCNamespace:
        if not _NAME.match(self.name):
            raise ValueError(f"rpc namespace name {self.name!r}: 2+ letters, digits, - _ .")
        return self


class RPCPing(_Section):
    """``[rpc.ping]``: a built-in method answering an empty result."""

    enabled: bool = False
    method: str = "ping"


class RPCSettings(_Section):
    """``[rpc]``: where ``rpc`` commands without a Python handler go."""

    proxy: ProxySettings = ProxySettings()
    without_namespace: RPCNamespaceOptions = RPCNamespaceOptions()
    namespaces: list[RPCNamespace] = []
    namespace_boundary: str = Field(default=":", min_length=1)
    ping: RPCPing = RPCPing()

    def namespace(self, name: str) -> RPCNamespaceOptions | None:
        """Options of RPC namespace ``name`` ("" = methods without a namespace), or None."""
        if not name:
            return self.without_namespace
        return next((ns for ns in self.namespaces if ns.name == name), None)

    @property
    def enabled(self) -> bool:
        """Whether RPC is handled by configuration at all (a proxy anywhere, or ping)."""
        return (
            self.without_namespace.proxy_enabled
            or any(ns.proxy_enabled for ns in self.namespaces)
            or self.ping.enabled
        )


def find_proxy(settings: Settings, default: ProxySettings, name: str) -> ProxySettings | None:
    """The proxy a ``*_proxy_name`` refers to: ``default`` for ``"default"``, else the named
    one (None when there is none)."""
    if name == DEFAULT:
        return default if default.endpoint else None
    return next((p for p in settings.proxies if p.name == name), None)


def check_proxies(settings: Settings) -> None:
    """Cross-section checks: every enabled proxy has an endpoint, every ``*_proxy_name``
    names a proxy, names are unique.

    Raises:
        ValueError: the first problem, naming the option.
    """
    seen: set[str] = set()
    for named in settings.proxies:
        if named.name in seen:
            raise ValueError(f"proxies: {named.name!r} is defined twice")
        seen.add(named.name)
    client = settings.client.proxy
    for kind, proxy in (("connect", client.connect), ("refresh", client.refresh)):
        if proxy.enabled and not proxy.endpoint:
            raise ValueError(f"client.proxy.{kind}.enabled needs client.proxy.{kind}.endpoint")
    channel = settings.channel
    spaces: list[tuple[str, Any]] = [("channel.without_namespace", channel.without_namespace)]
    spaces += [(f"namespace {ns.name!r}", ns) for ns in channel.namespaces]
    for where, ns in spaces:
        for kind in ("subscribe", "publish", "sub_refresh"):
            if not getattr(ns, f"{kind}_proxy_enabled"):
                continue
            name = getattr(ns, f"{kind}_proxy_name")
            if find_proxy(settings, getattr(channel.proxy, kind), name) is None:
                _missing(f"{where}: {kind}_proxy_enabled", f"channel.proxy.{kind}", name)
    rpc = settings.rpc
    rpc_spaces: list[tuple[str, RPCNamespaceOptions]] = [
        ("rpc.without_namespace", rpc.without_namespace)
    ]
    rpc_spaces += [(f"rpc namespace {ns.name!r}", ns) for ns in rpc.namespaces]
    names = [ns.name for ns in rpc.namespaces]
    if len(set(names)) != len(names):
        raise ValueError("rpc.namespaces: a namespace is defined twice")
    for where, opts in rpc_spaces:
        if opts.proxy_enabled and find_proxy(settings, rpc.proxy, opts.proxy_name) is None:
            _missing(f"{where}: proxy_enabled", "rpc.proxy", opts.proxy_name)


def _missing(what: str, default: str, name: str) -> None:
    if name == DEFAULT:
        raise ValueError(f"{what} needs {default}.endpoint")
    raise ValueError(f"{what}: no [[proxies]] entry named {name!r}")
