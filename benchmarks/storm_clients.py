"""Client processes of the reconnect-storm benchmark (``storm.py``): members that reconnect and
recover, and a publisher at fixed rates.

Unlike the suite's subscribers (``clients.py``), which only count deliveries, every member
here reads each publication it gets: a member of a recoverable channel checks that offsets
follow one another exactly (a jump is a gap, an offset not above the last one a duplicate),
and a sampled member keeps each publication's latency (the publisher's
``time.monotonic_ns()`` in the payload, subtracted from the time the frame was read) with
the time it arrived, so that the orchestrator can split latencies into before and during the
storm.

When its connection is lost (the server was killed, or the worker dropped it as a network
blip does) a member reconnects at once, as SDKs do after a dead node: to ``target`` (the node
a load balancer would now send it to), with its token, and subscribes with ``recover: true``
from the last offset and epoch it saw. Its recovery time is when that subscribe reply was
read (the missed publications come in the same reply). A connection that cannot be opened is
tried again after a short jittered pause. Bun's members (no recovery) are ready again when
Bun's ``ready`` arrives.

Each worker process (pinned to the clients' core, on uvloop) takes commands from the
orchestrator over a pipe: connect, drop, stats, collect, publish, stop.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import time
from typing import Any

import msgspec

from clients import (
    HUBBUB_PONG,
    KEY,
    PAD,
    Frames,
    client_frame,
    command_queue,
    encode_publish,
    publication,
)
from harness import HOST, pin, raise_fd_limit

DECODE = msgspec.json.Decoder()
RETRY = (0.05, 0.25)
"""Pause (seconds, uniform) before opening again a connection that could not be opened."""
ATTEMPT_TIMEOUT = 30.0
"""Longest wait for one connection to be set up (a SYN dropped by a full backlog is sent again
by the kernel after 1 s, 3 s, ...)."""


class Member:
    """One client and its subscription, across its connections.

    Args:
        spec: ``kind`` (hubbub or bun), ``port``, ``target`` (the port to reconnect to),
            ``token``, ``channel``, ``recoverable``, ``sample`` (keep latencies).
    """

    __slots__ = (
        "arrivals",
        "attempts",
        "channel",
        "dups",
        "epoch",
        "gaps",
        "kind",
        "latencies",
        "link",
        "lost_at",
        "offset",
        "port",
        "ready_ns",
        "received",
        "recoverable",
        "recoveries",
        "recovering",
        "refused",
        "resubscribes",
        "sample",
        "setups",
        "state",
        "token",
        "unrecovered",
        "worker",
    )

    def __init__(self, spec: dict[str, Any], worker: Worker) -> None:
        self.worker = worker
        self.kind: str = spec["kind"]
        self.port: int = spec["port"]
        self.channel: str = spec["channel"]
        self.token: str = spec.get("token", "")
        self.recoverable = bool(spec.get("recoverable"))
        self.sample = bool(spec.get("sample"))
        self.link: Link | None = None
        self.state = "new"  # new, setup, live, refused, closed
        self.offset = 0
        self.epoch = ""
        self.gaps = 0
        self.dups = 0
        self.received = 0
        self.recovering = False
        self.recoveries = 0
        self.resubscribes = 0
        self.unrecovered = 0
        self.refused = ""
        self.ready_ns = 0
        self.lost_at = 0
        self.attempts = 0
        self.setups = 0
        self.latencies: list[int] = []
        self.arrivals: list[int] = []

    # -- set-up

    def path(self) -> str:
        if self.kind == "bun":
            return f"/?channel={self.channel}"
        return "/connection/websocket"

    def opened(self, link: Link) -> None:
        """The WebSocket handshake succeeded."""
        if self.kind == "hubbub":
            link.send(b'{"id":1,"connect":{"token":"%s"}}' % self.token.encode())

    def subscribe(self, link: Link) -> None:
        fields = b'"channel":"%s"' % self.channel.encode()
        if self.recoverable:
            fields += b',"recoverable":true'
            if self.recovering:
                fields += b',"recover":true,"offset":%d,"epoch":"%s"' % (
                    self.offset,
                    self.epoch.encode(),
                )
        link.send(b'{"id":2,"subscribe":{%s}}' % fields)

    def ready(self, now: int) -> None:
        self.state = "live"
        self.ready_ns = now
        self.setups += 1
        self.worker.ready += 1

    def refuse(self, why: str) -> None:
        if self.state == "live":
            self.worker.ready -= 1
        self.state = "refused"
        self.refused = why[:200]
        self.worker.refused += 1
        if self.link is not None and self.link.transport is not None:
            self.link.transport.abort()

    # -- frames

    def text(self, link: Link, payload: bytes, now: int) -> None:
        if self.kind == "bun":
            if payload == b"ready":
                self.ready(now)
            else:
                self.publication(DECODE.decode(payload), 0, now)
            return
        for line in payload.split(b"\n"):
            if line == b"{}":
                link.write(HUBBUB_PONG)
                continue
            msg = DECODE.decode(line)
            push = msg.get("push")
            if push is not None:
                pub = push.get("pub")
                if pub is not None:
                    self.publication(pub.get("data"), pub.get("offset", 0), now)
                elif "unsubscribe" in push and push["unsubscribe"].get("code", 0) >= 2500:
                    # Insufficient state (2500) and the like: subscribe again, recovering.
                    self.resubscribes += 1
                    self.recovering = True
                    self.subscribe(link)
                continue
            if "error" in msg:
                self.refuse(line.decode(errors="replace"))
                return
            if msg.get("id") == 1:
                self.subscribe(link)
            elif msg.get("id") == 2:
                self.subscribed(msg["subscribe"], now)

    def subscribed(self, result: dict[str, Any], now: int) -> None:
        if self.recoverable:
            epoch = result.get("epoch", "")
            if self.recovering and result.get("recovered"):
                self.recoveries += 1
                self.worker.recovered += 1
                for pub in result.get("publications", ()):
                    self.publication(pub.get("data"), pub.get("offset", 0), now)
            else:
                if self.recovering:
                    self.unrecovered += 1
                    self.worker.unrecovered += 1
                self.offset = result.get("offset", 0)
            self.epoch = epoch
        if self.state != "live":  # not after a resubscription on a live connection
            self.ready(now)

    def publication(self, data: Any, offset: int, now: int) -> None:
        self.received += 1
        if offset and self.recoverable:
            if offset <= self.offset:
                self.dups += 1
            else:
                self.gaps += offset - self.offset - 1
                self.offset = offset
        if self.sample and isinstance(data, dict) and "t" in data:
            self.latencies.append(now - data["t"])
            self.arrivals.append(now)

    # -- losing the connection

    def lost(self) -> None:
        self.link = None
        if self.state == "live":
            self.worker.ready -= 1
        if self.worker.stopping or self.state == "refused":
            self.state = "closed"
            return
        self.state = "setup"
        self.lost_at = time.monotonic_ns()
        # A member that was set up before recovers now (the first subscribe had no position).
        self.recovering = self.setups > 0
        self.worker.spawn(self.open())

    async def open(self) -> None:
        """Open a connection to ``port`` and set up, again after a pause until it works."""
        loop = asyncio.get_running_loop()
        while not self.worker.stopping:
            self.attempts += 1
            try:
                await asyncio.wait_for(
                    loop.create_connection(lambda: Link(self), HOST, self.port), ATTEMPT_TIMEOUT
                )
                return
            except (OSError, TimeoutError):
                self.worker.retries += 1
                await asyncio.sleep(random.uniform(*RETRY))

    def report(self) -> dict[str, Any]:
        return {
            "channel": self.channel,
            "offset": self.offset,
            "gaps": self.gaps,
            "dups": self.dups,
            "received": self.received,
            "ready_ns": self.ready_ns,
            "lost_at": self.lost_at,
            "state": self.state,
            "refused": self.refused,
            "unrecovered": self.unrecovered,
            "recoveries": self.recoveries,
            "resubscribes": self.resubscribes,
            "attempts": self.attempts,
            "setups": self.setups,
            "latencies": self.latencies,
            "arrivals": self.arrivals,
        }


class Link(asyncio.Protocol):
    """One connection of a member: the HTTP upgrade, then WebSocket frames to the member."""

    def __init__(self, member: Member) -> None:
        self.member = member
        self.transport: asyncio.Transport | None = None
        self.head = b""
        self.frames: Frames | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        member = self.member
        member.link = self
        member.state = "setup"
        request = (
            f"GET {member.path()} HTTP/1.1\r\nHost: {HOST}:{member.port}\r\n"
            f"Upgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: {KEY}\r\n"
            "Sec-WebSocket-Version: 13\r\n\r\n"
        )
        self.write(request.encode())

    def write(self, data: bytes) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.write(data)

    def send(self, payload: bytes, opcode: int = 0x1) -> None:
        self.write(client_frame(payload, opcode))

    def data_received(self, data: bytes) -> None:
        now = time.monotonic_ns()
        if self.frames is None:
            self.head += data
            end = self.head.find(b"\r\n\r\n")
            if end < 0:
                return
            status, data = self.head[:end], self.head[end + 4 :]
            self.head = b""
            if not status.startswith(b"HTTP/1.1 101"):
                self.member.refuse(status.split(b"\r\n", 1)[0].decode(errors="replace"))
                return
            self.frames = Frames()
            self.member.opened(self)
        for opcode, payload in self.frames.feed(data):
            if opcode == 0x1:
                self.member.text(self, payload, now)
            elif opcode == 0x9:
                self.send(payload, 0xA)
            elif opcode == 0x8:
                code = int.from_bytes(payload[:2], "big") if len(payload) >= 2 else 1005
                if 3500 <= code < 4000 or 4500 <= code < 5000:
                    # Codes that tell clients not to reconnect.
                    self.member.refuse(f"closed: {code} {payload[2:].decode(errors='replace')}")
                elif self.transport is not None:
                    self.transport.abort()  # reconnects, as SDKs do

    def connection_lost(self, exc: Exception | None) -> None:
        if self.member.link is self:
            self.member.lost()


class Publisher(asyncio.Protocol):
    """The publisher's connection: publishes to channels at fixed rates and counts acks."""

    def __init__(self, kind: str, token: str, ready: asyncio.Future[None]) -> None:
        self.kind = kind
        self.token = token
        self.ready = ready
        self.transport: asyncio.Transport | None = None
        self.frames = Frames()
        self.head = b""
        self.acked = 0
        self.errors = 0
        self.first_error = ""
        self.closed = ""
        self.up = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        path = "/connection/websocket" if self.kind == "hubbub" else "/"
        request = (
            f"GET {path} HTTP/1.1\r\nHost: {HOST}\r\nUpgrade: websocket\r\n"
            f"Connection: Upgrade\r\nSec-WebSocket-Key: {KEY}\r\nSec-WebSocket-Version: 13\r\n\r\n"
        )
        transport.write(request.encode())  # type: ignore[attr-defined]

    def data_received(self, data: bytes) -> None:
        assert self.transport is not None
        if not self.up:
            self.head += data
            end = self.head.find(b"\r\n\r\n")
            if end < 0:
                return
            data, self.head, self.up = self.head[end + 4 :], b"", True
            if self.kind == "hubbub":
                self.transport.write(
                    client_frame(b'{"id":1,"connect":{"token":"%s"}}' % self.token.encode())
                )
        for opcode, payload in self.frames.feed(data):
            if opcode == 0x9:
                self.transport.write(client_frame(payload, 0xA))
            elif opcode == 0x8:
                code = int.from_bytes(payload[:2], "big") if len(payload) >= 2 else 1005
                self.closed = f"closed by the server: {code} {payload[2:].decode(errors='replace')}"
            elif opcode == 0x1:
                if self.kind == "hubbub" and b"{}" in payload.split(b"\n"):
                    self.transport.write(HUBBUB_PONG)
                if b'"error"' in payload:
                    self.errors += payload.count(b'"error"')
                    self.first_error = self.first_error or payload.decode()[:300]
                if self.kind == "hubbub":
                    self.acked += payload.count(b'"id":')
                else:
                    self.acked += payload == b"ok"
                if not self.ready.done():
                    self.ready.set_result(None)

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = self.closed or f"connection lost: {exc or 'closed by the server'}"
        if not self.ready.done():
            self.ready.set_exception(ConnectionError("publisher: closed during set-up"))


async def publish(
    conn: Publisher, streams: list[tuple[list[str], float]], stop: asyncio.Event
) -> dict[str, Any]:
    """Publish until ``stop``: each (channels, rate) of ``streams`` at its rate (publications
    per second, on schedule: open loop), channels in turn; then wait for the acks (30 s at
    most). Returns how many went to each channel."""
    assert conn.transport is not None
    write = conn.transport.write
    counts: dict[str, int] = {}
    sent = [0] * len(streams)
    seq = 1  # after the connect command
    start = time.monotonic()
    base_acked = conn.acked
    while not stop.is_set() and not conn.closed:
        now = time.monotonic()
        for i, (channels, rate) in enumerate(streams):
            due = int((now - start) * rate) + 1
            while sent[i] < due:
                channel = channels[sent[i] % len(channels)]
                sent[i] += 1
                seq += 1
                counts[channel] = counts.get(channel, 0) + 1
                frame = encode_publish(conn.kind, seq, channel, publication(PAD))
                write(client_frame(frame))
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), 0.002)
    total = sum(sent)
    deadline = time.monotonic() + 30
    while conn.acked - base_acked < total and time.monotonic() < deadline and not conn.closed:  # noqa: ASYNC110
        await asyncio.sleep(0.01)
    return {
        "counts": counts,
        "published": total,
        "acked": conn.acked - base_acked,
        "errors": conn.errors,
        "first_error": conn.first_error or conn.closed,
        "closed": conn.closed,
    }


class Worker:
    """The members of one client process, and what they add up to."""

    def __init__(self) -> None:
        self.members: list[Member] = []
        self.tasks: set[asyncio.Task[None]] = set()
        self.stopping = False
        self.ready = 0
        self.recovered = 0
        self.unrecovered = 0
        self.refused = 0
        self.retries = 0

    def spawn(self, coro: Any) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    async def connect(self, specs: list[dict[str, Any]], concurrency: int) -> dict[str, Any]:
        """Open every member's first connection (``concurrency`` set-ups at a time) and wait
        until each is live or refused (60 s at most)."""
        from servers import connection_token

        gate = asyncio.Semaphore(concurrency)
        began = time.monotonic_ns()
        fresh = []
        for spec in specs:
            if spec["kind"] == "hubbub" and "token" not in spec:
                spec["token"] = connection_token(spec["user"])
            fresh.append(Member(spec, self))
        self.members += fresh

        async def first(member: Member) -> None:
            async with gate:
                await member.open()
                deadline = time.monotonic() + ATTEMPT_TIMEOUT
                while member.state == "setup" and time.monotonic() < deadline:  # noqa: ASYNC110
                    await asyncio.sleep(0.005)

        await asyncio.gather(*(first(m) for m in fresh))
        return {
            "live": sum(m.state == "live" for m in fresh),
            "refused": [m.refused for m in fresh if m.refused][:3],
            "seconds": (time.monotonic_ns() - began) / 1e9,
        }

    def retarget(self, port: int) -> None:
        """Where members reconnect from now on (the live node)."""
        for member in self.members:
            member.port = port

    def drop(self) -> int:
        """Abort every member's connection at once (a network blip); each reconnects."""
        self.recovered = self.unrecovered = 0
        links = [m.link for m in self.members if m.link is not None]
        now = time.monotonic_ns()
        for link in links:
            if link.transport is not None:
                link.transport.abort()
        return now

    def stats(self, since: int) -> dict[str, int]:
        """Counters; ``back``: members live on a connection set up after ``since`` (ns)."""
        return {
            "members": len(self.members),
            "back": sum(m.state == "live" and m.ready_ns > since for m in self.members),
            "ready": self.ready,
            "recovered": self.recovered,
            "unrecovered": self.unrecovered,
            "refused": self.refused,
            "retries": self.retries,
            "received": sum(m.received for m in self.members),
            "cpu_ns": time.process_time_ns(),
        }


async def _serve(inbox: Any, pipe: Any) -> None:
    loop = asyncio.get_running_loop()
    worker = Worker()
    commands = command_queue(inbox)
    publishing: asyncio.Task[dict[str, Any]] | None = None
    stop_publishing = asyncio.Event()
    pub_conn: Publisher | None = None
    while True:
        cmd, arg = await commands.get()
        if cmd == "connect":
            pipe.send(await worker.connect(*arg))
        elif cmd == "retarget":
            worker.retarget(arg)
            pipe.send(None)
        elif cmd == "drop":
            pipe.send(worker.drop())
        elif cmd == "stats":
            pipe.send(worker.stats(arg or 0))
        elif cmd == "collect":
            pipe.send([m.report() for m in worker.members])
        elif cmd == "publish":
            kind, port, token, streams = arg
            ready: asyncio.Future[None] = loop.create_future()
            _, pub_conn = await loop.create_connection(
                lambda: Publisher(kind, token, ready),  # noqa: B023 (awaited here)
                HOST,
                port,
            )
            await asyncio.wait_for(ready, 30)
            stop_publishing.clear()
            publishing = loop.create_task(publish(pub_conn, streams, stop_publishing))
            pipe.send(None)
        elif cmd == "unpublish":
            stop_publishing.set()
            result = await publishing if publishing is not None else {}
            if pub_conn is not None and pub_conn.transport is not None:
                pub_conn.transport.abort()
            pipe.send(result)
        elif cmd == "stop":
            worker.stopping = True
            for member in worker.members:
                if member.link is not None and member.link.transport is not None:
                    member.link.transport.abort()
            pipe.send(None)
            return


def worker_main(inbox: Any, pipe: Any, cpu: int | None, publisher: bool = False) -> None:
    """Entry point of a client process: pinned to the clients' core, on uvloop."""
    import signal

    import uvloop

    if cpu is not None:
        pin(0, cpu)
    if publisher:
        # On schedule even while the members on the same core are busy reconnecting.
        with contextlib.suppress(PermissionError):
            os.setpriority(os.PRIO_PROCESS, 0, -10)
    raise_fd_limit()
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    uvloop.run(_serve(inbox, pipe))
    os._exit(0)
