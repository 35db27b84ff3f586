"""The SQLite store: one file, shared by the processes of one machine.

One ``aiosqlite`` connection (a worker thread) serves every task of the event loop. Each method
runs a single statement in autocommit mode, so tasks never interleave inside a transaction; the
only explicit transaction is the schema migration at :meth:`SQLiteStore.open`, taken with
``BEGIN IMMEDIATE`` so that two processes opening a new file at once migrate it one after the
other. WAL mode lets readers in other processes work while one writes, and ``busy_timeout``
makes a writer wait for another process's write instead of failing at once.
"""

from __future__ import annotations

import asyncio
import json
import sqlite3
import time
from collections.abc import AsyncIterator, Iterable, Mapping, Sequence
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import aiosqlite

from hubbub.store._rows import (
    MESSAGE_COLUMNS,
    NOTIFICATION_COLUMNS,
    ROOM_SELECT,
    clamp_int64,
    in_given_order,
    in_int64,
    message_from_row,
    notification_from_row,
    room_from_row,
)
from hubbub.store.base import ChatMessage, Notification, Room, StoreError

__all__ = ["SQLiteStore"]

#: How long a statement waits for another connection's write lock before failing, in ms.
BUSY_TIMEOUT_MS = 10_000

# RETURNING (3.35) and json_each are used throughout.
_OPEN_ATTEMPTS = 20
_MIN_SQLITE = (3, 35, 0)

#: Schema migrations in order: migration ``i`` (0-based) brings the schema to version ``i + 1``.
#: Released migrations never change; a new schema version appends one.
MIGRATIONS: tuple[tuple[str, ...], ...] = (
    (
        """CREATE TABLE users (
            name TEXT PRIMARY KEY,
            created_at REAL NOT NULL,
            seen_at REAL NOT NULL
        )""",
        """CREATE TABLE rooms (
            name TEXT PRIMARY KEY,
            created_at REAL NOT NULL,
            created_by TEXT NOT NULL
        )""",
        # AUTOINCREMENT: ids are never reused, even after the newest row is gone.
        """CREATE TABLE messages (
            id INTEGER PRIMARY KEY AUTOINCREMENT,
            room TEXT NOT NULL REFERENCES rooms (name),
            user_name TEXT NOT NULL,
            text TEXT NOT NULL,
            created_at REAL NOT NULL,
            edited_at REAL,
            deleted INTEGER NOT NULL DEFAULT 0,
            stream_offset INTEGER NOT NULL DEFAULT 0,
            epoch TEXT NOT NULL DEFAULT ''
        )""",
        "CREATE INDEX messages_room_id ON messages (room, id)",
        """CREATE TABLE notifications (
            id INTEGER PRIMARY KEY AUTOINCREMENT,
            user_name TEXT NOT NULL,
            title TEXT NOT NULL,
            body TEXT NOT NULL,
            data TEXT NOT NULL,
            link TEXT NOT NULL,
            created_at REAL NOT NULL,
            read_at REAL
        )""",
        "CREATE INDEX notifications_user_id ON notifications (user_name, id)",
        # Unread counts and unread-only pages read only this small index.
        """CREATE INDEX notifications_unread ON notifications (user_name, id)
            WHERE read_at IS NULL""",
    ),
)


def _json_list(values: Iterable[object]) -> str:
    """A JSON array for ``json_each``: one bind parameter however long the list is."""
    return json.dumps(list(values), ensure_ascii=False)


def _prepare(path: Path) -> None:
    """Create the directories of ``path`` and check that it can be a database file.

    Raises:
        OSError: a directory cannot be created.
        sqlite3.Error: the file cannot be opened (a directory, say).
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    # When aiosqlite's connect fails, its worker thread reports to the event loop later,
    # perhaps after the loop has closed; a plain first connection here fails alone.
    sqlite3.connect(path).close()


class SQLiteStore:
    """A :class:`~hubbub.store.base.Store` in one SQLite file.

    Args:
        path: the database file; missing parent directories are created at :meth:`open`.
            ``":memory:"`` gives a private in-memory database (for experiments only).
    """

    def __init__(self, path: str | Path) -> None:
        self._memory = str(path) == ":memory:"
        self.path = Path(path)
        self._db: aiosqlite.Connection | None = None
        self._open_lock = asyncio.Lock()

    def __repr__(self) -> str:
        return f"SQLiteStore({str(self.path)!r})"

    @property
    def _name(self) -> str:
        return "SQLite database :memory:" if self._memory else f"SQLite database {self.path}"

    @asynccontextmanager
    async def _errors(self) -> AsyncIterator[None]:
        """Turn driver and file system errors into StoreError naming the file."""
        try:
            yield
        except (sqlite3.Error, OSError, OverflowError) as exc:
            raise StoreError(f"{self._name}: {exc}") from exc

    async def _fetch(self, sql: str, params: Sequence[object] = ()) -> list[Any]:
        """Run one statement (in autocommit) and return all its rows."""
        if self._db is None:
            raise StoreError(f"{self._name} is not open")
        async with self._errors():
            return list(await self._db.execute_fetchall(sql, params))

    # Lifecycle

    async def open(self) -> None:
        """Open the file (creating it and its directory) and migrate the schema."""
        async with self._open_lock:
            if self._db is not None:
                return
            if sqlite3.sqlite_version_info < _MIN_SQLITE:
                raise StoreError(
                    f"{self._name}: SQLite {sqlite3.sqlite_version} is too old, hubbub needs "
                    f"{'.'.join(map(str, _MIN_SQLITE))} or newer"
                )
            async with self._errors():
                if not self._memory:
                    await asyncio.to_thread(_prepare, self.path)
                # isolation_level=None: autocommit; the module never opens transactions behind
                # our back, so BEGIN IMMEDIATE below is the only transaction.
                db = await aiosqlite.connect(
                    ":memory:" if self._memory else self.path, isolation_level=None
                )
                try:
                    for attempt in range(_OPEN_ATTEMPTS):
                        try:
                            await self._configure(db)
                            await self._migrate(db)
                            break
                        except sqlite3.OperationalError as exc:
                            # Two processes switching a new file to WAL at once can meet a
                            # lock SQLite reports at once instead of waiting for (it would
                            # deadlock): step back and try again.
                            if "locked" not in str(exc) or attempt == _OPEN_ATTEMPTS - 1:
                                raise
                            await asyncio.sleep(0.02 * (attempt + 1))
                except BaseException:
                    await db.close()
                    raise
            self._db = db

    async def _configure(self, db: aiosqlite.Connection) -> None:
        # busy_timeout first: switching to WAL itself may wait for another process.
        await db.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS:d}")
        await db.execute("PRAGMA foreign_keys = ON")
        await db.execute("PRAGMA journal_mode = WAL")
        # In WAL mode NORMAL loses no committed data on a process crash, only on power loss.
        await db.execute("PRAGMA synchronous = NORMAL")

    async def _migrate(self, db: aiosqlite.Connection) -> None:
        # IMMEDIATE takes the write lock before reading the version, so a second process
        # waits here and then sees the schema the first one created.
        await db.execute("BEGIN IMMEDIATE")
        try:
            await db.execute(
                "CREATE TABLE IF NOT EXISTS schema_version ("
                " version INTEGER PRIMARY KEY, applied_at REAL NOT NULL)"
            )
            rows = await db.execute_fetchall("SELECT COALESCE(MAX(version), 0) FROM schema_version")
            current = int(next(iter(rows))[0])
            if current > len(MIGRATIONS):
                raise StoreError(
                    f"{self._name} has schema version {current}, newer than this hubbub "
                    f"understands ({len(MIGRATIONS)}); upgrade hubbub"
                )
            for version in range(current + 1, len(MIGRATIONS) + 1):
                for statement in MIGRATIONS[version - 1]:
                    await db.execute(statement)
                await db.execute(
                    "INSERT INTO schema_version (version, applied_at) VALUES (?, ?)",
                    (version, time.time()),
                )
            await db.execute("COMMIT")
        except BaseException:
            if db.in_transaction:
                await db.execute("ROLLBACK")
            raise

    async def close(self) -> None:
        """Close the connection; the file stays. Idempotent."""
        async with self._open_lock:
            db, self._db = self._db, None
            if db is not None:
                async with self._errors():
                    await db.close()

    # Users

    async def touch_user(self, user: str, now: float) -> None:
        """Record that ``user`` exists and was seen at ``now`` (insert or update)."""
        await self._fetch(
            "INSERT INTO users (name, created_at, seen_at) VALUES (?, ?, ?)"
            " ON CONFLICT (name) DO UPDATE SET seen_at = excluded.seen_at",
            (user, now, now),
        )

    async def touch_users(self, seen: Mapping[str, float]) -> None:
        """``touch_user`` for each user in ``seen`` (user -> when), in one statement."""
        if not seen:
            return
        await self._fetch(
            "INSERT INTO users (name, created_at, seen_at)"
            " SELECT key, value, value FROM json_each(?) WHERE true"
            " ON CONFLICT (name) DO UPDATE SET seen_at = excluded.seen_at",
            (json.dumps(dict(seen)),),
        )

    async def known_users(self, users: Sequence[str]) -> set[str]:
        """The subset of ``users`` that exist."""
        if not users:
            return set()
        rows = await self._fetch(
            "SELECT name FROM users WHERE name IN (SELECT value FROM json_each(?))",
            (_json_list(users),),
        )
        return {row[0] for row in rows}

    async def all_users(self) -> list[str]:
        """Every known user, sorted (by code point, as Python sorts)."""
        return sorted(row[0] for row in await self._fetch("SELECT name FROM users"))

    # Rooms

    async def create_room(self, name: str, created_by: str, now: float) -> tuple[Room, bool]:
        """Create room ``name`` unless it exists; return it and whether it was created now."""
        rows = await self._fetch(
            "INSERT INTO rooms (name, created_at, created_by) VALUES (?, ?, ?)"
            " ON CONFLICT (name) DO NOTHING RETURNING name, created_at, created_by",
            (name, now, created_by),
        )
        if rows:
            return Room(name=rows[0][0], created_at=rows[0][1], created_by=rows[0][2]), True
        room = await self.room(name)
        if room is None:  # only if someone deleted it in between; rooms are never deleted
            raise StoreError(f"{self._name}: room {name!r} vanished while being created")
        return room, False

    async def room(self, name: str) -> Room | None:
        """Room ``name`` with its message count, or None."""
        rows = await self._fetch(f"{ROOM_SELECT} WHERE r.name = ?", (name,))
        return room_from_row(rows[0]) if rows else None

    async def rooms(self, *, after: str | None = None, limit: int | None = None) -> list[Room]:
        """Rooms named after ``after`` (None = from the first), at most ``limit`` (all when
        None), sorted by name (SQLite's default collation compares code points)."""
        where = "" if after is None else "WHERE r.name > ?"
        rows = await self._fetch(
            f"{ROOM_SELECT} {where} ORDER BY r.name LIMIT ?",
            (*(() if after is None else (after,)), -1 if limit is None else clamp_int64(limit)),
        )
        return [room_from_row(row) for row in rows]

    async def room_count(self) -> int:
        """How many rooms exist."""
        return int((await self._fetch("SELECT COUNT(*) FROM rooms"))[0][0])

    # Messages

    async def add_message(self, room: str, user: str, text: str, now: float) -> ChatMessage:
        """Append a message to ``room``; StoreError when the room does not exist."""
        rows = await self._fetch(
            "INSERT INTO messages (room, user_name, text, created_at)"
            " SELECT name, ?, ?, ? FROM rooms WHERE name = ?"
            f" RETURNING {MESSAGE_COLUMNS}",
            (user, text, now, room),
        )
        if not rows:
            raise StoreError(f"room {room!r} does not exist")
        return message_from_row(rows[0])

    async def set_position(self, message_id: int, offset: int, epoch: str) -> None:
        """Record the stream position of a message's publication (nothing if it is missing)."""
        if in_int64(message_id):
            await self._fetch(
                "UPDATE messages SET stream_offset = ?, epoch = ? WHERE id = ?",
                (offset, epoch, message_id),
            )

    async def message(self, message_id: int) -> ChatMessage | None:
        """Message ``message_id``, or None."""
        if not in_int64(message_id):
            return None
        rows = await self._fetch(
            f"SELECT {MESSAGE_COLUMNS} FROM messages WHERE id = ?", (message_id,)
        )
        return message_from_row(rows[0]) if rows else None

    async def edit_message(self, message_id: int, text: str, now: float) -> ChatMessage | None:
        """Replace the text of a message that is not deleted; None if missing or deleted."""
        if not in_int64(message_id):
            return None
        rows = await self._fetch(
            "UPDATE messages SET text = ?, edited_at = ? WHERE id = ? AND deleted = 0"
            f" RETURNING {MESSAGE_COLUMNS}",
            (text, now, message_id),
        )
        return message_from_row(rows[0]) if rows else None

    async def delete_message(self, message_id: int, now: float) -> ChatMessage | None:
        """Mark a message deleted, clear its text and set ``edited_at`` to ``now``; a deleted
        message is returned unchanged; None if there is no such message."""
        if not in_int64(message_id):
            return None
        rows = await self._fetch(
            "UPDATE messages SET deleted = 1, text = '', edited_at = ?"
            f" WHERE id = ? AND deleted = 0 RETURNING {MESSAGE_COLUMNS}",
            (now, message_id),
        )
        return message_from_row(rows[0]) if rows else await self.message(message_id)

    async def messages(
        self, room: str, *, limit: int, before: int | None = None
    ) -> list[ChatMessage]:
        """The newest ``limit`` messages of ``room`` with ids below ``before``, oldest first."""
        if limit <= 0:
            return []
        limit = clamp_int64(limit)
        if before is None:
            rows = await self._fetch(
                f"SELECT {MESSAGE_COLUMNS} FROM messages WHERE room = ? ORDER BY id DESC LIMIT ?",
                (room, limit),
            )
        else:
            rows = await self._fetch(
                f"SELECT {MESSAGE_COLUMNS} FROM messages WHERE room = ? AND id < ?"
                " ORDER BY id DESC LIMIT ?",
                (room, clamp_int64(before), limit),
            )
        return [message_from_row(row) for row in reversed(rows)]

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
        """One notification per user, all in one statement; returned in the order of ``users``."""
        if not users:
            return []
        # One INSERT ... SELECT is atomic without an explicit transaction. Rows are inserted in
        # the order of `key` (the position in `users`), so their ids follow that order.
        rows = await self._fetch(
            "INSERT INTO notifications (user_name, title, body, data, link, created_at)"
            " SELECT value, ?, ?, ?, ?, ? FROM json_each(?) ORDER BY key"
            f" RETURNING {NOTIFICATION_COLUMNS}",
            (title, body, data, link, now, _json_list(users)),
        )
        try:
            return in_given_order([notification_from_row(row) for row in rows], list(users))
        except ValueError as exc:
            raise StoreError(f"{self._name}: {exc}") from exc

    async def notifications(
        self, user: str, *, limit: int, before: int | None = None, unread_only: bool = False
    ) -> list[Notification]:
        """The newest ``limit`` notifications of ``user`` with ids below ``before``, newest
        first."""
        if limit <= 0:
            return []
        sql = f"SELECT {NOTIFICATION_COLUMNS} FROM notifications WHERE user_name = ?"
        params: list[object] = [user]
        if before is not None:
            sql += " AND id < ?"
            params.append(clamp_int64(before))
        if unread_only:
            sql += " AND read_at IS NULL"
        sql += " ORDER BY id DESC LIMIT ?"
        params.append(clamp_int64(limit))
        return [notification_from_row(row) for row in await self._fetch(sql, params)]

    async def recent_notifications(self, *, since: float, limit: int) -> list[Notification]:
        """The newest ``limit`` notifications of every inbox sent at ``since`` or later, newest
        first."""
        if limit <= 0:
            return []
        # Walks the ids down from the newest (ids grow with time), stopping at ``limit``.
        sql = (
            f"SELECT {NOTIFICATION_COLUMNS} FROM notifications WHERE created_at >= ? "
            "ORDER BY id DESC LIMIT ?"
        )
        return [
            notification_from_row(row)
            for row in await self._fetch(sql, [since, clamp_int64(limit)])
        ]

    async def unread_count(self, user: str) -> int:
        """How many notifications of ``user`` are unread."""
        rows = await self._fetch(
            "SELECT COUNT(*) FROM notifications WHERE user_name = ? AND read_at IS NULL", (user,)
        )
        return int(rows[0][0])

    async def mark_read(self, user: str, ids: Sequence[int] | None, now: float) -> list[int]:
        """Mark ``ids`` (every unread one when None) of ``user`` read; return the ids that
        changed, ascending."""
        if ids is None:
            rows = await self._fetch(
                "UPDATE notifications SET read_at = ? WHERE user_name = ? AND read_at IS NULL"
                " RETURNING id",
                (now, user),
            )
        else:
            wanted = [int(i) for i in ids if in_int64(i)]
            if not wanted:
                return []
            rows = await self._fetch(
                "UPDATE notifications SET read_at = ? WHERE user_name = ? AND read_at IS NULL"
                " AND id IN (SELECT value FROM json_each(?)) RETURNING id",
                (now, user, _json_list(wanted)),
            )
        return sorted(int(row[0]) for row in rows)
