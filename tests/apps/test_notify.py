"""The notification application over real connections: inboxes, live pushes, read state."""

from __future__ import annotations

import asyncio
from typing import Any

import httpx
import pytest

from hubbub.client import Subscription
from hubbub.testing import Hub, TestClient
from tests.conftest import API_KEY

HEADERS = {"X-API-Key": API_KEY}


async def notify(hub: Hub, body: dict[str, object]) -> httpx.Response:
    async with httpx.AsyncClient(base_url=hub.http, timeout=5) as http:
        return await http.post("/api/notify", json=body, headers=HEADERS)


def personal(client: TestClient, user: str) -> Subscription:
    sub = client.subscription(f"#{user}")
    assert sub is not None, "the server subscribes every connection to its personal channel"
    return sub


async def known(hub: Hub, *users: str) -> None:
    """Users become known by connecting once."""
    for user in users:
        async with hub.client(user):
            pass
    assert hub.server is not None and hub.server.store is not None
    for _ in range(100):
        if await hub.server.store.known_users(list(users)) == set(users):
            return
        await asyncio.sleep(0.02)
    raise AssertionError(f"users {users} were not recorded")


async def test_a_notification_reaches_every_tab_of_the_user_and_the_inbox(app_hub: Hub) -> None:
    async with app_hub.client("alice") as tab1, app_hub.client("alice") as tab2:
        await known(app_hub, "alice")
        response = await notify(
            app_hub,
            {
                "user": "alice",
                "title": "Build",
                "body": "main is green",
                "link": "/builds/7",
                "data": {"build": 7},
            },
        )
        assert response.status_code == 200, response.text
        result = response.json()["result"]
        assert result["count"] == 1 and result["notifications"][0]["user"] == "alice"
        for tab in (tab1, tab2):
            pub = await tab.next(personal(tab, "alice"))
            assert pub.data["type"] == "notification" and pub.data["unread"] == 1
            note = pub.data["notification"]
            assert (note["title"], note["body"], note["link"]) == (
                "Build",
                "main is green",
                "/builds/7",
            )
            assert note["data"] == {"build": 7} and note["read"] is False
        listing = await tab1.rpc("notifications.list")
        assert listing["unread"] == 1 and listing["notifications"][0]["id"] == note["id"]


async def test_an_offline_user_finds_it_on_next_connect(app_hub: Hub) -> None:
    await known(app_hub, "bob")
    assert app_hub.server is not None
    await app_hub.server.notify(["bob"], title="While you were out", body="ping")
    await app_hub.server.notify(["bob"], body="second")
    async with app_hub.client("bob") as bob:
        listing = await bob.rpc("notifications.list")
        assert listing["unread"] == 2
        assert [n["body"] for n in listing["notifications"]] == ["second", "ping"]
        assert (await bob.rpc("notifications.unread"))["unread"] == 2


async def test_mark_read_on_one_tab_updates_the_others(app_hub: Hub) -> None:
    async with app_hub.client("carol") as tab1, app_hub.client("carol") as tab2:
        await known(app_hub, "carol")
        assert app_hub.server is not None
        notes = [await app_hub.server.notify(["carol"], body=f"n{i}") for i in range(3)]
        ids = [n[0].id for n in notes]
        sub2 = personal(tab2, "carol")
        for _ in ids:
            await tab2.next(sub2)
        reply = await tab1.rpc("notifications.read", {"ids": [ids[0], 987654]})
        assert reply == {"read": [ids[0]], "unread": 2}
        pub = await tab2.next(sub2)
        assert pub.data == {"type": "read", "ids": [ids[0]], "unread": 2}
        assert (await tab1.rpc("notifications.read", {"ids": [ids[0]]}))["read"] == []
        await tab2.nothing(sub2)  # nothing changed: no push
        reply = await tab2.rpc("notifications.read", {"all": True})
        assert reply == {"read": sorted(ids[1:]), "unread": 0}
        listing = await tab1.rpc("notifications.list", {"unread_only": True})
        assert listing == {"notifications": [], "unread": 0}


async def test_everyone_means_every_known_user(app_hub: Hub) -> None:
    await known(app_hub, "u1", "u2", "u3")
    response = await notify(app_hub, {"everyone": True, "body": "maintenance at noon"})
    assert sorted(n["user"] for n in response.json()["result"]["notifications"]) == [
        "u1", "u2", "u3",
    ]  # fmt: skip


async def test_bad_notifications_are_refused_and_nothing_is_stored(app_hub: Hub) -> None:
    await known(app_hub, "dave")
    bad = [
        ({"user": "nobody", "body": "x"}, 404, "unknown users 'nobody'"),
        ({"users": ["dave", "ghost1", "ghost2"], "body": "x"}, 404, "'ghost1', 'ghost2'"),
        ({"user": "dave", "body": ""}, 107, "body is empty"),
        ({"user": "dave", "body": "x" * 2001}, 107, "longer than 2000"),
        ({"user": "dave", "title": "t" * 201, "body": "x"}, 107, "title is longer"),
        ({"user": "dave", "body": "x", "link": "javascript:alert(1)"}, 107, "link must be"),
        ({"user": "dave", "body": "x", "link": "//evil.example/"}, 107, "link must be"),
        ({"user": "dave", "body": "x", "data": {"blob": "y" * 5000}}, 107, "data is larger"),
        ({"user": "dave", "users": ["dave"], "body": "x"}, 107, "exactly one of"),
        ({"body": "x"}, 107, "exactly one of"),
        ({"users": [], "body": "x"}, 107, "no recipients"),
        ({"user": "dave"}, 107, "missing required field `body`"),
    ]
    for body, code, words in bad:
        response = await notify(app_hub, body)
        assert response.status_code == 200
        err = response.json()["error"]
        assert err["code"] == code and words in err["message"], (body, err)
    assert app_hub.server is not None and app_hub.server.store is not None
    assert await app_hub.server.store.unread_count("dave") == 0


async def test_markup_in_a_notification_is_kept_as_text(app_hub: Hub) -> None:
    await known(app_hub, "erin")
    body = "<img src=x onerror=alert(1)> '; DROP TABLE notifications; --"
    assert (await notify(app_hub, {"user": "erin", "body": body})).status_code == 200
    async with app_hub.client("erin") as erin:
        listing = await erin.rpc("notifications.list")
        assert listing["notifications"][0]["body"] == body


async def test_http_inbox_routes_use_the_users_token(app_hub: Hub) -> None:
    await known(app_hub, "frank", "grace")
    assert app_hub.server is not None
    for n in range(5):
        await app_hub.server.notify(["frank"], body=f"n{n}")
    await app_hub.server.notify(["grace"], body="not for frank")
    auth = {"Authorization": f"Bearer {app_hub.token('frank')}"}
    async with httpx.AsyncClient(base_url=app_hub.http, timeout=5) as http:
        assert (await http.get("/notifications")).status_code == 401
        page = (await http.get("/notifications?limit=2", headers=auth)).json()
        assert [n["body"] for n in page["notifications"]] == ["n4", "n3"]
        assert page["unread"] == 5
        older = await http.get(
            f"/notifications?limit=10&before={page['notifications'][-1]['id']}", headers=auth
        )
        assert [n["body"] for n in older.json()["notifications"]] == ["n2", "n1", "n0"]
        assert (await http.get("/notifications/unread", headers=auth)).json() == {"unread": 5}
        grace_id = (await app_hub.server.store.notifications("grace", limit=1))[0].id  # type: ignore[union-attr]
        marked = await http.post("/notifications/read", json={"ids": [grace_id]}, headers=auth)
        assert marked.json() == {"read": [], "unread": 5}  # not frank's: ignored
        marked = await http.post("/notifications/read", json={"all": True}, headers=auth)
        assert marked.json()["unread"] == 0 and len(marked.json()["read"]) == 5
        bad = await http.post("/notifications/read", content=b"\xff\xfe", headers=auth)
        assert bad.status_code == 400
        both = await http.post("/notifications/read", json={"ids": [1], "all": True}, headers=auth)
        assert both.status_code == 400 and "either ids or all" in both.text
    assert await app_hub.server.store.unread_count("grace") == 1  # type: ignore[union-attr]


async def test_anonymous_connections_have_no_inbox(app_hub: Hub) -> None:
    async with app_hub.client("") as anon:
        from hubbub.client import ReplyError

        with pytest.raises(ReplyError) as err:
            await anon.rpc("notifications.list")
        assert err.value.code == 103


async def test_a_user_who_just_connected_can_be_notified_at_once(app_hub: Hub) -> None:
    # The connect records the user off its own path; notify waits for what was noted.
    async with app_hub.client("newcomer"):
        response = await notify(app_hub, {"user": "newcomer", "body": "welcome"})
        assert response.status_code == 200, response.text
        assert [n["user"] for n in response.json()["result"]["notifications"]] == ["newcomer"]


async def test_a_burst_of_connects_is_recorded_in_few_writes(app_hub: Hub) -> None:
    assert app_hub.server is not None and app_hub.server.store is not None
    store = app_hub.server.store
    writes: list[int] = []
    touch_users = store.touch_users

    async def counted(seen: Any) -> None:
        writes.append(len(seen))
        await touch_users(seen)

    store.touch_users = counted  # type: ignore[method-assign]
    users = [f"burst{n}" for n in range(40)]
    done = asyncio.Event()
    connected = 0

    async def hold(user: str) -> None:
        nonlocal connected
        async with app_hub.client(user):
            connected += 1
            await done.wait()

    holders = [asyncio.create_task(hold(user)) for user in users]  # connecting all at once
    for _ in range(500):
        if connected == len(users):
            break
        await asyncio.sleep(0.01)
    assert app_hub.server.users is not None
    await app_hub.server.users.settled()
    done.set()
    await asyncio.gather(*holders)
    assert await store.known_users(users) == set(users)
    assert sum(writes) == 40
    assert len(writes) < 40, "one write per connect: nothing was batched"
