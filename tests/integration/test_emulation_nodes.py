"""Emulation across nodes on one Redis: the stream on node A, its ``/emulation`` requests
POSTed to node B, which routes them through the engine's control channel (no sticky
sessions)."""

from __future__ import annotations

import asyncio
from typing import Any

import httpx

from hubbub.auth import mint_connection_token
from tests.conftest import SECRET, UNIT
from tests.integration.emulation_kit import EmulationClient
from tests.integration.test_redis_nodes import start_nodes


async def test_emulation_request_on_another_node(start_server: Any, redis_url: str) -> None:
    a, b = await start_nodes(start_server, redis_url, 2)
    for _ in range(int(200 * UNIT)):
        if any(peer.uid == a.node.uid for peer in b.node.cluster.peers()):
            break
        await asyncio.sleep(0.05)
    else:
        raise AssertionError("node B never heard of node A")
    async with httpx.AsyncClient(timeout=10 * UNIT) as http:
        on_a = EmulationClient(a.http, http)
        via_b = EmulationClient(b.http, http)
        for kind in ("json", "protobuf"):
            token = mint_connection_token(SECRET, "alice")
            async with on_a.open({"token": token}, kind=kind) as stream:
                result = await on_a.connected(stream)
                assert result["node"] == a.node.uid
                answer = await via_b.emulate(stream, {"subscribe": {"channel": "news"}, "id": 2})
                assert answer.status_code == 204
                reply = await stream.next_non_ping()
                assert (reply.id if kind == "protobuf" else reply["id"]) == 2
                await b.node.publish("news", {"kind": kind})
                push = await stream.next_non_ping()
                assert push is not None
                # Taken by A, which answered B: the session is A's.
                assert result["client"] in a.node.index.sessions
        # A node that is not live: 404; a live node without the session: 204.
        url = b.http + "/emulation"
        answer = await http.post(url, json={"node": "gone", "session": "s", "data": "{}"})
        assert answer.status_code == 404
        answer = await http.post(url, json={"node": a.node.uid, "session": "s", "data": "{}"})
        assert answer.status_code == 204
    assert b.node.counters["emulation.routed"] == 3
