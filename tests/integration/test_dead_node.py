"""A node killed with ``kill -9`` holds nothing: its clients leave and its users' limits free up.

The node that dies is a real ``hubbub serve`` process; the survivor runs in the test. Both use
the test session's Redis with a short ``node_lapse``, so the documented bound
(``node_lapse + announce_interval``) is a couple of seconds instead of ``presence_ttl``.
"""

from __future__ import annotations

import asyncio
import signal
import socket
import sys
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from centrifuge import Client

import hubbub.client as hc
from hubbub.auth import mint_connection_token
from tests.conftest import SECRET, UNIT, RunningServer, suite_settings
from tests.integration.test_centrifuge_python import ClientEvents, SubEvents, next_item

ANNOUNCE_INTERVAL = 0.5
NODE_LAPSE = 2.0
BOUND = NODE_LAPSE + ANNOUNCE_INTERVAL
"""Seconds from the death of a node until its clients are gone everywhere (docs/scaling.md)."""
MARGIN = 3 * UNIT
"""Scheduling and Redis round trips on a busy machine."""
PER_USER = 2


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def node_config(path: Path, port: int, redis_url: str, prefix: str) -> Path:
    """The dying node's configuration: the survivor's options, in a file."""
    path.write_text(
        f"port = {port}\n"
        'engine = "redis"\n'
        f"announce_interval = {ANNOUNCE_INTERVAL}\n"
        f"node_lapse = {NODE_LAPSE}\n"
        f'[redis]\nurl = "{redis_url}"\nprefix = "{prefix}"\n'
        f'[token]\nhmac_secret_key = "{SECRET}"\n'
        f"[limits]\nconnections_per_user = {PER_USER}\n"
        "[[channel.namespaces]]\n"
        'name = "chat"\n'
        "presence = true\njoin_leave = true\nforce_push_join_leave = true\n"
        "allow_subscribe_for_client = true\nallow_presence_for_client = true\n"
    )
    return path


@dataclass
class Doomed:
    """A ``hubbub serve`` process on the test's Redis."""

    url: str
    prefix: str
    proc: asyncio.subprocess.Process

    async def kill(self) -> None:
        """``kill -9``: nothing of the node gets to run again."""
        self.proc.kill()
        await self.proc.wait()


@pytest.fixture
async def doomed(tmp_path: Path, redis_url: str) -> AsyncIterator[Doomed]:
    """The node that will die (killed at the end in any case)."""
    prefix = f"dead-{uuid.uuid4().hex[:8]}"
    port = free_port()
    config = node_config(tmp_path / "node.toml", port, redis_url, prefix)
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "hubbub", "serve", "--config", str(config),
        stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL,
    )  # fmt: skip
    try:
        for _ in range(int(200 * UNIT)):
            try:
                _, writer = await asyncio.open_connection("127.0.0.1", port)
                writer.close()
                break
            except OSError:
                await asyncio.sleep(0.05)
        else:
            raise AssertionError("hubbub serve did not start listening")
        yield Doomed(f"ws://127.0.0.1:{port}/connection/websocket", prefix, proc)
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()


async def subscribe(url: str, user: str, clients: list[Client]) -> tuple[str, SubEvents]:
    """A centrifuge-python client of ``user`` subscribed to ``chat:room``: its client id."""
    connection = ClientEvents()
    client = Client(url, events=connection, token=mint_connection_token(SECRET, user), proxy=None)
    clients.append(client)
    events = SubEvents()
    sub = client.new_subscription("chat:room", events=events)
    await client.connect()
    connected = await next_item(connection.connected, f"{user} connected")
    await sub.subscribe()
    await next_item(events.subscribed, f"{user} subscribed")
    return connected.client, events


async def eventually(check: Any, deadline: float, what: str) -> float:
    """Poll ``check()`` until it is true; the time it became true, or fail at ``deadline``."""
    loop = asyncio.get_running_loop()
    while not await check():
        if loop.time() > deadline:
            raise AssertionError(f"{what}: not within {BOUND} s + {MARGIN} s")
        await asyncio.sleep(0.05)
    return loop.time()


async def can_connect(survivor: RunningServer, user: str) -> bool:
    try:
        async with hc.connect(survivor.url, token=mint_connection_token(SECRET, user)):
            return True
    except hc.ClientClosed as exc:
        assert exc.code == 3504  # connection limit, and nothing else
        return False


async def test_a_killed_nodes_clients_leave_within_the_bound(
    start_server: Any, redis_url: str, doomed: Doomed
) -> None:
    url, prefix = doomed.url, doomed.prefix
    survivor: RunningServer = await start_server(
        suite_settings(
            engine="redis",
            redis={"url": redis_url, "prefix": prefix},
            limits={"connections_per_user": PER_USER},
            announce_interval=ANNOUNCE_INTERVAL,
            node_lapse=NODE_LAPSE,
        )
    )
    clients: list[Client] = []
    try:
        watcher_id, watcher = await subscribe(survivor.url, "watcher", clients)
        dead_clients = {
            (await subscribe(url, user, clients))[0] for user in ("alice", "alice", "bob")
        }
        joined: set[str] = set()
        while len(joined) < len(dead_clients):
            joined.add((await next_item(watcher.joins, "join")).info.client)
            joined.discard(watcher_id)  # its own join
        assert joined == dead_clients
        presence = await survivor.node.presence("chat:room")
        assert dead_clients < set(presence)
        assert not await can_connect(survivor, "alice")  # alice is at her limit

        await doomed.kill()
        loop = asyncio.get_running_loop()
        killed = loop.time()
        deadline = killed + BOUND + MARGIN

        async def left() -> bool:
            return watcher.leaves.qsize() >= len(dead_clients)

        async def presence_cleared() -> bool:
            return not dead_clients & set(await survivor.node.presence("chat:room"))

        async def alice_connects() -> bool:
            return await can_connect(survivor, "alice")

        times = {
            "leaves published": await eventually(left, deadline, "leave events"),
            "presence cleared": await eventually(presence_cleared, deadline, "presence"),
            "user reconnects": await eventually(alice_connects, deadline, "alice's limit"),
        }
        gone = {watcher.leaves.get_nowait().info.client for _ in dead_clients}
        assert gone == dead_clients
        assert len(await survivor.node.presence("chat:room")) == 1  # the watcher
        # Three channel entries and three connection counts, removed by the only survivor.
        assert survivor.node.counters["engine.presence_reaped"] == 6
        for what, at in times.items():
            print(f"{what}: {at - killed:.2f} s after kill -9")
    finally:
        for client in clients:
            await client.disconnect()


async def test_a_stalled_node_taken_for_dead_adds_its_presence_again(
    start_server: Any, redis_url: str, doomed: Doomed
) -> None:
    survivor: RunningServer = await start_server(
        suite_settings(
            engine="redis",
            redis={"url": redis_url, "prefix": doomed.prefix},
            announce_interval=ANNOUNCE_INTERVAL,
            node_lapse=NODE_LAPSE,
        )
    )
    clients: list[Client] = []
    try:
        watcher_id, watcher = await subscribe(survivor.url, "watcher", clients)
        client_id, _ = await subscribe(doomed.url, "alice", clients)
        # A node that cannot renew its liveness for longer than node_lapse (stalled, or cut
        # off from Redis) is taken for dead: its client leaves.
        doomed.proc.send_signal(signal.SIGSTOP)
        try:
            leave = await next_item(watcher.leaves, "the leave of the stalled node's client")
            assert leave.info.client == client_id
            assert set(await survivor.node.presence("chat:room")) == {watcher_id}
        finally:
            doomed.proc.send_signal(signal.SIGCONT)
        # Back: at its next renewal it learns it lapsed and adds its entries again at once.
        loop = asyncio.get_running_loop()

        async def listed_again() -> bool:
            return client_id in await survivor.node.presence("chat:room")

        await eventually(listed_again, loop.time() + BOUND + MARGIN, "presence again")
        assert set(await survivor.node.presence("chat:room")) == {watcher_id, client_id}
    finally:
        for client in clients:
            await client.disconnect()
