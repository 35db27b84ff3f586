"""``open_store``: which store a URL names (construction only; opening is the caller's)."""

from __future__ import annotations

from pathlib import Path

import pytest

from hubbub.store import PostgresStore, SQLiteStore, open_store


@pytest.mark.parametrize(
    ("url", "base_dir", "expected"),
    [
        ("sqlite:///hubbub.db", None, Path("hubbub.db")),
        ("sqlite:///data/hubbub.db", Path("/srv/app"), Path("/srv/app/data/hubbub.db")),
        ("sqlite:////var/lib/hubbub.db", Path("/srv/app"), Path("/var/lib/hubbub.db")),
        ("hubbub.sqlite3", Path("/srv/app"), Path("/srv/app/hubbub.sqlite3")),
        ("state/chat.sqlite", None, Path("state/chat.sqlite")),
        ("/abs/chat.DB", Path("/srv/app"), Path("/abs/chat.DB")),
        ("  sqlite:///spaced.db  ", Path("/x"), Path("/x/spaced.db")),
    ],
)
def test_sqlite_urls(url: str, base_dir: Path | None, expected: Path) -> None:
    store = open_store(url, base_dir=base_dir)
    assert isinstance(store, SQLiteStore)
    assert store.path == expected


async def test_sqlite_memory() -> None:
    store = open_store("sqlite:///:memory:", base_dir=Path("/srv/app"))
    assert isinstance(store, SQLiteStore)
    assert str(store.path) == ":memory:"
    await store.open()
    try:
        await store.create_room("general", "alice", 1.0)
        assert [m.text for m in [await store.add_message("general", "a", "hi", 2.0)]] == ["hi"]
    finally:
        await store.close()


def test_home_is_expanded() -> None:
    store = open_store("~/hubbub.db", base_dir=Path("/srv/app"))
    assert isinstance(store, SQLiteStore)
    assert store.path == Path.home() / "hubbub.db"


@pytest.mark.parametrize(
    "url", ["postgresql://hubbub:pw@db.internal:5433/chat", "postgres://localhost/chat"]
)
def test_postgres_urls(url: str) -> None:
    store = open_store(url)
    assert isinstance(store, PostgresStore)
    assert "pw" not in repr(store)


@pytest.mark.parametrize(
    "url",
    [
        "mysql://root:hunter2@localhost/chat",
        "sqlite://host/hubbub.db",
        "sqlite:///",
        "sqlite:",
        "hubbub.txt",
        "",
        "redis://:hunter2@localhost:6379/0",
    ],
)
def test_unknown_forms_are_refused_without_echoing_secrets(url: str) -> None:
    with pytest.raises(ValueError, match="accepted: sqlite:///") as caught:
        open_store(url)
    message = str(caught.value)
    assert "hunter2" not in message
    assert "\n" not in message


async def test_open_store_then_open(tmp_path: Path) -> None:
    store = open_store("sqlite:///nested/chat.db", base_dir=tmp_path)
    await store.open()
    try:
        _, created = await store.create_room("general", "alice", 1.0)
        assert created
    finally:
        await store.close()
    assert (tmp_path / "nested" / "chat.db").is_file()
