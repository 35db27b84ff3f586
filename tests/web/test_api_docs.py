"""The interactive API page of ``hubbub serve --dev`` in Chromium: every method listed, one of
them called from the page, nothing loaded from elsewhere."""

from __future__ import annotations

from playwright.async_api import Browser, Request, expect

from tests.conftest import UNIT
from tests.web.conftest import DESKTOP, Server, screenshot

WAIT = 5000 * UNIT  # milliseconds


async def test_the_api_page_lists_every_method_and_calls_one(
    browser: Browser, web_server: Server
) -> None:
    context = await browser.new_context(viewport=DESKTOP)
    page = await context.new_page()
    elsewhere: list[str] = []

    def note(request: Request) -> None:
        if not request.url.startswith((web_server.base, "data:")):
            elsewhere.append(request.url)

    page.on("request", note)
    await page.goto(web_server.base + "/api/docs")
    operations = page.locator(".opblock")
    await expect(operations.first).to_be_visible(timeout=WAIT)
    for method in ("publish", "batch", "notify", "chat_send"):
        await expect(
            page.locator(f".opblock-summary-path[data-path='/api/{method}']")
        ).to_be_visible()
    await screenshot(page, "api-docs")

    info = page.locator(".opblock", has=page.locator("[data-path='/api/info']"))
    await info.locator(".opblock-summary").click()
    await info.get_by_role("button", name="Try it out").click()
    await info.locator("textarea.body-param__text").fill("{}")
    await info.get_by_role("button", name="Execute").click()
    await expect(
        info.locator(".live-responses-table tbody .response-col_status").first
    ).to_have_text("200", timeout=WAIT)
    await expect(info.locator(".live-responses-table")).to_contain_text('"nodes"')
    await screenshot(page, "api-docs-info")
    assert elsewhere == []
