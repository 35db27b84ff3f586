"""The tutorial's own client script, unchanged, against ``/ws/{client_id}``."""

from __future__ import annotations

import asyncio

import pytest
import websockets

from tests.conftest import UNIT, RunningServer

WAIT = 5 * UNIT

# What a client sees over the wire: on both WebSocket transports (tests/conftest.py::transport).
pytestmark = pytest.mark.usefixtures("transport")


async def test_tutorial_client_script(server: RunningServer) -> None:
    # The tutorial's client, with the port of this test's server.
    async with websockets.connect(f"ws://127.0.0.1:{server.port}/ws/alice") as ws:
        await ws.send("Hello, server!")
        response = await asyncio.wait_for(ws.recv(), WAIT)
        assert response == "alice joined the chat"
        assert await asyncio.wait_for(ws.recv(), WAIT) == "You said: Hello, server!"
        assert await asyncio.wait_for(ws.recv(), WAIT) == "alice: Hello, server!"


async def test_tutorial_room_broadcasts_between_clients(server: RunningServer) -> None:
    base = f"ws://127.0.0.1:{server.port}/ws"
    async with websockets.connect(f"{base}/alice") as alice:
        assert await asyncio.wait_for(alice.recv(), WAIT) == "alice joined the chat"
        async with websockets.connect(f"{base}/bob") as bob:
            assert await asyncio.wait_for(bob.recv(), WAIT) == "bob joined the chat"
            assert await asyncio.wait_for(alice.recv(), WAIT) == "bob joined the chat"
            await bob.send("hi alice")
            assert await asyncio.wait_for(bob.recv(), WAIT) == "You said: hi alice"
            assert await asyncio.wait_for(bob.recv(), WAIT) == "bob: hi alice"
            assert await asyncio.wait_for(alice.recv(), WAIT) == "bob: hi alice"
        assert await asyncio.wait_for(alice.recv(), WAIT) == "bob left the chat"
    # Protocol clients never see the room: its channel name cannot be subscribed.
    assert all(name.isprintable() for name in server.node.channels())
