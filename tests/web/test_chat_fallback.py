"""The chat page where WebSocket cannot get through: the npm ``centrifuge`` SDK the page loads
falls back by itself to HTTP streaming (``/connection/http_stream`` + ``/emulation``), and the
whole session works there: connect, a room, messages both ways, presence, history, recovery
after the stream is cut, RPCs, and the refresh of an expiring connection token."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

import httpx
from playwright.async_api import Browser, Page, Request, Route, expect

from hubbub.auth import mint_connection_token
from hubbub.config import DEV_SECRET
from tests.conftest import UNIT
from tests.web.conftest import DESKTOP, Console, Errors, Server, open_page, screenshot

WAIT = 5000 * UNIT  # milliseconds
TOKEN_TTL = 4  # seconds: the SDK refreshes the token within the test

# What a network that lets no WebSocket through looks like to a page: the socket is created,
# then fails at once (error, then close 1006), and never opens.
BLOCK_WEBSOCKET = """
(() => {
  class BlockedWebSocket extends EventTarget {
    constructor(url) {
      super();
      this.url = String(url);
      this.readyState = BlockedWebSocket.CONNECTING;
      this.protocol = "";
      this.extensions = "";
      this.bufferedAmount = 0;
      this.binaryType = "blob";
      window.blockedWebSockets = (window.blockedWebSockets || 0) + 1;
      setTimeout(() => {
        this.readyState = BlockedWebSocket.CLOSED;
        const error = new Event("error");
        if (this.onerror) this.onerror(error);
        this.dispatchEvent(error);
        const close = new CloseEvent("close", { code: 1006, reason: "", wasClean: false });
        if (this.onclose) this.onclose(close);
        this.dispatchEvent(close);
      }, 0);
    }
    send() {
      throw new DOMException("the socket is not open", "InvalidStateError");
    }
    close() {}
  }
  Object.assign(BlockedWebSocket, { CONNECTING: 0, OPEN: 1, CLOSING: 2, CLOSED: 3 });
  window.WebSocket = BlockedWebSocket;
})();
"""


@dataclass
class Wire:
    """What one page sent: its token requests and the commands of its ``/emulation`` POSTs."""

    tokens: int = 0
    streams: int = 0
    commands: list[dict[str, Any]] = field(default_factory=list)

    def on_request(self, request: Request) -> None:
        if request.url.endswith("/connection/http_stream"):
            self.streams += 1
        if request.url.endswith("/emulation") and request.post_data:
            data = json.loads(request.post_data)["data"]
            self.commands.extend(json.loads(line) for line in data.split("\n") if line)

    def named(self, name: str) -> list[dict[str, Any]]:
        return [c[name] for c in self.commands if name in c]

    def rpcs(self, method: str) -> int:
        return sum(1 for c in self.named("rpc") if c.get("method") == method)


async def open_blocked_page(
    browser: Browser, base: str, name: str, errors: Errors
) -> tuple[Page, Wire]:
    """Like ``open_page``, in a browser where WebSocket never connects; the development token
    endpoint answers tokens that expire in ``TOKEN_TTL`` seconds (signed with the development
    secret, so the server takes them), so that the SDK must refresh them."""
    wire = Wire()
    context = await browser.new_context(viewport=DESKTOP)
    await context.add_init_script(BLOCK_WEBSOCKET)

    async def short_token(route: Route) -> None:
        wire.tokens += 1
        user = json.loads(route.request.post_data or "{}")["user"]
        token = mint_connection_token(DEV_SECRET, user, ttl=TOKEN_TTL)
        await route.fulfill(json={"user": user, "token": token})

    await context.route("**/web/token", short_token)
    page = await context.new_page()
    page.on("pageerror", lambda exc: errors.append(f"{name}: {exc}"))
    page.on("request", wire.on_request)
    await page.goto(base + "/")
    await page.fill("#login-name", name)
    await page.click("#login-form button")
    status = page.locator("#status")
    await expect(status).to_have_attribute("data-state", "connected", timeout=WAIT)
    await expect(status).to_have_attribute("data-transport", "http_stream")
    await expect(page.locator("#text")).to_be_enabled(timeout=WAIT)
    assert await page.evaluate("window.blockedWebSockets") >= 1  # WebSocket was tried first
    return page, wire


async def send(page: Page, text: str) -> None:
    await page.fill("#text", text)
    await page.press("#text", "Enter")
    await expect(page.locator("#text")).to_have_value("", timeout=WAIT)


async def test_without_websocket_the_page_falls_back_to_http_streaming(
    browser: Browser, console: Console, web_server: Server
) -> None:
    # While the page is offline (below) its attempts to reconnect fail in the console.
    console.expect(r"ERR_INTERNET_DISCONNECTED")
    errors = Errors()
    alice, alice_wire = await open_blocked_page(browser, web_server.base, "alice", errors)
    bob, bob_wire = await open_blocked_page(browser, web_server.base, "bob", errors)

    # A room of their own (created by a subscription), messages both ways, presence.
    for page in (alice, bob):
        await page.fill("#new-room-name", "fallback")
        await page.press("#new-room-name", "Enter")
        await expect(page.locator("#room-title")).to_have_text("# fallback", timeout=WAIT)
        await expect(page.locator("#text")).to_be_enabled(timeout=WAIT)
    await send(alice, "over http_stream")
    await expect(bob.locator("#message-list")).to_contain_text("over http_stream", timeout=WAIT)
    await send(bob, "and back")
    await expect(alice.locator("#message-list")).to_contain_text("and back", timeout=WAIT)
    for page in (alice, bob):
        await expect(page.locator("#online li")).to_have_count(2, timeout=WAIT)
    assert alice_wire.rpcs("chat.send") == 1 and alice_wire.rpcs("chat.rooms") >= 1

    # The token expires within seconds: the SDK asks the page for a new one and refreshes the
    # connection in band, on the same stream.
    streams, tokens = bob_wire.streams, bob_wire.tokens
    for _ in range(int(40 * UNIT)):
        if bob_wire.named("refresh"):
            break
        await bob.wait_for_timeout(250)
    assert bob_wire.named("refresh"), "no refresh command was sent"
    assert bob_wire.tokens > tokens and bob_wire.streams == streams  # no reconnect
    await bob.wait_for_timeout(TOKEN_TTL * 1000)  # past the first token's expiry
    await send(bob, "after the refresh")
    await expect(alice.locator("#message-list")).to_contain_text("after the refresh", timeout=WAIT)

    # History: a reload shows the room's messages from the archive (an RPC), over the stream.
    await bob.reload()
    await expect(bob.locator("#status")).to_have_attribute(
        "data-transport", "http_stream", timeout=WAIT
    )
    texts = bob.locator("#message-list .msg-text")
    await expect(texts).to_have_text(
        ["over http_stream", "and back", "after the refresh"], timeout=WAIT
    )

    # The stream is cut (the network goes away); what alice sends meanwhile reaches bob when
    # he is back, recovered from the room's stream: the SDK resubscribes with recover, and
    # the page has no need to reload the archive.
    histories, tokens = bob_wire.rpcs("chat.history"), bob_wire.tokens
    await bob.context.set_offline(True)
    await expect(bob.locator("#status")).to_have_attribute(
        "data-state", "disconnected", timeout=WAIT
    )
    await expect(bob.locator("#text")).to_be_disabled()
    await send(alice, "while bob was away")
    await send(alice, "still away")
    await screenshot(bob, "chat-fallback-offline")
    await bob.context.set_offline(False)
    await expect(bob.locator("#status")).to_have_attribute("data-state", "connected", timeout=WAIT)
    await expect(bob.locator("#status")).to_have_attribute("data-transport", "http_stream")
    await expect(texts).to_have_text(
        ["over http_stream", "and back", "after the refresh", "while bob was away", "still away"],
        timeout=WAIT,
    )
    resubscribe = bob_wire.named("subscribe")[-1]
    assert resubscribe["channel"] == "chat:fallback" and resubscribe.get("recover") is True
    assert bob_wire.rpcs("chat.history") == histories
    assert bob_wire.tokens > tokens  # the page gave a fresh token for the new connection

    # The personal channel (a server-side subscription) on the same stream: the bell.
    async with httpx.AsyncClient(base_url=web_server.base, timeout=5) as http:
        response = await http.post(
            "/api/notify", json={"user": "bob", "title": "Fallback", "body": "over the stream"}
        )
        assert response.status_code == 200, response.text
    await expect(bob.locator("#badge")).to_have_text("1", timeout=WAIT)
    await expect(bob.locator(".toast")).to_contain_text("over the stream")
    await screenshot(bob, "chat-fallback-http-stream")
    assert errors == []


async def test_without_websocket_and_http_streaming_the_page_uses_sse(
    browser: Browser, console: Console, web_server: Server
) -> None:
    # The refused stream requests show in the console as failed loads.
    console.expect(r"Failed to load resource: net::ERR_FAILED")
    async with httpx.AsyncClient(base_url=web_server.base, timeout=5) as http:
        page = await http.get("/")
        policy = page.headers["content-security-policy"]
        assert "connect-src 'self';" in policy and "ws:" not in policy  # nothing wider
        config = (await http.get("/web/config")).json()
        assert config["http_stream"] == "/connection/http_stream"
        assert config["sse"] == "/connection/sse" and config["emulation"] == "/emulation"
    errors = Errors()
    context = await browser.new_context(viewport=DESKTOP)
    await context.add_init_script(BLOCK_WEBSOCKET)
    await context.route("**/connection/http_stream", lambda route: route.abort())
    carol = await context.new_page()
    carol.on("pageerror", lambda exc: errors.append(f"carol: {exc}"))
    await carol.goto(web_server.base + "/")
    await carol.fill("#login-name", "carol")
    await carol.click("#login-form button")
    status = carol.locator("#status")
    await expect(status).to_have_attribute("data-state", "connected", timeout=WAIT)
    await expect(status).to_have_attribute("data-transport", "sse")
    await expect(carol.locator("#text")).to_be_enabled(timeout=WAIT)

    # With someone on WebSocket in the same room: both ways, and each sees the other.
    dave = await open_page(browser, web_server.base, "dave", errors)
    await expect(dave.locator("#status")).to_have_attribute("data-transport", "websocket")
    await send(carol, "from sse")
    await expect(dave.locator("#message-list")).to_contain_text("from sse", timeout=WAIT)
    await send(dave, "from websocket")
    await expect(carol.locator("#message-list")).to_contain_text("from websocket", timeout=WAIT)
    for each in (carol, dave):
        await expect(each.locator("#online li")).to_have_count(2, timeout=WAIT)
    await screenshot(carol, "chat-fallback-sse")
    assert errors == []
