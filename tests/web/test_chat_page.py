"""The chat page in Chromium: two people chat, history, presence, the bell, a server crash."""

from __future__ import annotations

import time
from pathlib import Path

import httpx
import pytest
from playwright.async_api import Browser, Page, expect

from tests.conftest import UNIT
from tests.web.conftest import Console, Errors, Server, open_page, screenshot

WAIT = 5000 * UNIT  # milliseconds


async def send(page: Page, text: str) -> None:
    await page.fill("#text", text)
    await page.press("#text", "Enter")
    await expect(page.locator("#text")).to_have_value("", timeout=WAIT)


def texts(page: Page) -> object:
    return page.locator("#message-list .msg-text")


async def test_two_people_chat_both_ways_and_see_each_other(
    browser: Browser, web_server: Server
) -> None:
    errors = Errors()
    alice = await open_page(browser, web_server.base, "alice", errors)
    bob = await open_page(browser, web_server.base, "bob", errors)

    await send(alice, "Hi Bob! 👋")
    await expect(bob.locator("#message-list")).to_contain_text("Hi Bob! 👋", timeout=WAIT)
    await bob.type("#text", "Hello Alice")  # key by key: the page sends "typing"
    await expect(alice.locator("#typing")).to_have_text("bob is typing…", timeout=WAIT)
    await bob.press("#text", "Enter")
    await expect(alice.locator("#message-list")).to_contain_text("Hello Alice", timeout=WAIT)
    await expect(alice.locator("#typing")).to_have_text("", timeout=WAIT)

    for page in (alice, bob):
        await expect(page.locator("#online li")).to_have_count(2, timeout=WAIT)
        await expect(page.locator("#online")).to_contain_text("alice")
        await expect(page.locator("#online")).to_contain_text("bob")
        await expect(page.locator("#rooms")).to_contain_text("2 online", timeout=WAIT)
    await screenshot(alice, "chat-alice")
    await screenshot(bob, "chat-bob")

    # A reload shows the history from the archive.
    await bob.reload()
    await expect(bob.locator("#status")).to_have_attribute("data-state", "connected", timeout=WAIT)
    await expect(texts(bob)).to_have_text(["Hi Bob! 👋", "Hello Alice"], timeout=WAIT)

    # Leaving shows in the other's online list.
    await bob.context.close()
    await expect(alice.locator("#online li")).to_have_count(1, timeout=WAIT)
    assert errors == []


async def test_markup_is_shown_as_text(browser: Browser, web_server: Server) -> None:
    errors = Errors()
    mallory = await open_page(browser, web_server.base, "mallory", errors)
    victim = await open_page(browser, web_server.base, "victim", errors)
    payloads = [
        "<img src=x onerror=alert(1)>",
        "<script>alert('xss')</script>",
        "'); DROP TABLE messages; --",
    ]
    for text in payloads:
        await send(mallory, text)
    await expect(texts(victim)).to_have_text(payloads, timeout=WAIT)
    assert await victim.locator("#message-list img, #message-list script").count() == 0
    await victim.reload()
    await expect(texts(victim)).to_have_text(payloads, timeout=WAIT)
    assert errors == []


async def test_rooms_edit_and_delete(browser: Browser, web_server: Server) -> None:
    errors = Errors()
    alice = await open_page(browser, web_server.base, "alice", errors)
    await alice.fill("#new-room-name", "garden")
    await alice.press("#new-room-name", "Enter")
    await expect(alice.locator("#room-title")).to_have_text("# garden", timeout=WAIT)
    await expect(alice.locator("#text")).to_be_enabled(timeout=WAIT)
    await send(alice, "tpyo")
    bob = await open_page(browser, web_server.base, "bob", errors)
    await bob.click("#rooms button[data-room=garden]")
    await expect(texts(bob)).to_have_text(["tpyo"], timeout=WAIT)

    message = alice.locator("#message-list .msg.mine").first
    await message.hover()
    await message.get_by_role("button", name="Edit").click()
    await alice.fill(".msg-edit", "typo")
    await alice.press(".msg-edit", "Enter")
    await expect(texts(bob)).to_have_text(["typo"], timeout=WAIT)
    await expect(bob.locator(".msg-edited")).to_have_text("(edited)")

    await message.hover()
    await message.get_by_role("button", name="Delete").click()
    await expect(texts(bob)).to_have_text(["message deleted"], timeout=WAIT)
    assert errors == []


async def test_a_notification_appears_in_the_bell_within_a_second(
    browser: Browser, web_server: Server
) -> None:
    errors = Errors()
    alice = await open_page(browser, web_server.base, "alice", errors)
    second_tab = await alice.context.new_page()
    await second_tab.goto(web_server.base + "/")  # same browser: signed in already
    await expect(second_tab.locator("#status")).to_have_attribute(
        "data-state", "connected", timeout=WAIT
    )
    async with httpx.AsyncClient(base_url=web_server.base, timeout=5) as http:
        started = time.monotonic()
        response = await http.post(
            "/api/notify",
            json={"user": "alice", "title": "Deploy finished", "body": "v1.2 is live <b>now</b>",
                  "link": "/releases/1.2"},
        )  # fmt: skip
        assert response.status_code == 200 and response.json()["result"]["count"] == 1
        await expect(alice.locator("#badge")).to_have_text("1", timeout=1000)
        elapsed = time.monotonic() - started
    assert elapsed < 1.0 * UNIT, f"the bell took {elapsed:.2f} s"
    await expect(alice.locator(".toast")).to_contain_text("Deploy finished")
    await expect(second_tab.locator("#badge")).to_have_text("1", timeout=WAIT)
    await screenshot(alice, "bell-toast")

    await alice.click("#bell")
    item = alice.locator("#notes li").first
    await expect(item).to_contain_text("v1.2 is live <b>now</b>")
    await expect(alice.locator(".toast")).to_have_count(0)  # nothing covers the open list
    await expect(item).to_have_class("unread")
    await screenshot(alice, "bell-open")
    await item.click()
    await expect(alice.locator("#badge")).to_be_hidden(timeout=WAIT)
    # Read on one tab: the other tab's badge goes too.
    await expect(second_tab.locator("#badge")).to_be_hidden(timeout=WAIT)
    assert errors == []


async def test_killing_the_server_loses_no_stored_message(
    browser: Browser, console: Console, web_server: Server
) -> None:
    # While the server is down the browser reports each refused attempt to reconnect.
    console.expect(r"ERR_CONNECTION_REFUSED")
    console.expect(r"WebSocket connection to .* failed")
    errors = Errors()
    alice = await open_page(browser, web_server.base, "alice", errors)
    bob = await open_page(browser, web_server.base, "bob", errors)
    sent = [f"message {n}" for n in range(12)]
    for n, text in enumerate(sent):
        await send(alice if n % 2 == 0 else bob, text)
    await expect(texts(bob)).to_have_text(sent, timeout=WAIT)

    await web_server.kill()
    for page in (alice, bob):
        await expect(page.locator("#status")).to_have_attribute(
            "data-state", "disconnected", timeout=WAIT
        )
        await expect(page.locator("#text")).to_be_disabled()
    await screenshot(alice, "chat-offline")

    await web_server.start()
    for page in (alice, bob):
        await expect(page.locator("#status")).to_have_attribute(
            "data-state", "connected", timeout=4 * WAIT
        )
        await expect(page.locator("#text")).to_be_enabled(timeout=WAIT)
    await send(bob, "after the restart")
    await expect(texts(alice)).to_have_text([*sent, "after the restart"], timeout=WAIT)

    fresh = await open_page(browser, web_server.base, "carol", errors)
    await expect(texts(fresh)).to_have_text([*sent, "after the restart"], timeout=WAIT)
    assert errors == []


async def test_the_room_list_pages_and_a_refused_room_is_explained(
    browser: Browser, console: Console, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HUBBUB_CHAT__ROOMS_PAGE_SIZE", "25")
    monkeypatch.setenv("HUBBUB_CHAT__ROOM_CREATE_BURST", "1")
    monkeypatch.setenv("HUBBUB_CHAT__ROOM_CREATE_RATE", "0.0001")  # no token back in the test
    server = Server(tmp_path)
    await server.start()
    try:
        async with httpx.AsyncClient(base_url=server.base, timeout=5) as http:
            for n in range(59):  # the API is a backend's: not limited by a user's rate
                created = await http.post("/api/chat_create_room", json={"room": f"room-{n:02d}"})
                assert created.status_code == 200, created.text
        errors = Errors()
        alice = await open_page(browser, server.base, "alice", errors)
        rooms = alice.locator("#rooms button")
        more = alice.locator("#more-rooms")
        await expect(rooms).to_have_count(25, timeout=WAIT)  # lobby, room-00 … room-23
        await expect(more).to_have_text("More rooms (35 more)")
        await more.click()
        await expect(rooms).to_have_count(50, timeout=WAIT)
        await expect(rooms.nth(49)).to_have_attribute("data-room", "room-48")
        await more.scroll_into_view_if_needed()
        await screenshot(alice, "chat-many-rooms")
        await more.click()
        await expect(rooms).to_have_count(60, timeout=WAIT)
        await expect(more).to_be_hidden()
        names = [await b.get_attribute("data-room") for b in await rooms.all()]
        assert names == ["lobby"] + [f"room-{n:02d}" for n in range(59)]

        await alice.fill("#new-room-name", "garden")  # the one room alice may create now
        await alice.press("#new-room-name", "Enter")
        await expect(alice.locator("#room-title")).to_have_text("# garden", timeout=WAIT)
        await expect(alice.locator("#text")).to_be_enabled(timeout=WAIT)
        await alice.fill("#new-room-name", "orchard")
        await alice.press("#new-room-name", "Enter")
        await expect(alice.locator("#rooms-error")).to_contain_text(
            "Cannot join #orchard. You are creating rooms too fast",
            timeout=WAIT,
        )
        # Back in the room it was in, able to write there.
        await expect(alice.locator("#room-title")).to_have_text("# garden", timeout=WAIT)
        await expect(alice.locator("#text")).to_be_enabled(timeout=WAIT)
        await expect(alice.locator("#rooms button[data-room=orchard]")).to_have_count(0)
        await screenshot(alice, "chat-room-refused")
        await send(alice, "still here")
        await expect(texts(alice)).to_have_text(["still here"], timeout=WAIT)
        assert errors == []
    finally:
        await console.close_pages()
        await server.stop()
