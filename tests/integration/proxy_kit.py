"""A small proxy backend for the tests, served by uvicorn on 127.0.0.1, and a raw JSON
WebSocket client that reads every reply and push (newline-joined frames split).

The backend records each request (path, headers, JSON body) and answers each path with what
the test set in ``answers``: a JSON-encodable body, or a :class:`Behaviour` (slow, garbage,
a status).
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import uvicorn
import websockets
from websockets.asyncio.client import ClientConnection
from websockets.exceptions import ConnectionClosed

from tests.conftest import UNIT

WAIT = 5 * UNIT


@dataclass
class Behaviour:
    """An answer other than a JSON 200: ``sleep`` seconds first, then ``status`` with
    ``body``."""

    status: int = 200
    body: bytes = b""
    sleep: float = 0.0


@dataclass
class Seen:
    path: str
    headers: list[tuple[str, str]]
    body: dict[str, Any]

    def header(self, name: str) -> list[str]:
        return [value for key, value in self.headers if key == name.lower()]


@dataclass
class Backend:
    url: str = ""
    seen: list[Seen] = field(default_factory=list)
    answers: dict[str, Any | Callable[[dict[str, Any]], Any]] = field(default_factory=dict)

    arrived: asyncio.Event = field(default_factory=asyncio.Event)

    def requests(self, path: str) -> list[Seen]:
        return [s for s in self.seen if s.path == path]

    async def wait_for(self, path: str, count: int = 1) -> None:
        """Until ``count`` requests to ``path`` arrived."""
        async with asyncio.timeout(WAIT):
            while len(self.requests(path)) < count:
                self.arrived.clear()
                await self.arrived.wait()

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        body = b""
        more = True
        while more:
            message = await receive()
            body += message.get("body", b"")
            more = message.get("more_body", False)
        path = scope["path"]
        decoded = json.loads(body) if body else {}
        headers = [(k.decode("latin-1"), v.decode("latin-1")) for k, v in scope["headers"]]
        self.seen.append(Seen(path, headers, decoded))
        self.arrived.set()
        answer = self.answers.get(path, {})
        if callable(answer):
            answer = answer(decoded)
        if isinstance(answer, Behaviour):
            if answer.sleep:
                await asyncio.sleep(answer.sleep)
            status, payload = answer.status, answer.body
        else:
            status, payload = 200, json.dumps(answer).encode()
        await send(
            {
                "type": "http.response.start",
                "status": status,
                "headers": [(b"content-type", b"application/json")],
            }
        )
        await send({"type": "http.response.body", "body": payload})


class _Server(uvicorn.Server):
    def install_signal_handlers(self) -> None:  # the test runner owns the signals
        pass


@asynccontextmanager
async def serving_backend() -> AsyncIterator[Backend]:
    backend = Backend()
    server = _Server(uvicorn.Config(backend, host="127.0.0.1", port=0, log_level="warning"))
    task = asyncio.create_task(server.serve())
    for _ in range(int(500 * UNIT)):
        if server.started:
            break
        await asyncio.sleep(0.01)
    assert server.started
    port = server.servers[0].sockets[0].getsockname()[1]
    backend.url = f"http://127.0.0.1:{port}"
    try:
        yield backend
    finally:
        server.should_exit = True
        await asyncio.wait_for(task, timeout=10 * UNIT)


class Conn:
    """A JSON protocol client on a raw WebSocket."""

    def __init__(self, ws: ClientConnection) -> None:
        self.ws = ws
        self.queue: list[dict[str, Any]] = []
        self.next_id = 0

    @classmethod
    @asynccontextmanager
    async def open(cls, url: str, headers: dict[str, str] | None = None) -> AsyncIterator[Conn]:
        ws = await websockets.connect(url, additional_headers=headers, open_timeout=WAIT)
        try:
            yield cls(ws)
        finally:
            await ws.close()

    async def command(self, **request: Any) -> dict[str, Any]:
        """Send one command and return its reply (pushes that came first stay queued)."""
        self.next_id += 1
        cmd_id = self.next_id
        await self.ws.send(json.dumps({"id": cmd_id, **request}))
        return await self.wait(lambda m: m.get("id") == cmd_id)

    async def wait(self, match: Callable[[dict[str, Any]], bool]) -> dict[str, Any]:
        async with asyncio.timeout(WAIT):
            while True:
                for i, message in enumerate(self.queue):
                    if match(message):
                        return self.queue.pop(i)
                frame = await self.ws.recv()
                for line in str(frame).split("\n"):
                    if line:
                        self.queue.append(json.loads(line))

    async def closed(self) -> tuple[int, str]:
        """The close code and reason the server ends the connection with."""
        async with asyncio.timeout(WAIT):
            try:
                while True:
                    await self.ws.recv()
            except ConnectionClosed as exc:
                assert exc.rcvd is not None
                return exc.rcvd.code, exc.rcvd.reason
