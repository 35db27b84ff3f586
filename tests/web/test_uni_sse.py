"""A browser's own ``EventSource`` on ``uni_sse`` (no SDK): what a page without any client
library gets from ``hubbub serve --dev``."""

from __future__ import annotations

import json
from urllib.parse import quote

import httpx
from playwright.async_api import Browser

from hubbub.auth import mint_connection_token
from hubbub.config import DEV_SECRET
from tests.conftest import UNIT
from tests.web.conftest import Console, Server

WAIT = 5000 * UNIT  # milliseconds

LISTEN = """
(url) => {
  window.pushes = [];
  window.opened = false;
  const source = new EventSource(url);
  source.onopen = () => { window.opened = true; };
  source.onmessage = (event) => { window.pushes.push(JSON.parse(event.data)); };
  window.source = source;
}
"""


async def test_an_event_source_receives_publications(
    web_server: Server, browser: Browser, console: Console
) -> None:
    console.expect("favicon.ico")  # a plain-text page of the server: Chromium asks for one
    context = await browser.new_context()
    page = await context.new_page()
    # Same origin as the stream: a page of the server itself.
    await page.goto(web_server.base + "/healthz")
    request = {"token": mint_connection_token(DEV_SECRET, "alice"), "subs": {"news": {}}}
    await page.evaluate(LISTEN, "/connection/uni_sse?cf_connect=" + quote(json.dumps(request)))
    await page.wait_for_function("window.pushes.some((p) => p.connect)", timeout=WAIT)
    connect = await page.evaluate("window.pushes.find((p) => p.connect).connect")
    assert set(connect["subs"]) == {"#alice", "news"}
    assert await page.evaluate("window.opened")
    async with httpx.AsyncClient(base_url=web_server.base, timeout=WAIT / 1000) as http:
        for text in ("first", "second"):
            response = await http.post("/api/publish", json={"channel": "news", "data": text})
            response.raise_for_status()
    await page.wait_for_function("window.pushes.filter((p) => p.pub).length === 2", timeout=WAIT)
    pubs = await page.evaluate("window.pushes.filter((p) => p.pub)")
    assert [(p["channel"], p["pub"]["data"]) for p in pubs] == [
        ("news", "first"),
        ("news", "second"),
    ]
    await page.evaluate("window.source.close()")
    await context.close()
