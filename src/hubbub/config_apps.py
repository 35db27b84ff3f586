"""Settings of the applications that come with the server: ``[chat]`` and
``[notifications]``.

Kept apart from :mod:`hubbub.config`, which holds them as sections of ``Settings`` (and
re-exports them); every option is documented in ``docs/configuration.md``.
"""

from __future__ import annotations

import re

from pydantic import BaseModel, ConfigDict, Field, model_validator

NAMESPACE_NAME = re.compile(r"^[-a-zA-Z0-9_.]{2,}$")
"""Namespace names, as :mod:`hubbub.config` checks them."""


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


_ROOM_NAME = re.compile(r"^[-a-zA-Z0-9_.]{1,64}$")


class ChatSettings(_Section):
    """The chat application: rooms are channels ``<namespace>:<room>``."""

    enabled: bool = True
    namespace: str = "chat"
    auto_create_rooms: bool = True
    default_rooms: list[str] = ["lobby"]
    max_message_length: int = Field(default=4000, ge=1, le=100_000)
    history_on_join: int = Field(default=50, ge=1, le=1000)
    max_history_page: int = Field(default=200, ge=1, le=1000)
    send_rate: float = Field(default=5.0, gt=0)
    send_burst: int = Field(default=20, ge=1)
    typing_interval: float = Field(default=2.0, ge=0)
    max_rooms: int = Field(default=10_000, ge=1)
    room_create_rate: float = Field(default=0.1, ge=0)
    room_create_burst: int = Field(default=10, ge=1)
    rooms_page_size: int = Field(default=100, ge=1, le=1000)
    max_rooms_page: int = Field(default=500, ge=1, le=1000)
    stream_size: int = Field(default=200, ge=1)
    stream_ttl: float = Field(default=3600.0, gt=0)

    @model_validator(mode="after")
    def _names(self) -> ChatSettings:
        if not NAMESPACE_NAME.match(self.namespace):
            raise ValueError(f"namespace {self.namespace!r}: 2+ letters, digits, - _ .")
        for room in self.default_rooms:
            if not _ROOM_NAME.match(room):
                raise ValueError(f"default_rooms: {room!r} is not a room name")
        if self.rooms_page_size > self.max_rooms_page:
            raise ValueError("rooms_page_size must not exceed max_rooms_page")
        return self


def valid_room(name: str) -> bool:
    """Room names: 1-64 letters, digits, ``-``, ``_`` and ``.``."""
    return bool(_ROOM_NAME.match(name))


class NotificationSettings(_Section):
    """The notification application: per-user inboxes pushed on the personal channel."""

    enabled: bool = True
    max_title_length: int = Field(default=200, ge=1)
    max_body_length: int = Field(default=2000, ge=1)
    max_data_size: int = Field(default=4096, ge=0)
    max_recipients: int = Field(default=10_000, ge=1)
    max_page: int = Field(default=100, ge=1)
