"""One validated settings object, read from a TOML file and ``HUBBUB_*`` environment variables.

Sources, strongest first: environment (``HUBBUB_<SECTION>__<OPTION>``, e.g.
``HUBBUB_TOKEN__HMAC_SECRET_KEY``; lists and tables as JSON), then the TOML file, then the
defaults written here. Every option is documented in ``docs/configuration.md``.
"""

from __future__ import annotations

import difflib
import ipaddress
import os
import tomllib
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator
from pydantic_settings import (
    BaseSettings,
    EnvSettingsSource,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    SettingsError,
)

from hubbub import config_proxy
from hubbub.config_admin import AdminSettings
from hubbub.config_apps import NAMESPACE_NAME, ChatSettings, NotificationSettings
from hubbub.config_nats import NatsSettings, check_engine
from hubbub.config_redis import RedisSettings
from hubbub.config_streams import EmulationSettings, HTTPStreamSettings, SSESettings
from hubbub.config_uni import UniHTTPStreamSettings, UniSSESettings, UniWebSocketSettings

DEV_SECRET = "hubbub-development-secret-do-not-use-in-production"
"""The HMAC secret of development mode (``hubbub serve --dev``): public, so never for production."""


class ConfigError(Exception):
    """The configuration is invalid; the message names the option and what is wrong."""


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ChannelOptions(config_proxy.ProxyFlags):
    """Options of a namespace (or of channels without a namespace). All off by default."""

    presence: bool = False
    join_leave: bool = False
    force_push_join_leave: bool = False
    history_size: int = Field(default=0, ge=0)
    history_ttl: float = Field(default=0.0, ge=0)
    history_meta_ttl: float = Field(default=30 * 24 * 3600.0, gt=0)
    force_recovery: bool = False
    allow_recovery: bool = False
    force_positioning: bool = False
    allow_positioning: bool = False
    allow_subscribe_for_client: bool = False
    allow_subscribe_for_anonymous: bool = False
    allow_publish_for_client: bool = False
    allow_publish_for_subscriber: bool = False
    allow_publish_for_anonymous: bool = False
    allow_presence_for_client: bool = False
    allow_presence_for_subscriber: bool = False
    allow_presence_for_anonymous: bool = False
    allow_history_for_client: bool = False
    allow_history_for_subscriber: bool = False
    allow_history_for_anonymous: bool = False
    allow_user_limited_channels: bool = False
    publication_data_format: Literal["json", "binary"] = "json"
    allowed_delta_types: list[Literal["fossil"]] = []
    delta_publish: bool = False

    @model_validator(mode="after")
    def _history_pair(self) -> ChannelOptions:
        if (self.history_size > 0) != (self.history_ttl > 0):
            raise ValueError("history_size and history_ttl must be set together (both > 0)")
        if (self.force_recovery or self.allow_recovery) and self.history_size == 0:
            raise ValueError("recovery needs history: set history_size and history_ttl")
        return self

    @property
    def use_history(self) -> bool:
        return self.history_size > 0 and self.history_ttl > 0

    @property
    def binary(self) -> bool:
        """Publications carry opaque bytes: only Protobuf clients can read them."""
        return self.publication_data_format == "binary"


class Namespace(ChannelOptions):
    """A named namespace: channels ``<name>:<rest>`` take these options."""

    name: str

    @model_validator(mode="after")
    def _name(self) -> Namespace:
        if not NAMESPACE_NAME.match(self.name):
            raise ValueError(
                f"namespace name {self.name!r} must be 2+ characters of letters, digits, - _ ."
            )
        return self


DEV_CHANNEL = ChannelOptions(
    presence=True,
    join_leave=True,
    history_size=100,
    history_ttl=300.0,
    force_recovery=True,
)
"""Options of channels without a namespace in development mode, unless configured."""


class ChannelSettings(_Section):
    """Channel name grammar and namespaces."""

    private_prefix: str = "$"
    namespace_boundary: str = ":"
    user_boundary: str = "#"
    user_separator: str = ","
    max_length: int = Field(default=255, ge=1)
    without_namespace: ChannelOptions = ChannelOptions()
    namespaces: list[Namespace] = []
    proxy: config_proxy.ChannelProxies = config_proxy.ChannelProxies()

    @model_validator(mode="after")
    def _unique(self) -> ChannelSettings:
        seen: set[str] = set()
        for ns in self.namespaces:
            if ns.name in seen:
                raise ValueError(f"namespace {ns.name!r} is defined twice")
            seen.add(ns.name)
        return self


class TokenSettings(_Section):
    """How connection and subscription JWTs are verified."""

    hmac_secret_key: str = ""
    rsa_public_key: str = ""
    ecdsa_public_key: str = ""
    audience: str = ""
    issuer: str = ""
    algorithms: list[str] = [
        "HS256", "HS384", "HS512", "RS256", "RS384", "RS512", "ES256", "ES384", "ES512",
    ]  # fmt: skip
    leeway: float = Field(default=0.0, ge=0)
    # Off by default: Centrifugo-style backends may issue connection tokens without exp (a
    # connection that never expires); production setups that can should turn it on.
    require_exp: bool = False
    require_strong_keys: bool = False  # off: a short HMAC key only warns (auth.weak_hmac_key)

    @model_validator(mode="after")
    def _algorithms(self) -> TokenSettings:
        if self.require_strong_keys and 0 < len(self.hmac_secret_key.encode()) < 32:
            # Shorter HMAC keys can be brute-forced from any token a user holds (RFC 7518 3.2).
            raise ValueError("hmac_secret_key must be at least 32 bytes (require_strong_keys)")
        known = {"HS256", "HS384", "HS512", "RS256", "RS384", "RS512", "ES256", "ES384", "ES512"}
        for alg in self.algorithms:
            if alg not in known:
                raise ValueError(f"algorithm {alg!r} is not supported (use {sorted(known)})")
        return self


class ClientSettings(_Section):
    """Per-connection behaviour and limits."""

    ping_interval: float = Field(default=25.0, gt=0)
    pong_timeout: float = Field(default=8.0, ge=0)
    stale_close_delay: float = Field(default=10.0, gt=0)
    expired_close_delay: float = Field(default=25.0, ge=0)
    channel_limit: int = Field(default=128, ge=1)
    queue_max_size: int = Field(default=1024 * 1024, ge=1024)
    max_message_size: int = Field(default=65536, ge=256)
    max_fragments: int = Field(default=512, ge=1)
    history_max_publication_limit: int = Field(default=300, ge=0)
    recovery_max_publication_limit: int = Field(default=300, ge=0)
    allow_anonymous_connect_without_token: bool = False
    personal_channel: bool = True
    personal_channel_namespace: str = ""
    presence_update_interval: float = Field(default=25.0, gt=0)
    presence_ttl: float = Field(default=60.0, gt=0)
    allowed_origins: list[str] = []
    proxy: config_proxy.ClientProxies = config_proxy.ClientProxies()

    @model_validator(mode="after")
    def _timing(self) -> ClientSettings:
        if self.pong_timeout >= self.ping_interval:
            raise ValueError("pong_timeout must be smaller than ping_interval")
        if self.presence_ttl <= self.presence_update_interval:
            raise ValueError("presence_ttl must be larger than presence_update_interval")
        return self


class LimitSettings(_Section):
    """Limits against abuse; on by default. 0 disables a limit."""

    connections_per_user: int = Field(default=100, ge=0)
    connections_per_ip: int = Field(default=1000, ge=0)
    max_connections: int = Field(default=100_000, ge=0)
    command_rate: float = Field(default=50.0, ge=0)
    command_burst: int = Field(default=200, ge=1)
    user_command_rate: float = Field(default=200.0, ge=0)
    user_command_burst: int = Field(default=800, ge=1)
    rejections_before_disconnect: int = Field(default=20, ge=1)
    header_timeout: float = Field(default=10.0, ge=0)
    max_header_size: int = Field(default=32768, ge=0)
    max_headers: int = Field(default=100, ge=0)
    frame_rate: float = Field(default=1000.0, ge=0)
    frame_burst: int = Field(default=1000, ge=1)
    frame_byte_rate: float = Field(default=8 * 1024 * 1024, ge=0)
    frame_byte_burst: int = Field(default=16 * 1024 * 1024, ge=1)
    trusted_proxies: list[str] = []

    @model_validator(mode="after")
    def _proxies(self) -> LimitSettings:
        for proxy in self.trusted_proxies:
            try:
                ipaddress.ip_network(proxy, strict=False)
            except ValueError:
                raise ValueError(
                    f"trusted_proxies: {proxy!r} is not an address or network"
                ) from None
        return self


class HTTPAPISettings(_Section):
    """The server HTTP API (``POST /api/<method>``)."""

    key: str = ""
    insecure: bool = False
    prefix: str = "/api"
    max_body_size: int = Field(default=1024 * 1024, ge=1024)
    idempotent_result_ttl: float = Field(default=300.0, gt=0)
    docs: bool | None = None
    """The interactive API page at ``docs_path``: None = on in development mode only."""
    docs_path: str = "/api/docs"

    @property
    def enabled(self) -> bool:
        return bool(self.key) or self.insecure

    def docs_enabled(self, development: bool) -> bool:
        """Whether the API page is served (``docs``, or else whether in development mode)."""
        return self.enabled and (development if self.docs is None else self.docs)


class StoreSettings(_Section):
    """Where the chat archive and the notification inboxes live."""

    url: str = "sqlite:///hubbub.db"
    """``sqlite:///file.db`` (relative to the configuration file's folder, or the working
    directory without one), ``sqlite:////absolute/path.db``, ``sqlite:///:memory:`` (gone
    at exit) or ``postgresql://user@host:port/database``."""

    @model_validator(mode="after")
    def _url(self) -> StoreSettings:
        # Only the URL's form: no store is made and no database driver imported.
        from hubbub.store import check_store_url

        check_store_url(self.url)
        return self


def chat_namespace(chat: ChatSettings) -> Namespace:
    """The namespace every room channel takes: presence with join/leave pushed to every
    member, a hot stream for recovery after short disconnects, and no client publishing
    (messages go through the server, which stores them first)."""
    return Namespace(
        name=chat.namespace,
        presence=True,
        join_leave=True,
        force_push_join_leave=True,
        history_size=chat.stream_size,
        history_ttl=chat.stream_ttl,
        force_recovery=True,
        allow_subscribe_for_client=True,
        allow_presence_for_subscriber=True,
        allow_history_for_subscriber=True,
    )


class Settings(BaseSettings):
    """Every option of a hubbub server."""

    model_config = SettingsConfigDict(
        env_prefix="HUBBUB_", env_nested_delimiter="__", extra="forbid", frozen=True
    )

    host: str = "127.0.0.1"
    port: int = Field(default=8000, ge=0, le=65535)
    name: str = ""
    engine: Literal["memory", "redis", "nats"] = "memory"
    development: bool = False
    log_level: Literal["debug", "info", "warning", "error"] = "info"
    log_format: Literal["text", "json"] = "text"
    websocket_path: str = "/connection/websocket"
    websocket_compression: bool = False
    # A reconnect storm brings thousands of connections at once; SYNs beyond a full accept
    # queue are dropped and retried by the clients only after 1, 3, 7 s.
    listen_backlog: int = Field(default=4096, ge=1, le=65535)
    # ... and a loop turn that set them all up would hold every delivery for seconds.
    handshakes_per_turn: int = Field(default=128, ge=0)
    transport: Literal["native", "asgi"] = "native"
    write_delay: float = Field(default=0.002, ge=0, le=0.1)
    shutdown_drain_period: float = Field(default=5.0, ge=0, le=300)
    announce_interval: float = Field(default=2.0, gt=0, le=60)
    node_lapse: float = Field(default=6.0, gt=0, le=600)
    token: TokenSettings = TokenSettings()
    client: ClientSettings = ClientSettings()
    channel: ChannelSettings = ChannelSettings()
    http_api: HTTPAPISettings = HTTPAPISettings()
    limits: LimitSettings = LimitSettings()
    redis: RedisSettings = RedisSettings()
    nats: NatsSettings = NatsSettings()
    store: StoreSettings = StoreSettings()
    chat: ChatSettings = ChatSettings()
    notifications: NotificationSettings = NotificationSettings()
    http_stream: HTTPStreamSettings = HTTPStreamSettings()
    sse: SSESettings = SSESettings()
    emulation: EmulationSettings = EmulationSettings()
    uni_websocket: UniWebSocketSettings = UniWebSocketSettings()
    uni_sse: UniSSESettings = UniSSESettings()
    uni_http_stream: UniHTTPStreamSettings = UniHTTPStreamSettings()
    rpc: config_proxy.RPCSettings = config_proxy.RPCSettings()
    proxies: list[config_proxy.NamedProxy] = []
    admin: AdminSettings = AdminSettings()

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        # Environment beats the file (passed as init values), which beats the defaults.
        if isinstance(env_settings, EnvSettingsSource):
            # HUBBUB_TOKEN, HUBBUB_URL…: the client commands' variables, not options (without
            # this, HUBBUB_TOKEN=<a JWT> would be read as the [token] section).
            env_settings.env_vars = {
                name: value
                for name, value in env_settings.env_vars.items()
                if not _not_an_option(name)
            }
        return (env_settings, init_settings)

    @model_validator(mode="after")
    def _proxies(self) -> Settings:
        config_proxy.check_proxies(self)  # the proxy sections refer to each other
        return self

    @model_validator(mode="after")
    def _admin_proxy(self) -> Settings:
        # The sign-on header is believed only from known proxies: without any, from no one.
        if self.admin.proxy_user_header and not self.limits.trusted_proxies:
            raise ValueError("admin.proxy_user_header needs limits.trusted_proxies")
        return self

    @model_validator(mode="after")
    def _node_lapse(self) -> Settings:
        # A live node renews its liveness every announce_interval: the lapse must leave room
        # for a late renewal, or peers would take a busy node for a dead one.
        if self.node_lapse < 2 * self.announce_interval:
            raise ValueError("node_lapse must be at least twice announce_interval")
        return self

    @model_validator(mode="after")
    def _chat_namespace(self) -> Settings:
        # The chat rooms' namespace exists unless the configuration defines it itself.
        if self.chat.enabled and self.namespace(self.chat.namespace) is None:
            spaces = [*self.channel.namespaces, chat_namespace(self.chat)]
            channel = self.channel.model_copy(update={"namespaces": spaces})
            object.__setattr__(self, "channel", channel)
        return self

    @model_validator(mode="after")
    def _dev_defaults(self) -> Settings:
        if not self.development:
            return self
        if not (
            self.token.hmac_secret_key or self.token.rsa_public_key or self.token.ecdsa_public_key
        ):
            object.__setattr__(
                self, "token", self.token.model_copy(update={"hmac_secret_key": DEV_SECRET})
            )
        if not self.http_api.key and not self.http_api.insecure:
            # Development: the API answers without a key, like everything else here.
            api = self.http_api.model_copy(update={"insecure": True})
            object.__setattr__(self, "http_api", api)
        if self.channel.without_namespace == ChannelOptions():
            # A playground: channels without a namespace show every feature out of the box.
            playground = self.channel.model_copy(update={"without_namespace": DEV_CHANNEL})
            object.__setattr__(self, "channel", playground)
        return self

    @model_validator(mode="after")
    def _nats(self) -> Settings:
        # After the namespaces are complete (the chat's, development's defaults).
        check_engine(self)
        return self

    def namespace(self, name: str) -> ChannelOptions | None:
        """Options of namespace ``name`` ("" = channels without a namespace), or None."""
        if not name:
            return self.channel.without_namespace
        for ns in self.channel.namespaces:
            if ns.name == name:
                return ns
        return None


COMMAND_VARIABLES = frozenset(
    {"HUBBUB_URL", "HUBBUB_TOKEN", "HUBBUB_API", "HUBBUB_API_KEY", "HUBBUB_SETTINGS_JSON"}
)
"""``HUBBUB_*`` environment variables that are not options: the client commands' server,
token and API (``hubbub listen``, ``publish``…) and the settings handed to worker processes."""

_ENV_PREFIX = "HUBBUB_"
# Variables of hubbub's own test suite (time factor, artifacts folder): not options either.
_TEST_PREFIX = "HUBBUB_TEST_"


def _not_an_option(name: str) -> bool:
    upper = name.upper()
    return upper in COMMAND_VARIABLES or upper.startswith(_TEST_PREFIX)


def _section_type(annotation: Any) -> tuple[type[BaseModel] | None, bool]:
    """The model a field holds (or holds a list of), and whether it is a list."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation, False
    args = getattr(annotation, "__args__", ())
    if getattr(annotation, "__origin__", None) is list and args:
        inner = args[0]
        if isinstance(inner, type) and issubclass(inner, BaseModel):
            return inner, True
    return None, False


def option_paths(
    model: type[BaseModel] | None = None, prefix: str = "", *, into_lists: bool = True
) -> Iterator[str]:
    """Every option's dotted path (``client.ping_interval``), sections included; items of a
    list of tables appear as ``channel.namespaces.*.presence`` (not ``into_lists``: not at
    all, as in the environment where such a list is one JSON value)."""
    for name, field in (model or Settings).model_fields.items():
        path = prefix + name
        yield path
        section, is_list = _section_type(field.annotation)
        if section is None or (is_list and not into_lists):
            continue
        inner = f"{path}.*." if is_list else f"{path}."
        yield from option_paths(section, inner, into_lists=into_lists)


def _closest(wrong: str, paths: list[str]) -> str | None:
    matches = difflib.get_close_matches(wrong, paths, n=1, cutoff=0.6)
    if not matches:
        # A misplaced option (``ping_interval`` at the top level): match the last part.
        leaf = wrong.rpartition(".")[2]
        tails = {p.rpartition(".")[2]: p for p in paths}
        near = difflib.get_close_matches(leaf, list(tails), n=1, cutoff=0.8)
        matches = [tails[near[0]]] if near else []
    return matches[0] if matches else None


def _env_name(path: str) -> str:
    return _ENV_PREFIX + path.replace(".", "__").upper()


def check_environment(environ: Mapping[str, str] | None = None) -> None:
    """Refuse a ``HUBBUB_*`` variable that names no option (a typo would otherwise be
    ignored, or half-read).

    Raises:
        ConfigError: ``unknown option HUBBUB_CLIENT__PING_INTERVALL; did you mean
            HUBBUB_CLIENT__PING_INTERVAL?``
    """
    environ = os.environ if environ is None else environ
    valid = {_env_name(p): p for p in option_paths(into_lists=False)}
    for name in sorted(environ):
        upper = name.upper()
        if not upper.startswith(_ENV_PREFIX) or _not_an_option(upper) or upper in valid:
            continue
        wrong = upper[len(_ENV_PREFIX) :].lower().replace("__", ".")
        near = _closest(wrong, list(valid.values()))
        hint = f"; did you mean {_env_name(near)}?" if near else ""
        raise ConfigError(f"unknown option {name}{hint}")


def _unknown_option(loc: tuple[int | str, ...], source: str) -> str:
    """``unknown option client.ping_intervall in FILE; did you mean client.ping_interval?``"""
    wrong = ".".join(str(part) for part in loc)
    pattern = ".".join("*" if isinstance(part, int) else str(part) for part in loc)
    near = _closest(pattern, [p for p in option_paths() if p.count(".") <= pattern.count(".")])
    hint = ""
    if near is not None:
        indexes = iter(str(part) for part in loc if isinstance(part, int))
        near = ".".join(next(indexes, "0") if part == "*" else part for part in near.split("."))
        hint = f"; did you mean {near}?"
    return f"unknown option {wrong}{source}{hint}"


def _format_error(exc: ValidationError, path: str | Path | None = None) -> str:
    """One line naming every wrong option; an unknown one with the closest valid option."""
    source = f" in {path}" if path is not None else ""
    lines = []
    for err in exc.errors():
        if err["type"] == "extra_forbidden":
            lines.append(_unknown_option(tuple(err["loc"]), source))
            continue
        where = ".".join(str(p) for p in err["loc"]) or "(top level)"
        lines.append(f"{where}: {' '.join(err['msg'].split())}")
    return "invalid configuration: " + "; ".join(lines)


def load_settings(path: str | Path | None = None, **overrides: Any) -> Settings:
    """Read settings from the TOML file at ``path`` (optional), the environment and ``overrides``.

    ``overrides`` (top-level options given as command-line flags) beat both the file and the
    environment: a flag typed now is the user's latest word.

    Raises:
        ConfigError: the file is missing or not TOML, a ``HUBBUB_*`` variable or a key of the
            file names no option (the message names the closest one), or an option is
            invalid; the message, one line, names the option.
    """
    check_environment()
    data: dict[str, Any] = {}
    if path is not None:
        try:
            data = tomllib.loads(Path(path).read_text())
        except FileNotFoundError:
            raise ConfigError(f"configuration file {str(path)!r} does not exist") from None
        except OSError as exc:
            raise ConfigError(f"cannot read configuration file {str(path)!r}: {exc}") from None
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(
                f"configuration file {str(path)!r} is not valid TOML: {exc}"
            ) from None
    if path is not None:
        _anchor_sqlite(data, Path(path).resolve().parent)
    try:
        settings = Settings(**data)
        if overrides:
            # Only what was set: validators tell an option given from its default (a
            # [redis] url next to cluster_addresses is refused, the default url is not).
            merged = settings.model_dump(exclude_unset=True)
            merged.update(overrides)
            settings = Settings.model_validate(merged)
    except ValidationError as exc:
        raise ConfigError(_format_error(exc, path)) from None
    except SettingsError as exc:
        # A section given as an environment variable that is not JSON, say.
        cause = f" ({exc.__cause__})" if exc.__cause__ else ""
        raise ConfigError(f"invalid environment: {exc}{cause}") from None
    return settings


def _anchor_sqlite(data: dict[str, Any], folder: Path) -> None:
    """Make a relative SQLite path of the store (the file's, or the default one) relative to
    the file's folder, so a server started from anywhere finds the same archive."""
    store = data.setdefault("store", {})
    if not isinstance(store, dict):
        return
    url = store.setdefault("url", StoreSettings().url)
    prefix = "sqlite:///"
    if isinstance(url, str) and url.startswith(prefix) and not url.startswith(prefix + "/"):
        rest = url[len(prefix) :]
        if rest != ":memory:":
            store["url"] = prefix + str(folder / rest)
