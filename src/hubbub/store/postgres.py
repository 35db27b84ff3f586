"""The PostgreSQL store: one database shared by any number of processes and machines.

An ``asyncpg`` pool serves the tasks of the event loop; each method is one statement, which
PostgreSQL runs atomically. The schema migration at :meth:`PostgresStore.open` runs in one
transaction holding a transaction-scoped advisory lock, so processes starting together migrate
one after the other and the later ones find the schema current.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Mapping, Sequence
from contextlib import asynccontextmanager
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

from hubbub.extras import missing

try:
    import asyncpg
except ImportError as exc:
    # Without the postgres extra the store can still be named and constructed (a configuration
    # that names it is valid); open() raises the one-line error naming the extra.
    _driver_error: ImportError | None = missing("postgres", exc)
else:
    _driver_error = None

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

__all__ = ["PostgresStore"]

#: Seconds to wait for a connection to the server before giving up.
CONNECT_TIMEOUT = 10.0
#: Seconds :meth:`PostgresStore.close` waits for connections in use before cutting them.
CLOSE_TIMEOUT = 10.0

# Key of the advisory lock serialising migrations ("hubbub" in ASCII). Advisory locks are per
# database, so stores of different databases on one server do not wait for each other.
_MIGRATION_LOCK = 0x687562627562

#: Schema migrations in order: migration ``i`` (0-based) brings the schema to version ``i + 1``.
#: Released migrations never change; a new schema version appends one.
MIGRATIONS: tuple[tuple[str, ...], ...] = (
    (
        """CREATE TABLE users (
            name TEXT PRIMARY KEY,
            created_at DOUBLE PRECISION NOT NULL,
            seen_at DOUBLE PRECISION NOT NULL
        )""",
        """CREATE TABLE rooms (
            name TEXT PRIMARY KEY,
            created_at DOUBLE PRECISION NOT NULL,
            created_by TEXT NOT NULL
        )""",
        """CREATE TABLE messages (
            id BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
            room TEXT NOT NULL REFERENCES rooms (name),
            user_name TEXT NOT NULL,
            text TEXT NOT NULL,
            created_at DOUBLE PRECISION NOT NULL,
            edited_at DOUBLE PRECISION,
            deleted BOOLEAN NOT NULL DEFAULT FALSE,
            stream_offset BIGINT NOT NULL DEFAULT 0,
            epoch TEXT NOT NULL DEFAULT ''
        )""",
        "CREATE INDEX messages_room_id ON messages (room, id)",
        """CREATE TABLE notifications (
            id BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
            user_name TEXT NOT NULL,
            title TEXT NOT NULL,
            body TEXT NOT NULL,
            data TEXT NOT NULL,
            link TEXT NOT NULL,
            created_at DOUBLE PRECISION NOT NULL,
            read_at DOUBLE PRECISION
        )""",
        "CREATE INDEX notifications_user_id ON notifications (user_name, id)",
        # Unread counts and unread-only pages read only this small index.
        """CREATE INDEX notifications_unread ON notifications (user_name, id)
            WHERE read_at IS NULL""",
    ),
)


def describe_dsn(dsn: str) -> tuple[str, str]:
    """Where ``dsn`` points, for messages, and its password (to scrub from them).

    Returns:
        ``("PostgreSQL database 'db' on host:port", password)``; the description never
        contains the password, and the password is "" when the DSN has none.
    """
    try:
        parts = urlsplit(dsn)
        query = parse_qs(parts.query)
        host = parts.hostname or query.get("host", ["localhost"])[0]
        port = parts.port or int(query.get("port", ["5432"])[0])
        user = unquote(parts.username or "") or query.get("user", [""])[0]
        database = unquote(parts.path.lstrip("/")) or query.get("dbname", [user])[0]
        password = unquote(parts.password or "") or query.get("password", [""])[0]
    except ValueError:  # a malformed port, say: asyncpg will say what is wrong
        return "PostgreSQL database (unparsable DSN)", ""
    return f"PostgreSQL database {database!r} on {host}:{port}", password


class PostgresStore:
    """A :class:`~hubbub.store.base.Store` in a PostgreSQL database.

    Args:
        dsn: ``postgresql://user:password@host:port/database`` (``postgres://`` works too).
        min_size: connections the pool keeps open.
        max_size: connections the pool opens at most; more concurrent calls wait for one.
    """

    def __init__(self, dsn: str, *, min_size: int = 1, max_size: int = 10) -> None:
        self._dsn = dsn
        self._min_size = min_size
        self._max_size = max_size
        self._name, self._password = describe_dsn(dsn)
        self._pool: asyncpg.Pool | None = None
        self._open_lock = asyncio.Lock()

    def __repr__(self) -> str:
        return f"PostgresStore(<{self._name}>)"

    @asynccontextmanager
    async def _errors(self, *also: type[Exception]) -> AsyncIterator[None]:
        """Turn driver and network errors (and ``also``) into StoreError naming the database."""
        caught: tuple[type[Exception], ...] = (
            asyncpg.PostgresError,
            asyncpg.InterfaceError,
            OSError,
            *also,
        )
        try:
            yield
        except caught as exc:
            # OSError covers refused connections and timeouts (TimeoutError is one).
            message = str(exc) or type(exc).__name__
            if self._password:
                message = message.replace(self._password, "***")
            raise StoreError(f"{self._name}: {message}") from exc

    def _pool_or_fail(self) -> asyncpg.Pool:
        if self._pool is None:
            raise StoreError(f"{self._name} is not open")
        return self._pool

    async def _fetch(self, sql: str, *args: object) -> list[Any]:
        """Run one statement on a pooled connection and return its rows."""
        pool = self._pool_or_fail()
        async with self._errors():
            return list(await pool.fetch(sql, *args))

    # Lifecycle

    async def open(self) -> None:
        """Create the pool and migrate the schema.

        Raises:
            hubbub.extras.MissingExtra: the postgres extra (asyncpg) is not installed.
            StoreError: the database cannot be reached or refused.
        """
        if _driver_error is not None:
            raise _driver_error
        async with self._open_lock:
            if self._pool is not None:
                return
            # asyncpg reports some malformed DSNs (a port that is not a number) as ValueError.
            async with self._errors(ValueError):
                pool = await asyncpg.create_pool(
                    self._dsn,
                    min_size=self._min_size,
                    max_size=self._max_size,
                    timeout=CONNECT_TIMEOUT,
                )
                try:
                    await self._migrate(pool)
                except BaseException:
                    await pool.close()
                    raise
            self._pool = pool

    async def _migrate(self, pool: asyncpg.Pool) -> None:
        async with pool.acquire() as conn, conn.transaction():
            # Held until the transaction ends: a second process waits here, then finds the
            # version the first one recorded.
            await conn.execute("SELECT pg_advisory_xact_lock($1)", _MIGRATION_LOCK)
            await conn.execute(
                "CREATE TABLE IF NOT EXISTS schema_version ("
                " version INTEGER PRIMARY KEY, applied_at DOUBLE PRECISION NOT NULL)"
            )
            current = int(
                await conn.fetchval("SELECT COALESCE(MAX(version), 0) FROM schema_version")
            )
            if current > len(MIGRATIONS):
                raise StoreError(
                    f"{self._name} has schema version {current}, newer than this hubbub "
                    f"understands ({len(MIGRATIONS)}); upgrade hubbub"
                )
            for version in range(current + 1, len(MIGRATIONS) + 1):
                for statement in MIGRATIONS[version - 1]:
                    await conn.execute(statement)
                await conn.execute(
                    "INSERT INTO schema_version (version, applied_at) VALUES ($1, $2)",
                    version,
                    time.time(),
                )

    async def close(self) -> None:
        """Close the pool's connections. Idempotent."""
        async with self._open_lock:
            pool, self._pool = self._pool, None
            if pool is not None:
                async with self._errors():
                    try:
                        # Waits for connections in use to come back; a stuck one is cut.
                        await asyncio.wait_for(pool.close(), CLOSE_TIMEOUT)
                    except TimeoutError:
                        pool.terminate()

    # Users

    async def touch_user(self, user: str, now: float) -> None:
        """Record that ``user`` exists and was seen at ``now`` (insert or update)."""
        await self._fetch(
            "INSERT INTO users (name, created_at, seen_at) VALUES ($1, $2, $2)"
            " ON CONFLICT (name) DO UPDATE SET seen_at = excluded.seen_at",
            user,
            now,
        )

    async def touch_users(self, seen: Mapping[str, float]) -> None:
        """``touch_user`` for each user in ``seen`` (user -> when), in one statement."""
        if not seen:
            return
        await self._fetch(
            "INSERT INTO users (name, created_at, seen_at)"
            " SELECT name, at, at FROM unnest($1::text[], $2::float8[]) AS t(name, at)"
            " ON CONFLICT (name) DO UPDATE SET seen_at = excluded.seen_at",
            list(seen),
            list(seen.values()),
        )

    async def known_users(self, users: Sequence[str]) -> set[str]:
        """The subset of ``users`` that exist."""
        if not users:
            return set()
        rows = await self._fetch("SELECT name FROM users WHERE name = ANY($1::text[])", list(users))
        return {row[0] for row in rows}

    async def all_users(self) -> list[str]:
        """Every known user, sorted by code point (as Python sorts, whatever the collation)."""
        return sorted(row[0] for row in await self._fetch("SELECT name FROM users"))

    # Rooms

    async def create_room(self, name: str, created_by: str, now: float) -> tuple[Room, bool]:
        """Create room ``name`` unless it exists; return it and whether it was created now."""
        rows = await self._fetch(
            "INSERT INTO rooms (name, created_at, created_by) VALUES ($1, $2, $3)"
            " ON CONFLICT (name) DO NOTHING RETURNING name, created_at, created_by",
            name,
            now,
            created_by,
        )
        if rows:
            return Room(name=rows[0][0], created_at=rows[0][1], created_by=rows[0][2]), True
        room = await self.room(name)
        if room is None:  # rooms are never deleted, so this cannot happen
            raise StoreError(f"{self._name}: room {name!r} vanished while being created")
        return room, False

    async def room(self, name: str) -> Room | None:
        """Room ``name`` with its message count, or None."""
        rows = await self._fetch(f"{ROOM_SELECT} WHERE r.name = $1", name)
        return room_from_row(rows[0]) if rows else None

    async def rooms(self, *, after: str | None = None, limit: int | None = None) -> list[Room]:
        """Rooms named after ``after`` (None = from the first), at most ``limit`` (all when
        None), sorted by name in code point order (the "C" collation, whatever the database's
        own). Room names are short and their number is bounded by the chat's ``max_rooms``,
        so sorting them costs little though the primary key's index has another collation."""
        # NULL compares as unknown, so "$1 IS NULL" admits every room when there is no cursor.
        rows = await self._fetch(
            f'{ROOM_SELECT} WHERE $1::text IS NULL OR r.name COLLATE "C" > $1'
            ' ORDER BY r.name COLLATE "C" LIMIT $2',
            after,
            None if limit is None else clamp_int64(limit),
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
            " SELECT name, $2, $3, $4 FROM rooms WHERE name = $1"
            f" RETURNING {MESSAGE_COLUMNS}",
            room,
            user,
            text,
            now,
        )
        if not rows:
            raise StoreError(f"room {room!r} does not exist")
        return message_from_row(rows[0])

    async def set_position(self, message_id: int, offset: int, epoch: str) -> None:
        """Record the stream position of a message's publication (nothing if it is missing)."""
        if in_int64(message_id):
            await self._fetch(
                "UPDATE messages SET stream_offset = $2, epoch = $3 WHERE id = $1",
                message_id,
                offset,
                epoch,
            )

    async def message(self, message_id: int) -> ChatMessage | None:
        """Message ``message_id``, or None."""
        if not in_int64(message_id):
            return None
        rows = await self._fetch(
            f"SELECT {MESSAGE_COLUMNS} FROM messages WHERE id = $1", message_id
        )
        return message_from_row(rows[0]) if rows else None

    async def edit_message(self, message_id: int, text: str, now: float) -> ChatMessage | None:
        """Replace the text of a message that is not deleted; None if missing or deleted."""
        if not in_int64(message_id):
            return None
        rows = await self._fetch(
            "UPDATE messages SET text = $2, edited_at = $3 WHERE id = $1 AND NOT deleted"
            f" RETURNING {MESSAGE_COLUMNS}",
            message_id,
            text,
            now,
        )
        return message_from_row(rows[0]) if rows else None

    async def delete_message(self, message_id: int, now: float) -> ChatMessage | None:
        """Mark a message deleted, clear its text and set ``edited_at`` to ``now``; a deleted
        message is returned unchanged; None if there is no such message."""
        if not in_int64(message_id):
            return None
        rows = await self._fetch(
            "UPDATE messages SET deleted = TRUE, text = '', edited_at = $2"
            f" WHERE id = $1 AND NOT deleted RETURNING {MESSAGE_COLUMNS}",
            message_id,
            now,
        )
        return message_from_row(rows[0]) if rows else await self.message(message_id)

    async def messages(
        self, room: str, *, limit: int, before: int | None = None
    ) -> list[ChatMessage]:
        """The newest ``limit`` messages of ``room`` with ids below ``before``, oldest first."""
        if limit <= 0:
            return []
        if before is None:
            rows = await self._fetch(
                f"SELECT {MESSAGE_COLUMNS} FROM messages WHERE room = $1 ORDER BY id DESC LIMIT $2",
                room,
                clamp_int64(limit),
            )
        else:
            rows = await self._fetch(
                f"SELECT {MESSAGE_COLUMNS} FROM messages WHERE room = $1 AND id < $2"
                " ORDER BY id DESC LIMIT $3",
                room,
                clamp_int64(before),
                clamp_int64(limit),
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
        # One statement is one transaction. The sorted subquery feeds the rows to the insert
        # in the order of `users`, so their identity values follow that order.
        rows = await self._fetch(
            "INSERT INTO notifications (user_name, title, body, data, link, created_at)"
            " SELECT u.name, $2, $3, $4, $5, $6"
            " FROM unnest($1::text[]) WITH ORDINALITY AS u (name, position)"
            " ORDER BY u.position"
            f" RETURNING {NOTIFICATION_COLUMNS}",
            list(users),
            title,
            body,
            data,
            link,
            now,
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
        # Built from fixed fragments (values stay bind parameters) rather than one statement
        # with "$2 IS NULL OR id < $2", which a cached generic plan could not turn into an
        # index range.
        sql = f"SELECT {NOTIFICATION_COLUMNS} FROM notifications WHERE user_name = $1"
        args: list[object] = [user]
        if before is not None:
            args.append(clamp_int64(before))
            sql += f" AND id < ${len(args)}"
        if unread_only:
            sql += " AND read_at IS NULL"
        args.append(clamp_int64(limit))
        sql += f" ORDER BY id DESC LIMIT ${len(args)}"
        return [notification_from_row(row) for row in await self._fetch(sql, *args)]

    async def recent_notifications(self, *, since: float, limit: int) -> list[Notification]:
        """The newest ``limit`` notifications of every inbox sent at ``since`` or later, newest
        first."""
        if limit <= 0:
            return []
        # Walks the ids down from the newest (ids grow with time), stopping at ``limit``.
        sql = (
            f"SELECT {NOTIFICATION_COLUMNS} FROM notifications WHERE created_at >= $1 "
            "ORDER BY id DESC LIMIT $2"
        )
        return [
            notification_from_row(row) for row in await self._fetch(sql, since, clamp_int64(limit))
        ]

    async def unread_count(self, user: str) -> int:
        """How many notifications of ``user`` are unread."""
        rows = await self._fetch(
            "SELECT COUNT(*) FROM notifications WHERE user_name = $1 AND read_at IS NULL", user
        )
        return int(rows[0][0])

    async def mark_read(self, user: str, ids: Sequence[int] | None, now: float) -> list[int]:
        """Mark ``ids`` (every unread one when None) of ``user`` read; return the ids that
        changed, ascending."""
        if ids is None:
            rows = await self._fetch(
                "UPDATE notifications SET read_at = $2 WHERE user_name = $1 AND read_at IS NULL"
                " RETURNING id",
                user,
                now,
            )
        else:
            wanted = [int(i) for i in ids if in_int64(i)]
            if not wanted:
                return []
            rows = await self._fetch(
                "UPDATE notifications SET read_at = $2 WHERE user_name = $1 AND read_at IS NULL"
                " AND id = ANY($3::bigint[]) RETURNING id",
                user,
                now,
                wanted,
            )
        return sorted(int(row[0]) for row in rows)
