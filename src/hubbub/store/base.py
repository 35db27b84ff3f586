"""The store seam: durable chat archives and notification inboxes.

The chat and notification applications keep what must survive a restart here; the engine
(memory or Redis) only keeps the hot stream that clients recover from after a short disconnect.
Two implementations share one conformance suite (``tests/store``): SQLite (the embedded
default, one file) and PostgreSQL (for many processes and machines).

Every method may raise :class:`StoreError` when the database cannot be reached or refuses; the
applications turn it into a temporary error for the client. Times are Unix seconds (floats)
passed in by the caller, so tests control them.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol


class StoreError(Exception):
    """The database failed or could not be reached; the message says which and why."""


@dataclass(frozen=True, slots=True)
class Room:
    """A chat room.

    Attributes:
        name: the room name (the part after ``chat:`` in its channel).
        created_at: when it was created.
        created_by: the user who created it ("" when created through the server API).
        messages: how many messages it holds, deleted ones included.
        last_message_at: when its newest message was sent (None without messages).
    """

    name: str
    created_at: float
    created_by: str
    messages: int = 0
    last_message_at: float | None = None


@dataclass(frozen=True, slots=True)
class ChatMessage:
    """One archived chat message.

    Attributes:
        id: archive id, unique across rooms and increasing in the order messages are added.
        room: the room name.
        user: the author.
        text: the message text ("" once deleted).
        created_at: when it was sent.
        edited_at: when its text last changed (None if never).
        deleted: deleted by its author; the row stays so that ids and paging stay stable.
        offset: the offset of its publication in the room's stream (0 until recorded).
        epoch: the epoch of that stream ("" until recorded).
    """

    id: int
    room: str
    user: str
    text: str
    created_at: float
    edited_at: float | None = None
    deleted: bool = False
    offset: int = 0
    epoch: str = ""


@dataclass(frozen=True, slots=True)
class Notification:
    """One notification in one user's inbox.

    Attributes:
        id: unique across inboxes, increasing in the order notifications are added.
        user: whose inbox it is in.
        title: short headline (may be "").
        body: the text.
        data: JSON text of optional application data ("" when none).
        link: an optional URL or path to open ("" when none).
        created_at: when it was sent.
        read_at: when the user marked it read (None while unread).
    """

    id: int
    user: str
    title: str
    body: str
    data: str
    link: str
    created_at: float
    read_at: float | None = None


class Store(Protocol):
    """Durable storage of users, rooms, chat messages and notification inboxes.

    Implementations are safe for concurrent use by the tasks of one event loop, and several
    processes may use one database at once (PostgreSQL; SQLite with its own file locking).
    """

    async def open(self) -> None:
        """Connect and create or migrate the schema to the current version. Idempotent."""

    async def close(self) -> None:
        """Release connections. Idempotent."""

    # Users: anyone who ever connected with a user id, or was created by the server API.

    async def touch_user(self, user: str, now: float) -> None:
        """Record that ``user`` exists and was seen at ``now`` (insert or update)."""

    async def touch_users(self, seen: Mapping[str, float]) -> None:
        """``touch_user`` for each user in ``seen`` (user -> when), in one statement."""

    async def known_users(self, users: Sequence[str]) -> set[str]:
        """The subset of ``users`` that exist."""

    async def all_users(self) -> list[str]:
        """Every known user, sorted."""

    # Rooms

    async def create_room(self, name: str, created_by: str, now: float) -> tuple[Room, bool]:
        """Create room ``name`` unless it exists; return it and whether it was created now."""

    async def room(self, name: str) -> Room | None:
        """Room ``name`` with its message count, or None."""

    async def rooms(self, *, after: str | None = None, limit: int | None = None) -> list[Room]:
        """Rooms with their message counts, sorted by name in code point order (whatever the
        database's collation): those named after ``after`` (None = from the first), at most
        ``limit`` of them (all when None). Pass the last name of a page as ``after`` to get
        the next one; every room is listed exactly once across the pages, and a room created
        meanwhile shows up on a later page if its name sorts after the cursor."""

    async def room_count(self) -> int:
        """How many rooms exist."""

    # Messages

    async def add_message(self, room: str, user: str, text: str, now: float) -> ChatMessage:
        """Append a message to ``room`` (which must exist) and return it with its new id."""

    async def set_position(self, message_id: int, offset: int, epoch: str) -> None:
        """Record the stream position of message ``message_id``'s publication."""

    async def message(self, message_id: int) -> ChatMessage | None:
        """Message ``message_id``, or None."""

    async def edit_message(self, message_id: int, text: str, now: float) -> ChatMessage | None:
        """Replace the text of a message that is not deleted and return it; None if there is no
        such message or it is deleted (a deleted message stays deleted and empty)."""

    async def delete_message(self, message_id: int, now: float) -> ChatMessage | None:
        """Mark a message deleted and clear its text; None if there is no such message.
        Deleting a deleted message returns it unchanged."""

    async def messages(
        self, room: str, *, limit: int, before: int | None = None
    ) -> list[ChatMessage]:
        """The newest ``limit`` messages of ``room`` with ids below ``before`` (all when None),
        oldest first. Deleted messages are included (with empty text)."""

    # Notifications

    async def add_notifications(
        self,
        users: Sequence[str],
        *,
        title: str,
        body: str,
        data: str,
        link: str,
        now: float,
    ) -> list[Notification]:
        """Put one notification into the inbox of each of ``users`` (in one transaction);
        return them in the order of ``users``."""

    async def notifications(
        self, user: str, *, limit: int, before: int | None = None, unread_only: bool = False
    ) -> list[Notification]:
        """The newest ``limit`` notifications of ``user`` with ids below ``before``, newest
        first."""

    async def recent_notifications(self, *, since: float, limit: int) -> list[Notification]:
        """The newest ``limit`` notifications of every inbox sent at ``since`` or later, newest
        first (the admin console's "sent in the last hour")."""

    async def unread_count(self, user: str) -> int:
        """How many notifications of ``user`` are unread."""

    async def mark_read(self, user: str, ids: Sequence[int] | None, now: float) -> list[int]:
        """Mark the notifications ``ids`` of ``user`` read (every unread one when None); ids of
        other users' notifications are ignored. Return the ids that changed from unread to read,
        ascending."""
