"""Durable storage for the chat and notification applications (see :mod:`hubbub.store.base`).

:func:`open_store` picks the implementation from a URL::

    store = open_store("sqlite:///hubbub.db", base_dir=Path("/srv/hubbub"))
    await store.open()
"""

from __future__ import annotations

import importlib
import re
from pathlib import Path
from typing import TYPE_CHECKING, Any

from hubbub.store.base import ChatMessage, Notification, Room, Store, StoreError

if TYPE_CHECKING:
    from hubbub.store.postgres import PostgresStore
    from hubbub.store.sqlite import SQLiteStore

__all__ = [
    "ChatMessage",
    "Notification",
    "PostgresStore",
    "Room",
    "SQLiteStore",
    "Store",
    "StoreError",
    "check_store_url",
    "open_store",
]

# The implementations load their drivers (aiosqlite, asyncpg): imported when first named, so
# that validating a configuration's store URL loads neither.
_IMPLEMENTATIONS = {"PostgresStore": "postgres", "SQLiteStore": "sqlite"}


def __getattr__(name: str) -> Any:
    """The implementation class ``name``, its module imported on first use."""
    module = _IMPLEMENTATIONS.get(name)
    if module is None:
        raise AttributeError(f"module 'hubbub.store' has no attribute {name!r}")
    return getattr(importlib.import_module(f"hubbub.store.{module}"), name)


_SCHEME = re.compile(r"[A-Za-z][A-Za-z0-9+.-]{0,31}")
_SQLITE_PREFIX = "sqlite://"
_SQLITE_SUFFIXES = (".db", ".sqlite", ".sqlite3")
_POSTGRES_PREFIXES = ("postgresql://", "postgres://")
_ACCEPTED = (
    "sqlite:///relative/path.db, sqlite:////absolute/path.db, a path ending in "
    f"{'/'.join(_SQLITE_SUFFIXES)}, or postgresql://user:password@host:port/database"
)


def open_store(url: str, *, base_dir: Path | None = None) -> Store:
    """Construct (not open) the store ``url`` names; the caller awaits ``store.open()``.

    Accepted forms:

    * ``sqlite:///hubbub.db``: a path relative to ``base_dir`` (or the working directory);
      ``sqlite:////var/lib/hubbub.db``: an absolute path (the fourth slash starts it);
      ``sqlite:///:memory:``: a private in-memory database.
    * a bare path ending in ``.db``, ``.sqlite`` or ``.sqlite3`` (relative ones as above;
      ``~`` is expanded).
    * ``postgresql://...`` or ``postgres://...``: a PostgreSQL DSN, passed on unchanged.

    Raises:
        ValueError: ``url`` is none of these. The message never repeats the URL, which may
            hold a password.
    """
    kind, target = _parse(url)
    if kind == "postgres":
        from hubbub.store.postgres import PostgresStore

        return PostgresStore(target)
    return _sqlite(target, base_dir)


def check_store_url(url: str) -> None:
    """Raise ``ValueError`` (the message :func:`open_store` would give) unless ``url`` is an
    accepted form. Constructs nothing and imports no database driver: the configuration is
    validated with it, also by commands that never open the store."""
    _parse(url)


def _parse(url: str) -> tuple[str, str]:
    """``("postgres", dsn)`` or ``("sqlite", path)`` for ``url``; ValueError for anything else."""
    text = url.strip()
    if text.startswith(_POSTGRES_PREFIXES):
        return "postgres", text
    if text.startswith(_SQLITE_PREFIX):
        rest = text[len(_SQLITE_PREFIX) :]
        # After "sqlite://" comes an empty host and "/": what follows is the path.
        if not rest.startswith("/") or len(rest) == 1:
            raise ValueError(f"a sqlite URL needs a path after 'sqlite:///'; accepted: {_ACCEPTED}")
        return "sqlite", rest[1:]
    if "://" not in text and text.lower().endswith(_SQLITE_SUFFIXES):
        return "sqlite", text
    scheme = text.split("://", 1)[0] if "://" in text else ""
    # Only a well-formed scheme is repeated: anything else might be part of a secret.
    if _SCHEME.fullmatch(scheme):
        what = f"scheme {scheme!r}"
    else:
        what = "no known scheme or database file suffix"
    raise ValueError(f"unsupported store URL ({what}); accepted: {_ACCEPTED}")


def _sqlite(path: str, base_dir: Path | None) -> SQLiteStore:
    from hubbub.store.sqlite import SQLiteStore

    if path == ":memory:":
        return SQLiteStore(path)
    resolved = Path(path).expanduser()
    if not resolved.is_absolute() and base_dir is not None:
        resolved = base_dir / resolved
    return SQLiteStore(resolved)
