"""The admin console in Chromium, across two nodes on Redis sharing one store.

The console is served by node one; a real client (hubbub's Python client) is connected to node
two. The test signs in, sees both nodes, finds the client's channel, publishes to it and sees
the publication arrive, disconnects the user and sees the client get the close code; wrong
passwords get rate-limited and nothing answers without a session. Screenshots go to
``test-artifacts/admin-*.png``.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import pytest
from playwright.async_api import Browser, Page, Request, ViewportSize, expect

from hubbub.admin.passwords import hash_password
from hubbub.client import ClientClosed
from hubbub.protocol.codes import DisconnectCode
from hubbub.testing import Hub, run_hub
from tests.apps.conftest import app_settings
from tests.conftest import UNIT
from tests.web.conftest import DESKTOP, PHONE, Console, screenshot

WAIT = 8000 * UNIT  # milliseconds
PASSWORD = "correct horse battery staple"


@asynccontextmanager
async def two_nodes(redis_url: str, folder: Path) -> AsyncIterator[tuple[Hub, Hub]]:
    common = {
        "engine": "redis",
        "redis": {"url": redis_url, "prefix": f"admin-{uuid.uuid4().hex[:8]}"},
        "store": {"url": f"sqlite:///{folder / 'shared.db'}"},
        "admin": {
            "enabled": True,
            # A cheap scrypt cost keeps the test quick; the format is what production uses.
            "password_hash": hash_password(PASSWORD, n=2**12),
            "secret": "s" * 32,
            "live_interval": 0.5,
            "sign_in_rate": 0.001,
            "sign_in_burst": 4,
        },
    }
    async with (
        run_hub(app_settings(name="node-one", **common)) as one,
        run_hub(app_settings(name="node-two", **common)) as two,
    ):
        yield one, two


async def admin_page(browser: Browser, base: str, viewport: ViewportSize = DESKTOP) -> Page:
    context = await browser.new_context(viewport=viewport)
    page = await context.new_page()
    await page.goto(base + "/admin")
    await expect(page.locator("#sign-in")).to_be_visible(timeout=WAIT)
    return page


async def sign_in(page: Page, secret: str) -> None:
    await page.fill("#secret", secret)
    await page.click("#sign-in-button")


async def test_the_console_across_two_nodes(
    browser: Browser,
    console: Console,
    redis_url: str,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    # The browser reports the answers the test provokes: no session yet, a wrong password,
    # the rate limit.
    console.expect(r"status of 40[13]|status of 429")
    caplog.set_level(logging.INFO, logger="hubbub.admin.audit")
    async with two_nodes(redis_url, tmp_path) as (one, two), two.client("bob") as bob:
        news = await bob.subscribe("news")
        assert one.server is not None
        await one.server.add_users(["carol"])
        await one.notify(["carol"], title="Deploy", body="<b>v2</b> is out")

        page = await admin_page(browser, one.http)
        elsewhere: list[str] = []

        def note(request: Request) -> None:
            if not request.url.startswith((one.http, one.url.rsplit("/", 2)[0], "data:")):
                elsewhere.append(request.url)

        page.on("request", note)

        # A wrong password, then the right one.
        await sign_in(page, "not the password")
        await expect(page.locator("#sign-in-error")).to_have_text(
            "Wrong password or token.", timeout=WAIT
        )
        await sign_in(page, PASSWORD)
        await expect(page.locator("#console")).to_be_visible(timeout=WAIT)
        await expect(page.locator("#live")).to_have_attribute("data-state", "connected")

        # The cluster: both nodes, with their numbers, from the live feed.
        await expect(page.locator("#nodes tr[data-node='node-one']")).to_be_visible(timeout=WAIT)
        await expect(page.locator("#nodes tr[data-node='node-two']")).to_be_visible(timeout=WAIT)
        await expect(page.locator("#total-nodes")).to_have_text("2")
        two_row = page.locator("#nodes tr[data-node='node-two']")
        await expect(two_row).to_contain_text("redis ok")
        await expect(two_row).to_contain_text("MiB")
        await screenshot(page, "admin-cluster")

        # Channels: bob's channel lives on node two; the search finds it from node one.
        await page.click("#tabs a[data-page='channels']")
        await page.fill("#channel-pattern", "ne*")
        await page.click("#channel-search button")
        row = page.locator("#channel-list tr[data-channel='news']")
        await expect(row).to_contain_text("node-two", timeout=WAIT)
        await row.locator("button").click()
        await expect(page.locator("#detail-presence")).to_contain_text("bob", timeout=WAIT)
        await screenshot(page, "admin-channels")

        # Publish from the JSON editor: invalid JSON is caught before it is sent.
        await page.click("#detail-publish")
        await expect(page.locator("#pub-channel")).to_have_value("news")
        await page.fill("#pub-data", '{"text": ')
        await expect(page.locator("#pub-valid")).to_have_attribute("data-ok", "false")
        await expect(page.locator("#pub-send")).to_be_disabled()
        await page.fill("#pub-data", '{"text": "<b>from the console</b>"}')
        await expect(page.locator("#pub-send")).to_be_enabled()
        await page.click("#pub-send")
        await expect(page.locator("#pub-result")).to_contain_text("Published to news")
        pub = await bob.next(news, within=5 * UNIT)
        assert pub.data == {"text": "<b>from the console</b>"}
        await screenshot(page, "admin-publish")

        # The publication is in the channel's stream, shown as text.
        await page.goto(one.http + "/admin#channels")
        await page.fill("#channel-pattern", "news")
        await page.click("#channel-search button")
        await page.locator("#channel-list tr[data-channel='news'] button").click()
        await expect(page.locator("#detail-pubs")).to_contain_text("<b>from the console</b>")

        # A user: bob's connection is on the other node; disconnecting it reaches him there.
        await page.goto(one.http + "/admin#user/bob")
        await expect(page.locator("#connections tbody tr")).to_have_count(1, timeout=WAIT)
        await expect(page.locator("#connections tbody tr")).to_contain_text("another node")
        await screenshot(page, "admin-user")
        await page.click("#disconnect-user")
        await expect(page.locator("#flash")).to_contain_text("bob disconnected")
        with pytest.raises(ClientClosed) as closed:
            await asyncio.wait_for(anext(news), 5 * UNIT)
        assert closed.value.code == DisconnectCode.FORCE_DISCONNECT

        # The chat rooms and the notifications of the last hour.
        await page.click("#tabs a[data-page='rooms']")
        await expect(page.locator("#rooms tbody")).to_contain_text("lobby", timeout=WAIT)
        await page.click("#tabs a[data-page='notifications']")
        await expect(page.locator("#notes tbody")).to_contain_text("<b>v2</b> is out")
        await screenshot(page, "admin-notifications")

        # At phone width.
        phone = await admin_page(browser, one.http, PHONE)
        await sign_in(phone, PASSWORD)
        await expect(phone.locator("#nodes tr[data-node='node-two']")).to_be_visible(timeout=WAIT)
        await screenshot(phone, "admin-phone")
        width = await phone.evaluate("document.documentElement.scrollWidth")
        assert width <= PHONE["width"], "the page scrolls sideways at phone width"

        # Wrong passwords from one address run into the limit.
        guesser = await admin_page(browser, one.http)
        # Four attempts per address (sign_in_burst) were spent: three above and this one.
        await sign_in(guesser, "guess one")
        await expect(guesser.locator("#sign-in-error")).to_have_text("Wrong password or token.")
        await sign_in(guesser, "guess two")
        await expect(guesser.locator("#sign-in-error")).to_contain_text("Too many attempts")
        # Even the right password waits now.
        await sign_in(guesser, PASSWORD)
        await expect(guesser.locator("#sign-in-error")).to_contain_text("Too many attempts")
        await screenshot(guesser, "admin-rate-limited")

        # Without a session: the API answers 401, whatever is asked.
        for path in ("call/info", "call/publish", "live", "sign-out"):
            reply = await guesser.request.post(
                f"{one.http}/admin/api/{path}", data={"channel": "news", "data": {}}
            )
            assert reply.status == 401, path
        assert elsewhere == []

    audit = [r.getMessage() for r in caplog.records if r.name == "hubbub.admin.audit"]
    assert any("signed in with the password from 127.0.0.1" in line for line in audit)
    assert any(
        line.startswith("admin admin (password) from 127.0.0.1: publish channel='news'")
        and line.endswith("-> ok")
        for line in audit
    ), audit
    assert any("disconnect user='bob' -> ok" in line for line in audit), audit
