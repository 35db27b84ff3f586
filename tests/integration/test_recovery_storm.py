"""Many clients recovering one channel at once on Redis (a reconnect storm): their stream reads
are coalesced, and each client still gets every publication after its own offset exactly once
and in order, including those published while the others were recovering."""

from __future__ import annotations

import asyncio
import json
import uuid
from typing import Any

import websockets

from hubbub.auth import mint_connection_token
from hubbub.engines.base import HistoryFilter, HistoryResult, PublishOptions
from tests.conftest import SECRET, UNIT, RunningServer, suite_settings

WAIT = 5 * UNIT
CHANNEL = "storm"  # history with recovery (the suite's channels without a namespace)
CLIENTS = 40


async def _messages(ws: Any) -> list[dict[str, Any]]:
    data = await asyncio.wait_for(ws.recv(), WAIT)
    return [json.loads(line) for line in data.splitlines() if line]


async def _client(running: RunningServer, user: str) -> Any:
    ws = await websockets.connect(running.url, open_timeout=WAIT)
    await ws.send(json.dumps({"id": 1, "connect": {"token": mint_connection_token(SECRET, user)}}))
    assert "connect" in (await _messages(ws))[0]
    return ws


async def _recover(ws: Any, offset: int, epoch: str, top: int) -> list[int]:
    """Subscribe with recovery from ``offset``; every offset received until ``top``."""
    request = {"channel": CHANNEL, "recover": True, "offset": offset, "epoch": epoch}
    await ws.send(json.dumps({"id": 2, "subscribe": request}))
    seen: list[int] = []
    recovered = None
    while not seen or seen[-1] < top:
        for m in await _messages(ws):
            if m.get("id") == 2:
                recovered = m["subscribe"].get("recovered")
                seen += [p["offset"] for p in m["subscribe"].get("publications", [])]
            elif "pub" in m.get("push", {}):
                seen.append(m["push"]["pub"]["offset"])
    assert recovered is True
    return seen


async def test_a_storm_of_recoveries_is_served_by_few_reads(
    start_server: Any, redis_url: str
) -> None:
    prefix = f"storm-{uuid.uuid4().hex[:8]}"
    settings = suite_settings(engine="redis", redis={"url": redis_url, "prefix": prefix})
    running: RunningServer = await start_server(settings)
    node = running.node
    broker = node.broker
    reads = 0
    real_history = broker.history

    async def slow_history(channel: str, flt: HistoryFilter, opts: PublishOptions) -> HistoryResult:
        # A Redis a little further away: reads overlap, as they do under a storm's load.
        nonlocal reads
        reads += 1
        await asyncio.sleep(0.02)
        return await real_history(channel, flt, opts)

    broker.history = slow_history  # type: ignore[method-assign]
    for n in range(1, 7):
        await node.publish(CHANNEL, {"n": n})
    epoch = (await node.history(CHANNEL, limit=0)).position.epoch
    sockets = [await _client(running, f"u{i}") for i in range(CLIENTS)]
    reads = 0
    offsets = [i % 6 for i in range(CLIENTS)]  # from 0 (all six missed) to 5 (one missed)

    async def publish_meanwhile() -> None:
        for n in range(7, 11):
            await asyncio.sleep(0.01)
            await node.publish(CHANNEL, {"n": n})

    results, _ = await asyncio.gather(
        asyncio.gather(
            *(_recover(ws, o, epoch, 10) for ws, o in zip(sockets, offsets, strict=True))
        ),
        publish_meanwhile(),
    )
    for offset, seen in zip(offsets, results, strict=True):
        assert seen == list(range(offset + 1, 11)), (offset, seen)
    assert reads < CLIENTS // 2, reads
    assert node.counters["history.coalesced_reads"] >= CLIENTS // 2
    for ws in sockets:
        await ws.close()
