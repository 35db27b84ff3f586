"""Fixtures of the store suite: a private PostgreSQL server and one fresh database per test.

The PostgreSQL server is started for the test session from the machine's server binaries
(``initdb``, ``pg_ctl``) in a temporary directory, on a free loopback port with trust
authentication and fsync off; it never touches a PostgreSQL the machine runs for other purposes.
As root (``initdb`` refuses to run as root) the binaries run as the ``postgres`` system user.
``make test-deps`` installs the binaries when missing.
"""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiosqlite
import asyncpg
import pytest

from hubbub.store import PostgresStore, SQLiteStore, Store

INSTALL_HINT = "run `make test-deps` (it installs the Debian package postgresql)"


def free_port() -> int:
    """A loopback port nobody listens on (at the moment of asking)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _bindir() -> Path:
    """The directory of the PostgreSQL server binaries: initdb's on PATH, else the newest
    Debian one."""
    on_path = shutil.which("initdb")
    if on_path:
        return Path(on_path).resolve().parent
    found = sorted(
        glob.glob("/usr/lib/postgresql/*/bin/initdb"),
        key=lambda p: int(Path(p).parts[-3]) if Path(p).parts[-3].isdigit() else 0,
    )
    assert found, f"the PostgreSQL server binaries (initdb, pg_ctl) are missing: {INSTALL_HINT}"
    return Path(found[-1]).parent


@dataclass
class PostgresServer:
    """A running private PostgreSQL server; ``postgres`` is a superuser without password."""

    port: int
    host: str = "127.0.0.1"

    def dsn(self, database: str = "postgres") -> str:
        return f"postgresql://postgres@{self.host}:{self.port}/{database}"


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[PostgresServer]:
    """A private PostgreSQL server for the whole session, stopped (fast) at its end."""
    bindir = _bindir()
    as_user: dict[str, Any] = {}
    workdir = Path(tempfile.mkdtemp(prefix="hubbub-pg-"))
    if os.geteuid() == 0:
        try:
            account = pwd.getpwnam("postgres")
        except KeyError:
            raise AssertionError(
                f"running as root needs the `postgres` system user for the server: {INSTALL_HINT}"
            ) from None
        # Not under pytest's tmp dir: that one is private to root and postgres could not enter.
        os.chown(workdir, account.pw_uid, account.pw_gid)
        as_user = {"user": account.pw_uid, "group": account.pw_gid, "extra_groups": []}
    data = workdir / "data"
    port = free_port()
    options = (
        f"-c listen_addresses=127.0.0.1 -p {port} -k {workdir}"
        " -c fsync=off -c synchronous_commit=off -c full_page_writes=off"
    )
    initdb = [str(bindir / "initdb"), "-D", str(data), "-U", "postgres", "-A", "trust"]
    pg_ctl = [str(bindir / "pg_ctl"), "-D", str(data)]
    log = str(workdir / "server.log")

    def run(command: list[str]) -> None:
        done = subprocess.run(command, capture_output=True, text=True, timeout=60, **as_user)
        assert done.returncode == 0, f"{command[0]} failed:\n{done.stdout}\n{done.stderr}"

    try:
        run([*initdb, "-E", "UTF8", "--no-locale", "--no-sync"])
        run([*pg_ctl, "-l", log, "-o", options, "-w", "-t", "60", "start"])
        try:
            yield PostgresServer(port=port)
        finally:
            run([*pg_ctl, "-m", "fast", "-w", "stop"])
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


@dataclass
class Backend:
    """One fresh database of one kind for one test.

    ``make()`` builds another store (not opened) on the same database; the fixture closes
    every store it made. ``query`` reads the database directly, bypassing the store.
    """

    kind: str
    make_store: Callable[[], Store]
    query: Callable[[str], Any]
    made: list[Store] = field(default_factory=list)

    def make(self) -> Store:
        store = self.make_store()
        self.made.append(store)
        return store

    async def close_all(self) -> None:
        for store in self.made:
            await store.close()


@pytest.fixture(params=["sqlite", "postgresql"])
async def backend(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Backend]:
    """A fresh database: a new SQLite file, or a new database on the private server."""
    if request.param == "sqlite":
        path = tmp_path / "store.db"

        async def sqlite_query(sql: str) -> list[tuple[Any, ...]]:
            async with aiosqlite.connect(path, isolation_level=None) as db:
                return [tuple(row) for row in await db.execute_fetchall(sql)]

        sqlite = Backend("sqlite", lambda: SQLiteStore(path), sqlite_query)
        try:
            yield sqlite
        finally:
            await sqlite.close_all()
        return

    server: PostgresServer = request.getfixturevalue("postgres_server")
    name = f"t_{uuid.uuid4().hex}"  # generated, so safe to put into the statement
    admin = await asyncpg.connect(server.dsn())
    try:
        await admin.execute(f"CREATE DATABASE {name}")
    finally:
        await admin.close()

    async def postgres_query(sql: str) -> list[tuple[Any, ...]]:
        conn = await asyncpg.connect(server.dsn(name))
        try:
            return [tuple(row) for row in await conn.fetch(sql)]
        finally:
            await conn.close()

    postgres = Backend(
        "postgresql", lambda: PostgresStore(server.dsn(name), max_size=5), postgres_query
    )
    try:
        yield postgres
    finally:
        await postgres.close_all()
        admin = await asyncpg.connect(server.dsn())
        try:
            await admin.execute(f"DROP DATABASE {name} WITH (FORCE)")
        finally:
            await admin.close()


@pytest.fixture
async def store(backend: Backend) -> Store:
    """An opened store on a fresh database (closed by ``backend``)."""
    opened = backend.make()
    await opened.open()
    return opened
