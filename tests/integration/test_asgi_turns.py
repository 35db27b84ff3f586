"""The ASGI transport parses about ``TURN_FRAMES`` frames of a connection per loop turn: a read
of hundreds of commands is handled over several turns, the socket paused in between, and
nothing is lost or reordered."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest

from hubbub.transports import asgi_frames
from tests.conftest import RunningServer, suite_settings
from tests.integration.test_abuse import frame
from tests.integration.test_fast_upgrade import connect_frame, read_frame, read_head, upgrade_head

COMMANDS = 600


@pytest.fixture
def turns(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """One entry per time a connection's read was left for the next turn."""
    calls: list[int] = []
    next_turn = asgi_frames.LimitedWebSocketProtocol._next_turn

    def counting(self: asgi_frames.LimitedWebSocketProtocol) -> None:
        calls.append(1)
        next_turn(self)

    monkeypatch.setattr(asgi_frames.LimitedWebSocketProtocol, "_next_turn", counting)
    return calls


async def _replies(reader: asyncio.StreamReader, count: int) -> list[dict[str, Any]]:
    """The next ``count`` protocol messages (a text frame may hold several, one per line)."""
    got: list[dict[str, Any]] = []
    while len(got) < count:
        opcode, payload = await read_frame(reader)
        if opcode == 0x1:
            got.extend(json.loads(line) for line in payload.split(b"\n") if line)
    return got


async def test_a_read_of_hundreds_of_commands_is_handled_over_turns_in_order(
    start_server: Any, turns: list[int]
) -> None:
    settings = suite_settings(
        transport="asgi", limits={"command_rate": 0, "user_command_rate": 0, "frame_rate": 0}
    )
    server: RunningServer = await start_server(settings)
    reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
    try:
        writer.write(upgrade_head())
        assert (await read_head(reader)).startswith(b"HTTP/1.1 101")
        writer.write(connect_frame("burst"))
        assert "connect" in (await _replies(reader, 1))[0]
        commands = [
            frame(0x1, json.dumps({"id": 10 + n, "presence_stats": {"channel": "chat:t"}}).encode())
            for n in range(COMMANDS)
        ]
        writer.write(b"".join(commands))  # one write: the server reads it in large pieces
        got = await _replies(reader, COMMANDS)
        assert [m["id"] for m in got] == [10 + n for n in range(COMMANDS)]
        assert all("presence_stats" in m for m in got)
    finally:
        writer.close()
    assert turns, "the whole read was parsed in one turn"
