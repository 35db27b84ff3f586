"""The chat's RPC methods, for clients connected over the protocol.

``chat.rooms {after?, limit?}`` → ``{"rooms": [...], "next", "total"}`` (one page, sorted by
name; pass ``next`` as ``after`` for the following page); ``chat.history {room, limit?,
before?}`` → ``{"messages": [...]}``; ``chat.send {room, text}`` → ``{"message": {...}}``;
``chat.edit {id, text}``; ``chat.delete {id}``; ``chat.typing {room}``. Sending and typing need
a subscription to the room on the same connection (membership); history needs the room to
exist. Errors are the service's (see :mod:`hubbub.apps.chat.service`).
"""

from __future__ import annotations

import msgspec

from hubbub.apps.chat.service import ChatService, message_view
from hubbub.apps.errors import decode_args
from hubbub.protocol.codes import ErrorCode, error
from hubbub.protocol.messages import raw
from hubbub.session import Session


class _Room(msgspec.Struct, forbid_unknown_fields=True):
    room: str


class _Rooms(msgspec.Struct, forbid_unknown_fields=True):
    after: str = ""
    limit: int | None = None


class _History(msgspec.Struct, forbid_unknown_fields=True):
    room: str
    limit: int | None = None
    before: int | None = None


class _Send(msgspec.Struct, forbid_unknown_fields=True):
    room: str
    text: str


class _Edit(msgspec.Struct, forbid_unknown_fields=True):
    id: int
    text: str


class _Delete(msgspec.Struct, forbid_unknown_fields=True):
    id: int


def install(chat: ChatService) -> None:
    """Register the chat's RPC methods and the room subscription check on ``chat.node``."""
    node = chat.node

    def member(session: Session, room: str) -> None:
        if chat.channel(chat.check_room_name(room)) not in session.subscriptions:
            raise error(ErrorCode.PERMISSION_DENIED, "permission denied: join the room first")

    @node.check_subscribe(chat.settings.namespace)
    async def join(session: Session, channel: str) -> None:
        # Whatever follows the namespace must be a room name: private ($chat:…) and
        # user-limited (chat:room#a,b) forms are refused by the name check.
        room = channel.partition(node.settings.channel.namespace_boundary)[2]
        await chat.require_room(
            room if channel.startswith(chat.prefix) else channel, user=session.user
        )

    @node.rpc("chat.rooms")
    async def rooms(session: Session, data: msgspec.Raw) -> msgspec.Raw:
        args = decode_args(data, _Rooms)
        return raw((await chat.room_page(after=args.after, limit=args.limit)).as_dict())

    @node.rpc("chat.history")
    async def history(session: Session, data: msgspec.Raw) -> msgspec.Raw:
        args = decode_args(data, _History)
        msgs = await chat.history(args.room, limit=args.limit, before=args.before)
        return raw({"messages": [message_view(m) for m in msgs]})

    @node.rpc("chat.send")
    async def send(session: Session, data: msgspec.Raw) -> msgspec.Raw:
        args = decode_args(data, _Send)
        member(session, args.room)
        msg = await chat.send(session.user, args.room, args.text)
        return raw({"message": message_view(msg)})

    @node.rpc("chat.edit")
    async def edit(session: Session, data: msgspec.Raw) -> msgspec.Raw:
        args = decode_args(data, _Edit)
        return raw({"message": message_view(await chat.edit(session.user, args.id, args.text))})

    @node.rpc("chat.delete")
    async def delete(session: Session, data: msgspec.Raw) -> msgspec.Raw:
        args = decode_args(data, _Delete)
        return raw({"message": message_view(await chat.delete(session.user, args.id))})

    @node.rpc("chat.typing")
    async def typing(session: Session, data: msgspec.Raw) -> msgspec.Raw:
        args = decode_args(data, _Room)
        member(session, args.room)
        return raw({"sent": await chat.typing(session.user, args.room)})
