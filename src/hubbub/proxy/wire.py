"""The bodies of Centrifugo v6's HTTP proxy requests and responses, as msgspec structs.

Requests carry the fields of PROTOCOL-EXTENSIONS 3.2-3.3 (JSON payloads embedded raw, or
base64 in ``b64data`` with ``binary_encoding``); responses are ``{result?, error?,
disconnect?}`` with the result fields of 3.5. Unknown response fields are ignored; an
absent or ``null`` payload is :data:`~hubbub.protocol.messages.EMPTY`.
"""

from __future__ import annotations

from typing import Any, Generic, TypeVar

from msgspec import Raw, Struct, field

from hubbub.protocol.messages import EMPTY

T = TypeVar("T")


class _Request(Struct, omit_defaults=True):
    client: str
    transport: str
    protocol: str
    encoding: str


class ConnectRequest(_Request, omit_defaults=True):
    name: str = ""
    version: str = ""
    data: Raw = EMPTY
    b64data: str = ""
    channels: list[str] = field(default_factory=list)


class RefreshRequest(_Request, omit_defaults=True):
    user: str  # always sent, "" for anonymous
    meta: Raw = EMPTY


class ChannelRequest(_Request, omit_defaults=True):
    """subscribe, publish and sub_refresh (sub_refresh carries no data)."""

    user: str
    channel: str
    data: Raw = EMPTY
    b64data: str = ""
    meta: Raw = EMPTY


class RPCRequest(_Request, omit_defaults=True):
    user: str
    method: str = ""
    data: Raw = EMPTY
    b64data: str = ""
    meta: Raw = EMPTY


class Error(Struct):
    code: int = 0
    message: str = ""
    temporary: bool = False


class Disconnect(Struct):
    code: int = 0
    reason: str = ""


class Response(Struct, Generic[T]):
    result: T | None = None
    error: Error | None = None
    disconnect: Disconnect | None = None


class SubscribeOptions(Struct):
    info: Raw = EMPTY
    b64info: str = ""
    data: Raw = EMPTY
    b64data: str = ""
    override: dict[str, Any] | None = None


class ConnectResult(Struct):
    user: str = ""
    expire_at: int = 0
    info: Raw = EMPTY
    b64info: str = ""
    data: Raw = EMPTY
    b64data: str = ""
    channels: list[str] = field(default_factory=list)
    subs: dict[str, SubscribeOptions] = field(default_factory=dict)
    meta: Raw = EMPTY


class RefreshResult(Struct):
    expired: bool = False
    expire_at: int = 0
    info: Raw = EMPTY
    b64info: str = ""
    meta: Raw = EMPTY


class SubscribeResult(Struct):
    expire_at: int = 0
    info: Raw = EMPTY
    b64info: str = ""
    data: Raw = EMPTY
    b64data: str = ""
    override: dict[str, Any] | None = None


class PublishResult(Struct):
    data: Raw = EMPTY
    b64data: str = ""
    skip_history: bool = False
    tags: dict[str, str] | None = None
    idempotency_key: str = ""
    delta: bool = False


class SubRefreshResult(Struct):
    expired: bool = False
    expire_at: int = 0
    info: Raw = EMPTY
    b64info: str = ""


class RPCResult(Struct):
    data: Raw = EMPTY
    b64data: str = ""
