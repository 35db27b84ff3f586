"""The test kit, used the way an application's tests would use it."""

from __future__ import annotations

import re

import httpx
import pytest

from hubbub.node import Node
from hubbub.testing import FakeClock, Hub, advance, hub_settings, run_hub


async def test_hub_fixture_and_client(hub: Hub) -> None:
    async with hub.client("alice") as alice, hub.client("bob") as bob:
        sub = await bob.subscribe("news")
        await alice.publish("news", {"n": 1})
        await hub.node.publish("news", {"n": 2})
        got = await bob.expect(sub, [{"n": 1}, {"n": 2}])
        assert got[0].info is not None and got[0].info.user == "alice"
        await bob.nothing(sub)


async def test_waits_fail_with_a_message(hub: Hub) -> None:
    async with hub.client() as client:
        sub = await client.subscribe("quiet")
        with pytest.raises(
            AssertionError, match=re.escape("no publication on 'quiet' within 0.1 s")
        ):
            await client.next(sub, within=0.1)


async def test_fake_clock_drives_heartbeats() -> None:
    clock = FakeClock()
    node = Node(hub_settings(), clock=clock)
    async with run_hub(node=node) as hub, hub.client("alice") as client:
        session = next(iter(node.index.sessions.values()))
        # A minute of heartbeats in a moment: pings go out, the real client answers each.
        await advance(clock, 60)
        assert not session.transport.closing
        assert client.client_id == session.client_id and client.reconnects == 0
        assert node.counters["disconnect.3012"] == 0


async def test_an_application_that_mounts_hubbub() -> None:
    """The pattern for testing your own FastAPI app: serve it with its node."""
    from examples.fastapi_app import app, node

    async with run_hub(node=node, app=app) as hub:
        token = hub.token("alice")
        async with hub.client("alice", token=token) as client:
            sub = await client.subscribe("chat:kit")
            async with httpx.AsyncClient(base_url=hub.http) as http:
                response = await http.post(
                    "/messages", json={"room": "kit", "user": "bob", "text": "hi"}
                )
            assert response.status_code == 200
            await client.expect(sub, [{"user": "bob", "text": "hi"}])


async def test_tokens_follow_the_hubs_token_settings() -> None:
    """A hub that requires an audience, an issuer and ``exp`` accepts the kit's tokens and the
    chat page's development tokens as they are."""
    base = hub_settings()
    token = base.token.model_copy(
        update={"audience": "hubbub-tests", "issuer": "kit", "require_exp": True}
    )
    settings = base.model_copy(update={"token": token})
    async with run_hub(settings) as hub:
        async with hub.client("alice") as client:
            sub = await client.subscribe("news")
            await hub.node.publish("news", {"n": 1})
            await client.expect(sub, [{"n": 1}])
        async with httpx.AsyncClient(base_url=hub.http) as http:
            response = await http.post("/web/token", json={"user": "bob"})
        assert response.status_code == 200, response.text
        async with hub.client("bob", token=response.json()["token"]) as bob:
            assert bob.client_id
