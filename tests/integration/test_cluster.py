"""Several ``hubbub serve`` processes on one Redis, used the way a deployment is: through their
HTTP APIs and WebSocket endpoints, one of them killed with SIGKILL behind a load balancer."""

from __future__ import annotations

import asyncio
import contextlib
import signal
import socket
import sys
import uuid
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest
from cent import (
    AsyncClient,
    DisconnectRequest,
    InfoRequest,
    PresenceRequest,
    PresenceStatsRequest,
    PublishRequest,
)
from centrifuge import Client, ClientEventHandler, DisconnectedContext, SubscribedContext

from hubbub.auth import mint_connection_token
from tests.conftest import API_KEY, SECRET, UNIT
from tests.integration.test_centrifuge_python import SubEvents, next_item

WAIT = 5 * UNIT


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


class ServeProcess:
    def __init__(self, proc: asyncio.subprocess.Process, port: int) -> None:
        self.proc = proc
        self.port = port

    @property
    def url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/connection/websocket"

    @property
    def api(self) -> str:
        return f"http://127.0.0.1:{self.port}/api"


@pytest.fixture
async def cluster(redis_url: str, tmp_path: Path) -> AsyncIterator[Callable[[int], Any]]:
    procs: list[ServeProcess] = []
    prefix = f"cluster-{uuid.uuid4().hex[:8]}"

    async def start(count: int) -> list[ServeProcess]:
        started = []
        for _ in range(count):
            port = free_port()
            config = tmp_path / f"node-{port}.toml"
            config.write_text(
                f'port = {port}\nengine = "redis"\nlog_level = "warning"\n'
                f'[redis]\nurl = "{redis_url}"\nprefix = "{prefix}"\n'
                f'[token]\nhmac_secret_key = "{SECRET}"\n'
                f'[http_api]\nkey = "{API_KEY}"\n'
                "[channel.without_namespace]\npresence = true\njoin_leave = true\n"
                "history_size = 1000\nhistory_ttl = 300\nforce_recovery = true\n"
                "allow_subscribe_for_client = true\nallow_presence_for_client = true\n"
            )
            proc = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "hubbub", "serve", "--config", str(config),
                stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL,
            )  # fmt: skip
            node = ServeProcess(proc, port)
            procs.append(node)
            started.append(node)
        for node in started:
            for _ in range(int(200 * UNIT)):
                with contextlib.suppress(OSError):
                    _, writer = await asyncio.open_connection("127.0.0.1", node.port)
                    writer.close()
                    break
                await asyncio.sleep(0.05)
            else:
                raise AssertionError("hubbub serve did not start")
        return started

    yield start
    for node in procs:
        if node.proc.returncode is None:
            node.proc.terminate()
    for node in procs:
        with contextlib.suppress(ProcessLookupError):
            await asyncio.wait_for(node.proc.wait(), 10 * UNIT)


class Recorder(ClientEventHandler):
    def __init__(self) -> None:
        self.disconnected: asyncio.Queue[DisconnectedContext] = asyncio.Queue()

    async def on_disconnected(self, ctx: DisconnectedContext) -> None:
        await self.disconnected.put(ctx)


async def connect(url: str, user: str, channel: str) -> tuple[Client, SubEvents, Recorder]:
    recorder = Recorder()
    client = Client(url, token=mint_connection_token(SECRET, user), events=recorder, proxy=None)
    events = SubEvents()
    sub = client.new_subscription(channel, events=events)
    await client.connect()
    await sub.subscribe()
    await next_item(events.subscribed, f"{user} subscribed")
    return client, events, recorder


async def test_three_processes(cluster: Callable[[int], Any]) -> None:
    nodes = await cluster(3)
    apis = [AsyncClient(node.api, API_KEY) for node in nodes]
    members = [await connect(node.url, f"user{i}", "room") for i, node in enumerate(nodes)]
    try:
        published = []
        for round_ in range(3):
            for i, api in enumerate(apis):
                result = await api.publish(
                    PublishRequest(channel="room", data={"n": round_ * 3 + i})
                )
                published.append((result.offset, round_ * 3 + i))
        assert [offset for offset, _ in published] == list(range(1, 10))
        for _, events, _ in members:
            got = []
            for _ in published:
                ctx = await next_item(events.publications, "publication")
                got.append((ctx.pub.offset, ctx.pub.data["n"]))
            assert got == published
            await asyncio.sleep(0.05)
            assert events.publications.empty()
        presences = []
        for api in apis:
            stats = await api.presence_stats(PresenceStatsRequest(channel="room"))
            assert (stats.num_clients, stats.num_users) == (3, 3)
            presence = (await api.presence(PresenceRequest(channel="room"))).presence
            presences.append({cid: info.user for cid, info in presence.items()})
        assert presences[0] == presences[1] == presences[2]
        assert sorted(presences[0].values()) == ["user0", "user1", "user2"]
        # user1 has a second connection on node 2; disconnecting through node 0 ends both.
        extra = await connect(nodes[2].url, "user1", "room")
        await apis[0].disconnect(DisconnectRequest(user="user1"))
        for _, _, recorder in (members[1], extra):
            ctx = await next_item(recorder.disconnected, "disconnect of user1")
            assert ctx.code == 3503
        assert members[0][2].disconnected.empty() and members[2][2].disconnected.empty()
    finally:
        for client, _, _ in members:
            await client.disconnect()
        for api in apis:
            await api.close()


class Balancer:
    """A TCP load balancer on loopback that sends new connections to the current target."""

    def __init__(self) -> None:
        self.target = 0
        self.port = 0
        self.server: asyncio.Server | None = None

    async def start(self) -> None:
        self.server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        self.port = self.server.sockets[0].getsockname()[1]

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.target)
        except OSError:
            writer.close()
            return

        await asyncio.gather(pipe(reader, up_writer), pipe(up_reader, writer))

    async def close(self) -> None:
        if self.server is not None:
            self.server.close()


async def pipe(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
    """Copy bytes one way until the source ends or either side fails; then close ``dst``."""
    try:
        while data := await src.read(65536):
            dst.write(data)
            await dst.drain()
    except (ConnectionError, OSError):
        pass
    finally:
        dst.close()


async def test_kill_a_node_clients_recover_on_another(cluster: Callable[[int], Any]) -> None:
    doomed, survivor = await cluster(2)
    balancer = Balancer()
    balancer.target = doomed.port
    await balancer.start()
    url = f"ws://127.0.0.1:{balancer.port}/connection/websocket"
    client, events, _ = await connect(url, "alice", "news")
    api = AsyncClient(survivor.api, API_KEY)
    stop = asyncio.Event()
    sent: list[int] = []

    async def publish_forever() -> None:
        n = 0
        while not stop.is_set():
            n += 1
            result = await api.publish(PublishRequest(channel="news", data={"n": n}))
            sent.append(result.offset)
            await asyncio.sleep(0.01)

    publisher = asyncio.create_task(publish_forever())
    seen: list[int] = []
    try:
        while len(seen) < 10:
            seen.append((await next_item(events.publications, "publication")).pub.offset)
        balancer.target = survivor.port
        doomed.proc.send_signal(signal.SIGKILL)
        resubscribed: SubscribedContext = await next_item(events.subscribed, "resubscribe")
        assert resubscribed.recovered
        await asyncio.sleep(0.3 * UNIT)
        stop.set()
        await publisher
        while len(seen) < len(sent):
            seen.append((await next_item(events.publications, "publication")).pub.offset)
        await asyncio.sleep(0.1 * UNIT)
        assert events.publications.empty()
        # End to end: every offset the API returned arrived once, in order.
        assert seen == sent == list(range(1, len(sent) + 1))
    finally:
        stop.set()
        await asyncio.gather(publisher, return_exceptions=True)
        await client.disconnect()
        await api.close()
        await balancer.close()


async def test_workers_share_one_port(redis_url: str, tmp_path: Path) -> None:
    port = free_port()
    config = tmp_path / "workers.toml"
    config.write_text(
        f'port = {port}\nengine = "redis"\nlog_level = "warning"\n'
        f'[redis]\nurl = "{redis_url}"\nprefix = "workers-{uuid.uuid4().hex[:8]}"\n'
        f'[token]\nhmac_secret_key = "{SECRET}"\n[http_api]\nkey = "{API_KEY}"\n'
        "[channel.without_namespace]\nallow_subscribe_for_client = true\n"
    )
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "hubbub", "serve", "--config", str(config), "--workers", "2",
        stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL,
    )  # fmt: skip
    clients: list[Client] = []
    api = AsyncClient(f"http://127.0.0.1:{port}/api", API_KEY)
    try:
        url = f"ws://127.0.0.1:{port}/connection/websocket"
        for _ in range(int(300 * UNIT)):
            try:
                nodes = (await api.info(InfoRequest())).nodes
                if len(nodes) == 2:
                    break
            except Exception:
                pass
            await asyncio.sleep(0.05)
        else:
            raise AssertionError("two workers did not come up and see each other")
        subscribers = []
        for i in range(8):
            client, events, _ = await connect(url, f"u{i}", "news")
            clients.append(client)
            subscribers.append(events)
        result = await api.publish(PublishRequest(channel="news", data={"hello": "workers"}))
        for events in subscribers:
            ctx = await next_item(events.publications, "publication")
            assert ctx.pub.data == {"hello": "workers"} and ctx.pub.offset == result.offset
    finally:
        for client in clients:
            await client.disconnect()
        await api.close()
        proc.terminate()
        await asyncio.wait_for(proc.wait(), 15 * UNIT)


async def test_workers_need_redis() -> None:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "hubbub", "serve", "--workers", "2",
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    _, err = await asyncio.wait_for(proc.communicate(), 30 * UNIT)
    assert proc.returncode == 2
    assert b'needs engine = "redis"' in err and b"Traceback" not in err


class Codes(ClientEventHandler):
    """Records why the client went back to connecting."""

    def __init__(self) -> None:
        self.codes: list[int] = []

    async def on_connecting(self, ctx: Any) -> None:
        self.codes.append(ctx.code)


async def test_sigterm_drains_to_another_node(cluster: Callable[[int], Any]) -> None:
    stopping, survivor = await cluster(2)
    balancer = Balancer()
    balancer.target = stopping.port
    await balancer.start()
    url = f"ws://127.0.0.1:{balancer.port}/connection/websocket"
    codes = Codes()
    client = Client(url, token=mint_connection_token(SECRET, "alice"), events=codes, proxy=None)
    events = SubEvents()
    sub = client.new_subscription("news", events=events)
    await client.connect()
    await sub.subscribe()
    await next_item(events.subscribed, "subscribed")
    api = AsyncClient(survivor.api, API_KEY)
    sent = [(await api.publish(PublishRequest(channel="news", data={"n": n}))).offset
            for n in range(3)]  # fmt: skip
    try:
        balancer.target = survivor.port
        stopping.proc.send_signal(signal.SIGTERM)
        for n in range(3, 8):
            sent.append((await api.publish(PublishRequest(channel="news", data={"n": n}))).offset)
            await asyncio.sleep(0.05)
        seen = []
        while len(seen) < len(sent):
            seen.append((await next_item(events.publications, "publication")).pub.offset)
        assert seen == sent  # nothing lost, nothing twice
        assert 3001 in codes.codes  # told "shutdown", so it reconnected by itself
        assert await asyncio.wait_for(stopping.proc.wait(), 15 * UNIT) == 0
    finally:
        await client.disconnect()
        await api.close()
        await balancer.close()
