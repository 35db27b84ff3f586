"""``hubbub chat ROOM``: chat in a room of the server's chat application from a terminal.

Joins the room (its channel ``chat:ROOM``; ``--namespace`` for another chat namespace), prints
the last messages and who is online, then prints what happens live above the input line:
messages, edits, deletions, people joining and leaving; who is typing shows in the bottom
toolbar with the connection state. Enter sends;
``/help`` lists the slash commands. Survives server restarts: the client reconnects by itself,
and whatever the live stream could not recover is read back from the room's archive, so every
message is printed exactly once. Without a terminal (stdin or stdout a pipe or a file) it
reads lines from stdin and prints plain lines, and leaves at the end of the input.

Exit codes: 0 after ``/quit``, Ctrl-D, Ctrl-C or the end of the input; 1 when the server
cannot be reached or refuses (and when it disconnects the chat for good); 2 usage errors.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import sys
import time
from dataclasses import dataclass
from typing import Any

import jwt
from websockets.exceptions import ConnectionClosed

from hubbub.client import (
    Client,
    ClientClosed,
    Gap,
    JoinLeave,
    Publication,
    ReplyError,
    State,
    Subscription,
)
from hubbub.client.subscription import SubState
from hubbub.commands.chat_state import Roster, Transcript, users_in
from hubbub.commands.chat_view import (
    LineScreen,
    Screen,
    TerminalScreen,
    clean,
    message_line,
    typing_label,
)
from hubbub.commands.common import (
    CommandError,
    UsageError,
    add_server_options,
    connect_client,
    describe,
    resolve_token,
    websocket_url,
)
from hubbub.config import Settings
from hubbub.extras import MissingExtra, require

TYPING_EVERY = 2.0  # seconds between our typing notices (the server drops extra ones anyway)
TYPING_SHOWN = 3.0  # seconds someone stays "typing…" after their last notice
# After our own reconnect, everyone else is reconnecting too (a server restart): a user missing
# from the room is only reported gone if they are not back within this many seconds.
AWAY_GRACE = 15.0
CATCH_UP_LIMIT = 1000  # messages read back at most to fill one gap in the stream
_LOST = (ConnectionError, TimeoutError, ConnectionClosed)
HELP = [
    "/who            who is in this room now",
    "/rooms          the rooms, with how many people are in each (a page of them)",
    "/rooms more     the next page of rooms",
    "/history [N]    print N earlier messages (default: --history)",
    "/quit           leave (also Ctrl-D or Ctrl-C)",
    "/help           this list",
    "//text          send a message that starts with /",
]


def add_parser(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = commands.add_parser(
        "chat",
        help="chat in a room from the terminal",
        description=describe(__doc__),
        epilog="in the chat: Enter sends, and\n  " + "\n  ".join(HELP),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("room", metavar="ROOM", help="room name (created on first use)")
    parser.add_argument(
        "--history",
        type=int,
        default=30,
        metavar="N",
        help="messages to show on start (default 30)",
    )
    parser.add_argument(
        "--namespace",
        default="chat",
        help="the server's chat namespace, its [chat] namespace (default chat)",
    )
    add_server_options(parser)


@dataclass(frozen=True, slots=True)
class _Reconnected:
    """The client connected again after losing the connection."""


@dataclass(frozen=True, slots=True)
class _Sent:
    """Our own message, as the server stored it."""

    message: dict[str, Any]


_Event = Publication | Gap | JoinLeave | _Reconnected | _Sent | ClientClosed


class Chat:
    """One room on one connection: what was printed, who is here, and the input loop.

    Every printing step runs in one consumer task in arrival order, so a message is printed
    once (messages are remembered by archive id) and a gap is filled before later messages.
    """

    def __init__(
        self, client: Client, sub: Subscription, args: argparse.Namespace, me: str
    ) -> None:
        self.client = client
        self.sub = sub
        self.room: str = args.room
        self.page: int = args.history
        self.me = me
        self.queue: asyncio.Queue[_Event] = asyncio.Queue()
        self.transcript = Transcript()
        self.roster = Roster(AWAY_GRACE)
        self.typing: dict[str, float] = {}  # user -> until when they show as typing
        self.exit_code = 0
        self._lost = False
        self._leaving = False  # no more state news: closing the client is not "disconnected"
        self._typed_at = -TYPING_EVERY
        self._rooms_next: str | None = None  # cursor of the next page of /rooms
        self._rooms_listed = 0  # rooms printed by /rooms and /rooms more so far
        self._tasks: set[asyncio.Task[Any]] = set()
        self.screen: Screen
        if sys.stdin.isatty() and sys.stdout.isatty():
            self.screen = TerminalScreen(f"{me or 'anonymous'}> ", self.toolbar, self.typed)
        else:
            self.screen = LineScreen()

    # -----------------------------------------------------------------------------------------
    # Start and input

    async def run(self, url: str) -> int:
        """Print the room's header, latest messages and who is online, then chat until the
        user leaves; the exit code."""
        self.client.on_state(self._on_state)
        self.sub.on_join_leave(self.queue.put_nowait)
        self.show(f"hubbub chat · room {self.room} · you are {self.me or 'anonymous'} · {url}")
        self.show(self.screen.hint, "note")
        try:
            messages = await self._history(self.page)
            self.show(
                f"-- last {_count(len(messages), 'message')} --"
                if messages
                else "-- no messages yet --"
            )
            for msg in messages:
                self._message(msg)
            await self._who(start=True)
        except ReplyError as exc:
            raise CommandError(f"cannot load room {self.room!r}: {exc.message}") from None
        except (*_LOST, ClientClosed):
            raise CommandError("the connection dropped while loading the room") from None
        for job in (self._pump(), self._consume(), self._tick()):
            self._spawn(job)
        try:
            await self._read_input()
            # Print what is still queued (our last messages) before leaving.
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.queue.join(), 1.0)
        finally:
            self._leaving = True
            for task in self._tasks:
                task.cancel()
            await asyncio.gather(*self._tasks, return_exceptions=True)
        return self.exit_code

    async def _read_input(self) -> None:
        kept = ""
        while True:
            line = await self.screen.read(kept)
            kept = ""
            if line is None:
                return
            text = line.strip()
            if text.startswith("/") and not text.startswith("//"):
                if not await self._command(text):
                    return
            elif text and not await self._send(text.removeprefix("/")):
                kept = line  # give the text back so nothing typed is lost

    def typed(self, text: str) -> None:
        """The input changed: tell the room we are typing, at most every ``TYPING_EVERY``."""
        now = time.monotonic()
        if not text.strip() or text.startswith("/") or now - self._typed_at < TYPING_EVERY:
            return
        if self._subscribed():
            self._typed_at = now
            self._spawn(self._quietly(self.client.rpc("chat.typing", {"room": self.room})))

    def toolbar(self) -> str:
        """Connection state, room and who is typing."""
        now = time.monotonic()
        typing = typing_label(sorted(u for u, until in self.typing.items() if until > now))
        bar = f"{self._state_text()} · {self.room} as {self.me or 'anonymous'}"
        return f"{bar} · {typing}" if typing else bar

    def show(self, parts: Any, style: str = "text") -> None:
        self.screen.show(parts, style)

    # -----------------------------------------------------------------------------------------
    # Commands

    async def _command(self, text: str) -> bool:
        """Run a slash command; False when it is /quit."""
        name, _, rest = text[1:].partition(" ")
        try:
            if name in ("quit", "exit", "q"):
                return False
            if name == "help":
                for line in HELP:
                    self.show(line, "note")
            elif name == "who":
                await self._who()
            elif name == "rooms":
                await self._rooms(rest.strip())
            elif name == "history":
                await self._earlier(rest.strip())
            else:
                self.show(f"! unknown command /{clean(name)}; /help lists them", "error")
        except ReplyError as exc:
            self.show(f"! /{name}: {clean(exc.message)}", "error")
        except (*_LOST, ClientClosed):
            self.show(f"! /{name}: not connected to the server; try again", "error")
        return True

    async def _who(self, *, start: bool = False) -> None:
        """Print who is online now; on ``start`` that is who joins and leaves are news to."""
        presence = await self.client.presence(self.sub.channel)
        if start:
            self.roster.reset(presence)
        users = sorted(users_in(presence))
        self.show(f"online: {', '.join(clean(u) for u in users) or 'nobody'}")

    async def _rooms(self, arg: str) -> None:
        """``/rooms``: the first page of rooms; ``/rooms more``: the next one."""
        if arg not in ("", "more"):
            self.show("! usage: /rooms [more]", "error")
            return
        if arg == "more" and self._rooms_next is None:
            self.show("-- no more rooms; /rooms lists them from the start --")
            return
        after = self._rooms_next if arg == "more" else None
        reply = await self.client.rpc("chat.rooms", {"after": after} if after else {})
        reply = reply if isinstance(reply, dict) else {}
        rooms = reply.get("rooms", [])
        # A server without paging answers every room and no cursor or total.
        nxt, total = reply.get("next"), reply.get("total", len(rooms))
        first = self._rooms_listed + 1 if after else 1
        self._rooms_listed = first + len(rooms) - 1
        self._rooms_next = nxt if isinstance(nxt, str) and nxt else None
        shown = f", {first}-{self._rooms_listed}" if self._rooms_next or after else ""
        self.show(f"{_count(int(total), 'room')}{shown}:")
        for room in rooms:
            mark = "*" if room.get("name") == self.room else " "
            self.show(
                f" {mark} {clean(str(room.get('name')))}: {room.get('online', 0)} online, "
                f"{_count(int(room.get('messages', 0)), 'message')}"
            )
        if self._rooms_next:
            self.show("-- /rooms more for the next page --")

    async def _earlier(self, arg: str) -> None:
        if arg and not arg.isdigit():
            self.show("! usage: /history [N]", "error")
            return
        oldest = self.transcript.oldest
        messages = await self._history(int(arg) if arg else self.page, before=oldest or None)
        messages = [m for m in messages if not oldest or m.get("id", 0) < oldest]
        if not messages:
            self.show("-- no earlier messages --")
            return
        self.show(f"-- {_count(len(messages), 'earlier message')} --")
        for msg in messages:
            self._message(msg)
        self.show("-- end of earlier messages --")

    async def _send(self, text: str) -> bool:
        """Send ``text``; False (after saying why) when it was not sent."""
        if not await self._wait_subscribed(5.0):
            self.show("! not sent: not connected to the server (reconnecting…)", "error")
            return False
        try:
            reply = await self.client.rpc("chat.send", {"room": self.room, "text": text})
        except ReplyError as exc:
            self.show(f"! not sent: {clean(exc.message)}", "error")
            return False
        except ClientClosed as exc:
            self.show(f"! not sent: disconnected: {clean(exc.reason)}", "error")
            return False
        except _LOST:
            self.show("! not sent? the connection dropped before the server answered", "error")
            return False
        if isinstance(reply, dict) and isinstance(reply.get("message"), dict):
            self.queue.put_nowait(_Sent(reply["message"]))
        return True

    # -----------------------------------------------------------------------------------------
    # What arrives

    async def _pump(self) -> None:
        try:
            async for item in self.sub:
                self.queue.put_nowait(item)
        except ClientClosed as exc:
            self.queue.put_nowait(exc)
        else:
            self.queue.put_nowait(ClientClosed(0, "the server removed us from the room"))

    async def _consume(self) -> None:
        while True:
            event = await self.queue.get()
            try:
                await self._handle(event)
            except ReplyError as exc:
                self.show(f"! {clean(exc.message)}", "error")
            except _LOST:
                pass  # the next reconnect reads back whatever this missed
            except ClientClosed:
                pass  # the end of the subscription's iterator reports it
            finally:
                self.queue.task_done()

    async def _handle(self, event: _Event) -> None:
        if isinstance(event, Publication):
            self._publication(event.data)
        elif isinstance(event, _Sent):
            self._message(event.message)
        elif isinstance(event, JoinLeave):
            self._join_leave(event)
        elif isinstance(event, Gap):
            await self._catch_up()
        elif isinstance(event, _Reconnected):
            await self._after_reconnect()
        else:
            self.show(f"! disconnected: {clean(event.reason)} ({event.code})", "error")
            self.exit_code = 1
            self.screen.stop()

    def _publication(self, data: Any) -> None:
        if not isinstance(data, dict):
            return  # not from the chat service
        kind = data.get("type")
        msg = data.get("message")
        if kind == "typing" and isinstance(data.get("user"), str) and data["user"] != self.me:
            self.typing[data["user"]] = time.monotonic() + TYPING_SHOWN
        elif kind == "message" and isinstance(msg, dict):
            self._message(msg)
        elif kind in ("edit", "delete") and isinstance(msg, dict):
            self._changed(msg, str(kind))

    def _message(self, msg: dict[str, Any]) -> None:
        self.typing.pop(str(msg.get("user")), None)  # they sent what they were typing
        if self.transcript.add(msg):
            self.show(message_line(msg, me=self.me))

    def _changed(self, msg: dict[str, Any], kind: str) -> None:
        if self.transcript.change(msg, kind):
            self.show(message_line(msg, me=self.me, change=kind))

    def _join_leave(self, event: JoinLeave) -> None:
        news = self.roster.event(event.info.user, event.info.client, event.joined)
        if news:
            self.show(f"* {clean(event.info.user)} {news}", "notice")

    async def _after_reconnect(self) -> None:
        if not await self._wait_subscribed(10.0):
            return  # lost again: the next reconnect does this
        presence = await self.client.presence(self.sub.channel)
        for user in self.roster.reconnected(presence, time.monotonic()):
            self.show(f"* {clean(user)} joined", "notice")
        # Even a recovered stream can miss a message (stored, but its publish failed).
        await self._catch_up()

    async def _catch_up(self) -> None:
        """Print what the archive has and the screen lacks since the oldest message printed:
        read pages back until one reaches a message printed before (or nothing is older)."""
        newest = self.transcript.newest
        archive: list[dict[str, Any]] = []
        before: int | None = None
        while len(archive) < CATCH_UP_LIMIT:
            page = await self._history(self.page, before=before)
            archive.extend(page)
            if len(page) < self.page or page[0].get("id", 0) <= newest:
                break
            before = page[0].get("id")
        else:
            self.show(f"-- more than {CATCH_UP_LIMIT} messages were missed; the newest follow --")
        for msg, change in self.transcript.missing(archive):
            self.show(message_line(msg, me=self.me, change=change))

    async def _tick(self) -> None:
        while True:
            await asyncio.sleep(0.5)
            for user in self.roster.expire(time.monotonic()):
                self.show(f"* {clean(user)} left", "notice")
            self.screen.state_changed(self._state_text())  # also follows the subscription

    # -----------------------------------------------------------------------------------------
    # Helpers

    async def _history(self, limit: int, before: int | None = None) -> list[dict[str, Any]]:
        args: dict[str, Any] = {"room": self.room, "limit": limit}
        if before is not None:
            args["before"] = before
        reply = await self.client.rpc("chat.history", args)
        messages = reply.get("messages", []) if isinstance(reply, dict) else []
        return [m for m in messages if isinstance(m, dict)]

    def _on_state(self, state: State) -> None:
        if self._leaving:
            return
        if state is State.CONNECTED and self._lost:
            self._lost = False
            self.queue.put_nowait(_Reconnected())
        elif state is State.CONNECTING:
            self._lost = True
        self.screen.state_changed(self._state_text())

    def _state_text(self) -> str:
        if self.client.state is State.DISCONNECTED:
            return "disconnected"
        # The subscription drops the moment the connection does, while the client may report
        # its new state only when it tries again; and a connection is only useful once the room
        # is subscribed again.
        return "connected" if self._subscribed() else "reconnecting…"

    def _subscribed(self) -> bool:
        return self.client.state is State.CONNECTED and self.sub.state is SubState.SUBSCRIBED

    async def _wait_subscribed(self, within: float) -> bool:
        deadline = time.monotonic() + within
        while not self._subscribed():
            if self.client.state is State.DISCONNECTED or time.monotonic() > deadline:
                return False
            await asyncio.sleep(0.05)
        return True

    def _spawn(self, job: Any) -> None:
        task = asyncio.ensure_future(job)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    @staticmethod
    async def _quietly(call: Any) -> None:
        with contextlib.suppress(ReplyError, ClientClosed, *_LOST):
            await call


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}{'' if n == 1 else 's'}"


def _user_of(args: argparse.Namespace, token: str) -> str:
    """Who we are: ``--user``, else the token's subject (read, not verified: only shown)."""
    if args.user:
        return str(args.user)
    try:
        claims = jwt.decode(token, options={"verify_signature": False})
    except jwt.PyJWTError:
        return ""
    return str(claims.get("sub", ""))


async def _chat(args: argparse.Namespace, token: str) -> int:
    client = Client(args.url, token=token)
    try:
        await connect_client(client, args.retry, "chat")
    except ClientClosed as exc:
        raise CommandError(
            f"the server refused the connection: {exc.reason} ({exc.code})"
        ) from None
    try:
        try:
            sub = await client.subscribe(f"{args.namespace}:{args.room}", join_leave=True)
        except ReplyError as exc:
            raise CommandError(f"cannot join room {args.room!r}: {exc.message}") from None
        chat = Chat(client, sub, args, _user_of(args, token))
        if isinstance(chat.screen, TerminalScreen):
            from prompt_toolkit.patch_stdout import patch_stdout

            # Anything else printed (a warning) goes above the input line too.
            with patch_stdout(raw=True):
                return await chat.run(args.url)
        return await chat.run(args.url)
    finally:
        await client.close()


def run(args: argparse.Namespace, settings: Settings) -> int:
    args.url = websocket_url(args.url)
    if args.history < 1:
        raise UsageError("--history must be 1 or more")
    token = resolve_token(args, settings)
    if sys.stdin.isatty() and sys.stdout.isatty():
        try:
            require("chat-cli")  # the interactive screen; pipes and files need nothing more
        except MissingExtra as exc:
            raise CommandError(str(exc)) from None
    try:
        return asyncio.run(_chat(args, token))
    except KeyboardInterrupt:
        return 0
