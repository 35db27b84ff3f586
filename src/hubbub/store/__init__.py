"""Durable storage for the chat and notification applications (see :mod:`hubbub.store.base`).

:func:`open_store` picks the implementation from a URL::

    store = open_store("sqlite:///hubbub.db", base_dir=Path("/srv/hubbub"))
    await store.open()
"""

from __future__ import annotations

import re
from pathlib import Path

from hubbub.store.base import ChatMessage, Notification, Room, Store, StoreError
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
    "open_store",
]

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
    text = url.strip()
    if text.startswith(_POSTGRES_PREFIXES):
        return PostgresStore(text)
    if text.startswith(_SQLITE_PREFIX):
        rest = text[len(_SQLITE_PREFIX) :]
        # After "sqlite://" comes an empty host and "/": what follows is the path.
        if not rest.startswith("/") or len(rest) == 1:
            raise ValueError(f"a sqlite URL needs a path after 'sqlite:///'; accepted: {_ACCEPTED}")
        return _sqlite(rest[1:], base_dir)
    if "://" not in text and text.lower().endswith(_SQLITE_SUFFIXES):
        return _sqlite(text, base_dir)
    scheme = text.split("://", 1)[0] if "://" in text else ""
    # Only a well-formed scheme is repeated: anything else might be part of a secret.
    if _SCHEME.fullmatch(scheme):
        what = f"scheme {scheme!r}"
    else:
        what = "no known scheme or database file suffix"
    raise ValueError(f"unsupported store URL ({what}); accepted: {_ACCEPTED}")


def _sqlite(path: str, base_dir: Path | None) -> SQLiteStore:
    if path == ":memory:":
        return SQLiteStore(path)
    resolved = Path(path).expanduser()
    if not resolved.is_absolute() and base_dir is not None:
        resolved = base_dir / resolved
    return SQLiteStore(resolved)
