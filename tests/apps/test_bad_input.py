"""Bad input to the applications: clear errors, nothing stored, nobody else disturbed."""

from __future__ import annotations

import asyncio
import json

import httpx
import pytest
import websockets

from hubbub.client import ReplyError
from hubbub.testing import Hub
from tests.conftest import API_KEY

HEADERS = {"X-API-Key": API_KEY, "content-type": "application/json"}


async def raw_session(hub: Hub, user: str) -> websockets.ClientConnection:
    ws = await websockets.connect(hub.url, max_size=None)
    await ws.send(json.dumps({"id": 1, "connect": {"token": hub.token(user)}}))
    assert "connect" in json.loads(await ws.recv())
    await ws.send(json.dumps({"id": 2, "subscribe": {"channel": "chat:lobby"}}))
    frame = await ws.recv()  # the reply, perhaps with our own join push after it
    assert "subscribe" in json.loads(str(frame).split("\n")[0])
    return ws


async def test_bytes_that_are_not_text_never_reach_the_archive(app_hub: Hub) -> None:
    async with httpx.AsyncClient(base_url=app_hub.http, timeout=5) as http:
        body = b'{"room": "lobby", "user": "x", "text": "\xff\xfe"}'
        response = await http.post("/api/chat_send", content=body, headers=HEADERS)
        assert response.status_code == 400 and "not JSON" in response.text
        surrogate = b'{"room": "lobby", "user": "x", "text": "\\ud800"}'
        response = await http.post("/api/chat_send", content=surrogate, headers=HEADERS)
        assert response.status_code == 400  # a lone surrogate is no text either
    # Over the WebSocket: invalid UTF-8 in a text frame closes that connection with 1007.
    ws = await raw_session(app_hub, "mallory")
    rpc = b'{"id": 3, "rpc": {"method": "chat.send", "data": {"room": "lobby", "text": "\xc3"}}}'
    await ws.send(rpc, text=True)
    with pytest.raises(websockets.ConnectionClosed) as closed:
        while True:  # pushes that were on their way (our own join) come first
            await asyncio.wait_for(ws.recv(), 5)
    assert closed.value.rcvd is not None and closed.value.rcvd.code == 1007
    assert app_hub.server is not None and app_hub.server.store is not None
    assert await app_hub.server.store.messages("lobby", limit=10) == []


async def test_an_oversized_message_closes_only_its_connection(app_hub: Hub) -> None:
    async with app_hub.client("alice") as alice:
        room = await alice.subscribe("chat:lobby")
        ws = await raw_session(app_hub, "mallory")
        huge = {"room": "lobby", "text": "x" * 70_000}
        await ws.send(json.dumps({"id": 3, "rpc": {"method": "chat.send", "data": huge}}))
        with pytest.raises(websockets.ConnectionClosed) as closed:
            while True:
                await asyncio.wait_for(ws.recv(), 5)
        assert closed.value.rcvd is not None and closed.value.rcvd.code == 1009
        # Under the frame limit but over the text limit: a reply error, the connection stays.
        with pytest.raises(ReplyError) as err:
            await alice.rpc("chat.send", {"room": "lobby", "text": "y" * 5000})
        assert err.value.code == 107
        await alice.rpc("chat.send", {"room": "lobby", "text": "still here"})
        assert (await alice.next(room)).data["message"]["text"] == "still here"


async def test_unknown_methods_and_rooms_get_their_codes(app_hub: Hub) -> None:
    async with app_hub.client("alice") as alice:
        with pytest.raises(ReplyError) as unknown_method:
            await alice.rpc("chat.frobnicate", {})
        assert unknown_method.value.code == 104
        for room in ["", "a" * 65, "semi;colon", "new\nline", "nul\x00", "*"]:
            with pytest.raises(ReplyError) as bad_room:
                await alice.rpc("chat.history", {"room": room})
            assert bad_room.value.code == 107, room
        with pytest.raises(ReplyError) as missing:
            await alice.rpc("chat.history", {"room": "never-created"})
        assert missing.value.code == 102
