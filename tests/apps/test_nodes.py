"""Chat and notifications across two nodes on Redis, sharing one store."""

from __future__ import annotations

import asyncio
import uuid
from pathlib import Path

from hubbub.testing import run_hub
from tests.apps.conftest import app_settings


async def test_rooms_and_inboxes_span_nodes(redis_url: str, tmp_path: Path) -> None:
    settings = app_settings(
        engine="redis",
        redis={"url": redis_url, "prefix": f"apps-{uuid.uuid4().hex[:8]}"},
        store={"url": f"sqlite:///{tmp_path / 'shared.db'}"},
    )
    async with (
        run_hub(settings) as one,
        run_hub(settings) as two,
        one.client("alice") as alice,
        two.client("bob") as bob,
    ):
        sub_a = await alice.subscribe("chat:lobby")
        sub_b = await bob.subscribe("chat:lobby")
        online = await alice.presence("chat:lobby")
        assert sorted(i["user"] for i in online.values()) == ["alice", "bob"]

        sent = await bob.rpc("chat.send", {"room": "lobby", "text": "from node two"})
        pub = await alice.next(sub_a)
        assert pub.data["message"]["id"] == sent["message"]["id"]
        assert (await bob.next(sub_b)).offset == pub.offset

        rooms = {r["name"]: r for r in (await alice.rpc("chat.rooms"))["rooms"]}
        assert rooms["lobby"]["online"] == 2 and rooms["lobby"]["messages"] == 1

        # bob is connected to node two; the notification is sent on node one.
        assert one.server is not None and one.server.store is not None
        for _ in range(100):
            if await one.server.store.known_users(["bob"]):
                break
            await asyncio.sleep(0.02)
        await one.notify(["bob"], title="hi", body="across nodes")
        bob_inbox = bob.subscription("#bob")
        assert bob_inbox is not None
        note = await bob.next(bob_inbox)
        assert note.data["notification"]["body"] == "across nodes"
        # Read on node two: the count is the shared store's.
        assert (await bob.rpc("notifications.read", {"all": True}))["unread"] == 0
