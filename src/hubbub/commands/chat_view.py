"""What ``hubbub chat`` shows, and the two terminals it shows it on.

:func:`message_line` and friends turn chat messages into plain lines. Everything that came from
the server is made safe first (:func:`clean`): control characters are replaced, so a message
cannot move the cursor, change colours or rewrite the screen, and nothing is ever interpreted
as markup.

:class:`TerminalScreen` is the interactive one (prompt_toolkit): lines print above the input
line, the bottom toolbar shows the connection state and who is typing, and every change of the
input calls back (for typing notices). :class:`LineScreen` is for pipes and files: it reads
lines from stdin and prints plain lines, with no toolbar.
"""

from __future__ import annotations

import asyncio
import re
import sys
import threading
import time
from collections.abc import Callable
from datetime import datetime
from typing import Any, Protocol

# C0 and C1 control characters, and the bidirectional overrides that can make text read
# differently from what was sent.
_UNSAFE = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f\u202a-\u202e\u2066-\u2069]")

# How each kind of line is styled in the terminal; plain text elsewhere.
STYLES = {
    "time": "#888888",
    "user": "bold",
    "me": "bold #5f87d7",
    "text": "",
    "note": "italic #888888",
    "notice": "#5f875f",
    "error": "#d75f5f",
}

Fragments = list[tuple[str, str]]


def clean(text: str) -> str:
    """``text`` with control characters shown as ``?``; tabs become spaces and newlines stay
    (continuation lines are indented by the caller)."""
    return _UNSAFE.sub("?", text.replace("\t", "    ").replace("\r\n", "\n").replace("\r", "\n"))


def time_label(ts: float, *, now: float | None = None) -> str:
    """``HH:MM`` in local time, with the date in front when it is not today."""
    moment = datetime.fromtimestamp(ts)
    today = datetime.fromtimestamp(time.time() if now is None else now).date()
    if moment.date() == today:
        return moment.strftime("%H:%M")
    return moment.strftime("%Y-%m-%d %H:%M")


def message_line(msg: dict[str, Any], *, me: str, change: str = "") -> Fragments:
    """One message as ``[HH:MM] alice: text``; ``change`` is ``"edit"`` or ``"delete"`` when the
    line reports a change to a message shown before. Deleted messages never show their text."""
    user = clean(str(msg.get("user", "")))
    ts = msg.get("ts")
    stamp = f"[{time_label(float(ts))}] " if isinstance(ts, int | float) else ""
    parts: Fragments = [("time", stamp), ("me" if user == me else "user", user), ("text", ": ")]
    if msg.get("deleted") or change == "delete":
        parts.append(("note", "(message deleted)"))
        return parts
    # Continuation lines line up under the text, so a message cannot pose as several.
    indent = " " * (len(stamp) + len(user) + 2)
    parts.append(("text", clean(str(msg.get("text", ""))).replace("\n", "\n" + indent)))
    if msg.get("edited") or change == "edit":
        parts.append(("note", " (edited)"))
    return parts


def typing_label(users: list[str]) -> str:
    """``bob is typing…`` / ``bob and carol are typing…`` / ``several people are typing…``."""
    names = [clean(u) for u in users]
    if not names:
        return ""
    if len(names) == 1:
        return f"{names[0]} is typing…"
    if len(names) == 2:
        return f"{names[0]} and {names[1]} are typing…"
    return "several people are typing…"


class Screen(Protocol):
    """Where the chat prints lines and reads what the user types."""

    hint: str  # how to use it, one line

    def show(self, parts: Fragments | str, style: str = "text") -> None:
        """Print one line (fragments of (style name, plain text), or a string in ``style``)."""

    def state_changed(self, text: str) -> None:
        """The connection state is ``text`` (``connected``, ``reconnecting…``): called on each
        change of the client's state and twice a second besides."""

    async def read(self, default: str = "") -> str | None:
        """The next line the user entered (``default`` is put back in the input first); None
        when the input ended (Ctrl-D, Ctrl-C, end of file) or :meth:`stop` was called."""

    def stop(self) -> None:
        """Make the pending and every later :meth:`read` return None."""


def _fragments(parts: Fragments | str, style: str) -> Fragments:
    return [(style, parts)] if isinstance(parts, str) else parts


class TerminalScreen:
    """The interactive screen: a prompt_toolkit prompt with a bottom toolbar.

    Args:
        prompt: the text in front of the input.
        toolbar: called on every redraw (at least twice a second) for the toolbar's text.
        on_input: called with the input's text whenever it changes.
    """

    hint = "Enter sends · /help lists commands · Ctrl-D leaves"

    def __init__(
        self, prompt: str, toolbar: Callable[[], str], on_input: Callable[[str], None]
    ) -> None:
        from prompt_toolkit import PromptSession
        from prompt_toolkit.styles import Style

        self._style = Style.from_dict({name: style for name, style in STYLES.items() if style})
        self._session: PromptSession[str] = PromptSession(
            prompt,
            bottom_toolbar=lambda: " " + toolbar(),
            refresh_interval=0.5,  # the typing indicator fades without any other event
            style=self._style,
            # A sent line comes back as the room prints it, so the typed copy would repeat it.
            erase_when_done=True,
        )
        self._session.default_buffer.on_text_changed += lambda buffer: on_input(buffer.text)
        self._stopped = False

    def show(self, parts: Fragments | str, style: str = "text") -> None:
        from prompt_toolkit import print_formatted_text
        from prompt_toolkit.formatted_text import FormattedText

        styled = [(f"class:{name}", text) for name, text in _fragments(parts, style)]
        print_formatted_text(FormattedText(styled), style=self._style)

    def state_changed(self, text: str) -> None:
        app = self._session.app
        if app.is_running:
            app.invalidate()

    async def read(self, default: str = "") -> str | None:
        if self._stopped:
            return None
        try:
            line = await self._session.prompt_async(default=default)
        except (EOFError, KeyboardInterrupt):
            return None
        if line.strip().startswith("/") and not line.strip().startswith("//"):
            self.show(line, "note")  # the erased input, so a command's output has its title
        return line

    def stop(self) -> None:
        self._stopped = True
        app = self._session.app
        if app.is_running:
            app.exit(exception=EOFError())


class LineScreen:
    """Plain lines on stdout, input lines from stdin (a pipe or a file); no toolbar, so
    connection changes are printed as lines."""

    hint = "each line of input is sent · /help lists commands · the end of the input leaves"

    def __init__(self) -> None:
        self._lines: asyncio.Queue[str | None] = asyncio.Queue()
        loop = asyncio.get_running_loop()

        def pump() -> None:
            # A daemon thread: a blocked read of stdin must not keep the process alive.
            for line in sys.stdin:
                loop.call_soon_threadsafe(self._lines.put_nowait, line.rstrip("\n"))
            loop.call_soon_threadsafe(self._lines.put_nowait, None)

        threading.Thread(target=pump, name="hubbub-chat-stdin", daemon=True).start()
        self._stopped = False
        self._last_state = "connected"  # the chat starts once connected

    def show(self, parts: Fragments | str, style: str = "text") -> None:
        print("".join(text for _, text in _fragments(parts, style)), flush=True)

    def state_changed(self, text: str) -> None:
        if text != self._last_state:
            self._last_state = text
            self.show(f"* {text}", "notice")

    async def read(self, default: str = "") -> str | None:
        if self._stopped:
            return None
        line = await self._lines.get()
        if line is None:
            self._stopped = True
        return line

    def stop(self) -> None:
        self._stopped = True
        self._lines.put_nowait(None)
