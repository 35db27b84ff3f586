"""``hub.notify`` called from an application's own route (FastAPI): a user who never
connected is an exception the route can catch and map (``hubbub.UnknownUsers``), not a 500;
a user added with ``hub.add_users`` or seen once is notified while offline (the inbox)."""

from __future__ import annotations

import httpx
from fastapi import FastAPI, HTTPException
from starlette.routing import WebSocketRoute

import hubbub
from hubbub import Hub, WebSocketEndpoint
from hubbub.testing import hub_settings, run_hub


def build_app() -> tuple[Hub, FastAPI]:
    hub = Hub(hub_settings())
    app = FastAPI(
        lifespan=hub.lifespan,
        routes=[WebSocketRoute("/connection/websocket", WebSocketEndpoint(hub.node))],
    )

    @app.post("/builds/{number}/done")
    async def build_done(number: int, owner: str) -> dict[str, int]:
        try:
            notes = await hub.notify([owner], title="Build finished", body=f"build {number}")
        except hubbub.UnknownUsers as exc:
            raise HTTPException(404, detail={"unknown": exc.users}) from None
        return {"id": notes[0].id}

    return hub, app


async def test_unknown_user_is_an_exception_the_route_maps() -> None:
    hub, app = build_app()
    async with (
        run_hub(node=hub.node, app=app) as running,
        httpx.AsyncClient(base_url=running.http, timeout=5) as http,
    ):
        answer = await http.post("/builds/7/done", params={"owner": "carol"})
        assert answer.status_code == 404, answer.text
        assert answer.json() == {"detail": {"unknown": ["carol"]}}
        assert hub.notifications is not None
        notes, unread = await hub.notifications.inbox("carol")
        assert (notes, unread) == ([], 0)  # nothing stored for anyone

        await hub.add_users(["carol"])  # known before her first visit
        answer = await http.post("/builds/7/done", params={"owner": "carol"})
        assert answer.status_code == 200, answer.text
        notes, unread = await hub.notifications.inbox("carol")
        assert [n.body for n in notes] == ["build 7"] and unread == 1


async def test_offline_user_who_connected_once_finds_it_in_the_inbox() -> None:
    hub, app = build_app()
    async with run_hub(node=hub.node, app=app) as running:
        async with running.client("dave"):
            pass  # dave connected once, then left
        assert hub.users is not None
        await hub.users.settled()
        async with httpx.AsyncClient(base_url=running.http, timeout=5) as http:
            answer = await http.post("/builds/8/done", params={"owner": "dave"})
        assert answer.status_code == 200, answer.text
        async with running.client("dave") as dave:
            page = await dave.rpc("notifications.list", {})
        assert [n["body"] for n in page["notifications"]] == ["build 8"], page


def test_unknown_users_is_a_protocol_error_404() -> None:
    # The RPC methods and the HTTP API answer it as they answered the 404 before.
    exc = hubbub.UnknownUsers(["a", "b"])
    assert isinstance(exc, hubbub.ProtocolError) and exc.code == 404
    assert exc.users == ["a", "b"] and "'a', 'b'" in exc.message
