"""Reference server: python-socketio rooms under uvicorn (ASGI), default settings.

A client joins a room with the ``subscribe`` event (acknowledged once it is in the room); a
``publish`` event ``{"channel": ..., "data": ...}`` is emitted as event ``pub`` to everyone in
that room, then acknowledged. Engine.IO heartbeats are on (server pings every 25 s).

Run: ``uvicorn socketio_server:app --app-dir benchmarks/refs --port 8000``.
"""

from __future__ import annotations

from typing import Any

import socketio

sio = socketio.AsyncServer(async_mode="asgi")
app = socketio.ASGIApp(sio)


@sio.event
async def subscribe(sid: str, channel: str) -> bool:
    await sio.enter_room(sid, channel)
    return True


@sio.event
async def publish(sid: str, message: dict[str, Any]) -> bool:
    await sio.emit("pub", message["data"], room=message["channel"])
    return True
