"""The FastAPI example works as its docstring says: a client subscribes over the mounted
WebSocket endpoint and receives what a FastAPI route publishes."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator

import httpx
import pytest
import uvicorn
from centrifuge import Client, PublicationContext, SubscriptionEventHandler

from hubbub.auth import mint_connection_token
from hubbub.config import DEV_SECRET
from tests.conftest import UNIT


class Collect(SubscriptionEventHandler):
    def __init__(self) -> None:
        self.pubs: asyncio.Queue[PublicationContext] = asyncio.Queue()

    async def on_publication(self, ctx: PublicationContext) -> None:
        await self.pubs.put(ctx)


@pytest.fixture
async def example_port() -> AsyncIterator[int]:
    from examples.fastapi_app import app

    class Server(uvicorn.Server):
        def install_signal_handlers(self) -> None:
            pass

    server = Server(uvicorn.Config(app, host="127.0.0.1", port=0, log_level="warning"))
    task = asyncio.create_task(server.serve())
    while not server.started:
        assert not task.done(), "example app did not start"
        await asyncio.sleep(0.01)
    yield server.servers[0].sockets[0].getsockname()[1]
    server.should_exit = True
    await asyncio.wait_for(task, 10 * UNIT)


@pytest.mark.parametrize("wire_format", ["json", "protobuf"])
async def test_fastapi_example(example_port: int, wire_format: str) -> None:
    url = f"ws://127.0.0.1:{example_port}/connection/websocket"
    client = Client(
        url,
        token=mint_connection_token(DEV_SECRET, "alice"),
        use_protobuf=wire_format == "protobuf",
        proxy=None,
    )
    events = Collect()
    sub = client.new_subscription("chat:lobby", events=events)
    await client.connect()
    await sub.subscribe()
    await sub.ready(timeout=5 * UNIT)
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{example_port}") as http:
        response = await http.post("/messages", json={"room": "lobby", "user": "bob", "text": "hi"})
        assert response.status_code == 200
        offset = response.json()["offset"]
        online = (await http.get("/rooms/lobby/online")).json()
    ctx = await asyncio.wait_for(events.pubs.get(), 5 * UNIT)
    data = json.loads(ctx.pub.data) if wire_format == "protobuf" else ctx.pub.data
    assert data == {"user": "bob", "text": "hi"} and ctx.pub.offset == offset
    assert online == {"clients": 1, "users": 1}
    await client.disconnect()
