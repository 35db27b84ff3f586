"""Reference server of the chat-shaped load: python-socketio rooms under uvicorn (ASGI).

python-socketio has no history, no recovery and no presence: what it does here is the rest of
what the chat load asks of hubbub. Events a client sends (each acknowledged where noted):

- ``subscribe`` ``"user:<name>"``: who this connection is, acknowledged; notifications to
  that user go to this connection's own room (its sid);
- ``subscribe`` ``"<room>"``: enter the room, ``join`` ``{"user": name}`` emitted to it,
  acknowledged (also how a member comes back);
- ``leave`` ``"<room>"``: leave the room, ``leave`` ``{"user": name}`` emitted to it,
  acknowledged;
- ``msg`` and ``typing`` ``{"room": ..., "data": ...}``: ``data`` emitted under the same
  event to everyone in the room, the sender included (as the other servers do);
- ``notify`` ``{"user": ..., "data": ...}``: ``data`` emitted as ``notify`` to that user's sid.

A disconnecting member's rooms get its ``leave``. Engine.IO heartbeats are on (server pings
every 25 s).

Run: ``uvicorn socketio_chat:app --app-dir benchmarks/refs --port 8000``.
"""

from __future__ import annotations

from typing import Any

import socketio

sio = socketio.AsyncServer(async_mode="asgi")
app = socketio.ASGIApp(sio)
USER_PREFIX = "user:"
names: dict[str, str] = {}  # sid -> user
sids: dict[str, str] = {}  # user -> sid


@sio.event
async def subscribe(sid: str, channel: str) -> bool:
    if channel.startswith(USER_PREFIX):
        user = channel[len(USER_PREFIX) :]
        names[sid] = user
        sids[user] = sid
        return True
    await sio.enter_room(sid, channel)
    await sio.emit("join", {"user": names.get(sid, "")}, room=channel)
    return True


@sio.event
async def leave(sid: str, channel: str) -> bool:
    await sio.leave_room(sid, channel)
    await sio.emit("leave", {"user": names.get(sid, "")}, room=channel)
    return True


@sio.event
async def msg(sid: str, message: dict[str, Any]) -> None:
    await sio.emit("msg", message["data"], room=message["room"])


@sio.event
async def typing(sid: str, message: dict[str, Any]) -> None:
    await sio.emit("typing", message["data"], room=message["room"])


@sio.event
async def notify(sid: str, message: dict[str, Any]) -> None:
    target = sids.get(message["user"])
    if target is not None:
        await sio.emit("notify", message["data"], to=target)


@sio.event
async def disconnect(sid: str, *reason: Any) -> None:
    user = names.pop(sid, "")
    if sids.get(user) == sid:
        del sids[user]
    for room in sio.rooms(sid):
        if room != sid:
            await sio.emit("leave", {"user": user}, room=room, skip_sid=sid)
