"""``hubbub serve``: run the server, or say in one line why it cannot start.

Everything that can fail at start-up happens before the server announces itself: the
listening socket is bound, the store opened and the engine reached. A failure is one line on
stderr (exit 1): ``cannot listen on 127.0.0.1:8000: address already in use``, ``cannot open
the store: …``, ``cannot reach Redis at …: …``. Whatever was logged before it (uvicorn's own
start-up lines, the engine's warnings) is held back and dropped, so the line is all the user
sees. On success the held lines are written, then one INFO line says where to go: the URL of
the page, the engine, the store file and the mode.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import gc
import logging
import os
import re
import socket
import sys
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit, urlunsplit

from hubbub import __version__, logs
from hubbub.config import Settings

if TYPE_CHECKING:
    # The CLI imports this module for every command: the server loads only when serving.
    from hubbub.hub import Hub

EXIT_OK = 0
EXIT_FAILURE = 1

log = logging.getLogger("hubbub")

# How long a hub that half started (the store open, the engine not) gets to close again.
_CLOSE_AFTER_FAILURE = 5.0

_BIND_ERRORS = {
    errno.EADDRINUSE: "address already in use",
    errno.EACCES: "permission denied (ports below 1024 need privileges)",
    errno.EADDRNOTAVAIL: "this machine has no such address",
}


class StartupError(Exception):
    """The server cannot start; the message says why, in one line."""


def is_loopback(host: str) -> bool:
    """Whether ``host`` (a listening address) is reachable from this machine only:
    ``localhost``, 127.0.0.0/8 or ``::1``. Any other name or address counts as exposed."""
    import ipaddress

    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def _where(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def bind(host: str, port: int) -> socket.socket:
    """A socket bound to ``host:port`` (not yet listening), as uvicorn would bind it.

    Raises:
        StartupError: ``cannot listen on HOST:PORT: address already in use`` (or permission
            denied, or an unknown address).
    """
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host.strip("[]"), port))
    except socket.gaierror:
        sock.close()
        raise StartupError(f"cannot listen on {_where(host, port)}: unknown host") from None
    except OSError as exc:
        sock.close()
        why = _BIND_ERRORS.get(exc.errno or 0) or exc.strerror or str(exc)
        raise StartupError(f"cannot listen on {_where(host, port)}: {why.lower()}") from None
    sock.set_inheritable(True)
    return sock


def _root_cause(exc: BaseException) -> str:
    """The innermost message of an exception chain (causes and suppressed contexts too):
    "engine unavailable" says less than the refused connection behind it."""
    seen: list[BaseException] = [exc]
    current: BaseException | None = exc
    while current is not None and len(seen) < 10:
        current = current.__cause__ or current.__context__
        if current is not None:
            seen.append(current)
    if any(isinstance(e, ConnectionRefusedError) for e in seen):
        return "connection refused"
    for candidate in reversed(seen):
        # "[Errno 113] No route to host" -> "No route to host"
        text = re.sub(r"^\[Errno -?\d+\] ", "", " ".join(str(candidate).split()))
        if text:
            return text
    return type(exc).__name__


def _without_password(url: str) -> str:
    """``url`` without the password of its user part (what the log may show)."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.rpartition("@")
    user = (parts.username or "") + ":***"
    return urlunsplit(parts._replace(netloc=f"{user}@{netloc[2]}"))


def _redis_where(settings: Settings) -> str:
    if settings.redis.cluster_addresses:
        return "cluster " + ",".join(settings.redis.cluster_addresses)
    return ", ".join(_without_password(url) for url in settings.redis.shards)


def describe_failure(exc: BaseException, settings: Settings) -> str:
    """One line for an exception raised while the hub started."""
    from hubbub.store.base import StoreError

    if isinstance(exc, StoreError):
        return f"cannot open the store: {' '.join(str(exc).split())}"
    if settings.engine == "redis":
        return f"cannot reach Redis at {_redis_where(settings)}: {_root_cause(exc)}"
    if settings.engine == "nats":
        return f"cannot start the NATS engine ({settings.nats.url}): {_root_cause(exc)}"
    return f"cannot start: {_root_cause(exc)}"


def describe_store(hub: Hub) -> str:
    """The store in words: ``store SQLite /abs/path/hubbub.db`` (absolute), or none."""
    store = hub.store
    if store is None:
        return "no store (chat and notifications off)"
    url = hub.node.settings.store.url.strip()
    if url.startswith(("postgresql://", "postgres://")):
        from hubbub.store.postgres import describe_dsn  # loaded already: the store is one

        return f"store {describe_dsn(url)[0]}"
    path = getattr(store, "path", None)  # a SQLite store's file
    if path is None:
        return f"store {type(store).__name__}"
    if str(path) == ":memory:":
        return "store SQLite in memory (gone at exit)"
    return f"store SQLite {Path(path).resolve()}"


def startup_line(settings: Settings, hub: Hub, port: int) -> str:
    """What the INFO line at start-up says: where to go, the engine, the store, the mode."""
    host = settings.host
    everywhere = host in ("0.0.0.0", "::", "")
    shown = "127.0.0.1" if everywhere else host
    url = f"http://{_where(shown, port)}"
    page = " (chat page)" if hub.chat is not None else ""
    parts = [f"hubbub {__version__} serving {url}{page}"]
    if everywhere:
        parts.append("listening on every address")
    if settings.engine == "redis":
        parts.append(f"engine redis {_redis_where(settings)}")
    elif settings.engine == "nats":
        nats = settings.nats
        parts.append(f"engine nats {nats.url} (history {nats.history}, presence {nats.presence})")
    else:
        parts.append("engine memory")
    parts.append(describe_store(hub))
    parts.append("development mode" if settings.development else "production mode")
    return "; ".join(parts)


class _Held(logging.Handler):
    """Keeps records until the server has started (then they are written) or failed (then
    they are dropped: the one line that says why replaces them)."""

    def __init__(self) -> None:
        super().__init__(logging.NOTSET)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


class _Logs:
    """Holds the root logger's output back while the server starts."""

    def __init__(self) -> None:
        self.root = logging.getLogger()
        self.real = list(self.root.handlers)
        self.held = _Held()
        self.root.handlers[:] = [self.held]

    def release(self) -> None:
        """Write what was held (but uvicorn's start-up chatter: our line replaces it)."""
        if self.root.handlers == [self.held]:
            self.root.handlers[:] = self.real
        for record in self.held.records:
            if record.name.startswith("uvicorn") and record.levelno <= logging.INFO:
                continue
            for handler in self.real:
                if record.levelno >= handler.level:
                    handler.handle(record)
        self.held.records.clear()

    def drop(self) -> None:
        """Forget what was held and log normally again."""
        if self.root.handlers == [self.held]:
            self.root.handlers[:] = self.real
        self.held.records.clear()


def _warn_about_dev_mode(settings: Settings) -> None:
    if not settings.development:
        return
    log.warning(
        "development mode: tokens are signed with a public secret and every channel is "
        "open; do not expose this server"
    )
    if not is_loopback(settings.host):
        log.warning(
            "development mode listening on %s, reachable from other machines: anyone "
            "who can reach it can sign tokens, connect, and use the key-less API; "
            "use --host 127.0.0.1, or drop --dev",
            settings.host,
        )


def _debug_traceback(settings: Settings, exc: BaseException) -> None:
    """At ``log_level = "debug"`` the traceback behind a start-up failure's line is logged."""
    if settings.log_level == "debug":
        log.debug("start-up failed", exc_info=exc)


def _fail(message: str) -> int:
    print(f"hubbub serve: {message}", file=sys.stderr)
    return EXIT_FAILURE


def serve(settings: Settings, workers: int = 1) -> int:
    """Run the server until SIGINT/SIGTERM; the exit code (1 with one line on stderr when it
    could not start)."""
    logs.configure(settings.log_level, settings.log_format)
    held = _Logs()
    try:
        sock = bind(settings.host, settings.port)
    except StartupError as exc:
        held.drop()
        return _fail(str(exc))
    if workers > 1:
        sock.close()  # the address is free: uvicorn binds it again for its workers
        try:
            asyncio.run(_preflight(settings))
        except Exception as exc:
            held.drop()
            _debug_traceback(settings, exc)
            return _fail(describe_failure(exc, settings))
        held.release()
        return _serve_workers(settings, workers)
    try:
        return _serve_one(settings, sock, held)
    finally:
        sock.close()


async def _preflight(settings: Settings) -> None:
    """Reach the store and every Redis server once, as each worker will at its start: a
    failure is then one line here rather than a traceback from every worker."""
    from hubbub.store import open_store

    if settings.chat.enabled or settings.notifications.enabled:
        store = open_store(settings.store.url)
        await store.open()
        await store.close()
    if settings.engine == "redis":
        import redis.asyncio as aioredis

        if settings.redis.cluster_addresses:
            from hubbub.engines.redis_cluster import ClusterConnector, check_version

            cfg = settings.redis
            connector = ClusterConnector(
                cfg.cluster_addresses, username=cfg.username, password=cfg.password
            )
            cluster: Any = connector(1, 5.0)
            try:
                await check_version(cluster)
            finally:
                await cluster.aclose()
            return
        for url in settings.redis.shards:
            client = aioredis.Redis.from_url(url, socket_connect_timeout=5, socket_timeout=5)
            try:
                await client.ping()
            finally:
                await client.aclose()


def _uvicorn_options(settings: Settings) -> dict[str, Any]:
    from hubbub.transports.serving import uvicorn_options

    return {
        **uvicorn_options(settings),
        "host": settings.host,
        "port": settings.port,
        "log_level": settings.log_level,
        "log_config": None,  # uvicorn logs through ours (text or JSON)
    }


def settings_for_workers(settings: Settings) -> str:
    """The JSON each worker of ``--workers`` rebuilds ``settings`` from.

    Only what was set (in the file, the environment, the flags) is written: validators tell
    an option given from its default (``[redis] url`` next to ``cluster_addresses`` or
    ``sentinel_addresses`` is refused, the default is not), and derive the rest again.
    """
    return settings.model_dump_json(exclude_unset=True)


def _serve_workers(settings: Settings, workers: int) -> int:
    import uvicorn

    from hubbub.app import SETTINGS_ENV

    _warn_about_dev_mode(settings)
    # Each worker process builds its app from exactly these validated settings.
    os.environ[SETTINGS_ENV] = settings_for_workers(settings)
    uvicorn.run(
        "hubbub.app:app_from_environment",
        factory=True,
        workers=workers,
        lifespan="on",
        **_uvicorn_options(settings),
    )
    return EXIT_OK


def _serve_one(settings: Settings, sock: socket.socket, held: _Logs) -> int:
    import uvicorn

    from hubbub.app import create_app

    try:
        app = create_app(settings)
    except Exception as exc:  # a store driver that is not installed, say
        held.drop()
        _debug_traceback(settings, exc)
        return _fail(describe_failure(exc, settings))
    hub: Hub = app.state.hub
    port = int(sock.getsockname()[1])
    failure: list[str] = []
    failed_with: list[BaseException] = []

    class Server(uvicorn.Server):
        def handle_exit(self, sig: int, frame: FrameType | None) -> None:
            super().handle_exit(sig, frame)
            # SIGTERM/SIGINT are how operators stop the server: after the graceful shutdown
            # the process exits 0 instead of dying again by the same signal.
            self._captured_signals.clear()

        async def startup(self, sockets: list[socket.socket] | None = None) -> None:
            # The hub starts here rather than in the ASGI lifespan, so that a store or an
            # engine that cannot be reached is one line, not uvicorn's traceback.
            try:
                await hub.start()
            except Exception as exc:
                failure.append(describe_failure(exc, settings))
                failed_with.append(exc)
                with contextlib.suppress(Exception, TimeoutError):
                    await _close_within(hub, _CLOSE_AFTER_FAILURE)
                self.should_exit = True
                return
            try:
                await super().startup(sockets)
            except BaseException:
                await hub.close()
                raise
            held.release()
            _warn_about_dev_mode(settings)
            log.info("%s", startup_line(settings, hub, port))
            # What start-up made (modules, the app, settings) lives as long as the process:
            # frozen, the collector no longer walks it, and young collections run every
            # 10,000 allocations instead of 700, so opening thousands of connections does
            # not stop the loop for a collection every few of them.
            gc.freeze()
            gc.set_threshold(10_000, 20, 10)

        async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
            # Our drain first (3001 in batches), so clients do not get uvicorn's 1012.
            await hub.node.drain(settings.shutdown_drain_period)
            try:
                await super().shutdown(sockets)
            finally:
                await hub.close()

    config = uvicorn.Config(app, lifespan="off", **_uvicorn_options(settings))
    server = Server(config)
    server.run(sockets=[sock])
    if failure:
        held.drop()
        _debug_traceback(settings, failed_with[0])
        return _fail(failure[0])
    held.release()
    return EXIT_OK if server.started else EXIT_FAILURE


async def _close_within(hub: Hub, seconds: float) -> None:
    await asyncio.wait_for(hub.close(), seconds)
