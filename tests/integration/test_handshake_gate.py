"""A burst of opening handshakes on the native transport: beyond ``handshakes_per_turn`` per
loop turn they wait, their sockets paused, and every one of them still opens, connects and
subscribes, whichever way its head came (the shorter way or through httptools), with its
connect frame after the 101 or in the same write as the head."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest

from hubbub.transports.turn_gate import TurnGate
from tests.conftest import UNIT, RunningServer, suite_settings
from tests.integration.test_abuse import frame
from tests.integration.test_fast_upgrade import (  # noqa: F401 (the ways fixture)
    open_and_connect,
    read_text_frame,
    upgrade_head,
    ways_fixture,
)

WAIT = 10 * UNIT
CLIENTS = 60


@pytest.fixture
def waited(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """One entry per handshake the gate made wait."""
    calls: list[int] = []
    wait = TurnGate.wait

    def counting(self: TurnGate, go: Any) -> None:
        calls.append(1)
        wait(self, go)

    monkeypatch.setattr(TurnGate, "wait", counting)
    return calls


async def _client(server: RunningServer, n: int) -> dict[str, Any]:
    # Every other client makes httptools parse its head (a header value outside plain ASCII,
    # which the shorter way does not take); of the others, every other one sends its connect
    # in the same write as the head.
    extra = (f"X-Name: caf\xe9 {n}",) if n % 2 else ()
    head = upgrade_head("/connection/websocket", *extra)
    reader, writer = await open_and_connect(server.port, head, f"u{n}", pipelined=n % 4 == 0)
    try:
        sub = {"id": 2, "subscribe": {"channel": f"live:g{n}"}}
        writer.write(frame(0x1, json.dumps(sub).encode()))
        return await read_text_frame(reader)
    finally:
        writer.close()


async def test_a_burst_beyond_the_turns_share_waits_and_every_client_opens(
    start_server: Any, waited: list[int], ways: dict[str, int]
) -> None:
    server: RunningServer = await start_server(suite_settings(handshakes_per_turn=2))
    results = await asyncio.wait_for(
        asyncio.gather(*(_client(server, n) for n in range(CLIENTS))), WAIT
    )
    for subscribed in results:
        assert subscribed.get("id") == 2 and "subscribe" in subscribed
    assert waited, "no handshake waited: the burst did not exceed the turn's share"
    assert ways == {"raw": CLIENTS // 2, "parsed": CLIENTS // 2}


async def test_zero_turns_the_gate_off(start_server: Any, waited: list[int]) -> None:
    server: RunningServer = await start_server(suite_settings(handshakes_per_turn=0))
    await asyncio.wait_for(asyncio.gather(*(_client(server, n) for n in range(20))), WAIT)
    assert not waited
