"""Shared fixtures: settings for tests and a real server on a loopback port.

Every wait in the tests is a multiple of ``UNIT`` seconds, scaled by the environment variable
``HUBBUB_TEST_TIME_FACTOR`` on slow machines.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import socket
import subprocess
import time
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from typing import Any

import pytest
import uvicorn

from hubbub.app import create_app
from hubbub.config import Settings
from hubbub.node import Node
from hubbub.transports.serving import uvicorn_options

# The kit hubbub offers its users (the `hub` fixture); hubbub's own tests use it where it fits.
pytest_plugins = ["hubbub.testing"]

UNIT = float(os.environ.get("HUBBUB_TEST_TIME_FACTOR", "1"))
SECRET = "test-secret-of-thirty-two-bytes-at-least"
API_KEY = "test-api-key"

_OPEN = {
    "allow_subscribe_for_client": True,
    "allow_publish_for_client": True,
    "allow_presence_for_client": True,
    "allow_history_for_client": True,
}


def suite_settings(**overrides: Any) -> Settings:
    """Settings used by the suite: a few namespaces covering the option combinations."""
    data: dict[str, Any] = {
        "token": {"hmac_secret_key": SECRET},
        "http_api": {"key": API_KEY},
        "client": {"ping_interval": 25, "pong_timeout": 8},
        # The chat application takes its own namespace, so that "chat:" stays a plain
        # namespace for protocol tests; tests/apps use the application's defaults.
        "chat": {"namespace": "rooms"},
        "store": {"url": "sqlite:///:memory:"},
        "channel": {
            "without_namespace": {
                **_OPEN,
                "presence": True,
                "join_leave": True,
                "history_size": 100,
                "history_ttl": 300,
                "force_recovery": True,
            },
            "namespaces": [
                {
                    "name": "chat",
                    **_OPEN,
                    "presence": True,
                    "join_leave": True,
                    "force_push_join_leave": True,
                    "history_size": 100,
                    "history_ttl": 300,
                    "force_recovery": True,
                    "allow_user_limited_channels": True,
                },
                {
                    "name": "small",
                    **_OPEN,
                    "history_size": 3,
                    "history_ttl": 300,
                    "force_recovery": True,
                },
                {"name": "live", **_OPEN},
                {
                    "name": "locked",
                    "presence": True,
                    "history_size": 10,
                    "history_ttl": 300,
                    "allow_publish_for_subscriber": True,
                    "allow_presence_for_subscriber": True,
                    "allow_history_for_subscriber": True,
                },
                {"name": "dialog", "allow_user_limited_channels": True},
                {
                    "name": "bin",
                    **_OPEN,
                    "history_size": 10,
                    "history_ttl": 300,
                    "force_recovery": True,
                    "publication_data_format": "binary",
                },
            ],
        },
    }
    for key, value in overrides.items():
        if isinstance(value, dict) and isinstance(data.get(key), dict):
            data[key] = {**data[key], **value}
        else:
            data[key] = value
    return Settings(**data)


@dataclass
class RunningServer:
    """A hubbub server serving on a loopback port in the test's event loop."""

    node: Node
    port: int

    @property
    def url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/connection/websocket"

    @property
    def http(self) -> str:
        return f"http://127.0.0.1:{self.port}"


class _Server(uvicorn.Server):
    def install_signal_handlers(self) -> None:  # the test runner owns the signals
        pass


TRANSPORTS = ["native", "asgi"]
"""The WebSocket transports a server can serve with (``Settings.transport``)."""


@pytest.fixture(params=TRANSPORTS)
def transport(request: pytest.FixtureRequest) -> str:
    """Each WebSocket transport in turn, as the engine conformance suite takes each engine.

    A test that asks for it (or a module with ``pytestmark = pytest.mark.usefixtures
    ("transport")``) runs once per transport, and every server ``start_server`` (hence
    ``server``) runs for it serves on that transport. Tests that do not ask run on the default,
    native transport only: most tests are not about the wire, and running them twice would
    only double the suite's time. A test of a native-only duty in such a module opts out with
    ``@pytest.mark.parametrize("transport", ["native"])`` and a comment saying why.
    """
    result: str = request.param
    return result


@pytest.fixture
async def start_server(request: pytest.FixtureRequest) -> AsyncIterator[Callable[..., Any]]:
    """Factory: ``await start_server(settings)`` runs a server until the test ends.

    When the test is parametrized by ``transport``, the server serves on that transport
    whatever the settings passed say.
    """
    running: list[tuple[_Server, asyncio.Task[None]]] = []
    transport: str | None = None
    if "transport" in request.fixturenames:
        transport = request.getfixturevalue("transport")

    async def start(settings: Settings | None = None) -> RunningServer:
        settings = settings or suite_settings()
        if transport is not None and settings.transport != transport:
            settings = settings.model_copy(update={"transport": transport})
        node = Node(settings)
        config = uvicorn.Config(
            create_app(node=node),
            host="127.0.0.1",
            port=0,
            lifespan="on",
            log_level="warning",
            **uvicorn_options(settings),
        )
        server = _Server(config)
        task = asyncio.create_task(server.serve())
        for _ in range(int(500 * UNIT)):
            if server.started:
                break
            if task.done():
                task.result()
            await asyncio.sleep(0.01)
        assert server.started, "server did not start"
        port = server.servers[0].sockets[0].getsockname()[1]
        running.append((server, task))
        return RunningServer(node=node, port=port)

    yield start
    for server, _ in running:
        server.should_exit = True
    for _, task in running:
        await asyncio.wait_for(task, timeout=10 * UNIT)


@pytest.fixture
async def server(start_server: Callable[..., Any]) -> RunningServer:
    """A server with :func:`suite_settings`."""
    result: RunningServer = await start_server()
    return result


@pytest.fixture(scope="session")
def redis_urls(tmp_path_factory: pytest.TempPathFactory) -> Iterator[list[str]]:
    """Two private ``redis-server`` processes on free loopback ports for the whole session.

    Tests never share data with a Redis the machine runs for other purposes. Two servers let
    the sharded engine be tested for real. ``make test`` installs redis-server when missing.
    """
    binary = shutil.which("redis-server")
    assert binary, "redis-server is required (make test installs it with apt-get)"
    procs: list[subprocess.Popen[bytes]] = []
    urls: list[str] = []
    try:
        for _ in range(2):
            with socket.socket() as sock:
                sock.bind(("127.0.0.1", 0))
                port = sock.getsockname()[1]
            workdir = tmp_path_factory.mktemp("redis")
            command = [binary, "--port", str(port), "--bind", "127.0.0.1"]
            command += ["--save", "", "--appendonly", "no", "--dir", str(workdir)]
            procs.append(
                subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            )
            for _ in range(int(200 * UNIT)):
                try:
                    socket.create_connection(("127.0.0.1", port), timeout=0.1).close()
                    break
                except OSError:
                    time.sleep(0.05)
            else:
                raise AssertionError("redis-server did not start")
            urls.append(f"redis://127.0.0.1:{port}/0")
        yield urls
    finally:
        for proc in procs:
            proc.terminate()
            proc.wait(10)


@pytest.fixture(scope="session")
def nats_url() -> Iterator[str]:
    """A private ``nats-server`` on a free loopback port for the whole session."""
    from tests.nats_process import NatsProcess

    server = NatsProcess()
    server.start()
    yield server.url
    server.stop()


@pytest.fixture(scope="session")
def redis_url(redis_urls: list[str]) -> str:
    """The first private Redis of the session."""
    return redis_urls[0]


@pytest.fixture(scope="session")
def redis_sentinel(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """A private master, replica and three Sentinels for the whole session
    (:class:`tests.integration.sentinel_kit.SentinelGroup`); nothing kills its master: tests
    that do start a group of their own (``own_sentinel``)."""
    from tests.integration.sentinel_kit import SentinelGroup

    # With passwords everywhere, so that the tests on it also check the credentials' way.
    group = SentinelGroup(tmp_path_factory.mktemp("sentinel"), password="sentinel-test-secret")
    try:
        group.start()
        yield group
    finally:
        group.stop()


@pytest.fixture(scope="session")
def redis_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """A private Redis Cluster (3 masters, 3 replicas; :class:`tests.redis_cluster.RedisCluster`)
    for the whole session; nothing kills its masters: failover tests start one of their own."""
    from tests.redis_cluster import RedisCluster

    cluster = RedisCluster(tmp_path_factory.mktemp("cluster"))
    try:
        cluster.start()
        yield cluster
    finally:
        cluster.stop()


# ---------------------------------------------------------------------------------------------
# Markers by what a test needs (registered in pyproject.toml; `make unit` leaves them out)

_MARKER_OF_FIXTURE = {
    "redis_url": "redis",
    "redis_urls": "redis",
    "own_redis": "redis",  # a redis-server of the test's own, which it kills and restarts
    "durable_redis": "redis",
    "nats_url": "nats",
    "own_nats": "nats",  # a nats-server of the test's own, which it kills and restarts
    "redis_sentinel": "redis",  # redis-server as master, replica and Sentinels
    "own_sentinel": "redis",
    "redis_cluster": "redis",  # six redis-server processes in cluster mode
    "own_cluster": "redis",
    "postgres_server": "postgres",
}
"""A test that uses the fixture needs what the marker names."""

_MARKER_OF_PARAM = {
    ("backend", "postgresql"): "postgres",  # tests/store (the engines' parameters carry marks)
}
"""A test run with the parameter needs what the marker names (its fixture is asked for by
``request.getfixturevalue``, which collection cannot see)."""

_WEB = os.path.join(os.path.dirname(__file__), "web")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Mark every test by the outside services it needs: ``redis``, ``postgres``, ``browser``.

    ``tmux``, ``js`` and ``slow`` are written on the tests themselves.
    """
    for item in items:
        wanted = {_MARKER_OF_FIXTURE.get(name) for name in getattr(item, "fixturenames", ())}
        callspec = getattr(item, "callspec", None)
        if callspec is not None:
            for key, value in callspec.params.items():
                if isinstance(value, str):  # other parameters may be unhashable
                    wanted.add(_MARKER_OF_PARAM.get((key, value)))
        if str(item.path).startswith(_WEB + os.sep):
            wanted.add("browser")  # tests/web drive Chromium
        for name in sorted(n for n in wanted if n is not None):
            item.add_marker(name)
