"""A burst of opening handshakes on the native transport: beyond ``handshakes_per_turn`` per
loop turn they wait, their sockets paused, and every one of them still opens, connects and
subscribes, whichever way its head came (the shorter way or through httptools) and whatever
it sent behind the head."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest

from hubbub.transports.turn_gate import TurnGate
from tests.conftest import UNIT, RunningServer, suite_settings
from tests.integration.test_abuse import frame
from tests.integration.test_fast_upgrade import (
    connect_frame,
    read_head,
    read_text_frame,
    upgrade_head,
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


async def _client(server: RunningServer, n: int) -> list[dict[str, Any]]:
    reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
    try:
        # Every other client makes httptools parse its head (a header the shorter way does
        # not take), and every third sends its connect in the same write as the head.
        extra = ("X-Padding: " + "p" * 40,) if n % 2 else ()
        head = upgrade_head("/connection/websocket", *extra)
        if n % 3 == 0:
            writer.write(head + connect_frame(f"u{n}"))
        else:
            writer.write(head)
            await writer.drain()
            await asyncio.sleep(0)
            writer.write(connect_frame(f"u{n}"))
        answer = await read_head(reader)
        assert answer.startswith(b"HTTP/1.1 101"), answer
        connected = await read_text_frame(reader)
        sub = {"id": 2, "subscribe": {"channel": f"live:g{n}"}}
        writer.write(frame(0x1, json.dumps(sub).encode()))
        subscribed = await read_text_frame(reader)
        return [connected, subscribed]
    finally:
        writer.close()


async def test_a_burst_beyond_the_turns_share_waits_and_every_client_opens(
    start_server: Any, waited: list[int]
) -> None:
    server: RunningServer = await start_server(suite_settings(handshakes_per_turn=2))
    results = await asyncio.wait_for(
        asyncio.gather(*(_client(server, n) for n in range(CLIENTS))), WAIT
    )
    for connected, subscribed in results:
        assert "connect" in connected and subscribed.get("id") == 2 and "subscribe" in subscribed
    assert waited, "no handshake waited: the burst did not exceed the turn's share"


async def test_zero_turns_the_gate_off(start_server: Any, waited: list[int]) -> None:
    server: RunningServer = await start_server(suite_settings(handshakes_per_turn=0))
    await asyncio.wait_for(asyncio.gather(*(_client(server, n) for n in range(20))), WAIT)
    assert not waited
