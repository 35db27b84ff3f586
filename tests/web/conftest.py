"""Browser tests: a real ``hubbub serve --dev`` process and Debian's Chromium under Playwright.

``make test`` installs Chromium (``/usr/bin/chromium``) with apt-get when it is missing;
Playwright's own browser download is not used. Screenshots go to ``test-artifacts/`` (or
``$HUBBUB_TEST_ARTIFACTS``) for people to look at.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import signal
import socket
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from playwright.async_api import (
    Browser,
    BrowserContext,
    ConsoleMessage,
    Error,
    Page,
    ViewportSize,
    WebError,
    async_playwright,
    expect,
)

from tests.conftest import UNIT

CHROMIUM = "/usr/bin/chromium"
WAIT = 5000 * UNIT  # milliseconds
ARTIFACTS = Path(
    os.environ.get("HUBBUB_TEST_ARTIFACTS", Path(__file__).parents[2] / "test-artifacts")
)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


class Server:
    """``hubbub serve --dev`` in its own folder (its SQLite file lives there), restartable on
    the same port."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.port = free_port()
        self.proc: asyncio.subprocess.Process | None = None

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def start(self) -> None:
        log = (self.folder / "server.log").open("ab")
        self.proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "hubbub", "serve", "--dev", "--port", str(self.port),
            cwd=self.folder, stdout=log, stderr=log,
        )  # fmt: skip
        log.close()
        for _ in range(int(200 * UNIT)):
            with contextlib.suppress(OSError):
                _, writer = await asyncio.open_connection("127.0.0.1", self.port)
                writer.close()
                return
            if self.proc.returncode is not None:
                break
            await asyncio.sleep(0.05)
        raise AssertionError(f"hubbub serve did not start: {self.log()}")

    def log(self) -> str:
        return (self.folder / "server.log").read_text(errors="replace")[-3000:]

    async def kill(self) -> None:
        """SIGKILL: no drain, no goodbye; what is stored must survive this."""
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        await self.proc.wait()

    async def stop(self) -> None:
        if self.proc is not None and self.proc.returncode is None:
            self.proc.terminate()
            await asyncio.wait_for(self.proc.wait(), 15 * UNIT)


class Console:
    """What every page of a test wrote to the browser console as an error or a warning, and
    the exceptions it left uncaught. The ``browser`` fixture fails the test if any is left
    that the test did not announce with :meth:`expect`."""

    def __init__(self) -> None:
        self.problems: list[str] = []
        self.expected: list[re.Pattern[str]] = []
        self.contexts: list[BrowserContext] = []

    def expect(self, pattern: str) -> None:
        """Messages matching ``pattern`` (a regular expression) are part of the test's story,
        such as the browser reporting a refused connection while the test has the server
        down."""
        self.expected.append(re.compile(pattern))

    def watch(self, context: BrowserContext) -> None:
        self.contexts.append(context)
        context.on("console", self._console)
        context.on("weberror", self._weberror)

    async def close_pages(self) -> None:
        """Close every page: call it before stopping a server the pages are connected to, or
        their attempts to reconnect would be reported."""
        for context in self.contexts:
            with contextlib.suppress(Error):
                await context.close()
        self.contexts.clear()

    def _console(self, message: ConsoleMessage) -> None:
        if message.type in ("error", "warning"):
            where = message.location.get("url", "")
            self.problems.append(f"console {message.type}: {message.text} ({where})")

    def _weberror(self, error: WebError) -> None:
        self.problems.append(f"uncaught: {error.error}")

    def unexpected(self) -> list[str]:
        return [p for p in self.problems if not any(e.search(p) for e in self.expected)]


@pytest.fixture
def console() -> Console:
    return Console()


@pytest.fixture
async def web_server(tmp_path: Path, console: Console) -> AsyncIterator[Server]:
    server = Server(tmp_path)
    await server.start()
    try:
        yield server
    finally:
        await console.close_pages()
        await server.stop()


@pytest.fixture
async def browser(console: Console) -> AsyncIterator[Browser]:
    """Chromium; every context it opens reports its console to ``console``, and the test fails
    at teardown on any error or warning there that it did not expect."""
    assert os.path.exists(CHROMIUM), (  # noqa: ASYNC240 (one stat, before the loop is busy)
        f"{CHROMIUM} is missing: run `make test-deps` (apt-get chromium)"
    )
    async with async_playwright() as playwright:
        launched = await playwright.chromium.launch(
            executable_path=CHROMIUM,
            args=["--no-sandbox", "--disable-gpu", "--disable-background-networking"],
        )
        new_context = launched.new_context

        async def watched_context(**kwargs: Any) -> BrowserContext:
            context = await new_context(**kwargs)
            console.watch(context)
            return context

        launched.new_context = watched_context  # type: ignore[method-assign]
        try:
            yield launched
        finally:
            with contextlib.suppress(Error):
                await launched.close()
    unexpected = console.unexpected()
    assert not unexpected, "the pages wrote to the console:\n" + "\n".join(unexpected)


class Errors(list[str]):
    """JavaScript errors and dialogs a page raised; a test asserts there were none."""


DESKTOP: ViewportSize = {"width": 1280, "height": 800}
PHONE: ViewportSize = {"width": 390, "height": 844}


async def open_page(
    browser: Browser,
    base: str,
    name: str,
    errors: Errors,
    viewport: ViewportSize | None = None,
) -> Page:
    """A new browser context signed in as ``name`` on the chat page, connected; a desktop
    window unless ``viewport`` says otherwise."""
    context = await browser.new_context(viewport=viewport or DESKTOP)
    page = await context.new_page()
    page.on("pageerror", lambda exc: errors.append(f"{name}: {exc}"))
    page.on("dialog", lambda dialog: errors.append(f"{name}: dialog {dialog.message!r}"))
    await page.goto(base + "/")
    await page.fill("#login-name", name)
    await page.click("#login-form button")
    await page.wait_for_selector("#status[data-state=connected]", timeout=5000 * UNIT)
    await expect(page.locator("#text")).to_be_enabled(timeout=WAIT)
    return page


async def screenshot(page: Page, name: str) -> Path:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)  # noqa: ASYNC240 (test helper)
    path = ARTIFACTS / f"{name}.png"
    await page.screenshot(path=str(path))
    return path
