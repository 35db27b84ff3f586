"""The chat service: rooms, sending, editing, deleting, typing and the archive's history.

A room ``lobby`` is the channel ``chat:lobby`` (the namespace is configurable). Clients
subscribe to it to receive messages, presence and join/leave; they never publish into it.
Every message goes through :meth:`ChatService.send`, which validates it, stores it, then
publishes it, so the archive has everything the room ever showed and each publication carries
the message's archive id. History comes from the archive, so it survives restarts and reaches
further back than the channel's hot stream (which only serves recovery after short
disconnects).

Publications in a room channel are JSON objects with a ``type``:

* ``{"type": "message", "message": {...}}``: a new message (see :func:`message_view`);
* ``{"type": "edit", "message": {...}}`` and ``{"type": "delete", "message": {...}}``: the
  message with that ``id`` changed; deleted ones have an empty ``text``;
* ``{"type": "typing", "user": "alice"}``: ephemeral, never stored, not in the stream.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
from dataclasses import dataclass
from typing import Any

from hubbub.apps.errors import bad_request, check_text, not_found
from hubbub.config_apps import ChatSettings, valid_room
from hubbub.limits import TokenBucket
from hubbub.node import Node
from hubbub.protocol.codes import ErrorCode, ProtocolError, error
from hubbub.store import ChatMessage, Room, Store, StoreError

log = logging.getLogger("hubbub.chat")

_REMEMBERED = 10_000  # senders (and typing user/room pairs) remembered before a sweep


def message_view(msg: ChatMessage) -> dict[str, Any]:
    """The JSON form of a message, as published and as returned by history."""
    view: dict[str, Any] = {
        "id": msg.id,
        "room": msg.room,
        "user": msg.user,
        "text": msg.text,
        "ts": msg.created_at,
    }
    if msg.edited_at is not None:
        view["edited"] = msg.edited_at
    if msg.deleted:
        view["deleted"] = True
    if msg.offset:
        view["offset"] = msg.offset
        view["epoch"] = msg.epoch
    return view


@dataclass(frozen=True, slots=True)
class RoomView:
    """A room as listed: its archive facts and who is in it now."""

    name: str
    channel: str
    messages: int
    online: int
    created_at: float
    last_message_at: float | None

    def as_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@dataclass(frozen=True, slots=True)
class RoomPage:
    """One page of the room list.

    Attributes:
        rooms: the rooms of this page, sorted by name.
        next: the cursor of the next page (pass it as ``after``), None on the last page.
        total: how many rooms exist.
    """

    rooms: list[RoomView]
    next: str | None
    total: int

    def as_dict(self) -> dict[str, Any]:
        return {"rooms": [r.as_dict() for r in self.rooms], "next": self.next, "total": self.total}


def _unavailable(exc: StoreError) -> ProtocolError:
    log.warning("store failed: %s", exc)
    return error(ErrorCode.INTERNAL, "internal server error: message store unavailable")


class ChatService:
    """Rooms and messages of one node.

    Args:
        node: the node rooms live on (its settings must define the chat namespace, which
            :class:`~hubbub.config.Settings` does by default).
        store: the archive.
        settings: the chat options.
    """

    def __init__(self, node: Node, store: Store, settings: ChatSettings) -> None:
        self.node = node
        self.store = store
        self.settings = settings
        self.prefix = f"{settings.namespace}{node.settings.channel.namespace_boundary}"
        self._senders: dict[str, TokenBucket] = {}
        self._creators: dict[str, TokenBucket] = {}
        self._too_fast: set[str] = set()  # creators already logged as too fast
        self._full = False  # max_rooms reached (and logged)
        self._typing: dict[tuple[str, str], float] = {}

    # -----------------------------------------------------------------------------------------
    # Names

    def channel(self, room: str) -> str:
        """The channel of ``room``."""
        return self.prefix + room

    def room_of(self, channel: str) -> str | None:
        """The room whose channel is ``channel``, or None."""
        if not channel.startswith(self.prefix):
            return None
        room = channel[len(self.prefix) :]
        return room if valid_room(room) else None

    @staticmethod
    def check_room_name(room: str) -> str:
        """``room`` if it is a valid room name. Raises 107 naming the rule otherwise."""
        if not valid_room(room):
            raise bad_request(
                f"room name {room[:80]!r} must be 1-64 letters, digits, '-', '_' or '.'"
            )
        return room

    # -----------------------------------------------------------------------------------------
    # Rooms

    async def start(self) -> None:
        """Create the configured default rooms."""
        for room in self.settings.default_rooms:
            await self.create_room(room, limited=False)

    async def create_room(
        self, room: str, *, by: str = "", limited: bool = True
    ) -> tuple[Room, bool]:
        """Create ``room`` unless it exists; return it and whether it is new.

        Raises:
            ProtocolError: 107 bad name; 106 there are ``max_rooms`` rooms already (unless
                not ``limited``: the configured default rooms always exist).
        """
        self.check_room_name(room)
        try:
            found = await self.store.room(room)
            if found is not None:
                return found, False
            if limited:
                await self._check_room_limit()
            return await self.store.create_room(room, by, self.node.clock.time())
        except StoreError as exc:
            raise _unavailable(exc) from None

    async def _check_room_limit(self) -> None:
        # Counted before each creation: creations are rare (rate-limited per user), and nodes
        # sharing one store then share the limit. Concurrent creations may pass it by a few.
        if await self.store.room_count() < self.settings.max_rooms:
            self._full = False
            return
        self.node.counters["chat_refused.max_rooms"] += 1
        if not self._full:  # logged once each time the limit is reached
            self._full = True
            log.warning("room creation refused: max_rooms (%d) reached", self.settings.max_rooms)
        raise error(
            ErrorCode.LIMIT_EXCEEDED,
            f"limit exceeded: the server has its maximum of {self.settings.max_rooms} rooms;"
            " join an existing room",
        )

    def _check_create_rate(self, user: str) -> None:
        # Anonymous users ("") share one bucket: together they create no more than one user.
        bucket = self._creators.get(user)
        if bucket is None:
            if len(self._creators) > _REMEMBERED:
                self._creators.clear()
                self._too_fast.clear()
            bucket = TokenBucket(
                self.settings.room_create_rate, self.settings.room_create_burst, self.node.clock
            )
            self._creators[user] = bucket
        if not bucket.take():
            self.node.counters["chat_refused.room_rate"] += 1
            if user not in self._too_fast:  # once per user, not once per attempt
                self._too_fast.add(user)
                log.warning("room creation by %r refused: over room_create_rate", user)
            raise error(
                ErrorCode.TOO_MANY_REQUESTS,
                "too many requests: you are creating rooms too fast; try again later"
                " or join an existing room",
            )

    async def require_room(self, room: str, *, user: str = "") -> Room:
        """Room ``room``; created now when rooms are created on first use.

        Raises:
            ProtocolError: 107 bad name; 102 no such room (and none created on first use).
        """
        self.check_room_name(room)
        try:
            found = await self.store.room(room)
        except StoreError as exc:
            raise _unavailable(exc) from None
        if found is not None:
            return found
        if not self.settings.auto_create_rooms:
            raise error(ErrorCode.UNKNOWN_CHANNEL, f"unknown channel: no room {room!r}")
        self._check_create_rate(user)
        created, _ = await self.create_room(room, by=user)
        return created

    async def room_page(self, *, after: str = "", limit: int | None = None) -> RoomPage:
        """The rooms named after ``after`` ("" = from the first), at most ``limit``
        (``rooms_page_size`` by default), with the cursor of the next page and the total.

        Raises:
            ProtocolError: 107 bad cursor or limit; 100 (temporary) the store is down.
        """
        if limit is None:
            limit = self.settings.rooms_page_size
        if not 1 <= limit <= self.settings.max_rooms_page:
            raise bad_request(f"limit must be 1-{self.settings.max_rooms_page}")
        if after:
            self.check_room_name(after)
        try:
            # One more than asked says whether another page follows.
            rooms = await self.store.rooms(after=after or None, limit=limit + 1)
            total = await self.store.room_count()
        except StoreError as exc:
            raise _unavailable(exc) from None
        more = len(rooms) > limit
        views = await self._views(rooms[:limit])
        return RoomPage(rooms=views, next=views[-1].name if more else None, total=total)

    async def room_view(self, room: str) -> RoomView:
        """Room ``room`` as listed. Raises 102 when there is no such room."""
        try:
            found = await self.store.room(self.check_room_name(room))
        except StoreError as exc:
            raise _unavailable(exc) from None
        if found is None:
            raise error(ErrorCode.UNKNOWN_CHANNEL, f"unknown channel: no room {room!r}")
        return (await self._views([found]))[0]

    async def rooms(self, *, after: str = "", limit: int | None = None) -> list[RoomView]:
        """The rooms of :meth:`room_page`: by default the first ``rooms_page_size``."""
        return (await self.room_page(after=after, limit=limit)).rooms

    async def _views(self, rooms: list[Room]) -> list[RoomView]:
        """``rooms`` with how many users are in each now."""

        async def online(room: Room) -> int:
            try:
                return (await self.node.presence_stats(self.channel(room.name))).num_users
            except ProtocolError:
                return 0  # presence unavailable for a moment: the list still shows

        counts = await asyncio.gather(*(online(r) for r in rooms))
        return [
            RoomView(
                name=r.name,
                channel=self.channel(r.name),
                messages=r.messages,
                online=n,
                created_at=r.created_at,
                last_message_at=r.last_message_at,
            )
            for r, n in zip(rooms, counts, strict=True)
        ]

    async def online(self, room: str) -> list[str]:
        """The users in ``room`` now (across nodes), sorted."""
        clients = await self.node.presence(self.channel(self.check_room_name(room)))
        return sorted({info.user for info in clients.values()})

    # -----------------------------------------------------------------------------------------
    # Messages

    async def history(
        self, room: str, *, limit: int | None = None, before: int | None = None
    ) -> list[ChatMessage]:
        """The newest ``limit`` messages of ``room`` (``history_on_join`` by default) with ids
        below ``before``, oldest first.

        Raises:
            ProtocolError: 107 bad name or limit; 102 unknown room.
        """
        self.check_room_name(room)
        if limit is None:
            limit = self.settings.history_on_join
        if not 1 <= limit <= self.settings.max_history_page:
            raise bad_request(f"limit must be 1-{self.settings.max_history_page}")
        if before is not None and before < 1:
            raise bad_request("before must be a message id (1 or more)")
        try:
            if await self.store.room(room) is None:
                raise error(ErrorCode.UNKNOWN_CHANNEL, f"unknown channel: no room {room!r}")
            return await self.store.messages(room, limit=limit, before=before)
        except StoreError as exc:
            raise _unavailable(exc) from None

    def _rate_check(self, user: str) -> None:
        bucket = self._senders.get(user)
        if bucket is None:
            if len(self._senders) > _REMEMBERED:
                self._senders.clear()  # full buckets only cost a burst to whoever returns
            bucket = TokenBucket(self.settings.send_rate, self.settings.send_burst, self.node.clock)
            self._senders[user] = bucket
        if not bucket.take():
            raise error(ErrorCode.TOO_MANY_REQUESTS, "too many requests: slow down sending")

    async def send(self, user: str, room: str, text: str) -> ChatMessage:
        """Store ``text`` as ``user``'s message in ``room``, then publish it to the room.

        The message is in the archive before anyone sees it; the returned message carries
        its archive id and (when the publish succeeded) its stream offset.

        Raises:
            ProtocolError: 107 bad text or room name; 102 unknown room; 111 sending too fast;
                100 (temporary) the store is down.
        """
        if not user:
            raise error(
                ErrorCode.PERMISSION_DENIED, "permission denied: anonymous users cannot send"
            )
        text = check_text(
            text, name="message", max_length=self.settings.max_message_length, required=True
        )
        await self.require_room(room, user=user)
        self._rate_check(user)
        try:
            msg = await self.store.add_message(room, user, text, self.node.clock.time())
        except StoreError as exc:
            raise _unavailable(exc) from None
        return await self._publish("message", msg)

    async def _publish(self, kind: str, msg: ChatMessage) -> ChatMessage:
        try:
            pos = await self.node.publish(
                self.channel(msg.room), {"type": kind, "message": message_view(msg)}
            )
        except ProtocolError as exc:
            # Stored but not delivered live: members see it when they next load history.
            log.warning("message %d stored but not published: %s", msg.id, exc)
            return msg
        if kind == "message" and pos.offset:
            try:
                await self.store.set_position(msg.id, pos.offset, pos.epoch)
            except StoreError as exc:
                log.warning("stream position of message %d not stored: %s", msg.id, exc)
            msg = dataclasses.replace(msg, offset=pos.offset, epoch=pos.epoch)
        return msg

    async def _own_message(self, user: str, message_id: int) -> ChatMessage:
        try:
            msg = await self.store.message(message_id)
        except StoreError as exc:
            raise _unavailable(exc) from None
        if msg is None:
            raise not_found(f"no message {message_id}")
        if msg.user != user or not user:
            raise error(ErrorCode.PERMISSION_DENIED, "permission denied: not your message")
        return msg

    async def edit(self, user: str, message_id: int, text: str) -> ChatMessage:
        """Replace the text of ``user``'s message and tell the room.

        Raises:
            ProtocolError: 404 no such message (or deleted); 103 not the author; 107 bad text.
        """
        text = check_text(
            text, name="message", max_length=self.settings.max_message_length, required=True
        )
        msg = await self._own_message(user, message_id)
        if msg.deleted:
            raise not_found(f"message {message_id} was deleted")
        self._rate_check(user)
        try:
            edited = await self.store.edit_message(message_id, text, self.node.clock.time())
        except StoreError as exc:
            raise _unavailable(exc) from None
        if edited is None:
            raise not_found(f"message {message_id} was deleted")
        return await self._publish("edit", edited)

    async def delete(self, user: str, message_id: int) -> ChatMessage:
        """Delete ``user``'s message (its text is cleared) and tell the room.

        Raises:
            ProtocolError: 404 no such message; 103 not the author.
        """
        msg = await self._own_message(user, message_id)
        if msg.deleted:
            return msg
        try:
            deleted = await self.store.delete_message(message_id, self.node.clock.time())
        except StoreError as exc:
            raise _unavailable(exc) from None
        if deleted is None:
            raise not_found(f"no message {message_id}")
        return await self._publish("delete", deleted)

    async def typing(self, user: str, room: str) -> bool:
        """Tell ``room`` that ``user`` is typing; at most once per ``typing_interval`` per user
        and room (extra calls are dropped). Returns whether this call was published."""
        self.check_room_name(room)
        if not user:
            return False
        now = self.node.clock.monotonic()
        key = (user, room)
        last = self._typing.get(key)
        if last is not None and now - last < self.settings.typing_interval:
            return False
        if len(self._typing) > _REMEMBERED:
            horizon = now - self.settings.typing_interval
            self._typing = {k: t for k, t in self._typing.items() if t > horizon}
        self._typing[key] = now
        await self.node.publish(
            self.channel(room), {"type": "typing", "user": user}, skip_history=True
        )
        return True
