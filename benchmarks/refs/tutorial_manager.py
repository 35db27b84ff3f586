"""Reference server: the connection manager of the FastAPI WebSocket tutorial.

The shape most FastAPI chat and notification code starts from: a list of accepted sockets,
and a ``broadcast`` that awaits ``send_text`` on each of them in turn. Subscribers connect to
``/ws`` and are in the list from then on; the publisher connects to ``/publish``, and each text
message it sends is broadcast to everyone, then acknowledged with ``ok`` (so the benchmark can
keep a bounded number of publications in flight).

Run under uvicorn with its default settings:
``uvicorn tutorial_manager:app --app-dir benchmarks/refs --port 8000``.
"""

from __future__ import annotations

from fastapi import FastAPI, WebSocket, WebSocketDisconnect


class ConnectionManager:
    """Accepted subscriber sockets, in the order they came."""

    def __init__(self) -> None:
        self.active_connections: list[WebSocket] = []

    async def connect(self, websocket: WebSocket) -> None:
        await websocket.accept()
        self.active_connections.append(websocket)

    def disconnect(self, websocket: WebSocket) -> None:
        self.active_connections.remove(websocket)

    async def broadcast(self, message: str) -> None:
        # One socket after the other: a slow one holds up everyone behind it, as in the tutorial.
        for connection in self.active_connections:
            await connection.send_text(message)


manager = ConnectionManager()
app = FastAPI()


@app.websocket("/ws")
async def subscriber(websocket: WebSocket) -> None:
    await manager.connect(websocket)
    try:
        while True:
            await websocket.receive_text()
    except WebSocketDisconnect:
        manager.disconnect(websocket)


@app.websocket("/publish")
async def publisher(websocket: WebSocket) -> None:
    await websocket.accept()
    try:
        while True:
            message = await websocket.receive_text()
            await manager.broadcast(message)
            await websocket.send_text("ok")
    except WebSocketDisconnect:
        pass
