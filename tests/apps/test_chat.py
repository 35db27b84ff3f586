"""The chat application over real connections: rooms, sending, history, edits, typing."""

from __future__ import annotations

import asyncio
from pathlib import Path

import httpx
import pytest
from centrifuge import Client as CentrifugeClient
from centrifuge import ReplyError as CentrifugeReplyError

from hubbub.client import ReplyError
from hubbub.testing import Hub, run_hub
from tests.apps.conftest import app_settings
from tests.conftest import API_KEY
from tests.integration.test_centrifuge_python import ClientEvents, next_item, subscribe
from tests.integration.test_metrics import scrape

HEADERS = {"X-API-Key": API_KEY}


async def api(hub: Hub, method: str, body: dict[str, object]) -> dict[str, object]:
    async with httpx.AsyncClient(base_url=hub.http, timeout=5) as http:
        response = await http.post(f"/api/{method}", json=body, headers=HEADERS)
    assert response.status_code == 200, response.text
    reply: dict[str, object] = response.json()
    return reply


async def test_a_message_is_stored_then_published_with_its_id_and_offset(app_hub: Hub) -> None:
    async with app_hub.client("alice") as alice, app_hub.client("bob") as bob:
        sub_a = await alice.subscribe("chat:lobby")
        sub_b = await bob.subscribe("chat:lobby")
        reply = await alice.rpc("chat.send", {"room": "lobby", "text": "  hello bob  "})
        sent = reply["message"]
        assert sent["text"] == "hello bob"  # stripped
        assert sent["user"] == "alice" and sent["room"] == "lobby"
        assert sent["id"] >= 1 and sent["offset"] >= 1
        for client, sub in ((alice, sub_a), (bob, sub_b)):
            pub = await client.next(sub)
            assert pub.data["type"] == "message"
            assert pub.data["message"]["id"] == sent["id"]
            assert pub.offset == sent["offset"]
        assert app_hub.server is not None and app_hub.server.store is not None
        stored = await app_hub.server.store.message(sent["id"])
        assert stored is not None and stored.text == "hello bob"
        assert (stored.offset, stored.epoch) == (sent["offset"], sent["epoch"])


async def test_sending_needs_membership_and_valid_text(app_hub: Hub) -> None:
    async with app_hub.client("alice") as alice:
        with pytest.raises(ReplyError) as denied:
            await alice.rpc("chat.send", {"room": "lobby", "text": "not a member"})
        assert denied.value.code == 103
        await alice.subscribe("chat:lobby")
        bad = [
            ({"room": "lobby", "text": ""}, "message is empty"),
            ({"room": "lobby", "text": " \n\t "}, "message is empty"),
            ({"room": "lobby", "text": "x" * 4001}, "longer than 4000"),
            ({"room": "lobby", "text": "nul\x00byte"}, "control characters"),
            ({"room": "lobby", "text": "bell\x07"}, "control characters"),
            ({"room": "lobby"}, "missing required field `text`"),
            ({"room": "lobby", "text": 5}, "Expected `str`"),
            ({"room": "lobby", "text": "hi", "extra": 1}, "unknown field"),
            ("not an object", "Expected `object`"),
        ]
        for args, words in bad:
            with pytest.raises(ReplyError) as err:
                await alice.rpc("chat.send", args)
            assert err.value.code == 107, args
            assert words in err.value.message, (args, err.value.message)
        ok = await alice.rpc("chat.send", {"room": "lobby", "text": "x" * 4000})
        assert len(ok["message"]["text"]) == 4000
        assert app_hub.server is not None and app_hub.server.store is not None
        assert len(await app_hub.server.store.messages("lobby", limit=100)) == 1


async def test_markup_and_sql_are_stored_and_sent_as_text(app_hub: Hub) -> None:
    texts = [
        "<script>alert('x')</script>",
        "'); DROP TABLE messages; --",
        "Robert'); DELETE FROM rooms WHERE ('1'='1",
        "emoji 🎉 and ünïcödé",
    ]
    async with app_hub.client("mallory") as mallory:
        sub = await mallory.subscribe("chat:lobby")
        for text in texts:
            await mallory.rpc("chat.send", {"room": "lobby", "text": text})
            assert (await mallory.next(sub)).data["message"]["text"] == text
        history = await mallory.rpc("chat.history", {"room": "lobby"})
        assert [m["text"] for m in history["messages"]] == texts


async def test_sending_too_fast_is_refused_with_111(app_hub: Hub) -> None:
    async with app_hub.client("alice") as alice:
        await alice.subscribe("chat:lobby")
        codes = []
        for n in range(30):
            try:
                await alice.rpc("chat.send", {"room": "lobby", "text": f"m{n}"})
                codes.append(0)
            except ReplyError as exc:
                codes.append(exc.code)
        assert codes[:20] == [0] * 20  # the burst
        assert 111 in codes[20:]


async def test_rooms_are_created_on_first_use_and_listed_with_counts(app_hub: Hub) -> None:
    async with app_hub.client("alice") as alice, app_hub.client("bob") as bob:
        await alice.subscribe("chat:garden")
        await bob.subscribe("chat:garden")
        await alice.rpc("chat.send", {"room": "garden", "text": "first"})
        rooms = {r["name"]: r for r in (await alice.rpc("chat.rooms"))["rooms"]}
        assert set(rooms) == {"lobby", "garden"}
        assert rooms["garden"]["messages"] == 1 and rooms["garden"]["online"] == 2
        assert rooms["lobby"]["messages"] == 0 and rooms["lobby"]["online"] == 0
        with pytest.raises(ReplyError) as bad_name:
            await alice.subscribe("chat:no spaces")
        assert bad_name.value.code == 107
        with pytest.raises(ReplyError) as unknown:
            await alice.rpc("chat.history", {"room": "nowhere"})
        assert unknown.value.code == 102


async def test_without_auto_create_unknown_rooms_are_refused() -> None:
    settings = app_settings(chat={"auto_create_rooms": False, "default_rooms": ["lobby"]})
    async with run_hub(settings) as hub, hub.client("alice") as alice:
        with pytest.raises(ReplyError) as err:
            await alice.subscribe("chat:secret-room")
        assert err.value.code == 102
        await alice.subscribe("chat:lobby")
        created = await api(hub, "chat_create_room", {"room": "secret-room"})
        assert created["result"]["created"] is True  # type: ignore[index]
        await alice.subscribe("chat:secret-room")


@pytest.mark.slow
async def test_history_pages_backwards_without_gaps(app_hub: Hub) -> None:
    for n in range(120):
        # Six senders: their bursts (20 each) cover the 120 messages however slow the disk.
        sent = await api(
            app_hub, "chat_send", {"room": "lobby", "user": f"u{n % 6}", "text": f"m{n}"}
        )
        assert "result" in sent, sent
    async with app_hub.client("reader") as reader:
        first = (await reader.rpc("chat.history", {"room": "lobby"}))["messages"]
        assert [m["text"] for m in first] == [f"m{n}" for n in range(70, 120)]
        seen = [m["text"] for m in first]
        before = first[0]["id"]
        while True:
            page = (await reader.rpc("chat.history", {"room": "lobby", "before": before}))[
                "messages"
            ]
            if not page:
                break
            seen = [m["text"] for m in page] + seen
            before = page[0]["id"]
        assert seen == [f"m{n}" for n in range(120)]
        with pytest.raises(ReplyError) as err:
            await reader.rpc("chat.history", {"room": "lobby", "limit": 5000})
        assert err.value.code == 107


async def test_edit_and_delete_by_the_author_reach_the_room(app_hub: Hub) -> None:
    async with app_hub.client("alice") as alice, app_hub.client("bob") as bob:
        sub_b = await bob.subscribe("chat:lobby")
        await alice.subscribe("chat:lobby")
        sent = (await alice.rpc("chat.send", {"room": "lobby", "text": "typo"}))["message"]
        await bob.next(sub_b)
        with pytest.raises(ReplyError) as not_yours:
            await bob.rpc("chat.edit", {"id": sent["id"], "text": "hijacked"})
        assert not_yours.value.code == 103
        with pytest.raises(ReplyError) as missing:
            await alice.rpc("chat.edit", {"id": 999999, "text": "x"})
        assert missing.value.code == 404
        edited = (await alice.rpc("chat.edit", {"id": sent["id"], "text": "fixed"}))["message"]
        assert edited["text"] == "fixed" and "edited" in edited
        pub = await bob.next(sub_b)
        assert pub.data["type"] == "edit" and pub.data["message"]["text"] == "fixed"
        with pytest.raises(ReplyError) as bob_deletes:
            await bob.rpc("chat.delete", {"id": sent["id"]})
        assert bob_deletes.value.code == 103
        await alice.rpc("chat.delete", {"id": sent["id"]})
        pub = await bob.next(sub_b)
        assert pub.data["type"] == "delete"
        assert pub.data["message"] == {**pub.data["message"], "deleted": True, "text": ""}
        history = (await bob.rpc("chat.history", {"room": "lobby"}))["messages"]
        assert history[0]["deleted"] is True and history[0]["text"] == ""
        with pytest.raises(ReplyError):
            await alice.rpc("chat.edit", {"id": sent["id"], "text": "back from the dead"})


async def test_typing_is_ephemeral_and_throttled(app_hub: Hub) -> None:
    async with app_hub.client("alice") as alice, app_hub.client("bob") as bob:
        sub_b = await bob.subscribe("chat:lobby")
        await alice.subscribe("chat:lobby")
        assert (await alice.rpc("chat.typing", {"room": "lobby"}))["sent"] is True
        assert (await alice.rpc("chat.typing", {"room": "lobby"}))["sent"] is False
        pub = await bob.next(sub_b)
        assert pub.data == {"type": "typing", "user": "alice"} and pub.offset == 0
        await bob.nothing(sub_b)
        # Not in the archive, not in the stream.
        assert (await bob.rpc("chat.history", {"room": "lobby"}))["messages"] == []
        history = await app_hub.node.history("chat:lobby", limit=-1)
        assert history.publications == []


async def test_presence_join_and_leave_in_a_room(app_hub: Hub) -> None:
    async with app_hub.client("alice") as alice:
        sub = await alice.subscribe("chat:lobby")
        events = []
        sub.on_join_leave(events.append)
        async with app_hub.client("bob") as bob:
            await bob.subscribe("chat:lobby")
            online = await alice.presence("chat:lobby")
            assert sorted(info["user"] for info in online.values()) == ["alice", "bob"]
            for _ in range(100):
                if events:
                    break
                await asyncio.sleep(0.02)
        for _ in range(100):
            if len(events) == 2:
                break
            await asyncio.sleep(0.02)
        assert [(e.info.user, e.joined) for e in events] == [("bob", True), ("bob", False)]


async def test_http_routes_need_the_users_token(app_hub: Hub) -> None:
    await api(app_hub, "chat_send", {"room": "lobby", "user": "alice", "text": "<b>hi</b>"})
    async with httpx.AsyncClient(base_url=app_hub.http, timeout=5) as http:
        assert (await http.get("/chat/rooms")).status_code == 401
        wrong = {"Authorization": "Bearer not-a-jwt"}
        assert (await http.get("/chat/rooms", headers=wrong)).status_code == 401
        auth = {"Authorization": f"Bearer {app_hub.token('bob')}"}
        rooms = (await http.get("/chat/rooms", headers=auth)).json()["rooms"]
        assert [r["name"] for r in rooms] == ["lobby"]
        page = await http.get("/chat/rooms/lobby/messages", headers=auth)
        assert page.json()["messages"][0]["text"] == "<b>hi</b>"
        assert page.headers["content-type"] == "application/json"
        missing = await http.get("/chat/rooms/nowhere/messages", headers=auth)
        assert missing.status_code == 404 and missing.json()["error"]["code"] == 102
        bad = await http.get("/chat/rooms/lobby/messages?before=abc", headers=auth)
        assert bad.status_code == 400 and "before must be an integer" in bad.text
        online = await http.get("/chat/rooms/lobby/online", headers=auth)
        assert online.json() == {"users": []}
        no_key = await http.post("/api/chat_send", json={"room": "lobby", "user": "x", "text": "y"})
        assert no_key.status_code == 401


async def test_history_survives_a_restart(tmp_path: Path) -> None:
    settings = app_settings(store={"url": f"sqlite:///{tmp_path / 'chat.db'}"})
    async with run_hub(settings) as hub, hub.client("alice") as alice:
        await alice.subscribe("chat:lobby")
        for n in range(5):
            await alice.rpc("chat.send", {"room": "lobby", "text": f"before restart {n}"})
    async with run_hub(settings) as hub, hub.client("bob") as bob:
        history = (await bob.rpc("chat.history", {"room": "lobby"}))["messages"]
        assert [m["text"] for m in history] == [f"before restart {n}" for n in range(5)]


async def test_room_creation_over_the_rate_is_refused_with_111() -> None:
    # A rate so low that no token comes back during the test: the burst is all there is.
    settings = app_settings(chat={"room_create_rate": 0.0001, "room_create_burst": 3})
    async with run_hub(settings) as hub, hub.client("mallory") as mallory:
        for n in range(3):
            await mallory.subscribe(f"chat:spam-{n}")
        with pytest.raises(ReplyError) as err:
            await mallory.subscribe("chat:spam-3")
        assert err.value.code == 111
        assert "creating rooms too fast" in err.value.message
        await mallory.subscribe("chat:lobby")  # joining an existing room is not creating one
        async with hub.client("bob") as bob:
            await bob.subscribe("chat:gardening")  # the rate is per user
        assert hub.server is not None and hub.server.store is not None
        assert await hub.server.store.room_count() == 5  # lobby, spam-0..2, gardening
        samples = await scrape(hub.http)
        assert samples[("hubbub_chat_refusals_total", (("reason", "room_rate"),))] == 1


async def test_room_creation_over_max_rooms_is_refused_with_106() -> None:
    settings = app_settings(chat={"max_rooms": 3})
    async with run_hub(settings) as hub, hub.client("alice") as alice:
        await alice.subscribe("chat:one")
        await alice.subscribe("chat:two")  # lobby, one, two: full
        with pytest.raises(ReplyError) as err:
            await alice.subscribe("chat:three")
        assert err.value.code == 106
        assert "maximum of 3 rooms" in err.value.message
        async with httpx.AsyncClient(base_url=hub.http, timeout=5) as http:
            api_reply = await http.post(
                "/api/chat_create_room", json={"room": "four"}, headers=HEADERS
            )
        assert api_reply.json()["error"]["code"] == 106
        async with hub.client("bob") as bob:
            await bob.subscribe("chat:one")  # existing rooms still take members
            await bob.rpc("chat.send", {"room": "one", "text": "still works"})
            with pytest.raises(ReplyError) as send_err:
                await bob.rpc("chat.send", {"room": "five", "text": "x"})
            assert send_err.value.code == 103  # not a member: no room made by sending
        page = await alice.rpc("chat.rooms")
        assert page["total"] == 3 and [r["name"] for r in page["rooms"]] == ["lobby", "one", "two"]
        samples = await scrape(hub.http)
        assert samples[("hubbub_chat_refusals_total", (("reason", "max_rooms"),))] == 2


async def test_the_room_list_is_paged_and_lists_every_room_once() -> None:
    settings = app_settings(chat={"rooms_page_size": 10})
    async with run_hub(settings) as hub, hub.client("reader") as reader:
        assert hub.server is not None and hub.server.store is not None
        names = ["lobby"] + [f"room-{n:02d}" for n in range(40)] + ["A", "Z", "_x", "b.c"]
        for name in names[1:]:
            await hub.server.store.create_room(name, "seed", 1.0)
        first = await reader.rpc("chat.rooms")  # no arguments, as older clients call it
        assert len(first["rooms"]) == 10 and first["total"] == len(names)
        seen: list[str] = []
        after = ""
        while True:
            page = await reader.rpc("chat.rooms", {"after": after, "limit": 7})
            assert len(page["rooms"]) <= 7 and page["total"] == len(names)
            seen += [r["name"] for r in page["rooms"]]
            if page["next"] is None:
                break
            after = page["next"]
        assert seen == sorted(names)  # code point order, each room exactly once
        assert [r["name"] for r in first["rooms"]] == seen[:10]
        for bad in ({"limit": 0}, {"limit": 501}, {"after": "no spaces"}, {"page": 2}):
            with pytest.raises(ReplyError) as err:
                await reader.rpc("chat.rooms", bad)
            assert err.value.code == 107, bad
        async with httpx.AsyncClient(base_url=hub.http, timeout=5) as http:
            auth = {"Authorization": f"Bearer {hub.token('reader')}"}
            http_page = (
                await http.get("/chat/rooms", params={"after": seen[4], "limit": 3}, headers=auth)
            ).json()
            assert [r["name"] for r in http_page["rooms"]] == seen[5:8]
            assert http_page["next"] == seen[7]
            api_page = await api(hub, "chat_rooms", {"after": seen[-2]})
            assert api_page["result"] == {  # type: ignore[comparison-overlap]
                "rooms": [api_page["result"]["rooms"][0]],  # type: ignore[index]
                "next": None,
                "total": len(names),
            }


def test_the_default_room_page_fits_the_largest() -> None:
    with pytest.raises(ValueError, match="rooms_page_size must not exceed max_rooms_page"):
        app_settings(chat={"rooms_page_size": 200, "max_rooms_page": 100})


@pytest.mark.parametrize("user", ["alice", ""], ids=["signed-in", "anonymous"])
async def test_clients_cannot_publish_into_chat_rooms(app_hub: Hub, user: str) -> None:
    # app_hub runs in development mode, which opens every other channel to client publishing.
    async with app_hub.client(user) as client, app_hub.client("bob") as bob:
        sub_b = await bob.subscribe("chat:lobby")
        sub = await client.subscribe("chat:lobby")
        with pytest.raises(ReplyError) as err:
            await sub.publish({"type": "message", "message": {"user": "admin", "text": "fake"}})
        assert err.value.code == 103
        await bob.nothing(sub_b)
        # The chat's own path still delivers (anonymous users may not send, by design).
        await bob.rpc("chat.send", {"room": "lobby", "text": "real"})
        assert (await client.next(sub)).data["message"]["text"] == "real"
        playground = await client.subscribe("news")
        await playground.publish({"n": 1})  # development mode's playground stays open


@pytest.mark.parametrize("user", ["alice", ""], ids=["signed-in", "anonymous"])
async def test_centrifuge_clients_cannot_publish_into_chat_rooms(app_hub: Hub, user: str) -> None:
    events = ClientEvents()
    token = app_hub.token(user) if user else ""  # development mode admits no token at all
    client = CentrifugeClient(app_hub.url, events=events, proxy=None, token=token)
    await client.connect()
    try:
        await next_item(events.connected, "connected")
        sub, _ = await subscribe(client, "chat:lobby")
        with pytest.raises(CentrifugeReplyError) as err:
            await sub.publish({"type": "message", "message": {"text": "forged"}})
        assert err.value.code == 103
    finally:
        await client.disconnect()
    assert (await app_hub.node.history("chat:lobby", limit=-1)).publications == []
