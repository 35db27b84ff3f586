"""No web page can forge a POST to the HTTP API: what a browser sends cross-site without a
preflight (text/plain, form, multipart, or from a foreign Origin) is refused with 415 and
publishes nothing, on the key-less API of development mode too; JSON, ``cent`` and an allowed
Origin keep working."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from cent import AsyncClient, PublishRequest
from centrifuge import Client as WSClient
from centrifuge import PublicationContext, SubscriptionEventHandler

from hubbub.config import Settings
from hubbub.testing import Hub, hub_settings, run_hub
from tests.apps.test_notify import known
from tests.conftest import UNIT

WAIT = 5 * UNIT
FOREIGN = "https://evil.example"

# What a page on another site can make a browser send without asking first.
FORGED: dict[str, dict[str, Any]] = {
    "text/plain": {"headers": {"content-type": "text/plain"}},
    "form": {"headers": {"content-type": "application/x-www-form-urlencoded"}},
    "multipart": {"headers": {"content-type": "multipart/form-data; boundary=x"}},
    "text/plain, foreign Origin": {"headers": {"content-type": "text/plain", "origin": FOREIGN}},
    "no type, foreign Origin": {"headers": {"origin": FOREIGN}},
}


class Received(SubscriptionEventHandler):
    def __init__(self) -> None:
        self.pubs: asyncio.Queue[Any] = asyncio.Queue()

    async def on_publication(self, ctx: PublicationContext) -> None:
        await self.pubs.put(ctx.pub.data)


def dev_settings(**client: Any) -> Settings:
    """``hubbub serve --dev``: the HTTP API without a key."""
    settings = hub_settings()
    if client:
        settings = settings.model_copy(update={"client": settings.client.model_copy(update=client)})
    assert settings.http_api.insecure and not settings.http_api.key
    return settings


@pytest.fixture
async def dev_hub() -> AsyncIterator[Hub]:
    async with run_hub(dev_settings()) as hub:
        yield hub


async def subscriber(hub: Hub, channel: str) -> tuple[WSClient, Received]:
    """A centrifuge-python client subscribed to ``channel``."""
    client = WSClient(hub.url, token=hub.token("watcher"), proxy=None)
    events = Received()
    sub = client.new_subscription(channel, events=events)
    await client.connect()
    await sub.subscribe()
    await sub.ready(timeout=WAIT)
    return client, events


async def post(hub: Hub, path: str, body: dict[str, Any], **request: Any) -> httpx.Response:
    async with httpx.AsyncClient(base_url=hub.http, timeout=WAIT) as http:
        return await http.post(path, content=json.dumps(body).encode(), **request)


@pytest.mark.parametrize("form", list(FORGED))
async def test_a_forged_publish_is_415_and_publishes_nothing(dev_hub: Hub, form: str) -> None:
    client, events = await subscriber(dev_hub, "news")
    forged = await post(
        dev_hub, "/api/publish", {"channel": "news", "data": "forged"}, **FORGED[form]
    )
    assert forged.status_code == 415, forged.text
    assert "application/json" in forged.text
    assert dev_hub.node.counters["api.unsupported_media_type"] == 1
    # The same request as JSON goes through; per-channel order makes it the first one seen.
    sent = await post(
        dev_hub,
        "/api/publish",
        {"channel": "news", "data": "json"},
        headers={"content-type": "application/json; charset=utf-8"},
    )
    assert sent.status_code == 200 and "result" in sent.json(), sent.text
    assert await asyncio.wait_for(events.pubs.get(), WAIT) == "json"
    await client.disconnect()


@pytest.mark.parametrize("form", ["text/plain", "form", "text/plain, foreign Origin"])
async def test_a_forged_notify_is_415_and_notifies_nobody(dev_hub: Hub, form: str) -> None:
    await known(dev_hub, "alice")
    async with dev_hub.client("alice") as alice:
        inbox = alice.subscription("#alice")
        assert inbox is not None
        forged = await post(dev_hub, "/api/notify", {"user": "alice", "body": "x"}, **FORGED[form])
        assert forged.status_code == 415, forged.text
        sent = await post(
            dev_hub,
            "/api/notify",
            {"user": "alice", "body": "real"},
            headers={"content-type": "application/json"},
        )
        assert sent.status_code == 200 and sent.json()["result"]["count"] == 1, sent.text
        pub = await alice.next(inbox)
        assert pub.data["notification"]["body"] == "real" and pub.data["unread"] == 1


async def test_cent_and_json_without_origin_keep_working(dev_hub: Hub) -> None:
    client, events = await subscriber(dev_hub, "news")
    cent = AsyncClient(f"{dev_hub.http}/api", "")
    await cent.publish(PublishRequest(channel="news", data={"via": "cent"}))
    await cent.close()
    assert await asyncio.wait_for(events.pubs.get(), WAIT) == {"via": "cent"}
    # A program that sends neither Content-Type nor Origin is not a browser: taken as JSON.
    async with httpx.AsyncClient(base_url=dev_hub.http, timeout=WAIT) as http:
        bare = await http.post("/api/publish", content=b'{"channel": "news", "data": "bare"}')
    assert bare.status_code == 200, bare.text
    assert await asyncio.wait_for(events.pubs.get(), WAIT) == "bare"
    await client.disconnect()
    assert dev_hub.node.counters["api.unsupported_media_type"] == 0


async def test_an_allowed_origin_may_post_any_type() -> None:
    async with run_hub(dev_settings(allowed_origins=["https://app.example"])) as hub:
        client, events = await subscriber(hub, "news")
        browser = {"content-type": "text/plain;charset=UTF-8", "origin": "https://app.example"}
        ok = await post(hub, "/api/publish", {"channel": "news", "data": "page"}, headers=browser)
        assert ok.status_code == 200, ok.text
        assert await asyncio.wait_for(events.pubs.get(), WAIT) == "page"
        other = {**browser, "origin": "https://app.example.evil.example"}
        refused = await post(hub, "/api/publish", {"channel": "news", "data": "x"}, headers=other)
        assert refused.status_code == 415
        await client.disconnect()
        async with httpx.AsyncClient(base_url=hub.http, timeout=WAIT) as http:
            metrics = (await http.get("/metrics")).text
        assert 'hubbub_api_rejections_total{reason="unsupported_media_type"} 1.0' in metrics


async def test_without_allowed_origins_the_servers_own_pages_may_post(dev_hub: Hub) -> None:
    client, events = await subscriber(dev_hub, "news")
    own = {"content-type": "text/plain", "origin": dev_hub.http}
    ok = await post(dev_hub, "/api/publish", {"channel": "news", "data": "own"}, headers=own)
    assert ok.status_code == 200, ok.text
    assert await asyncio.wait_for(events.pubs.get(), WAIT) == "own"
    await client.disconnect()


async def test_marking_notifications_read_refuses_a_forged_post(dev_hub: Hub) -> None:
    await known(dev_hub, "bob")
    async with dev_hub.client("bob") as bob:
        inbox = bob.subscription("#bob")
        assert inbox is not None
        await dev_hub.notify(["bob"], body="hello")
        await bob.next(inbox)
        auth = {"authorization": f"Bearer {dev_hub.token('bob')}"}
        forged = await post(
            dev_hub,
            "/notifications/read",
            {"all": True},
            headers={**auth, "content-type": "text/plain", "origin": FOREIGN},
        )
        assert forged.status_code == 415 and forged.json()["error"]["code"] == 107
        async with httpx.AsyncClient(base_url=dev_hub.http, timeout=WAIT) as http:
            unread = (await http.get("/notifications/unread", headers=auth)).json()
            assert unread == {"unread": 1}
            marked = await http.post("/notifications/read", json={"all": True}, headers=auth)
        assert marked.status_code == 200 and marked.json()["unread"] == 0
