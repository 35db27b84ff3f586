"""The example proxy backends, each served by uvicorn on 127.0.0.1: the Django project
(``examples/django_backend``: Django's session authentication) and the FastAPI app
(``examples/fastapi_backend.py``: a FastAPI dependency).

First each backend is sent the exact request bodies of the Centrifugo v6 proxy
(PROTOCOL-EXTENSIONS.md §3.3) and must answer the documented envelope; then a real hubbub with
``examples/proxy.toml`` and a real client (centrifuge-python) carrying the session cookie or
bearer token in its handshake: the user connects without a token, anyone else is refused."""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn
from centrifuge import (
    Client,
    ClientEventHandler,
    ConnectedContext,
    DisconnectedContext,
    PublicationContext,
    SubscriptionEventHandler,
    UnsubscribedContext,
)

from hubbub.config import Settings, load_settings
from hubbub.testing import run_hub
from tests.conftest import UNIT

ROOT = Path(__file__).resolve().parents[2]
CONFIG = ROOT / "examples" / "proxy.toml"
EXAMPLE_ADDRESS = "127.0.0.1:9000"
WAIT = 5 * UNIT

# What every proxy request carries (§3.2), as hubbub and Centrifugo send it.
COMMON = {
    "client": "0d3f5a6e-2b1c-4f7e-9a8b-1c2d3e4f5a6b",
    "transport": "websocket",
    "protocol": "json",
    "encoding": "json",
}


class _Server(uvicorn.Server):
    def install_signal_handlers(self) -> None:  # the test runner owns the signals
        pass


@asynccontextmanager
async def serving(app: Any) -> AsyncIterator[str]:
    """Serve ``app`` on 127.0.0.1 and a free port; yield its base URL."""
    server = _Server(uvicorn.Config(app, host="127.0.0.1", port=0, log_level="warning"))
    task = asyncio.create_task(server.serve())
    try:
        for _ in range(int(500 * UNIT)):
            if server.started or task.done():
                break
            await asyncio.sleep(0.01)
        if task.done():
            task.result()
        assert server.started, "the backend did not start"
        port = server.servers[0].sockets[0].getsockname()[1]
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        await asyncio.wait_for(task, 10 * UNIT)


# --- the Django backend -------------------------------------------------------------------


@pytest.fixture(scope="module")
def django_users(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, str]]:
    """A migrated database in a temporary directory with alice (group ``ops``) and bob (no
    group); their primary keys, as the proxy's ``user`` field carries them."""
    with pytest.MonkeyPatch.context() as env:
        env.setenv("EXAMPLE_DB_DIR", str(tmp_path_factory.mktemp("django")))
        env.setenv("DJANGO_SETTINGS_MODULE", "examples.django_backend.settings")
        import django
        from django.core.management import call_command

        django.setup()
        from django.contrib.auth.models import Group, User  # once the apps are loaded

        call_command("migrate", verbosity=0)
        alice = User.objects.create_user("alice", password="alice-password")
        bob = User.objects.create_user("bob", password="bob-password")
        alice.groups.add(Group.objects.create(name="ops"))
        yield {"alice": str(alice.pk), "bob": str(bob.pk)}


@pytest.fixture
async def django_backend(django_users: dict[str, str]) -> AsyncIterator[str]:
    from examples.django_backend.asgi import application

    async with serving(application) as url:
        yield url


async def django_login(base: str, username: str, password: str) -> str:
    """Log in through Django's own login form, as a browser does (CSRF token included);
    return the ``sessionid`` cookie."""
    async with httpx.AsyncClient(base_url=base, timeout=WAIT) as http:
        page = await http.get("/accounts/login/")
        found = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', page.text)
        assert page.status_code == 200 and found, page.text
        form = {"csrfmiddlewaretoken": found[1], "username": username, "password": password}
        answer = await http.post("/accounts/login/", data=form)
        assert answer.status_code == 302, answer.text
        assert (await http.get("/")).text == f"logged in as {username}\n"
        return str(http.cookies["sessionid"])


async def proxy_call(base: str, kind: str, body: dict[str, Any], **headers: str) -> Any:
    async with httpx.AsyncClient(base_url=base, timeout=WAIT) as http:
        answer = await http.post(f"/centrifugo/{kind}", json={**COMMON, **body}, headers=headers)
    assert answer.status_code == 200, answer.text
    return answer.json()


async def test_django_connect_answers_with_the_session_user(
    django_backend: str, django_users: dict[str, str]
) -> None:
    session = await django_login(django_backend, "alice", "alice-password")
    body = {"name": "js", "data": {"lang": "en"}}
    answer = await proxy_call(django_backend, "connect", body, Cookie=f"sessionid={session}")
    assert answer == {"result": {"user": django_users["alice"], "info": {"username": "alice"}}}
    refused = {"disconnect": {"code": 4501, "reason": "unauthorized"}}
    assert await proxy_call(django_backend, "connect", body) == refused
    forged = await proxy_call(django_backend, "connect", body, Cookie="sessionid=forged")
    assert forged == refused


async def test_django_subscribe_publish_rpc_follow_the_group_rule(
    django_backend: str, django_users: dict[str, str]
) -> None:
    alice, bob = django_users["alice"], django_users["bob"]
    denied = {"error": {"code": 403, "message": "permission denied"}}
    sub = {"channel": "team:ops", "data": {"k": 1}}
    assert await proxy_call(django_backend, "subscribe", {**sub, "user": alice}) == {"result": {}}
    assert await proxy_call(django_backend, "subscribe", {**sub, "user": bob}) == denied
    assert await proxy_call(django_backend, "subscribe", {**sub, "user": ""}) == denied
    other = {"user": alice, "channel": "team:dev"}
    assert await proxy_call(django_backend, "subscribe", other) == denied

    pub = {"user": alice, "channel": "team:ops", "data": {"text": " hi "}}
    rewritten = {"result": {"data": {"text": "hi", "by": "alice"}}}
    assert await proxy_call(django_backend, "publish", pub) == rewritten
    assert await proxy_call(django_backend, "publish", {**pub, "user": bob}) == denied
    bad = await proxy_call(django_backend, "publish", {**pub, "data": {"html": "<b>"}})
    assert bad["error"]["code"] == 400

    rpc = {"user": alice, "method": "whoami", "data": {}}
    who = {"user": alice, "username": "alice", "groups": ["ops"]}
    assert await proxy_call(django_backend, "rpc", rpc) == {"result": {"data": who}}
    unknown = await proxy_call(django_backend, "rpc", {**rpc, "method": "nope"})
    assert unknown["error"]["code"] == 404


async def test_django_answers_garbage_with_a_failure_status(django_backend: str) -> None:
    async with httpx.AsyncClient(base_url=django_backend, timeout=WAIT) as http:
        answer = await http.post("/centrifugo/connect", content=b"{not json")
        assert answer.status_code == 400
        answer = await http.get("/centrifugo/connect")
        assert answer.status_code == 405


# --- the FastAPI backend ------------------------------------------------------------------


@pytest.fixture
async def fastapi_backend() -> AsyncIterator[str]:
    from examples.fastapi_backend import app

    async with serving(app) as url:
        yield url


async def test_fastapi_connect_uses_the_dependency(fastapi_backend: str) -> None:
    from examples.fastapi_backend import sign

    body = {"name": "python", "data": None}
    who = {"result": {"user": "alice", "info": {"teams": ["dev", "ops"]}}}
    bearer = f"Bearer {sign('alice')}"
    assert await proxy_call(fastapi_backend, "connect", body, Authorization=bearer) == who
    async with httpx.AsyncClient(base_url=fastapi_backend, timeout=WAIT) as http:
        login = {"username": "alice", "password": "alice-password"}
        assert (await http.post("/login", json=login)).status_code == 200
        cookie = f"session={http.cookies['session']}"
        wrong = await http.post("/login", json={**login, "password": "guess"})
        assert wrong.status_code == 401
    assert await proxy_call(fastapi_backend, "connect", body, Cookie=cookie) == who
    refused = {"disconnect": {"code": 4501, "reason": "unauthorized"}}
    assert await proxy_call(fastapi_backend, "connect", body) == refused
    forged = f"Bearer alice.{'0' * 64}"
    assert await proxy_call(fastapi_backend, "connect", body, Authorization=forged) == refused


async def test_fastapi_subscribe_publish_rpc_follow_the_team_rule(fastapi_backend: str) -> None:
    denied = {"error": {"code": 403, "message": "permission denied"}}
    sub = {"channel": "team:ops", "data": {"k": 1}}
    assert await proxy_call(fastapi_backend, "subscribe", {**sub, "user": "alice"}) == {
        "result": {}
    }
    assert await proxy_call(fastapi_backend, "subscribe", {**sub, "user": "bob"}) == denied
    pub = {"user": "bob", "channel": "team:dev", "data": {"text": "hello"}}
    rewritten = {"result": {"data": {"text": "hello", "by": "bob"}}}
    assert await proxy_call(fastapi_backend, "publish", pub) == rewritten
    assert await proxy_call(fastapi_backend, "publish", {**pub, "channel": "team:ops"}) == denied
    rpc = {"user": "bob", "method": "whoami", "data": {"x": 1}}
    assert await proxy_call(fastapi_backend, "rpc", rpc) == {
        "result": {"data": {"user": "bob", "teams": ["dev"]}}
    }


# --- end to end: hubbub with examples/proxy.toml ------------------------------------------


def proxy_settings(tmp_path: Path, backend: str) -> Settings:
    """``examples/proxy.toml`` pointed at ``backend``."""
    text = CONFIG.read_text().replace(EXAMPLE_ADDRESS, backend.removeprefix("http://"))
    path = tmp_path / "proxy.toml"
    path.write_text(text)
    return load_settings(path)


class Events(ClientEventHandler):
    def __init__(self) -> None:
        self.connected: asyncio.Queue[ConnectedContext] = asyncio.Queue()
        self.disconnected: asyncio.Queue[DisconnectedContext] = asyncio.Queue()

    async def on_connected(self, ctx: ConnectedContext) -> None:
        await self.connected.put(ctx)

    async def on_disconnected(self, ctx: DisconnectedContext) -> None:
        await self.disconnected.put(ctx)


class SubEvents(SubscriptionEventHandler):
    def __init__(self) -> None:
        self.publications: asyncio.Queue[PublicationContext] = asyncio.Queue()
        self.unsubscribed: asyncio.Queue[UnsubscribedContext] = asyncio.Queue()

    async def on_publication(self, ctx: PublicationContext) -> None:
        await self.publications.put(ctx)

    async def on_unsubscribed(self, ctx: UnsubscribedContext) -> None:
        await self.unsubscribed.put(ctx)


async def connected_client(url: str, headers: dict[str, str]) -> Client:
    """A centrifuge-python client connected without a token, with ``headers`` in its
    handshake."""
    events = Events()
    client = Client(url, events=events, headers=headers, proxy=None, max_reconnect_delay=1)
    await client.connect()
    await asyncio.wait_for(events.connected.get(), WAIT)
    return client


async def refused_code(url: str, headers: dict[str, str]) -> int:
    """The disconnect code a client with ``headers`` gets instead of a connection."""
    events = Events()
    client = Client(url, events=events, headers=headers, proxy=None)
    try:
        await client.connect()
        ctx = await asyncio.wait_for(events.disconnected.get(), WAIT)
        assert events.connected.empty()
        return ctx.code
    finally:
        await client.disconnect()


async def check_user_session(
    url: str, headers: dict[str, str], who: dict[str, Any], by: str, allowed: str, denied: str
) -> None:
    """Connected with ``headers``: the RPC proxy says who the connection is, a channel of the
    user's team is subscribed and its publications are rewritten by the backend, another
    team's channel is refused with the backend's error."""
    client = await connected_client(url, headers)
    try:
        assert (await asyncio.wait_for(client.rpc("whoami", {}), WAIT)).data == who
        events = SubEvents()
        sub = client.new_subscription(allowed, events=events)
        await sub.subscribe()
        await sub.ready(timeout=WAIT)
        await sub.publish({"text": "hi"})
        pub = await asyncio.wait_for(events.publications.get(), WAIT)
        assert pub.pub.data == {"text": "hi", "by": by}
        other = SubEvents()
        refused = client.new_subscription(denied, events=other)
        await refused.subscribe()
        gone = await asyncio.wait_for(other.unsubscribed.get(), WAIT)
        assert (gone.code, gone.reason) == (403, "permission denied")  # the backend's error
    finally:
        await client.disconnect()


async def test_django_session_cookie_connects_through_hubbub(
    tmp_path: Path, django_backend: str, django_users: dict[str, str]
) -> None:
    settings = proxy_settings(tmp_path, django_backend)
    session = await django_login(django_backend, "alice", "alice-password")
    async with run_hub(settings) as hub:
        who = {"user": django_users["alice"], "username": "alice", "groups": ["ops"]}
        cookie = {"Cookie": f"sessionid={session}"}
        await check_user_session(hub.url, cookie, who, "alice", "team:ops", "team:dev")
        assert await refused_code(hub.url, {}) == 4501  # anonymous
        assert await refused_code(hub.url, {"Cookie": "sessionid=forged"}) == 4501


async def test_fastapi_bearer_token_connects_through_hubbub(
    tmp_path: Path, fastapi_backend: str
) -> None:
    from examples.fastapi_backend import sign

    settings = proxy_settings(tmp_path, fastapi_backend)
    async with run_hub(settings) as hub:
        who = {"user": "bob", "teams": ["dev"]}
        bearer = {"Authorization": f"Bearer {sign('bob')}"}
        await check_user_session(hub.url, bearer, who, "bob", "team:dev", "team:ops")
        assert await refused_code(hub.url, {}) == 4501


def test_the_examples_are_documented() -> None:
    docs = (ROOT / "docs" / "proxy.md").read_text()
    for name in ("examples/proxy.toml", "examples/django_backend", "examples/fastapi_backend.py"):
        assert name in docs, name
