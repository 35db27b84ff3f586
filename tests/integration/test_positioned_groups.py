"""Recoverable (positioned) subscribers in channel groups: the native transport's live
subscribers of a channel with history that are at the same stream position share it, and a
publication that continues it is checked once for all of them and written to them together.
A publication that does not continue it (a gap, another epoch) makes each of them judge it and
recover; a member that falls behind (too slow to read) leaves; a member's own messages stay in
order with the group's; and positions stay right for recovery after they leave."""

from __future__ import annotations

import asyncio
import json
import socket
from typing import Any

import websockets

from hubbub.auth import mint_connection_token
from hubbub.node import Node
from tests.conftest import SECRET, UNIT, RunningServer, suite_settings

WAIT = 5 * UNIT
CHANNEL = "chat:room"  # history with recovery, join/leave pushes


async def _connect(running: RunningServer, user: str, **options: Any) -> Any:
    ws = await websockets.connect(running.url, open_timeout=WAIT, **options)
    await ws.send(json.dumps({"id": 1, "connect": {"token": mint_connection_token(SECRET, user)}}))
    assert "connect" in (await _messages(ws, 1))[0]
    return ws


async def _messages(ws: Any, count: int) -> list[dict[str, Any]]:
    """The next ``count`` protocol messages (a frame may hold several, one per line)."""
    got: list[dict[str, Any]] = []
    while len(got) < count:
        data = await asyncio.wait_for(ws.recv(), WAIT)
        got.extend(json.loads(line) for line in data.splitlines() if line)
    return got


async def _pubs(ws: Any, count: int) -> list[tuple[int, Any]]:
    """The next ``count`` publications (offset, data), skipping join/leave pushes."""
    out: list[tuple[int, Any]] = []
    while len(out) < count:
        for m in await _messages(ws, 1):
            pub = m.get("push", {}).get("pub")
            if pub is not None:
                out.append((pub.get("offset", 0), pub["data"]))
    return out


async def _subscribe(ws: Any, channel: str = CHANNEL, **request: Any) -> dict[str, Any]:
    await ws.send(json.dumps({"id": 2, "subscribe": {"channel": channel, **request}}))
    while True:
        for m in await _messages(ws, 1):
            if m.get("id") == 2:
                result: dict[str, Any] = m["subscribe"]
                return result


def _members(node: Node, channel: str = CHANNEL) -> int:
    shared = node.index.positioned.get(channel)
    return len(shared.members) if shared is not None else 0


async def test_members_share_one_position_and_get_everything_in_order(
    server: RunningServer,
) -> None:
    node = server.node
    sockets = [await _connect(server, f"u{i}") for i in range(3)]
    for ws in sockets:
        assert (await _subscribe(ws))["recoverable"] is True
    assert _members(node) == 3 and CHANNEL not in node.index.direct
    for n in range(1, 6):
        await node.publish(CHANNEL, {"n": n})
    for ws in sockets:
        assert await _pubs(ws, 5) == [(n, {"n": n}) for n in range(1, 6)]
    shared = node.index.positioned[CHANNEL]
    assert shared.offset == 5
    # A subscriber that comes now joins at the shared position, and a member that leaves and
    # comes back recovers exactly what it missed from the position it was given.
    late = await _connect(server, "late")
    result = await _subscribe(late)
    assert result["offset"] == 5 and _members(node) == 4
    await sockets[0].send(json.dumps({"id": 3, "unsubscribe": {"channel": CHANNEL}}))
    while not any(m.get("id") == 3 for m in await _messages(sockets[0], 1)):
        pass
    assert _members(node) == 3
    await node.publish(CHANNEL, {"n": 6})
    await node.publish(CHANNEL, {"n": 7})
    for ws in (sockets[1], sockets[2], late):
        assert await _pubs(ws, 2) == [(6, {"n": 6}), (7, {"n": 7})]
    back = await _subscribe(sockets[0], recover=True, offset=5, epoch=result["epoch"])
    assert back["recovered"] is True
    assert [p["offset"] for p in back["publications"]] == [6, 7]
    assert _members(node) == 4
    for ws in [*sockets, late]:
        await ws.close()


async def test_a_gap_in_the_shared_position_makes_every_member_recover(
    server: RunningServer,
) -> None:
    node = server.node
    sockets = [await _connect(server, f"g{i}") for i in range(3)]
    for ws in sockets:
        await _subscribe(ws)
    await node.publish(CHANNEL, {"n": 1})
    for ws in sockets:
        assert await _pubs(ws, 1) == [(1, {"n": 1})]
    assert _members(node) == 3
    # The node misses a publication (as when the engine drops one on its way): the stream
    # moves to 2 while this node does not receive the channel; the next one arrives as 3.
    await node.broker.unsubscribe(CHANNEL)
    await node.publish(CHANNEL, {"n": 2})
    await node.broker.subscribe(CHANNEL)
    await node.publish(CHANNEL, {"n": 3})
    for ws in sockets:
        got = await _messages(ws, 1)
        while "unsubscribe" not in got[-1].get("push", {}):
            got += await _messages(ws, 1)
        assert got[-1]["push"]["unsubscribe"]["code"] == 2500  # insufficient state: recover
        assert all("pub" not in m.get("push", {}) for m in got)  # 3 was not sent
    assert CHANNEL not in node.index.positioned
    assert node.counters["engine.stream_missed"] == 3
    # Each recovers 2 and 3 from history and shares a position again.
    for ws in sockets:
        back = await _subscribe(ws, recover=True, offset=1, epoch="")
        assert [p["offset"] for p in back["publications"]] == [2, 3]
    assert _members(node) == 3
    for ws in sockets:
        await ws.close()


async def test_a_member_that_falls_behind_leaves_the_group(start_server: Any) -> None:
    running: RunningServer = await start_server(
        suite_settings(client={"queue_max_size": 64 * 1024})
    )
    node = running.node
    reader = await _connect(running, "reader")
    await _subscribe(reader)
    # This one stops reading after it subscribed: a small receive buffer (set before the
    # connection, so the kernel does not grow it) and a client that queues at most one
    # message, so the server's buffer for it grows past queue_max_size.
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.setblocking(False)
    await asyncio.get_running_loop().sock_connect(sock, ("127.0.0.1", running.port))
    deaf = await _connect(running, "deaf", max_queue=1, sock=sock)
    await _subscribe(deaf)
    assert _members(node) == 2
    payload = {"text": "x" * 16_000}
    sent = 0
    while not node.counters["disconnect.3008"] and sent < 1000:
        sent += 1
        await node.publish(CHANNEL, {**payload, "n": sent})
        got = await _pubs(reader, 1)
        assert got == [(sent, {**payload, "n": sent})]
    assert node.counters["disconnect.3008"] == 1, "the deaf member was never closed"
    # Closing, it is written nothing more; it leaves the channel when its connection is gone
    # (the server waits for its close frame a while; here it drops the connection).
    deaf.transport.abort()
    for _ in range(int(400 * UNIT)):
        if _members(node) == 1:
            break
        await asyncio.sleep(0.005)
    assert _members(node) == 1
    # The other goes on at the shared position.
    await node.publish(CHANNEL, {"n": "after"})
    assert await _pubs(reader, 1) == [(sent + 1, {"n": "after"})]
    await reader.close()


async def test_a_members_own_messages_stay_in_order_with_the_groups(
    server: RunningServer,
) -> None:
    node = server.node
    member = await _connect(server, "m")
    other = await _connect(server, "o")
    for ws in (member, other):
        await _subscribe(ws)
    assert _members(node) == 2
    # A publication to the group, the member's own message, another publication: the member
    # gets them in that order, whichever of them share a flush.
    await node.publish(CHANNEL, {"n": 1})
    await node.send_message("m", {"own": True})
    await node.publish(CHANNEL, {"n": 2})
    kinds: list[tuple[str, Any]] = []
    while len(kinds) < 3:
        for m in await _messages(member, 1):
            push = m.get("push", {})
            if "pub" in push:
                kinds.append(("pub", push["pub"]["offset"]))
            elif "message" in push:
                kinds.append(("message", push["message"]["data"]))
    assert kinds == [("pub", 1), ("message", {"own": True}), ("pub", 2)]
    assert await _pubs(other, 2) == [(1, {"n": 1}), (2, {"n": 2})]
    for ws in (member, other):
        await ws.close()
