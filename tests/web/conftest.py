"""Browser tests: a real ``hubbub serve --dev`` process and Debian's Chromium under Playwright.

``make test`` installs Chromium (``/usr/bin/chromium``) with apt-get when it is missing;
Playwright's own browser download is not used. Screenshots go to ``test-artifacts/`` (or
``$HUBBUB_TEST_ARTIFACTS``) for people to look at.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from playwright.async_api import Browser, Page, async_playwright, expect

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


@pytest.fixture
async def web_server(tmp_path: Path) -> AsyncIterator[Server]:
    server = Server(tmp_path)
    await server.start()
    try:
        yield server
    finally:
        await server.stop()


@pytest.fixture
async def browser() -> AsyncIterator[Browser]:
    assert os.path.exists(CHROMIUM), (  # noqa: ASYNC240 (one stat, before the loop is busy)
        f"{CHROMIUM} is missing: run `make test-deps` (apt-get chromium)"
    )
    async with async_playwright() as playwright:
        launched = await playwright.chromium.launch(
            executable_path=CHROMIUM,
            args=["--no-sandbox", "--disable-gpu", "--disable-background-networking"],
        )
        try:
            yield launched
        finally:
            await launched.close()


class Errors(list[str]):
    """JavaScript errors and dialogs a page raised; a test asserts there were none."""


async def open_page(browser: Browser, base: str, name: str, errors: Errors) -> Page:
    """A new browser context signed in as ``name`` on the chat page, connected."""
    context = await browser.new_context(viewport={"width": 1200, "height": 760})
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
