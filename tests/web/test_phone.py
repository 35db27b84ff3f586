"""The chat page on a phone (390 x 844) and what people read when something is refused."""

from __future__ import annotations

import httpx
import pytest
from playwright.async_api import Browser, Locator, Page, ViewportSize, expect

from tests.conftest import UNIT
from tests.web.conftest import DESKTOP, PHONE, Errors, Server, open_page, screenshot

WAIT = 5000 * UNIT  # milliseconds


async def box(locator: Locator) -> dict[str, float]:
    found = await locator.bounding_box()
    assert found is not None, f"{locator} is not shown"
    return dict(found)


def overlap(a: dict[str, float], b: dict[str, float]) -> bool:
    return (
        a["x"] < b["x"] + b["width"]
        and b["x"] < a["x"] + a["width"]
        and a["y"] < b["y"] + b["height"]
        and b["y"] < a["y"] + a["height"]
    )


async def on_screen(page: Page, locator: Locator) -> bool:
    """Visible and inside the window: what a person can see and tap."""
    if not await locator.is_visible():
        return False
    found = await box(locator)
    size = page.viewport_size
    assert size is not None
    return found["x"] >= 0 and found["x"] + found["width"] <= size["width"]


async def until_on_screen(page: Page, locator: Locator) -> None:
    """Wait until ``locator`` is on screen (the drawer slides in)."""
    for _ in range(int(100 * UNIT)):
        if await on_screen(page, locator):
            return
        await page.wait_for_timeout(50)
    raise AssertionError(f"{locator} did not come on screen")


async def test_the_drawer_reaches_rooms_people_and_sign_out(
    browser: Browser, web_server: Server
) -> None:
    errors = Errors()
    bob = await open_page(browser, web_server.base, "bob", errors, PHONE)
    alice = await open_page(browser, web_server.base, "alice", errors, PHONE)
    await alice.fill("#text", "Hi from a phone")
    await alice.press("#text", "Enter")
    await expect(bob.locator("#message-list")).to_contain_text("Hi from a phone", timeout=WAIT)

    # Closed: the chat has the whole width, and the menu button is there to open the rest.
    for hidden in ("#rooms", "#online", "#drawer-sign-out", "#sign-out"):
        assert not await on_screen(alice, alice.locator(hidden)), hidden
    assert await on_screen(alice, alice.locator("#menu"))
    assert await on_screen(alice, alice.locator("#send"))
    await screenshot(alice, "phone-drawer-closed")

    await alice.click("#menu")
    await expect(alice.locator("#menu")).to_have_attribute("aria-expanded", "true")
    await expect(alice.locator("#online li")).to_have_count(2, timeout=WAIT)
    await expect(alice.locator("#online")).to_contain_text("alice (you)")
    await expect(alice.locator("#drawer-me")).to_have_text("alice")
    for shown in ("#rooms button[data-room=lobby]", "#online", "#drawer-sign-out", "#new-room"):
        await until_on_screen(alice, alice.locator(shown))
    await screenshot(alice, "phone-drawer-open")

    # A new room from the drawer: the drawer closes on the room joined.
    await alice.fill("#new-room-name", "garden")
    await alice.press("#new-room-name", "Enter")
    await expect(alice.locator("#room-title")).to_have_text("# garden", timeout=WAIT)
    await expect(alice.locator("#menu")).to_have_attribute("aria-expanded", "false")
    await expect(alice.locator("#text")).to_be_enabled(timeout=WAIT)

    # Back to the lobby through the room list; Escape and the dimmed chat close it too.
    await alice.click("#menu")
    await alice.click("#rooms button[data-room=lobby]")
    await expect(alice.locator("#room-title")).to_have_text("# lobby", timeout=WAIT)
    await expect(alice.locator("#menu")).to_have_attribute("aria-expanded", "false")
    await alice.click("#menu")
    await alice.keyboard.press("Escape")
    await expect(alice.locator("#menu")).to_have_attribute("aria-expanded", "false")
    await alice.click("#menu")
    await alice.mouse.click(380, 400)  # the dimmed chat, right of the drawer
    await expect(alice.locator("#menu")).to_have_attribute("aria-expanded", "false")

    await alice.click("#menu")
    await alice.click("#drawer-sign-out")
    await expect(alice.locator("#login")).to_be_visible(timeout=WAIT)
    await expect(alice.locator("#login-name")).to_be_visible()
    assert errors == []


@pytest.mark.parametrize("viewport", [DESKTOP, PHONE], ids=["desktop", "phone"])
async def test_a_toast_hides_nothing_being_typed(
    browser: Browser, web_server: Server, viewport: ViewportSize
) -> None:
    errors = Errors()
    alice = await open_page(browser, web_server.base, "alice", errors, viewport)
    await alice.fill("#text", "half-written message")
    async with httpx.AsyncClient(base_url=web_server.base, timeout=5) as http:
        response = await http.post(
            "/api/notify",
            json={"user": "alice", "title": "Build finished",
                  "body": "All 1,204 tests passed on main; the release can go out."},
        )  # fmt: skip
        assert response.status_code == 200, response.text
    toast = alice.locator(".toast")
    await expect(toast).to_be_visible(timeout=WAIT)
    await alice.wait_for_timeout(300 * UNIT)  # the toast's slide-in animation settles
    shown = await box(toast)
    for typed_into in ("#text", "#send", "#composer"):
        assert not overlap(shown, await box(alice.locator(typed_into))), typed_into
    size = alice.viewport_size
    assert size is not None and shown["x"] >= 0 and shown["x"] + shown["width"] <= size["width"]
    await screenshot(alice, f"toast-{viewport['width']}")
    await expect(alice.locator("#text")).to_have_value("half-written message")
    assert errors == []


@pytest.mark.parametrize("viewport", [DESKTOP, PHONE], ids=["desktop", "phone"])
async def test_an_invalid_room_name_is_refused_before_it_is_listed(
    browser: Browser, web_server: Server, viewport: ViewportSize
) -> None:
    errors = Errors()
    alice = await open_page(browser, web_server.base, "alice", errors, viewport)
    await expect(alice.locator("#room-title")).to_have_text("# lobby")
    if viewport is PHONE:
        await alice.click("#menu")
        await until_on_screen(alice, alice.locator("#new-room"))
    await alice.fill("#new-room-name", "bad room!")
    await alice.press("#new-room-name", "Enter")
    await expect(alice.locator("#rooms-error")).to_have_text(
        '"bad room!" cannot be a room name: use 1-64 letters, digits, "-", "_" or ".".'
    )
    await expect(alice.locator("#rooms button")).to_have_count(1)  # the lobby, nothing else
    await expect(alice.locator("#room-title")).to_have_text("# lobby")
    await expect(alice.locator("#new-room-name")).to_have_value("bad room!")  # to correct it
    await expect(alice.locator("#text")).to_be_enabled()
    await screenshot(alice, f"room-name-refused-{viewport['width']}")

    # A link to such a room is refused the same way, and the page opens the lobby.
    await alice.goto(web_server.base + "/?room=bad%20room!")
    await expect(alice.locator("#rooms-error")).to_have_text(
        '"bad room!" cannot be a room name: use 1-64 letters, digits, "-", "_" or ".".',
        timeout=WAIT,
    )
    await expect(alice.locator("#room-title")).to_have_text("# lobby", timeout=WAIT)
    await expect(alice.locator("#rooms button")).to_have_count(1, timeout=WAIT)
    assert errors == []


async def test_a_name_that_cannot_be_is_explained_before_asking(
    browser: Browser, web_server: Server
) -> None:
    context = await browser.new_context(viewport=PHONE)
    page = await context.new_page()
    await page.goto(web_server.base + "/")
    await page.fill("#login-name", "no spaces please")
    await page.click("#login-form button")
    await expect(page.locator("#login-error")).to_have_text(
        '"no spaces please" cannot be a name: use 1-32 letters, digits, "-", "_" or ".".',
        timeout=WAIT,
    )
    await screenshot(page, "phone-login-refused")
    await page.fill("#login-name", "carol")
    await page.click("#login-form button")
    await expect(page.locator("#status")).to_have_attribute("data-state", "connected", timeout=WAIT)
