"""``hubbub notify`` and ``hubbub chat`` as people use them: a real ``hubbub serve`` process,
and for the chat a real terminal (tmux) that is typed into and read back from the screen."""

from __future__ import annotations

import asyncio
import json
import os
import re
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from hubbub.auth import mint_connection_token
from hubbub.client import Publication, connect
from hubbub.commands.chat_state import Roster, Transcript
from hubbub.config import DEV_SECRET
from tests.conftest import UNIT

HUBBUB = [sys.executable, "-m", "hubbub"]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


class Server:
    """``hubbub serve --dev`` in a folder of its own (where it keeps ``hubbub.db``)."""

    def __init__(self, folder: Path, port: int) -> None:
        self.folder = folder
        self.port = port
        self.url = f"ws://127.0.0.1:{port}/connection/websocket"
        self.api = f"http://127.0.0.1:{port}/api"
        self.proc: subprocess.Popen[bytes] | None = None
        self.starts = 0

    def start(self) -> None:
        self.starts += 1
        log = (self.folder / f"serve-{self.starts}.log").open("wb")
        self.proc = subprocess.Popen(
            [*HUBBUB, "serve", "--dev", "--port", str(self.port)],
            cwd=self.folder,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        log.close()
        deadline = time.monotonic() + 15 * UNIT
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(f"hubbub serve exited: {self.log()}")
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.2).close()
                return
            except OSError:
                time.sleep(0.05)
        raise AssertionError(f"hubbub serve did not listen on {self.port}: {self.log()}")

    def kill(self) -> None:
        """SIGKILL: no drain, no goodbye to the clients."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(10)

    def log(self) -> str:
        return (self.folder / f"serve-{self.starts}.log").read_text(errors="replace")


@contextmanager
def serving(folder: Path) -> Iterator[Server]:
    server = Server(folder, free_port())
    server.start()
    try:
        yield server
    finally:
        server.kill()


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    with serving(tmp_path_factory.mktemp("serve")) as running:
        yield running


def hubbub(*args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*HUBBUB, *args], input=stdin, capture_output=True, text=True, timeout=30 * UNIT
    )


# ---------------------------------------------------------------------------------------------
# hubbub notify


async def test_notify_reaches_the_users_connections(server: Server) -> None:
    alice = mint_connection_token(DEV_SECRET, "alice")
    bob = mint_connection_token(DEV_SECRET, "bob")
    async with connect(server.url, token=alice) as client, connect(server.url, token=bob):
        inbox = client.subscription("#alice")
        assert inbox is not None, "the personal channel is subscribed by the server"
        proc = await asyncio.create_subprocess_exec(
            *HUBBUB, "notify", "alice", "hello from the terminal", "--title", "Hi",
            "--link", "/inbox", "--data", '{"order": 7}', "--api", server.api,
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        )  # fmt: skip
        out, err = await asyncio.wait_for(proc.communicate(), 20 * UNIT)
        assert proc.returncode == 0, err.decode()
        printed = re.fullmatch(r"notified alice \(id (\d+)\)\n", out.decode())
        assert printed, out.decode()
        push = await asyncio.wait_for(anext(aiter(inbox)), 5 * UNIT)
        assert isinstance(push, Publication)
        note = push.data["notification"]
        assert push.data["type"] == "notification"
        assert note["id"] == int(printed[1])
        assert (note["body"], note["title"], note["link"], note["data"]) == (
            "hello from the terminal", "Hi", "/inbox", {"order": 7}
        )  # fmt: skip

        several = hubbub("notify", "alice", "to both", "--to", "bob", "--api", server.api)
        assert (several.returncode, several.stdout) == (0, "notified 2 users\n"), several.stderr
        everyone = hubbub("notify", "--everyone", "to all", "--api", server.api)
        assert everyone.returncode == 0 and re.fullmatch(r"notified \d+ users\n", everyone.stdout)
        bodies = []
        while len(bodies) < 2:
            push = await asyncio.wait_for(anext(aiter(inbox)), 5 * UNIT)
            assert isinstance(push, Publication)
            bodies.append(push.data["notification"]["body"])
        assert bodies == ["to both", "to all"]


def test_notify_fails_in_one_line(server: Server) -> None:
    nowhere = f"http://127.0.0.1:{free_port()}/api"
    cases = [
        (["nobody", "hi"], 1, "unknown user 'nobody'"),
        (["alice", "hi", "--to", "ghost"], 1, "unknown users 'ghost'"),
        (["alice", "hi", "--link", "javascript:alert(1)"], 1, "link must be"),
        (["alice", ""], 1, "body is empty"),
        (["alice", "hi", "--everyone"], 2, "not both"),
        (["hi"], 2, "give a USER"),
        (["alice", "hi", "--data", "{nope"], 2, "--data must be JSON"),
    ]
    for args, code, fragment in cases:
        result = hubbub("notify", *args, "--api", server.api)
        assert result.returncode == code, (args, result.stderr)
        assert fragment in result.stderr and "Traceback" not in result.stderr, (args, result)
        assert len(result.stderr.strip().splitlines()) == 1, result.stderr
        assert not result.stdout
    down = hubbub("notify", "alice", "hi", "--api", nowhere)
    assert down.returncode == 1
    assert f"cannot reach {nowhere}" in down.stderr and "hubbub serve" in down.stderr
    assert len(down.stderr.strip().splitlines()) == 1 and "Traceback" not in down.stderr


def test_help_of_both_commands() -> None:
    for command in ("notify", "chat"):
        result = hubbub(command, "--help")
        assert result.returncode == 0 and f"usage: hubbub {command}" in result.stdout


# ---------------------------------------------------------------------------------------------
# What the chat remembers


def test_transcript_prints_each_message_once_in_id_order() -> None:
    transcript = Transcript()
    assert transcript.add({"id": 5, "text": "a"}) and transcript.add({"id": 6, "text": "b"})
    assert not transcript.add({"id": 5, "text": "a"})
    archive = [
        {"id": 8, "text": "d"},
        {"id": 3, "text": "older than the screen"},
        {"id": 6, "text": "b"},
        {"id": 5, "text": "a2", "edited": 1.0},
        {"id": 7, "text": "c"},
    ]
    shown = [(m["id"], change) for m, change in transcript.missing(archive)]
    assert shown == [(5, "edit"), (7, ""), (8, "")]
    assert transcript.missing(archive) == []  # read back again: nothing new
    assert transcript.change({"id": 7, "deleted": True}, "delete")
    assert not transcript.change({"id": 7, "deleted": True}, "delete")
    assert (transcript.oldest, transcript.newest) == (5, 8)


def test_roster_says_joined_and_left_once_per_user() -> None:
    roster = Roster(grace=15)
    roster.reset({"c1": {"user": "alice"}, "c2": {"user": "bob"}})
    assert roster.event("bob", "c3", joined=True) is None  # a second tab
    assert roster.event("bob", "c2", joined=False) is None
    assert roster.event("bob", "c3", joined=False) == "left"
    assert roster.event("carol", "c4", joined=True) == "joined"
    assert roster.event("", "c5", joined=True) is None  # anonymous
    # Our reconnect: carol is not back yet, dave came meanwhile.
    assert roster.reconnected({"n1": {"user": "alice"}, "n2": {"user": "dave"}}, now=100) == [
        "dave"
    ]
    assert roster.event("carol", "n3", joined=True) is None  # back within the grace
    assert roster.expire(now=200) == []
    roster.reconnected({"m1": {"user": "alice"}}, now=300)
    assert roster.expire(now=314) == []
    assert roster.expire(now=315) == ["carol", "dave"]


# ---------------------------------------------------------------------------------------------
# hubbub chat without a terminal


def test_chat_from_a_pipe(server: Server) -> None:
    chat = ["chat", "pipes", "--dev", "--url", server.url]
    first = hubbub(*chat, "--user", "carol", stdin="hello from a pipe\n//slash first\n")
    assert first.returncode == 0, first.stderr
    assert "room pipes · you are carol" in first.stdout
    assert re.search(r"^\[\d\d:\d\d\] carol: hello from a pipe$", first.stdout, re.M)
    assert re.search(r"^\[\d\d:\d\d\] carol: /slash first$", first.stdout, re.M)
    # The next visitor finds both in the history, once each.
    second = hubbub(*chat, "--user", "dave", stdin="/who\n")
    assert second.returncode == 0, second.stderr
    assert second.stdout.count("carol: hello from a pipe") == 1
    assert second.stdout.count("carol: /slash first") == 1
    assert "-- last 2 messages --" in second.stdout and "online: dave" in second.stdout
    anonymous = hubbub(*chat)
    assert anonymous.returncode == 2 and "--user" in anonymous.stderr
    bad_room = hubbub("chat", "no room", "--user", "x", "--dev", "--url", server.url)
    assert bad_room.returncode == 1 and "cannot join room 'no room'" in bad_room.stderr
    assert len(bad_room.stderr.strip().splitlines()) == 1


def test_chat_pages_the_room_list(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HUBBUB_CHAT__ROOMS_PAGE_SIZE", "5")
    with serving(tmp_path) as paged:
        for n in range(1, 12):
            request = urllib.request.Request(
                f"{paged.api}/chat_create_room",
                data=json.dumps({"room": f"r{n:02d}"}).encode(),
                headers={"Content-Type": "application/json"},
            )
            with urllib.request.urlopen(request, timeout=5 * UNIT) as response:
                assert response.status == 200
        commands = "/rooms\n/rooms more\n/rooms more\n/rooms more\n/rooms next\n/rooms\n"
        chat = hubbub("chat", "r07", "--dev", "--url", paged.url, "--user", "erin", stdin=commands)
    assert chat.returncode == 0, chat.stderr
    out = chat.stdout
    listed = re.findall(r"^ ([ *]) (\w+): \d+ online", out, re.M)
    names = ["lobby"] + [f"r{n:02d}" for n in range(1, 12)]
    assert [name for _, name in listed] == names + names[:5]  # every room once, then page 1
    assert [name for mark, name in listed if mark == "*"] == ["r07"]
    for heading in ("12 rooms, 1-5:", "12 rooms, 6-10:", "12 rooms, 11-12:"):
        assert out.count(heading) == (2 if heading.endswith("1-5:") else 1), out
    assert out.count("-- /rooms more for the next page --") == 3
    assert "-- no more rooms; /rooms lists them from the start --" in out
    assert "! usage: /rooms [more]" in out


# ---------------------------------------------------------------------------------------------
# hubbub chat in a terminal


class Tmux:
    """A private tmux server (its own socket, no user configuration) with one session per
    chat; every command's exit status is written next to it."""

    def __init__(self, folder: Path) -> None:
        tmux = shutil.which("tmux")
        assert tmux, "tmux is missing: run `make test-deps` (scripts/test-deps.sh installs it)"
        self.base = [tmux, "-L", f"hubbub-test-{uuid.uuid4().hex[:12]}", "-f", os.devnull]
        self.folder = folder

    def tmux(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [*self.base, *args], capture_output=True, text=True, timeout=10 * UNIT
        )

    def start(self, name: str, args: list[str]) -> None:
        status, errors = self.folder / f"{name}.status", self.folder / f"{name}.err"
        command = f"{shlex.join(args)} 2>{shlex.quote(str(errors))}; echo $? >{status}"
        started = self.tmux("new-session", "-d", "-s", name, "-x", "120", "-y", "30", command)
        assert started.returncode == 0, started.stderr

    def type(self, name: str, *keys: str) -> None:
        """Send keys: literal text, or key names with ``key=`` in front (``key=Enter``)."""
        for key in keys:
            if key.startswith("key="):
                self.tmux("send-keys", "-t", name, key[4:])
            else:
                self.tmux("send-keys", "-t", name, "-l", key)

    def screen(self, name: str) -> str:
        """Everything the session printed, scrollback included, wrapped lines joined."""
        return self.tmux("capture-pane", "-p", "-J", "-S", "-", "-t", name).stdout

    def toolbar(self, name: str) -> str:
        lines = [line for line in self.screen(name).splitlines() if line.strip()]
        return lines[-1] if lines else ""

    def wait(self, name: str, check: Callable[[str], bool], what: str, within: float = 10) -> str:
        deadline = time.monotonic() + within * UNIT
        while True:
            text = self.screen(name)
            if check(text):
                return text
            if time.monotonic() > deadline:
                raise AssertionError(f"{name} never showed {what}:\n{text}\n{self.errors(name)}")
            time.sleep(0.1)

    def wait_text(self, name: str, text: str, within: float = 10) -> str:
        return self.wait(name, lambda screen: text in screen, repr(text), within)

    def wait_toolbar(self, name: str, start: str, within: float = 10) -> None:
        """Wait until the bottom line (the toolbar) starts with ``start``."""
        self.wait(
            name, lambda _: self.toolbar(name).strip().startswith(start), f"{start!r}", within
        )

    def alive(self, name: str) -> bool:
        return self.tmux("has-session", "-t", name).returncode == 0

    def exit_status(self, name: str) -> str:
        path = self.folder / f"{name}.status"
        return path.read_text().strip() if path.exists() else ""

    def errors(self, name: str) -> str:
        path = self.folder / f"{name}.err"
        return path.read_text(errors="replace") if path.exists() else ""

    def close(self) -> None:
        self.tmux("kill-server")


@pytest.mark.tmux
def test_tmux_is_installed() -> None:
    assert shutil.which("tmux"), "tmux is missing: run `make test-deps`"


@pytest.mark.tmux
@pytest.mark.timeout(120)
def test_two_people_chat_through_a_server_restart(tmp_path: Path) -> None:
    server = Server(tmp_path, free_port())
    term = Tmux(tmp_path)
    try:
        server.start()
        chat = [*HUBBUB, "chat", "lobby", "--dev", "--url", server.url]
        term.start("alice", [*chat, "--user", "alice"])
        term.wait_text("alice", "online: alice")
        term.start("bob", [*chat, "--user", "bob"])
        term.wait_text("bob", "online: alice, bob")
        term.wait_text("alice", "* bob joined")

        term.type("alice", "hello from alice", "key=Enter")
        term.wait_text("bob", "alice: hello from alice")
        term.type("bob", "hello from bob", "key=Enter")
        term.wait_text("alice", "bob: hello from bob")

        # Typing without Enter shows in the other's toolbar (not as a printed line).
        deadline = time.monotonic() + 10 * UNIT
        while "alice is typing" not in term.toolbar("bob"):
            assert time.monotonic() < deadline, f"no typing indicator:\n{term.screen('bob')}"
            term.type("alice", "x")
            time.sleep(0.2)
        term.type("alice", "key=C-u", "still here", "key=Enter")
        term.wait_text("bob", "alice: still here")
        term.wait("bob", lambda _: "typing" not in term.toolbar("bob"), "the indicator gone")
        assert "typing" not in term.screen("bob").replace(term.toolbar("bob"), "")

        term.type("alice", "/who", "key=Enter")
        term.wait_text("alice", "online: alice, bob")

        # The server dies; the chats reconnect to its replacement by themselves.
        server.kill()
        term.wait_toolbar("bob", "reconnecting…")
        server.start()
        # Sent while the chats are still away (or just back): each prints it once either way.
        request = urllib.request.Request(
            f"{server.api}/chat_send",
            data=json.dumps({"room": "lobby", "user": "carol", "text": "while away"}).encode(),
            headers={"Content-Type": "application/json"},
            method="POST",
        )
        with urllib.request.urlopen(request, timeout=10 * UNIT) as response:
            assert "result" in json.loads(response.read()), "chat_send refused"
        for name in ("alice", "bob"):
            term.wait_toolbar(name, "connected ·", within=30)
            term.wait_text(name, "carol: while away")
        term.type("alice", "after the restart", "key=Enter")
        term.wait_text("bob", "alice: after the restart")
        for name in ("alice", "bob"):
            screen = term.wait_text(name, "alice: after the restart")
            for line in ("alice: hello from alice", "bob: hello from bob", "alice: still here",
                         "carol: while away", "alice: after the restart"):  # fmt: skip
                assert screen.count(line) == 1, f"{line!r} in {name}'s screen:\n{screen}"
            assert "Traceback" not in screen and not term.errors(name).strip()

        term.type("alice", "/quit", "key=Enter")
        term.wait_text("bob", "* alice left")
        deadline = time.monotonic() + 10 * UNIT
        while term.alive("alice") and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not term.alive("alice") and term.exit_status("alice") == "0"
        term.type("bob", "key=C-d")
        deadline = time.monotonic() + 10 * UNIT
        while term.alive("bob") and time.monotonic() < deadline:
            time.sleep(0.1)
        assert term.exit_status("bob") == "0", term.errors("bob")
    finally:
        term.close()
        server.kill()
