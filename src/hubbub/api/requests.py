"""Request bodies of the server HTTP API (PROTOCOL.md §8), as typed structs.

Unknown fields are ignored; a field of the wrong type is a 107 with a message naming it.
Payloads (``data``, ``info``) are embedded JSON kept verbatim; their base64 twins
(``b64data``, ``b64info``) carry the same payload base64-encoded.
"""

from __future__ import annotations

from msgspec import Raw, Struct, field

from hubbub.protocol.messages import EMPTY, StreamPositionMsg


class _Payload(Struct):
    data: Raw = EMPTY
    b64data: str = ""
    skip_history: bool = False
    tags: dict[str, str] = field(default_factory=dict)
    idempotency_key: str = ""
    delta: bool = False


class PublishRequest(_Payload):
    channel: str = ""


class BroadcastRequest(_Payload):
    channels: list[str] = field(default_factory=list)


class SubscribeRequest(Struct):
    user: str = ""
    channel: str = ""
    info: Raw = EMPTY
    b64info: str = ""
    client: str = ""
    session: str = ""
    data: Raw = EMPTY
    b64data: str = ""
    recover_since: StreamPositionMsg | None = None
    expire_at: int = 0


class UnsubscribeRequest(Struct):
    user: str = ""
    channel: str = ""
    client: str = ""
    session: str = ""


class DisconnectObject(Struct):
    code: int = 0
    reason: str = ""


class DisconnectRequest(Struct):
    user: str = ""
    client: str = ""
    session: str = ""
    whitelist: list[str] = field(default_factory=list)
    disconnect: DisconnectObject | None = None


class RefreshRequest(Struct):
    user: str = ""
    client: str = ""
    session: str = ""
    expired: bool = False
    expire_at: int = 0


class ChannelRequest(Struct):
    """presence, presence_stats, history_remove."""

    channel: str = ""


class HistoryRequest(Struct):
    channel: str = ""
    limit: int = 0
    since: StreamPositionMsg | None = None
    reverse: bool = False


class ChannelsRequest(Struct):
    pattern: str = ""


class InfoRequest(Struct):
    pass


class BatchRequest(Struct):
    commands: list[dict[str, Raw]] = field(default_factory=list)
    parallel: bool = False
