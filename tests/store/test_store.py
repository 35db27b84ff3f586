"""One conformance suite for every store: the contracts of ``hubbub.store.base``.

Each test that takes ``store`` or ``backend`` runs against SQLite (a fresh file) and PostgreSQL
(a fresh database on the session's private server); adding a store means adding a parameter to
the ``backend`` fixture. Times are made-up Unix seconds, so they are exact.
"""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

import pytest

from hubbub.store import (
    ChatMessage,
    Notification,
    PostgresStore,
    Room,
    SQLiteStore,
    Store,
    StoreError,
)
from tests.store.conftest import Backend, PostgresServer, free_port

T0 = 1_700_000_000.125  # a float with an exact binary value, so equality is safe


async def _room_with(store: Store, room: str, count: int) -> list[ChatMessage]:
    await store.create_room(room, "alice", T0)
    return [await store.add_message(room, "alice", f"m{i}", T0 + i) for i in range(count)]


# Schema and lifecycle


async def test_open_twice_is_idempotent(backend: Backend) -> None:
    store = backend.make()
    await store.open()
    await store.open()
    await store.create_room("general", "alice", T0)
    again = backend.make()
    await again.open()  # the schema is current: nothing to migrate, nothing lost
    assert (await again.room("general")) == Room("general", T0, "alice")
    assert await backend.query("SELECT version FROM schema_version") == [(1,)]
    await store.close()
    await store.close()


async def test_reopen_preserves_data(backend: Backend) -> None:
    first = backend.make()
    await first.open()
    await first.touch_user("alice", T0)
    await first.create_room("general", "alice", T0)
    sent = await first.add_message("general", "alice", "hello", T0 + 1)
    [note] = await first.add_notifications(["alice"], title="t", body="b", data="", link="", now=T0)
    await first.close()

    second = backend.make()
    await second.open()
    assert await second.all_users() == ["alice"]
    assert await second.message(sent.id) == sent
    assert await second.notifications("alice", limit=10) == [note]
    later = await second.add_message("general", "bob", "again", T0 + 2)
    assert later.id > sent.id


async def test_concurrent_open_migrates_once(backend: Backend) -> None:
    first, second = backend.make(), backend.make()
    await asyncio.gather(first.open(), second.open())
    assert await backend.query("SELECT version FROM schema_version") == [(1,)]
    await first.create_room("general", "alice", T0)
    assert (await second.create_room("general", "bob", T0 + 1))[1] is False


async def test_newer_schema_is_refused(backend: Backend) -> None:
    store = backend.make()
    await store.open()
    await store.close()
    await backend.query("INSERT INTO schema_version (version, applied_at) VALUES (99, 0)")
    with pytest.raises(StoreError, match="schema version 99"):
        await backend.make().open()


async def test_closed_store_raises_store_error(store: Store) -> None:
    await store.close()
    with pytest.raises(StoreError, match="not open"):
        await store.all_users()


# Users


async def test_users(store: Store) -> None:
    assert await store.all_users() == []
    for user in ["bob", "alice", "Zed", "émile"]:
        await store.touch_user(user, T0)
    await store.touch_user("alice", T0 + 5)  # seen again: still one user
    assert await store.all_users() == ["Zed", "alice", "bob", "émile"]
    assert await store.known_users(["alice", "carol", "émile", "alice"]) == {"alice", "émile"}
    assert await store.known_users([]) == set()


# Rooms


async def test_create_room_once(store: Store) -> None:
    room, created = await store.create_room("general", "alice", T0)
    assert created is True
    assert room == Room("general", T0, "alice", messages=0, last_message_at=None)
    again, created = await store.create_room("general", "bob", T0 + 9)
    assert created is False
    assert again == room  # the first creator and time stay
    assert await store.room("missing") is None


async def test_rooms_listing_counts_messages(store: Store) -> None:
    for name in ["b", "A", "a", "é"]:
        await store.create_room(name, "", T0)
    await store.add_message("a", "alice", "one", T0 + 1)
    second = await store.add_message("a", "bob", "two", T0 + 2)
    await store.add_message("b", "bob", "three", T0 + 3)
    await store.delete_message(second.id, T0 + 4)  # deleted messages still count

    rooms = await store.rooms()
    assert [r.name for r in rooms] == ["A", "a", "b", "é"]  # code point order on both
    by_name = {r.name: r for r in rooms}
    assert (by_name["a"].messages, by_name["a"].last_message_at) == (2, T0 + 2)
    assert (by_name["b"].messages, by_name["b"].last_message_at) == (1, T0 + 3)
    assert (by_name["A"].messages, by_name["A"].last_message_at) == (0, None)
    assert await store.room("a") == by_name["a"]


async def test_rooms_are_paged_by_name_each_exactly_once(store: Store) -> None:
    # Names whose order differs between code points and a natural-language collation.
    names = ["b", "A", "a", "é", "_x", "a-b", "a.b", "ab", "Z9", "z", "-"]
    names += [f"room-{n:03d}" for n in range(30)]
    for name in names:
        await store.create_room(name, "", T0)
    await store.add_message("a", "alice", "one", T0 + 1)
    assert await store.room_count() == len(names)

    seen: list[Room] = []
    after = ""
    while page := await store.rooms(after=after, limit=4):
        assert len(page) <= 4
        seen += page
        after = page[-1].name
    assert [r.name for r in seen] == sorted(names)  # code point order, each once
    assert seen == await store.rooms()  # the same rooms, counts included, as one list
    assert {r.name: r.messages for r in seen}["a"] == 1
    assert await store.rooms(after="é") == []
    assert [r.name for r in await store.rooms(after="a", limit=2)] == ["a-b", "a.b"]
    # A room created behind the cursor is not listed again; one ahead of it is.
    await store.create_room("0", "", T0)
    await store.create_room("zz", "", T0)
    assert [r.name for r in await store.rooms(after="z")] == ["zz", "é"]
    assert await store.room_count() == len(names) + 2


# Messages


async def test_add_get_edit_delete_message(store: Store) -> None:
    await store.create_room("general", "alice", T0)
    sent = await store.add_message("general", "alice", "hello", T0 + 1)
    assert sent == ChatMessage(sent.id, "general", "alice", "hello", T0 + 1)
    assert await store.message(sent.id) == sent

    edited = await store.edit_message(sent.id, "hello, world", T0 + 2)
    assert edited == ChatMessage(sent.id, "general", "alice", "hello, world", T0 + 1, T0 + 2)
    assert await store.message(sent.id) == edited

    deleted = await store.delete_message(sent.id, T0 + 3)
    assert deleted is not None
    assert (deleted.deleted, deleted.text, deleted.edited_at) == (True, "", T0 + 3)
    assert await store.message(sent.id) == deleted
    # Deleting again changes nothing; a deleted message cannot be edited back to life.
    assert await store.delete_message(sent.id, T0 + 4) == deleted
    assert await store.edit_message(sent.id, "back", T0 + 5) is None
    assert await store.message(sent.id) == deleted

    missing = sent.id + 1000
    assert await store.message(missing) is None
    assert await store.edit_message(missing, "x", T0) is None
    assert await store.delete_message(missing, T0) is None


async def test_set_position_round_trip(store: Store) -> None:
    [sent] = await _room_with(store, "general", 1)
    assert (sent.offset, sent.epoch) == (0, "")
    await store.set_position(sent.id, 2**53 + 1, "epoch-Ab1")
    stored = await store.message(sent.id)
    assert stored is not None
    assert (stored.offset, stored.epoch) == (2**53 + 1, "epoch-Ab1")
    [listed] = await store.messages("general", limit=10)
    assert listed == stored
    await store.set_position(sent.id + 1000, 1, "x")  # a missing message: nothing happens


async def test_add_message_to_missing_room(store: Store) -> None:
    with pytest.raises(StoreError, match="room 'nowhere' does not exist"):
        await store.add_message("nowhere", "alice", "hello", T0)
    assert await store.rooms() == []


async def test_paging_walks_back_without_gaps(store: Store) -> None:
    sent = await _room_with(store, "general", 120)
    ids = [m.id for m in sent]
    assert ids == sorted(ids) and len(set(ids)) == 120

    page = await store.messages("general", limit=50)
    assert [m.id for m in page] == ids[-50:]  # the newest 50, oldest first
    assert page[-1] == sent[-1]

    seen: list[int] = []
    pages = []
    before: int | None = None
    while True:
        page = await store.messages("general", limit=50, before=before)
        if not page:
            break
        pages.append(len(page))
        seen = [m.id for m in page] + seen
        before = page[0].id
    assert pages == [50, 50, 20]
    assert seen == ids
    assert await store.messages("general", limit=0) == []
    assert await store.messages("nowhere", limit=10) == []


async def test_rooms_are_isolated(store: Store) -> None:
    await store.create_room("a", "alice", T0)
    await store.create_room("b", "bob", T0)
    in_a = [await store.add_message("a", "alice", f"a{i}", T0 + i) for i in range(3)]
    in_b = [await store.add_message("b", "bob", f"b{i}", T0 + i) for i in range(3)]
    assert await store.messages("a", limit=10) == in_a
    assert await store.messages("b", limit=10) == in_b
    assert await store.messages("a", limit=10, before=in_b[-1].id) == in_a
    assert [r.messages for r in await store.rooms()] == [3, 3]


async def test_concurrent_add_message(store: Store) -> None:
    await store.create_room("general", "alice", T0)
    sent = await asyncio.gather(
        *(store.add_message("general", f"u{i}", f"text {i}", T0 + i) for i in range(50))
    )
    ids = [m.id for m in sent]
    assert len(set(ids)) == 50
    stored = await store.messages("general", limit=100)
    assert [m.id for m in stored] == sorted(ids)
    assert {m.text for m in stored} == {f"text {i}" for i in range(50)}
    assert {(m.id, m.user) for m in stored} == {(m.id, m.user) for m in sent}


@pytest.mark.parametrize("huge", [2**63, -(2**63) - 1, 2**80])
async def test_ids_beyond_64_bits_match_nothing(store: Store, huge: int) -> None:
    [sent] = await _room_with(store, "general", 1)
    assert await store.message(huge) is None
    assert await store.edit_message(huge, "x", T0) is None
    assert await store.delete_message(huge, T0) is None
    await store.set_position(huge, 1, "x")
    expected = [sent] if huge > 0 else []
    assert await store.messages("general", limit=2**70, before=huge) == expected
    assert await store.mark_read("alice", [huge], T0) == []


# Notifications


async def _notify(store: Store, users: list[str], n: int) -> Notification:
    notes = await store.add_notifications(
        users, title=f"title {n}", body=f"body {n}", data="", link="", now=T0 + n
    )
    return notes[0]


async def test_recent_notifications_of_every_inbox(store: Store) -> None:
    old = await store.add_notifications(["ann"], title="", body="old", data="", link="", now=T0)
    new = await store.add_notifications(
        ["ann", "ben"], title="t", body="new", data="", link="", now=T0 + 100
    )
    recent = await store.recent_notifications(since=T0 + 50, limit=10)
    assert recent == list(reversed(new))
    assert await store.recent_notifications(since=T0, limit=10) == [*reversed(new), *old]
    assert await store.recent_notifications(since=T0, limit=1) == [new[-1]]
    assert await store.recent_notifications(since=T0, limit=0) == []


async def test_add_notifications_to_several_users(store: Store) -> None:
    users = ["carol", "alice", "bob"]
    notes = await store.add_notifications(
        users, title="Hi", body="Welcome", data='{"k": [1, 2]}', link="/rooms/general", now=T0
    )
    assert [n.user for n in notes] == users
    ids = [n.id for n in notes]
    assert ids == sorted(ids) and len(set(ids)) == 3
    for note in notes:
        assert note == Notification(
            note.id, note.user, "Hi", "Welcome", '{"k": [1, 2]}', "/rooms/general", T0, None
        )
        assert await store.notifications(note.user, limit=10) == [note]
        assert await store.unread_count(note.user) == 1
    assert await store.add_notifications([], title="", body="", data="", link="", now=T0) == []
    twice = await store.add_notifications(
        ["dave", "dave"], title="", body="x", data="", link="", now=T0
    )
    assert [n.user for n in twice] == ["dave", "dave"] and twice[0].id < twice[1].id
    assert twice[0].data == ""


async def test_inbox_newest_first_with_paging(store: Store) -> None:
    mine = [await _notify(store, ["alice", "bob"], n) for n in range(7)]
    ids = [n.id for n in mine]

    inbox = await store.notifications("alice", limit=10)
    assert [n.id for n in inbox] == ids[::-1]
    assert await store.notifications("alice", limit=3) == inbox[:3]
    walked: list[int] = []
    before: int | None = None
    while page := await store.notifications("alice", limit=3, before=before):
        walked += [n.id for n in page]
        before = page[-1].id
    assert walked == ids[::-1]
    assert await store.notifications("nobody", limit=10) == []
    assert await store.notifications("alice", limit=0) == []


async def test_mark_read_and_unread_counts(store: Store) -> None:
    alices = [await _notify(store, ["alice"], n) for n in range(5)]
    bobs = await _notify(store, ["bob"], 9)
    assert await store.unread_count("alice") == 5

    # Only alice's unread ones change; bob's id and an unknown id are ignored.
    wanted = [alices[3].id, alices[1].id, bobs.id, alices[-1].id + 1000]
    assert await store.mark_read("alice", wanted, T0 + 50) == [alices[1].id, alices[3].id]
    assert await store.mark_read("alice", wanted, T0 + 51) == []  # already read
    assert await store.unread_count("alice") == 3
    assert await store.unread_count("bob") == 1
    assert (await store.notifications("bob", limit=1))[0].read_at is None
    assert await store.mark_read("alice", [], T0) == []

    read = {n.id: n.read_at for n in await store.notifications("alice", limit=10)}
    assert read == {
        alices[0].id: None,
        alices[1].id: T0 + 50,
        alices[2].id: None,
        alices[3].id: T0 + 50,
        alices[4].id: None,
    }
    unread = await store.notifications("alice", limit=10, unread_only=True)
    assert [n.id for n in unread] == [alices[4].id, alices[2].id, alices[0].id]
    assert await store.notifications("alice", limit=1, before=alices[4].id, unread_only=True) == [
        unread[1]
    ]

    rest = [alices[0].id, alices[2].id, alices[4].id]
    assert await store.mark_read("alice", None, T0 + 60) == rest
    assert await store.unread_count("alice") == 0
    assert await store.notifications("alice", limit=10, unread_only=True) == []
    assert await store.mark_read("alice", None, T0 + 61) == []
    assert await store.unread_count("bob") == 1


# Text is stored verbatim

TEXTS = [
    "'); DROP TABLE messages; --",
    "Robert'); DELETE FROM rooms WHERE ('1'='1",
    '<script>alert(1)</script> & "quotes" \\ backslash %s $1 ? :name',
    "héllo 👋🏽 日本語 𝄞 \u200b zero-width, \u202e right-to-left",
    "  leading and trailing spaces  \n\tnew line, tab\r\n",
    "",
    "".join(chr(32 + (i * 7919) % 20000) for i in range(4000)),  # 4000 assorted characters
]


@pytest.mark.parametrize("text", TEXTS, ids=range(len(TEXTS)))
async def test_text_round_trips_exactly(backend: Backend, text: str) -> None:
    # Names are keys of B-tree indexes, whose entries PostgreSQL caps at about 2.7 kB, and the
    # applications keep them far shorter; so names take the first 100 characters.
    name = text[:100]
    store = backend.make()
    await store.open()
    room, _ = await store.create_room(name, name, T0)
    assert room.name == name and room.created_by == name
    sent = await store.add_message(name, name, text, T0)
    assert (sent.room, sent.user, sent.text) == (name, name, text)
    edited = await store.edit_message(sent.id, text + "!", T0 + 1)
    assert edited is not None and edited.text == text + "!"
    await store.touch_user(name, T0)
    assert await store.known_users([name]) == {name}
    [note] = await store.add_notifications(
        [name], title=text, body=text, data=text, link=text, now=T0
    )
    await store.close()

    reopened = backend.make()
    await reopened.open()
    assert await reopened.messages(name, limit=5) == [edited]
    assert [r.name for r in await reopened.rooms()] == [name]
    assert await reopened.all_users() == [name]
    assert await reopened.notifications(name, limit=5) == [note]
    assert (note.user, note.title, note.body, note.data, note.link) == (
        name,
        text,
        text,
        text,
        text,
    )
    assert await backend.query("SELECT COUNT(*) FROM messages") == [(1,)]


# Failures


async def test_postgres_unreachable_is_store_error() -> None:
    port = free_port()  # nothing listens there
    store = PostgresStore(f"postgresql://hubbub:s3cret-pw@127.0.0.1:{port}/chat")
    with pytest.raises(StoreError) as caught:
        await store.open()
    message = str(caught.value)
    assert "'chat'" in message and f"127.0.0.1:{port}" in message
    assert "s3cret-pw" not in message
    await store.close()


async def test_postgres_malformed_dsn_is_store_error() -> None:
    store = PostgresStore("postgresql://hubbub:s3cret-pw@127.0.0.1:port/chat")
    with pytest.raises(StoreError, match="PostgreSQL database") as caught:
        await store.open()
    assert "s3cret-pw" not in str(caught.value)


async def test_postgres_wrong_password_is_store_error(postgres_server: PostgresServer) -> None:
    store = PostgresStore(
        f"postgresql://nobody:s3cret-pw@{postgres_server.host}:{postgres_server.port}/nowhere"
    )
    with pytest.raises(StoreError, match="'nowhere'") as caught:
        await store.open()
    assert "s3cret-pw" not in str(caught.value)


async def test_sqlite_path_is_a_directory(tmp_path: Path) -> None:
    store = SQLiteStore(tmp_path)
    with pytest.raises(StoreError, match=f"SQLite database {tmp_path}"):
        await store.open()
    await store.close()


async def test_sqlite_parent_is_a_file(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("")
    with pytest.raises(StoreError, match="SQLite database"):
        await SQLiteStore(tmp_path / "file" / "store.db").open()


async def test_sqlite_creates_directories_and_uses_wal(tmp_path: Path) -> None:
    path = tmp_path / "deep" / "er" / "hubbub.db"
    store = SQLiteStore(path)
    await store.open()
    try:
        await store.create_room("general", "alice", T0)
    finally:
        await store.close()
    assert path.is_file()
    # The journal mode is recorded in the file: other processes open it in WAL mode too.
    assert path.read_bytes()[18:20] == b"\x02\x02"


_WRITER = """
import asyncio, sys
from hubbub.store import SQLiteStore

async def main() -> None:
    store = SQLiteStore(sys.argv[1])
    await store.open()
    await store.create_room("general", "", 0.0)
    for i in range(100):
        await store.add_message("general", sys.argv[2], str(i), 0.0)
    await store.close()

asyncio.run(main())
"""


async def test_sqlite_shared_by_processes(tmp_path: Path) -> None:
    """Three processes open a new file at once and write to it together."""
    path = tmp_path / "shared.db"
    procs = [
        await asyncio.create_subprocess_exec(sys.executable, "-c", _WRITER, str(path), f"p{n}")
        for n in range(3)
    ]
    codes = await asyncio.gather(*(proc.wait() for proc in procs))
    assert codes == [0, 0, 0]
    store = SQLiteStore(path)
    await store.open()
    try:
        stored = await store.messages("general", limit=1000)
    finally:
        await store.close()
    assert len(stored) == 300 and len({m.id for m in stored}) == 300
    for n in range(3):  # each process's messages are in its own order
        assert [m.text for m in stored if m.user == f"p{n}"] == [str(i) for i in range(100)]


async def test_users_are_recorded_in_batches(store: Store) -> None:
    await store.touch_user("alice", T0)
    await store.touch_users({"alice": T0 + 5, "bob": T0 + 1, "名前": T0 + 2})
    await store.touch_users({})
    assert await store.all_users() == sorted(["alice", "bob", "名前"])
    assert await store.known_users(["bob", "carol", "名前"]) == {"bob", "名前"}
