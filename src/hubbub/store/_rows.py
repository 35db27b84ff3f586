"""What the SQL stores share: column lists, row conversion and the 64-bit id range.

Both schemas name and order their columns alike, so one set of converters reads rows of either
driver (``sqlite3`` tuples or ``asyncpg`` records, both indexed by position).
"""

from __future__ import annotations

from typing import Any

from hubbub.store.base import ChatMessage, Notification, Room

# Ids, offsets and limits are signed 64-bit integers in both databases. An id outside that
# range cannot exist, so lookups with one return nothing instead of failing in the driver.
INT64_MIN = -(2**63)
INT64_MAX = 2**63 - 1

MESSAGE_COLUMNS = "id, room, user_name, text, created_at, edited_at, deleted, stream_offset, epoch"
NOTIFICATION_COLUMNS = "id, user_name, title, body, data, link, created_at, read_at"

# A room with its message count and the time of its newest message (by id), both read from the
# (room, id) index. Callers append a WHERE clause or nothing.
ROOM_SELECT = """
    SELECT r.name, r.created_at, r.created_by,
        (SELECT COUNT(*) FROM messages m WHERE m.room = r.name),
        (SELECT m.created_at FROM messages m WHERE m.room = r.name ORDER BY m.id DESC LIMIT 1)
    FROM rooms r"""


def in_int64(value: int) -> bool:
    """Whether ``value`` fits a 64-bit id column."""
    return INT64_MIN <= value <= INT64_MAX


def clamp_int64(value: int) -> int:
    """``value`` moved into the 64-bit range (for bounds such as ``before`` and ``limit``)."""
    return max(min(value, INT64_MAX), INT64_MIN)


def room_from_row(row: Any) -> Room:
    """A :class:`Room` from a row of :data:`ROOM_SELECT`."""
    return Room(
        name=row[0],
        created_at=row[1],
        created_by=row[2],
        messages=int(row[3]),
        last_message_at=row[4],
    )


def message_from_row(row: Any) -> ChatMessage:
    """A :class:`ChatMessage` from a row of :data:`MESSAGE_COLUMNS`."""
    return ChatMessage(
        id=row[0],
        room=row[1],
        user=row[2],
        text=row[3],
        created_at=row[4],
        edited_at=row[5],
        deleted=bool(row[6]),  # SQLite stores 0/1
        offset=row[7],
        epoch=row[8],
    )


def notification_from_row(row: Any) -> Notification:
    """A :class:`Notification` from a row of :data:`NOTIFICATION_COLUMNS`."""
    return Notification(
        id=row[0],
        user=row[1],
        title=row[2],
        body=row[3],
        data=row[4],
        link=row[5],
        created_at=row[6],
        read_at=row[7],
    )


def in_given_order(notifications: list[Notification], users: list[str]) -> list[Notification]:
    """Notifications inserted for ``users`` (one each, in that order) sorted back into it.

    A multi-row ``INSERT ... RETURNING`` returns rows in no defined order, but the ids were
    assigned in insertion order, so sorting by id restores the order of ``users``. The check
    guards that reasoning: a mismatch would hand one user's notification to another.

    Raises:
        ValueError: the inserted rows do not match ``users``.
    """
    result = sorted(notifications, key=_notification_id)
    if [n.user for n in result] != users:
        raise ValueError("notifications were not inserted in the order of their users")
    return result


def _notification_id(notification: Notification) -> int:
    return notification.id
