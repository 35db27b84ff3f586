"""Client processes of the chat-shaped load (``chat_load.py``): room members that read, send,
leave and come back, on raw sockets, one uvloop loop per process pinned to the clients' core.

Each process owns whole rooms, so it knows everything sent to them. A room's members are:

- *readers* (all but two): set up in Python, then read by the C loop of ``pump.c`` (see
  ``clients.py``), which counts the marker ``"t":`` that every message, typing signal and
  notification carries once, and samples the latency of messages (their ``"t"`` is the
  sender's ``time.monotonic_ns()``; typing signals and notifications carry a letter there, so
  the C loop counts them without sampling them). Join and leave notices carry no marker;
- one *observer*, read in Python, which tells every delivery's kind apart (message, typing,
  join, leave, notification) and times each of them (``"s"`` carries the clock of the others);
- one *churner*, read in Python too, which leaves the room and comes back (the others' join
  and leave notices), and is left out of the loss accounting: what reaches a member while it
  leaves depends on the order in which the server reads two sockets.

Every member sends from its own connection, Python writing on sockets the C loop reads: a
typing signal, then ``lead`` seconds later a message, once per ``interval``, all the process's
members spread evenly over it.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import os
import random
import re
import time
from typing import Any

from clients import (
    ENGINEIO_PONG,
    HUBBUB_PING,
    HUBBUB_PONG,
    Connection,
    Pump,
    PumpStats,
    Stats,
    client_frame,
    command_queue,
)
from harness import HOST, pin, raise_fd_limit

STAMP = re.compile(rb'"[ts]":(\d+)')
REPLY_ID = re.compile(rb'^\{"id":(\d+),')
ACK_ID = re.compile(rb"^43(\d+)")
EPOCH = re.compile(rb'"epoch":"([^"]*)"')
OFFSET = re.compile(rb'"offset":(\d+)')
KINDS = ("message", "typing", "join", "leave", "notification")
TEXT = "x" * 60  # a message's text: about 100 bytes with its keys and the sender's clock


def message(user: str) -> bytes:
    return b'{"t":%d,"u":"%s","m":"%s"}' % (time.monotonic_ns(), user.encode(), TEXT.encode())


def typing(user: str) -> bytes:
    return b'{"t":"k","s":%d,"u":"%s"}' % (time.monotonic_ns(), user.encode())


def notification() -> bytes:
    return b'{"t":"n","s":%d,"n":"you have mail"}' % time.monotonic_ns()


def kind_of(line: bytes) -> str | None:
    """What a delivered line is, in any of the three protocols (None: a reply or a heartbeat)."""
    if b'"join"' in line:
        return "join"
    if b'"leave"' in line:
        return "leave"
    if b'"t":"k"' in line:
        return "typing"
    if b'"t":"n"' in line:
        return "notification"
    if b'"t":' in line:
        return "message"
    return None


class Member(Connection):
    """A room member's connection: set-up as in ``clients.py`` (the hubbub one subscribes the
    room recoverable and its typing channel plain), then sending, and for observers and
    churners reading in Python, by kind."""

    def __init__(self, spec: dict[str, Any], done: asyncio.Future[None], stats: Stats) -> None:
        super().__init__(spec, done, stats)
        self.user: str = spec["user"]
        self.room: int = spec["room"]
        # The channels as they go into frames: hubbub (room, typing); python-socketio (the
        # user's, the room); Bun (the room).
        self.names = [c.encode() for c in spec["channels"]]
        self.seq = 100
        self.joined = True
        self.counts = dict.fromkeys(KINDS, 0)
        self.latencies: dict[str, list[int]] = {k: [] for k in KINDS if k not in ("join", "leave")}
        self.errors = 0
        self.first_error = ""
        self.waiting: set[bytes] = set()
        self.epoch = b""
        self.offset = 0
        self.recovered = 0  # publications a rejoin recovered

    # -- set-up

    def _subscribe_frames(self) -> list[bytes]:
        chat, typing_channel = self.names
        return [
            b'{"id":2,"subscribe":{"channel":"%s","recoverable":true}}' % chat,
            b'{"id":3,"subscribe":{"channel":"%s"}}' % typing_channel,
        ]

    def _subscribed(self, line: bytes) -> None:
        if line.startswith(b'{"id":2,'):
            self._position(line)  # the room's position: where a rejoin recovers from

    def _ready(self) -> None:
        self.step = -1
        self.on_data = self._stream if self.spec["role"] == "reader" else self._observe
        if not self.done.done():
            self.done.set_result(None)

    def _position(self, line: bytes) -> None:
        epoch = EPOCH.search(line)
        if epoch:
            self.epoch = epoch[1]
        offsets = OFFSET.findall(line)
        if offsets:
            self.offset = max(self.offset, *map(int, offsets))

    # -- sending (protocol by protocol)

    def next_id(self) -> int:
        self.seq += 1
        return self.seq

    def say(self, body: bytes, typing_signal: bool) -> bool:
        """Send a message or a typing signal to the room; False if the connection is gone."""
        kind, transport = self.kind, self.transport
        if transport is None or transport.is_closing():
            return False
        if kind == "hubbub":
            channel = self.names[1 if typing_signal else 0]
            cmd = b'{"id":%d,"publish":{"channel":"%s","data":%s}}' % (
                self.next_id(),
                channel,
                body,
            )
        elif kind == "socketio":
            event = b"typing" if typing_signal else b"msg"
            cmd = b'42["%s",{"room":"%s","data":%s}]' % (event, self.names[1], body)
        else:
            cmd = self.names[0] + b"\n" + body
        transport.write(client_frame(cmd))
        return True

    async def leave(self) -> bool:
        """Leave the room (its typing channel too); whether the server answered."""
        self.joined = False
        return await self._ask(self._room_commands(leave=True))

    async def rejoin(self) -> bool:
        """Come back (hubbub recovers what the room said meanwhile from the room's history);
        whether the server answered."""
        self.joined = await self._ask(self._room_commands(leave=False))
        return self.joined

    def _room_commands(self, leave: bool) -> list[tuple[bytes, bytes]]:
        """(frame, what its answer starts with) for each command."""
        kind = self.kind
        if kind == "hubbub":
            chat, typing_channel = self.names
            out = []
            for channel in (chat, typing_channel):
                seq = self.next_id()
                if leave:
                    body = b'"unsubscribe":{"channel":"%s"}' % channel
                elif channel == chat:
                    body = b'"subscribe":{"channel":"%s","recoverable":true' % channel
                    body += b',"recover":true,"epoch":"%s","offset":%d}' % (
                        self.epoch,
                        self.offset,
                    )
                else:
                    body = b'"subscribe":{"channel":"%s"}' % channel
                out.append((b'{"id":%d,%s}' % (seq, body), b"%d" % seq))
            return out
        if kind == "socketio":
            seq = self.next_id()
            event = b"leave" if leave else b"subscribe"
            room = self.names[1]
            return [(b'42%d["%s","%s"]' % (seq, event, room), b"%d" % seq)]
        room = self.names[0]
        return [((b"-" if leave else b"+") + room, b"left" if leave else b"ready")]

    async def _ask(self, commands: list[tuple[bytes, bytes]]) -> bool:
        loop = asyncio.get_running_loop()
        self.waiting = {answer for _, answer in commands}
        self.waiter = loop.create_future()
        try:
            if self.transport is None or self.transport.is_closing():
                raise ConnectionError("closed by the server")
            for cmd, _ in commands:
                self.send(cmd)
            await asyncio.wait_for(self.waiter, 10)
            return True
        except TimeoutError:
            self.errors += 1
            self.first_error = self.first_error or "no answer to leave/rejoin in 10 s"
        except ConnectionError as exc:
            self.errors += 1
            self.first_error = self.first_error or f"leave/rejoin: {exc}"
        finally:
            self.waiting = set()
        return False

    def _answered(self, key: bytes) -> None:
        self.waiting.discard(key)
        if not self.waiting and self.waiter is not None and not self.waiter.done():
            self.waiter.set_result(None)

    # -- observers and churners: every delivery parsed, by kind

    def _observe(self, data: bytes) -> None:
        now = time.monotonic_ns()
        for opcode, payload in self.frames.feed(data):
            if opcode == 0x9:
                self.send(payload, 0xA)
            elif opcode == 0x1:
                for line in payload.split(b"\n"):
                    self._line(line, now)

    def _line(self, line: bytes, now: int) -> None:
        if self.waiting and self._answer(line):
            return
        kind = kind_of(line)
        if kind is not None:
            self.counts[kind] += 1
            stamp = STAMP.search(line) if kind in self.latencies else None
            if stamp:
                self.latencies[kind].append(now - int(stamp[1]))
            if kind == "message" and self.kind == "hubbub":
                self._position(line)
            return
        if line == HUBBUB_PING and self.kind == "hubbub":
            self.transport.write(HUBBUB_PONG)  # type: ignore[union-attr]
        elif line == b"2" and self.kind == "socketio":
            self.transport.write(ENGINEIO_PONG)  # type: ignore[union-attr]
        elif b'"error"' in line:
            self.errors += 1
            self.first_error = self.first_error or line.decode(errors="replace")[:300]

    def _answer(self, line: bytes) -> bool:
        """Whether ``line`` answers a leave or a rejoin (hubbub's may carry what it recovered:
        counted as ``recovered``, not as deliveries)."""
        if self.kind == "hubbub":
            match = REPLY_ID.match(line)
            if match is None or match[1] not in self.waiting:
                return False
            if b'"subscribe"' in line:
                self._position(line)
                self.recovered += line.count(b'"t":')
            self._answered(match[1])
            return True
        if self.kind == "socketio":
            match = ACK_ID.match(line)
            if match is None or match[1] not in self.waiting:
                return False
            self._answered(match[1])
            return True
        if line in (b"ready", b"left"):
            self._answered(line)
            return True
        return False


# ---------------------------------------------------------------------------------------------
# Notifications


class Notifier:
    """Notifications to users' personal channels: hubbub's through the HTTP API
    (``POST /api/publish``, one keep-alive connection), the others' through a connection of
    their own protocol."""

    def __init__(self, kind: str, port: int, api_key: str, conn: Connection | None) -> None:
        self.kind, self.port, self.api_key, self.conn = kind, port, api_key, conn
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None
        self.errors = 0
        self.first_error = ""

    async def send(self, user: str, body: bytes) -> None:
        if self.kind == "hubbub":
            await self._post(b'{"channel":"#%s","data":%s}' % (user.encode(), body))
        elif self.conn is None or self.conn.transport is None or self.conn.transport.is_closing():
            self.errors += 1
            self.first_error = self.first_error or "the notifier's connection was closed"
        elif self.kind == "socketio":
            self.conn.send(b'42["notify",{"user":"%s","data":%s}]' % (user.encode(), body))
        else:
            self.conn.send(b"user:%s\n%s" % (user.encode(), body))

    async def _post(self, body: bytes) -> None:
        try:
            await self._request(body)
        except (OSError, asyncio.IncompleteReadError, ValueError) as exc:
            self.errors += 1
            self.first_error = self.first_error or f"POST /api/publish: {exc!r}"
            self.close()

    async def _request(self, body: bytes) -> None:
        if self.writer is None or self.writer.is_closing():
            self.reader, self.writer = await asyncio.open_connection(HOST, self.port)
        assert self.reader is not None
        head = (
            f"POST /api/publish HTTP/1.1\r\nHost: {HOST}:{self.port}\r\n"
            f"X-API-Key: {self.api_key}\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\n\r\n"
        )
        self.writer.write(head.encode() + body)
        status = await self.reader.readline()
        length = 0
        headers = []
        while (line := await self.reader.readline()) not in (b"\r\n", b""):
            headers.append(line)
            if line.lower().startswith(b"content-length:"):
                length = int(line.split(b":", 1)[1])
        answer = await self.reader.readexactly(length)
        if b" 200 " not in status or b'"error"' in answer:
            self.errors += 1
            self.first_error = self.first_error or (status + answer).decode(errors="replace")
        if b"connection: close" in b"".join(headers).lower():
            self.close()

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
            self.writer = None


# ---------------------------------------------------------------------------------------------
# One phase of sending


async def _talk(members: list[Member], start: float, plan: dict[str, Any], sent: Any) -> None:
    """Typing signals then, ``lead`` seconds later, messages: each member once per
    ``interval``, the members in a fixed shuffled order, evenly spread."""
    order = list(members)
    random.Random(plan["seed"]).shuffle(order)
    rate = len(order) / plan["interval"]
    total = int(plan["seconds"] * rate)
    lead = plan["lead"]
    typed = said = 0
    while said < total:
        elapsed = time.monotonic() - start
        due_typing = min(total, int(elapsed * rate))
        due_said = min(total, int(max(0.0, elapsed - lead) * rate))
        while typed < due_typing:
            member = order[typed % len(order)]
            typed += 1
            if member.joined and member.say(typing(member.user), True):
                sent["typing"][member.room] += 1
        while said < due_said:
            member = order[said % len(order)]
            said += 1
            if member.joined and member.say(message(member.user), False):
                sent["message"][member.room] += 1
        await asyncio.sleep(0.005)


async def _churn(
    churner: Member, first: float, end: float, plan: dict[str, Any], sent: Any
) -> None:
    """Leave at ``first``, come back ``away`` seconds later, again every ``period``."""
    at = first
    while at < end:
        await asyncio.sleep(max(0.0, at - time.monotonic()))
        if await churner.leave():
            sent["leave"][churner.room] += 1
        await asyncio.sleep(max(0.0, min(at + plan["away"], end) - time.monotonic()))
        if await churner.rejoin():
            sent["join"][churner.room] += 1
        at += plan["period"]


async def _notify(notifier: Notifier, start: float, plan: dict[str, Any], sent: Any) -> None:
    targets: list[tuple[str, str]] = plan["targets"]
    pick = random.Random(plan["seed"] + 1)
    for n in itertools.count():
        at = start + n / plan["notify_rate"]
        if at >= start + plan["seconds"]:
            return
        await asyncio.sleep(max(0.0, at - time.monotonic()))
        user, role = pick.choice(targets)
        await notifier.send(user, notification())
        sent["notification"][role] += 1


async def run_phase(
    members: list[Member], notifier: Notifier | None, plan: dict[str, Any]
) -> dict[str, Any]:
    """Send for ``plan["seconds"]`` from ``plan["start"]`` (a ``time.monotonic()`` shared by
    every process); what was sent, by kind and room (notifications by the target's role)."""
    rooms = sorted({m.room for m in members})
    sent: dict[str, Any] = {k: dict.fromkeys(rooms, 0) for k in ("message", "typing")}
    sent |= {k: dict.fromkeys(rooms, 0) for k in ("join", "leave")}
    sent["notification"] = {"reader": 0, "observer": 0, "churner": 0}
    start = plan["start"]
    await asyncio.sleep(max(0.0, start - time.monotonic()))
    end = start + plan["seconds"]
    churners = [m for m in members if m.spec["role"] == "churner"]
    tasks = [asyncio.create_task(_talk(members, start, plan, sent))]
    for churner in churners:
        # Churners spread evenly over the period, whatever process they are in.
        first = start + plan["period"] * (churner.room % plan["churn_slots"]) / plan["churn_slots"]
        tasks.append(asyncio.create_task(_churn(churner, first, end, plan, sent)))
    if notifier is not None and plan["notify_rate"] > 0:
        tasks.append(asyncio.create_task(_notify(notifier, start, plan, sent)))
    await asyncio.gather(*tasks)
    errors = sum(m.errors for m in members if m.spec["role"] != "reader")
    first_error = next((m.first_error for m in members if m.first_error), "")
    if notifier is not None:
        errors += notifier.errors
        first_error = first_error or notifier.first_error
    return {"sent": sent, "errors": errors, "first_error": first_error}


# ---------------------------------------------------------------------------------------------
# The worker process


async def _open(spec: dict[str, Any], stats: Stats, gate: asyncio.Semaphore) -> Member | None:
    loop = asyncio.get_running_loop()
    async with gate:
        done: asyncio.Future[None] = loop.create_future()
        try:
            _, conn = await asyncio.wait_for(
                loop.create_connection(lambda: Member(spec, done, stats), HOST, spec["port"]), 30
            )
            await asyncio.wait_for(done, 30)
        except (OSError, TimeoutError, ConnectionError) as exc:
            stats.failures.append(str(exc) or type(exc).__name__)
            return None
        return conn


def _report(stats: Stats, pump: Pump | None, members: list[Member], latencies: bool) -> Any:
    readers = pump.stats if pump is not None else None
    observed = {
        role: {k: sum(m.counts[k] for m in members if m.spec["role"] == role) for k in KINDS}
        for role in ("observer", "churner")
    }
    out: dict[str, Any] = {
        "readers": (readers.received if readers is not None else 0) + stats.received,
        "last": max(readers.last_ns if readers is not None else 0, stats.last),
        "closed": (readers.closed if readers is not None else 0) + stats.closed,
        "observed": observed,
        "recovered": sum(m.recovered for m in members),
        "cpu": time.process_time() - stats.cpu,
    }
    if latencies:
        out["reader_latencies"] = pump.collected() if pump is not None else stats.latencies
        out["observer_latencies"] = {
            k: [x for m in members if m.spec["role"] == "observer" for x in m.latencies[k]]
            for k in ("message", "typing", "notification")
        }
    return out


async def _serve(inbox: Any, pipe: Any, library: str | None) -> None:
    stats = Stats()
    members: list[Member] = []
    pump: Pump | None = None
    notifier: Notifier | None = None
    commands = command_queue(inbox)
    while True:
        cmd, arg = await commands.get()
        if cmd == "connect":
            specs, concurrency, notifier_spec = arg
            gate = asyncio.Semaphore(concurrency)
            began = time.monotonic_ns()
            opened = await asyncio.gather(*(_open(s, stats, gate) for s in specs))
            members = [m for m in opened if m is not None]
            readers = [m for m in members if m.spec["role"] == "reader"]
            if library and readers:
                pump = Pump(library, list(readers), PumpStats())
            if notifier_spec is not None:
                conn = None
                if notifier_spec["kind"] != "hubbub":
                    conn = await _open(notifier_spec, stats, gate)
                    if conn is None:
                        stats.failures.append("the notifier could not connect")
                notifier = Notifier(
                    notifier_spec["kind"], notifier_spec["port"], notifier_spec["api_key"], conn
                )
            pipe.send(
                {
                    "opened": len(members),
                    "failures": stats.failures[:5],
                    "failed": len(stats.failures),
                    "began": began,
                    "ended": time.monotonic_ns(),
                }
            )
            stats.failures = []
        elif cmd == "run":
            pipe.send(await run_phase(members, notifier, arg))
        elif cmd == "reset":
            closed = stats.closed
            stats = Stats()
            stats.closed = closed
            for m in members:
                m.stats = stats
                m.counts = dict.fromkeys(KINDS, 0)
                m.recovered = 0
                for values in m.latencies.values():
                    values.clear()
            if pump is not None:
                pump.reset()
            pipe.send(None)
        elif cmd in ("stats", "collect"):
            pipe.send(_report(stats, pump, members, latencies=cmd == "collect"))
        elif cmd == "stop":
            if pump is not None:
                pump.stop()
            if notifier is not None:
                notifier.close()
            for m in members:
                if m.transport is not None:
                    m.transport.abort()
            pipe.send(None)
            return


def worker_main(inbox: Any, pipe: Any, cpu: int | None, library: str | None) -> None:
    """Entry point of a client process: pinned to the clients' core, on uvloop."""
    import signal

    import uvloop

    if cpu is not None:
        pin(0, cpu)
    raise_fd_limit()
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    with contextlib.suppress(PermissionError):
        # Sending on schedule matters more than reading a little later.
        os.setpriority(os.PRIO_PROCESS, 0, -5)
    uvloop.run(_serve(inbox, pipe, library))
    os._exit(0)
