"""A test kit for applications built on hubbub: a real hub on loopback, clients that never hang.

::

    from hubbub.testing import run_hub

    async def test_broadcast() -> None:
        async with run_hub() as hub:                         # memory engine, dev tokens
            async with hub.client("alice") as alice:
                sub = await alice.subscribe("news")
                await hub.node.publish("news", {"n": 1})
                assert (await alice.next(sub)).data == {"n": 1}

* :func:`run_hub` serves a :class:`~hubbub.node.Node` (or your own ASGI app that mounts one)
  with uvicorn on ``127.0.0.1`` and a free port, in the test's event loop, and stops it after.
* :meth:`Hub.client` connects a :class:`TestClient`: a :class:`hubbub.client.Client` whose
  every wait has a default timeout and fails with a message naming what it waited for.
* Time: build the node with ``Node(settings, clock=FakeClock())`` (re-exported here) and
  ``await advance(clock, seconds)`` to run heartbeats, expiries and TTLs without waiting for
  them; it moves the clock in steps and lets real I/O (clients answering pings) run between.

With pytest, ``pytest_plugins = ["hubbub.testing"]`` adds a ``hub`` fixture (a running hub with
the default test settings).
"""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import uvicorn

from hubbub.app import create_app
from hubbub.auth import mint_connection_token
from hubbub.client import Client, Gap, Publication, Subscription
from hubbub.clock import FakeClock
from hubbub.config import Settings, StoreSettings, TokenSettings
from hubbub.hub import Hub as ServerHub
from hubbub.node import Node
from hubbub.store import Notification
from hubbub.transports.serving import uvicorn_options

__all__ = ["FakeClock", "Hub", "TestClient", "advance", "hub_settings", "run_hub"]

TEST_SECRET = "hubbub-testing-secret-of-at-least-32-bytes"
DEFAULT_TIMEOUT = 2.0


def hub_settings() -> Settings:
    """Settings for tests: a known HMAC secret, every channel open to clients, history and
    presence on for channels without a namespace, the HTTP API without a key."""
    return Settings(
        development=True,
        token=TokenSettings(hmac_secret_key=TEST_SECRET),
        store=StoreSettings(url="sqlite:///:memory:"),
    )


async def advance(clock: FakeClock, seconds: float, *, step: float = 0.5) -> None:
    """Move ``clock`` forward by ``seconds`` in ``step``-second steps, letting the event loop
    run between steps so that connections can react (answer pings, send commands)."""
    moved = 0.0
    while moved < seconds:
        delta = min(step, seconds - moved)
        clock.advance(delta)
        moved += delta
        await asyncio.sleep(0.01)


class TestClient(Client):
    """A client whose waits fail loudly instead of hanging a test."""

    __test__ = False  # not a pytest test class

    def __init__(self, url: str, *, wait: float = DEFAULT_TIMEOUT, **options: Any) -> None:
        super().__init__(url, **options)
        self.wait = wait

    async def next(self, sub: Subscription, *, within: float | None = None) -> Publication:
        """The next publication of ``sub``.

        Raises:
            AssertionError: none within ``within`` seconds (default: the client's ``wait``),
                or a Gap came instead.
        """
        limit = self.wait if within is None else within
        try:
            item = await asyncio.wait_for(anext(sub), limit)
        except TimeoutError:
            raise AssertionError(f"no publication on {sub.channel!r} within {limit} s") from None
        if isinstance(item, Gap):
            raise AssertionError(f"a gap on {sub.channel!r} instead of a publication: {item}")
        return item

    async def expect(self, sub: Subscription, data: Sequence[Any]) -> list[Publication]:
        """Assert that the next publications of ``sub`` carry ``data``, in order."""
        got = [await self.next(sub) for _ in data]
        assert [p.data for p in got] == list(data), f"on {sub.channel!r}"
        return got

    async def nothing(self, sub: Subscription, *, within: float = 0.2) -> None:
        """Assert that no publication arrives on ``sub`` for ``within`` seconds."""
        try:
            item = await asyncio.wait_for(anext(sub), within)
        except TimeoutError:
            return
        raise AssertionError(f"unexpected item on {sub.channel!r}: {item}")


@dataclass
class Hub:
    """A hub serving on loopback for the duration of a test.

    Attributes:
        node: the node.
        port: the loopback port it serves on.
        server: the :class:`hubbub.hub.Hub` with the chat and notification services (its
            ``store`` is an in-memory SQLite database unless the settings name another).
    """

    node: Node
    port: int
    server: ServerHub | None = None

    async def notify(self, users: Sequence[str] | None, **fields: Any) -> list[Notification]:
        """Send a notification (see :meth:`hubbub.hub.Hub.notify`)."""
        if self.server is None:
            raise RuntimeError("this hub serves your own app: call your hub's notify()")
        return await self.server.notify(users, **fields)

    @property
    def url(self) -> str:
        return f"ws://127.0.0.1:{self.port}{self.node.settings.websocket_path}"

    @property
    def http(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def token(self, user: str, **claims: Any) -> str:
        """A connection token for ``user`` signed with the hub's HMAC secret, carrying the
        hub's configured audience and issuer (and an hour's ``exp`` when ``require_exp`` is
        on), unless ``claims`` say otherwise."""
        cfg = self.node.settings.token
        claims.setdefault("audience", cfg.audience)
        claims.setdefault("issuer", cfg.issuer)
        if cfg.require_exp:
            claims.setdefault("ttl", 3600.0)
        return mint_connection_token(cfg.hmac_secret_key, user, **claims)

    @asynccontextmanager
    async def client(self, user: str = "tester", **options: Any) -> AsyncIterator[TestClient]:
        """A connected :class:`TestClient` for ``user``, closed afterwards."""
        options.setdefault("token", self.token(user))
        client = TestClient(self.url, **options)
        await client.connect()
        try:
            yield client
        finally:
            await client.close()


class _Server(uvicorn.Server):
    def install_signal_handlers(self) -> None:  # the test runner owns the signals
        pass


@asynccontextmanager
async def run_hub(
    settings: Settings | None = None, *, node: Node | None = None, app: Any = None
) -> AsyncIterator[Hub]:
    """Serve a hub on ``127.0.0.1`` and a free port until the block ends.

    Args:
        settings: for a new node (default :func:`hub_settings`).
        node: an existing node to serve (e.g. one built with a ``FakeClock``).
        app: your ASGI app that mounts ``node`` (then ``node`` is required): the test talks to
            your routes and hubbub's endpoint together.
    """
    node = node or Node(settings or hub_settings())
    server_hub = ServerHub(node=node) if app is None else None
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    # Your own app is served as written; hubbub's app the way `hubbub serve` serves it.
    options = uvicorn_options(node.settings) if app is None else {"ws_per_message_deflate": False}
    config = uvicorn.Config(
        app if app is not None else create_app(hub=server_hub),
        host="127.0.0.1",
        port=port,
        log_level="warning",
        lifespan="on",
        **options,
    )
    server = _Server(config)
    task = asyncio.create_task(server.serve())
    try:
        while not server.started:
            if task.done():
                task.result()
                raise RuntimeError("the hub did not start")
            await asyncio.sleep(0.01)
        yield Hub(node=node, port=port, server=server_hub)
    finally:
        server.should_exit = True
        await asyncio.wait_for(task, 10)


try:  # the pytest plugin: `pytest_plugins = ["hubbub.testing"]`
    import pytest

    @pytest.fixture
    async def hub() -> AsyncIterator[Hub]:
        """A running hub with :func:`hub_settings` (needs an asyncio pytest plugin)."""
        async with run_hub() as running:
            yield running

except ImportError:  # pytest is optional
    pass
