"""The applications' server API methods (API key), next to the built-in ones:

* ``notify`` ``{"user": "alice"}`` or ``{"users": [...]}`` or ``{"everyone": true}``, plus
  ``body``, optional ``title``, ``data`` (any JSON) and ``link`` →
  ``{"count": n, "notifications": [{"id", "user"}]}``;
* ``chat_create_room`` ``{"room"}`` → ``{"room": {...}, "created": bool}``;
* ``chat_rooms`` ``{"after"?, "limit"?}`` → ``{"rooms": [...], "next", "total"}`` (one page);
* ``chat_history`` ``{"room", "limit"?, "before"?}`` → ``{"messages": [...]}``;
* ``chat_send`` ``{"room", "user", "text"}`` → ``{"message": {...}}`` (a backend speaking for
  a user: stored and published like a message from the user's own connection).
"""

from __future__ import annotations

from typing import Any

import msgspec

from hubbub.api.methods import ServerAPI
from hubbub.apps.chat.service import ChatService, message_view
from hubbub.apps.errors import bad_request
from hubbub.apps.notify.service import NotificationService
from hubbub.protocol.messages import EMPTY


class NotifyRequest(msgspec.Struct, forbid_unknown_fields=True):
    body: str
    title: str = ""
    user: str = ""
    users: list[str] | None = None
    everyone: bool = False
    data: msgspec.Raw = EMPTY
    link: str = ""

    def recipients(self) -> list[str] | None:
        """The users named, None for everyone. Raises 107 unless exactly one form is given."""
        forms = sum([bool(self.user), self.users is not None, self.everyone])
        if forms != 1:
            raise bad_request("give exactly one of user, users or everyone")
        if self.everyone:
            return None
        return [self.user] if self.user else list(self.users or [])


class RoomRequest(msgspec.Struct, forbid_unknown_fields=True):
    room: str


class RoomsRequest(msgspec.Struct, forbid_unknown_fields=True):
    after: str = ""
    limit: int | None = None


class HistoryRequest(msgspec.Struct, forbid_unknown_fields=True):
    room: str
    limit: int | None = None
    before: int | None = None


class SendRequest(msgspec.Struct, forbid_unknown_fields=True):
    room: str
    user: str
    text: str


def register_notify(api: ServerAPI, service: NotificationService) -> None:
    """Add ``notify`` to ``api``."""

    async def notify(req: NotifyRequest) -> dict[str, Any]:
        data = None if req.data is EMPTY else msgspec.json.decode(req.data)
        notes = await service.notify(
            req.recipients(), body=req.body, title=req.title, data=data, link=req.link
        )
        return {
            "count": len(notes),
            "notifications": [{"id": n.id, "user": n.user} for n in notes],
        }

    api.register("notify", NotifyRequest, notify)


def register_chat(api: ServerAPI, chat: ChatService) -> None:
    """Add the ``chat_*`` methods to ``api``."""

    async def create_room(req: RoomRequest) -> dict[str, Any]:
        room, created = await chat.create_room(req.room)
        return {"room": (await chat.room_view(room.name)).as_dict(), "created": created}

    async def rooms(req: RoomsRequest) -> dict[str, Any]:
        return (await chat.room_page(after=req.after, limit=req.limit)).as_dict()

    async def history(req: HistoryRequest) -> dict[str, Any]:
        msgs = await chat.history(req.room, limit=req.limit, before=req.before)
        return {"messages": [message_view(m) for m in msgs]}

    async def send(req: SendRequest) -> dict[str, Any]:
        return {"message": message_view(await chat.send(req.user, req.room, req.text))}

    api.register("chat_create_room", RoomRequest, create_room)
    api.register("chat_rooms", RoomsRequest, rooms)
    api.register("chat_history", HistoryRequest, history)
    api.register("chat_send", SendRequest, send)
