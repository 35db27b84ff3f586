"""Client processes of the benchmark suite: subscribers and the publisher, on raw sockets.

Each worker process (pinned to the clients' core) runs a uvloop event loop with many
WebSocket connections written directly on asyncio protocols, and takes commands from the
orchestrator over a pipe (connect, reset, stats, collect, publish, stop).

Why not a WebSocket library: the clients share one core and must not become the bottleneck
when a server delivers millions of messages per second. Connections are set up here, in
Python; then the subscribers' sockets are handed to the read loop of ``pump.c`` (compiled by
the suite) running in a thread, which costs one ``recv`` and a few ``memmem`` scans per chunk.
Without a C compiler the same work is done here in Python, in ``data_received``, in constant
work per chunk whatever the number of messages in it (about 1 µs per chunk more than C):

- deliveries are counted with ``bytes.count`` of the marker ``"t":`` that every publication
  carries exactly once (the publisher's timestamp key; no protocol envelope uses it);
- all payloads here are ASCII, so bytes >= 0x80 appear only in frame headers: a chunk
  without byte 0x89 holds no WebSocket ping, and one with it is searched for the ping frame;
- application heartbeats are fixed byte strings: hubbub's ping is ``{}`` (never part of a
  publication) and Engine.IO's is the one-byte text frame ``2``;
- a marker or a heartbeat split between two chunks is found through the few bytes kept from
  the end of the previous chunk.

Latency: on one connection in ``sample`` (every connection at small N), every publication's
timestamp (``time.monotonic_ns()`` of the publisher, the same clock in every process of the
machine) is subtracted from the time the chunk was read.

Set-up (what "connection set-up" times, from the TCP connect to the last step below):

- hubbub: WebSocket handshake, ``connect`` with a token, ``subscribe`` (``recoverable`` in the
  recoverable rows), each awaited;
- Bun: WebSocket handshake, then the server's ``ready`` sent after ``ws.subscribe`` in ``open``;
- python-socketio: WebSocket handshake, Engine.IO open packet, namespace connect, then a
  ``subscribe`` event whose acknowledgement comes after ``enter_room``;
- tutorial manager: WebSocket handshake (the tutorial has no subscribe step: accepted
  connections are in the broadcast list).
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import os
import re
import struct
import threading
import time
from collections.abc import Callable
from typing import Any

from harness import HOST, pin, raise_fd_limit

MARK = b'"t":'
TIMESTAMP = re.compile(rb'"t":(\d+),')
HUBBUB_PING = b"{}"
ENGINEIO_PING = b"\x81\x012"
WS_PING = 0x89
EXT16 = 0x7E
KEY = "dGhlIHNhbXBsZSBub25jZQ=="  # servers only hash it; a fixed key costs nothing


def client_frame(payload: bytes, opcode: int = 0x1) -> bytes:
    """A masked client frame. The mask is all zeros: valid, and the payload needs no XOR."""
    size = len(payload)
    if size < 126:
        head = bytes((0x80 | opcode, 0x80 | size))
    elif size < 65536:
        head = struct.pack("!BBH", 0x80 | opcode, 0x80 | 126, size)
    else:
        head = struct.pack("!BBQ", 0x80 | opcode, 0x80 | 127, size)
    return head + b"\x00\x00\x00\x00" + payload


HUBBUB_PONG = client_frame(b"{}")
ENGINEIO_PONG = client_frame(b"3")
HEARTBEATS: dict[str, tuple[bytes, int | bytes, bytes]] = {
    # hubbub native: a ping is a frame of its own, and 0x02 is its length byte.
    "hubbub": (b"\x81\x02{}", 0x02, HUBBUB_PONG),
    # hubbub through ASGI: a ping may share a frame with publications (newline-joined).
    "hubbub-joined": (HUBBUB_PING, HUBBUB_PING, HUBBUB_PONG),
    # Engine.IO: the one-byte text frame "2", and 0x01 is its length byte.
    "socketio": (ENGINEIO_PING, 0x01, ENGINEIO_PONG),
    # Bun and the tutorial manager (uvicorn) keep connections alive with WebSocket pings only.
    "": (b"", 0, b""),
}
# An int needle: ``0x89 in data`` is a memchr, ten times quicker than ``b"\x89" in data``.


def publication(pad: int = 0) -> bytes:
    """The 100-byte JSON message: the publisher's clock, padding up to 100 bytes."""
    body = b'{"t":%d,"pad":"%s"}' % (time.monotonic_ns(), b"x" * pad)
    return body


PAD = 100 - len(publication())
assert len(publication(PAD)) == 100


# ---------------------------------------------------------------------------------------------
# Protocols


class Frames:
    """Complete server frames out of a byte stream (used during set-up and by the publisher,
    where messages are few)."""

    __slots__ = ("buf",)

    def __init__(self) -> None:
        self.buf = b""

    def feed(self, data: bytes) -> list[tuple[int, bytes]]:
        buf = self.buf + data
        out = []
        pos = 0
        while len(buf) - pos >= 2:
            opcode = buf[pos] & 0x0F
            size = buf[pos + 1] & 0x7F
            head = 2
            if size == 126:
                if len(buf) - pos < 4:
                    break
                size = int.from_bytes(buf[pos + 2 : pos + 4], "big")
                head = 4
            elif size == 127:
                if len(buf) - pos < 10:
                    break
                size = int.from_bytes(buf[pos + 2 : pos + 10], "big")
                head = 10
            if len(buf) - pos < head + size:
                break
            out.append((opcode, buf[pos + head : pos + head + size]))
            pos += head + size
        self.buf = buf[pos:]
        return out


class Connection(asyncio.Protocol):
    """One client WebSocket: handshake, protocol set-up, then streaming or publishing."""

    def __init__(self, spec: dict[str, Any], done: asyncio.Future[None], stats: Stats) -> None:
        self.spec = spec
        self.kind: str = spec["kind"]
        self.done = done
        self.stats = stats
        self.transport: asyncio.Transport | None = None
        self.head = b""
        self.frames = Frames()
        self.step = 0
        self.tail = b""
        self.partial = b""
        self.sample = bool(spec.get("sample"))
        # The server's application heartbeat as it appears in the byte stream, and one byte of
        # it that no publication frame contains (searched with memchr on every chunk).
        self.beat, self.beat_byte, self.pong = HEARTBEATS[spec.get("beat", "")]
        self.on_data: Callable[[bytes], None] = self._handshake
        self.acked = 0
        self.errors = 0
        self.first_error = ""
        self.waiter: asyncio.Future[None] | None = None

    # -- asyncio.Protocol

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        request = (
            f"GET {self.spec['path']} HTTP/1.1\r\nHost: {HOST}:{self.spec['port']}\r\n"
            f"Upgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: {KEY}\r\n"
            "Sec-WebSocket-Version: 13\r\n\r\n"
        )
        transport.write(request.encode())  # type: ignore[attr-defined]

    def data_received(self, data: bytes) -> None:
        self.on_data(data)

    def connection_lost(self, exc: Exception | None) -> None:
        self.stats.closed += 1
        if not self.done.done():
            self.done.set_exception(ConnectionError(f"{self.kind}: closed during set-up"))
        if self.waiter is not None and not self.waiter.done():
            self.waiter.set_exception(ConnectionError(f"{self.kind}: publisher closed"))

    def send(self, payload: bytes, opcode: int = 0x1) -> None:
        assert self.transport is not None
        self.transport.write(client_frame(payload, opcode))

    # -- set-up

    def _fail(self, why: str) -> None:
        if not self.done.done():
            self.done.set_exception(ConnectionError(f"{self.kind}: {why}"))
        if self.transport is not None:
            self.transport.abort()

    def _handshake(self, data: bytes) -> None:
        self.head += data
        end = self.head.find(b"\r\n\r\n")
        if end < 0:
            return
        status, rest = self.head[:end], self.head[end + 4 :]
        self.head = b""
        if not status.startswith(b"HTTP/1.1 101"):
            self._fail(status.split(b"\r\n", 1)[0].decode(errors="replace"))
            return
        self.on_data = self._setup
        if self.kind == "hubbub":
            token = self.spec.get("token") or ""
            self.send(b'{"id":1,"connect":{"token":"%s"}}' % token.encode())
        elif self.kind == "tutorial":
            self._ready()
        if rest:
            self.on_data(rest)

    def _setup(self, data: bytes) -> None:
        for opcode, payload in self.frames.feed(data):
            if opcode == 0x9:
                self.send(payload, 0xA)
            elif opcode == 0x1 and self.on_data == self._setup:
                getattr(self, f"_setup_{self.kind}")(payload)
            elif opcode == 0x8:
                self._fail(f"closed by the server: {payload[2:].decode(errors='replace')}")
        if self.on_data != self._setup and self.frames.buf:
            rest, self.frames.buf = self.frames.buf, b""
            self.on_data(rest)

    def _setup_hubbub(self, payload: bytes) -> None:
        for line in payload.split(b"\n"):
            if line == HUBBUB_PING:
                self.transport.write(HUBBUB_PONG)  # type: ignore[union-attr]
            elif b'"error"' in line:
                self._fail(line.decode())
            elif line.startswith(b'{"id":1,'):
                frames = self._subscribe_frames()
                self.step = len(frames)
                for frame in frames:
                    self.send(frame)
                if not frames:
                    self._ready()
            elif line.startswith(b'{"id":'):
                self._subscribed(line)
                self.step -= 1
                if not self.step:
                    self._ready()

    def _subscribe_frames(self) -> list[bytes]:
        """The subscribe commands sent once connected (ids from 2); every one is answered
        before the connection is ready."""
        channels = self.spec.get("channels") or []
        extra = b',"recoverable":true' if self.spec.get("recoverable") else b""
        return [
            b'{"id":%d,"subscribe":{"channel":"%s"%s}}' % (i, channel.encode(), extra)
            for i, channel in enumerate(channels, 2)
        ]

    def _subscribed(self, line: bytes) -> None:
        """The reply to one of those commands (nothing to keep here)."""

    def _setup_bun(self, payload: bytes) -> None:
        # open() answers "ready" (after subscribing to the channel of the URL, if any); every
        # further channel is subscribed with a message of its name, answered "ready" too.
        if payload != b"ready":
            return
        if self.step == 0:
            channels = self.spec.get("channels") or []
            if "channel=" in self.spec["path"]:
                channels = channels[1:]
            for channel in channels:
                self.send(channel.encode())
            self.step = len(channels) + 1
        self.step -= 1
        if not self.step:
            self._ready()

    def _setup_socketio(self, payload: bytes) -> None:
        if payload == b"2":
            self.transport.write(ENGINEIO_PONG)  # type: ignore[union-attr]
        elif payload.startswith(b"0{"):
            self.send(b"40")  # connect to the default namespace
        elif payload.startswith(b"40"):
            channels = self.spec.get("channels") or []
            self.step = len(channels)
            for i, channel in enumerate(channels):
                self.send(b'42%d["subscribe","%s"]' % (i, channel.encode()))
            if not channels:
                self._ready()
        elif payload.startswith(b"43"):
            self.step -= 1
            if not self.step:
                self._ready()
        elif payload.startswith(b"44"):
            self._fail(payload.decode())

    def _ready(self) -> None:
        role = self.spec.get("role", "sub")
        self.on_data = {"sub": self._stream, "probe": self._probe, "pub": self._publisher}[role]
        self.step = -1
        if not self.done.done():
            self.done.set_result(None)

    # -- subscribers: constant work per chunk

    def _stream(self, data: bytes) -> None:
        got = data.count(MARK)
        if data[0] < 0x80 and self.tail:
            # The chunk starts inside a frame (a frame's first byte is >= 0x80, payload bytes
            # are ASCII): a marker or a heartbeat may straddle the two chunks.
            got += self._straddling(data)
        elif self.beat and (self.beat_byte in data):
            self._heartbeats(self.beat, data)
        self.tail = data[-3:]
        if got:
            stats = self.stats
            now = time.monotonic_ns()
            stats.received += got
            stats.last = now
            if self.sample:
                lat = stats.latencies
                for stamp in TIMESTAMP.findall(data):
                    lat.append(now - int(stamp))
        if WS_PING in data or self.partial:
            self._ws_pings(data)

    def _straddling(self, data: bytes) -> int:
        beat = self.beat
        if beat and (self.beat_byte in data or self.beat_byte in self.tail):
            self._heartbeats(beat, self.tail[1 - len(beat) :] + data)
        return (self.tail + data[:3]).count(MARK)

    def _heartbeats(self, beat: bytes, data: bytes) -> None:
        pings = data.count(beat)
        if pings:
            self.transport.write(self.pong * pings)  # type: ignore[union-attr]
            self.stats.pongs += pings

    def _probe(self, data: bytes) -> None:
        """The publisher's own subscriber: counts like the others, and wakes the publisher."""
        self._stream(data)
        waiter = self.waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def _ws_pings(self, data: bytes) -> None:
        """Answer WebSocket ping frames (uvicorn's and Bun's keep-alives).

        0x89 preceded (one or two bytes before) by 0x7E is a 16-bit length, not a frame start.
        A false match costs one unsolicited pong, which servers ignore (RFC 6455 5.5.3).
        """
        buf = self.partial + data if self.partial else data
        self.partial = b""
        i = buf.find(WS_PING)
        while i >= 0:
            if (i >= 1 and buf[i - 1] == EXT16) or (i >= 2 and buf[i - 2] == EXT16):
                i = buf.find(WS_PING, i + 1)
                continue
            if i + 2 > len(buf) or i + 2 + (buf[i + 1] & 0x7F) > len(buf):
                self.partial = buf[i : i + 128]
                return
            size = buf[i + 1] & 0x7F
            if size <= 125:
                self.send(buf[i + 2 : i + 2 + size], 0xA)
                self.stats.pongs += 1
            i = buf.find(WS_PING, i + 2)

    # -- the publisher's connection: acknowledgements

    def _publisher(self, data: bytes) -> None:
        for opcode, payload in self.frames.feed(data):
            if opcode == 0x9:
                self.send(payload, 0xA)
                continue
            if opcode != 0x1:
                continue
            kind = self.kind
            if kind == "hubbub":
                if HUBBUB_PING in payload:
                    for line in payload.split(b"\n"):
                        if line == HUBBUB_PING:
                            self.transport.write(HUBBUB_PONG)  # type: ignore[union-attr]
                self.acked += payload.count(b'"id":')
                if b'"error"' in payload:
                    self.errors += payload.count(b'"error"')
                    self.first_error = self.first_error or payload.decode()[:300]
            elif kind == "socketio":
                if payload == b"2":
                    self.transport.write(ENGINEIO_PONG)  # type: ignore[union-attr]
                elif payload.startswith(b"43"):
                    self.acked += 1
            elif payload == b"ok":
                self.acked += 1
        waiter = self.waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)


class Stats:
    """Counters of one worker process, since the last reset."""

    def __init__(self) -> None:
        self.received = 0
        self.last = 0
        self.latencies: list[int] = []
        self.closed = 0
        self.pongs = 0
        self.failures: list[str] = []
        self.cpu = time.process_time()


# ---------------------------------------------------------------------------------------------
# Publishing


def encode_publish(kind: str, seq: int, channel: str, body: bytes) -> bytes:
    if kind == "hubbub":
        return b'{"id":%d,"publish":{"channel":"%s","data":%s}}' % (seq, channel.encode(), body)
    if kind == "socketio":
        return b'42%d["publish",{"channel":"%s","data":%s}]' % (seq, channel.encode(), body)
    if kind == "bun":
        return channel.encode() + b"\n" + body
    return body  # the tutorial manager broadcasts what it receives


async def publish(
    conn: Connection,
    probe: Connection,
    channels: list[str],
    seconds: float,
    rate: float | None,
    in_flight: int,
    per_publication: int,
    counters: list[PumpStats],
) -> dict[str, Any]:
    """Publish for ``seconds``, channels round-robin, each frame written at once.

    With ``rate``: that many publications per second, on schedule (open loop). With ``rate``
    None, the maximum rate: a closed loop that keeps ``in_flight`` deliveries in flight, where
    in flight means expected (``per_publication`` subscribers, the probe included, for each
    publication sent) but not yet counted by any subscriber: ``counters`` are the C loops'
    statistics of every client process (shared memory), the probe counts its own. So the
    publisher never runs ahead of the slowest subscriber by more than the window, and a
    server that acknowledges before it delivers (Bun, python-socketio) cannot run ahead either.
    The probe's receipts wake the loop; between them it looks every millisecond.
    """
    assert conn.transport is not None
    write = conn.transport.write
    kind = conn.kind
    loop = asyncio.get_running_loop()
    sent = 0
    start = time.monotonic()
    end = start + seconds
    first = time.monotonic_ns()
    count = len(channels)
    per_channel = [0] * count
    base_acked, base_errors = conn.acked, conn.errors
    base_seen = probe.stats.received + sum(c.received for c in counters)

    def delivered() -> int:
        return probe.stats.received + sum(c.received for c in counters) - base_seen

    while True:
        now = time.monotonic()
        if now >= end:
            break
        if rate is None:
            budget = (in_flight - (sent * per_publication - delivered())) // per_publication
            if budget <= 0:
                probe.waiter = loop.create_future()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(probe.waiter, 0.001)
                continue
        else:
            due = int((now - start) * rate) + 1
            budget = due - sent
            if budget <= 0:
                await asyncio.sleep(start + sent / rate - now)
                continue
        for _ in range(budget):
            index = sent % count
            per_channel[index] += 1
            sent += 1
            write(client_frame(encode_publish(kind, sent + 2, channels[index], publication(PAD))))
    last_sent = time.monotonic_ns()
    # Every publication acknowledged, or 30 s.
    deadline = time.monotonic() + 30
    while conn.acked - base_acked < sent and time.monotonic() < deadline:
        conn.waiter = loop.create_future()
        try:
            await asyncio.wait_for(conn.waiter, max(0.0, deadline - time.monotonic()))
        except TimeoutError:
            break
    return {
        "published": sent,
        "acked": conn.acked - base_acked,
        "errors": conn.errors - base_errors,
        "first_error": conn.first_error,
        "first_ns": first,
        "last_sent_ns": last_sent,
        "per_channel": dict(zip(channels, per_channel, strict=True)),
    }


# ---------------------------------------------------------------------------------------------
# The C read loop (pump.c)


class PumpStats(ctypes.Structure):
    _fields_ = [
        (name, ctypes.c_int64)
        for name in ("received", "last_ns", "pongs", "closed", "nlat", "reset", "stop")
    ]


class Pump:
    """Subscriber sockets read by ``pump_run`` of pump.c in a thread (no GIL held there).

    The asyncio transports stay open but stop reading; the C loop answers heartbeats itself.
    """

    CAPACITY = 4_000_000  # latencies kept per run (32 MB)

    def __init__(self, library: str, conns: list[Connection], stats: PumpStats) -> None:
        lib = ctypes.CDLL(library)
        lib.pump_run.restype = ctypes.c_int
        self.stats = stats
        self.latencies = (ctypes.c_int64 * self.CAPACITY)()
        # A connection the server closed meanwhile (already counted in ``closed``) stays out.
        conns = [c for c in conns if c.transport is not None and not c.transport.is_closing()]
        n = len(conns)
        fds = (ctypes.c_int * n)()
        samples = (ctypes.c_int * n)()
        for i, conn in enumerate(conns):
            assert conn.transport is not None
            conn.transport.pause_reading()
            fds[i] = conn.transport.get_extra_info("socket").fileno()
            samples[i] = int(conn.sample)
        beat, pong = conns[0].beat, conns[0].pong
        scratch = ctypes.create_string_buffer(n * 24)  # struct sock[n]
        self.result = 0
        args = (
            fds,
            samples,
            n,
            beat,
            len(beat),
            pong,
            len(pong),
            self.latencies,
            self.CAPACITY,
            ctypes.byref(self.stats),
            scratch,
        )

        def run() -> None:
            self.result = lib.pump_run(*args)

        self._keep = args  # the C loop uses these buffers until it returns
        self.thread = threading.Thread(target=run, daemon=True)
        self.thread.start()

    def reset(self) -> None:
        self.stats.reset = 1
        deadline = time.monotonic() + 2
        while self.stats.reset and time.monotonic() < deadline and self.thread.is_alive():
            time.sleep(0.001)

    def collected(self) -> list[int]:
        return self.latencies[: self.stats.nlat]

    def stop(self) -> None:
        self.stats.stop = 1
        self.thread.join(2)


# ---------------------------------------------------------------------------------------------
# The worker process


async def _open(
    spec: dict[str, Any], stats: Stats, gate: asyncio.Semaphore, timings: list[int]
) -> Connection | None:
    loop = asyncio.get_running_loop()
    async with gate:
        done: asyncio.Future[None] = loop.create_future()
        started = time.monotonic_ns()
        try:
            _, conn = await asyncio.wait_for(
                loop.create_connection(lambda: Connection(spec, done, stats), HOST, spec["port"]),
                30,
            )
            await asyncio.wait_for(done, 30)
        except (OSError, TimeoutError, ConnectionError) as exc:
            stats.failures.append(str(exc) or type(exc).__name__)
            return None
        timings.append(time.monotonic_ns() - started)
        return conn


def _report(stats: Stats, pump: Pump | None, latencies: bool) -> dict[str, Any]:
    out: dict[str, Any] = {
        "received": stats.received,
        "last": stats.last,
        "closed": stats.closed,
        "pongs": stats.pongs,
        "cpu": time.process_time() - stats.cpu,
    }
    if pump is not None:
        c = pump.stats
        out["received"] += c.received
        out["last"] = max(out["last"], c.last_ns)
        out["closed"] += c.closed
        out["pongs"] += c.pongs
    if latencies:
        out["latencies"] = stats.latencies + (pump.collected() if pump is not None else [])
    return out


def shared_counters(shared: Any, slots: int) -> list[PumpStats]:
    """The C loops' statistics of ``slots`` client processes, in ``shared`` (a RawArray of
    ``counter_words(slots)`` int64 made by the orchestrator before the processes)."""
    size = ctypes.sizeof(PumpStats)
    return [PumpStats.from_buffer(shared, i * size) for i in range(slots)]


def counter_words(slots: int) -> int:
    """int64 words of shared memory for ``slots`` processes' statistics."""
    return slots * ctypes.sizeof(PumpStats) // 8


def command_queue(inbox: Any) -> asyncio.Queue[Any]:
    """The orchestrator's commands arriving on ``inbox`` (a pipe end), as a queue of the
    running loop; a closed pipe reads as ``("stop", None)``, after which nothing comes.

    A thread reads the pipe, because a descriptor watched by the loop is made non-blocking,
    and commands (thousands of connection specs) and answers (latency lists) are large.
    """
    loop = asyncio.get_running_loop()
    commands: asyncio.Queue[Any] = asyncio.Queue()

    def read_commands() -> None:
        while True:
            try:
                message = inbox.recv()
            except (EOFError, OSError):
                message = ("stop", None)
            loop.call_soon_threadsafe(commands.put_nowait, message)
            if message[0] == "stop":
                return

    threading.Thread(target=read_commands, daemon=True).start()
    return commands


async def _serve(inbox: Any, pipe: Any, library: str | None, shared: Any, slot: int) -> None:
    stats = Stats()
    conns: list[Connection] = []
    pump: Pump | None = None
    commands = command_queue(inbox)
    while True:
        cmd, arg = await commands.get()
        if cmd == "connect":
            specs, concurrency = arg
            gate = asyncio.Semaphore(concurrency)
            timings: list[int] = []
            began = time.monotonic_ns()
            opened = await asyncio.gather(*(_open(s, stats, gate, timings) for s in specs))
            conns.extend(c for c in opened if c is not None)
            subscribers = [c for c in conns if c.spec.get("role", "sub") == "sub"]
            if library and subscribers and pump is None and len(subscribers) == len(conns):
                stats_slot = shared_counters(shared, slot + 1)[slot] if shared else PumpStats()
                pump = Pump(library, subscribers, stats_slot)
            failures = stats.failures
            pipe.send(
                {
                    "opened": sum(c is not None for c in opened),
                    "failures": failures[:5],
                    "failed": len(failures),
                    "timings": timings,
                    "began": began,
                    "ended": time.monotonic_ns(),
                }
            )
            stats.failures = []
        elif cmd == "reset":
            closed = stats.closed
            stats = Stats()
            stats.closed = closed
            for conn in conns:
                conn.stats = stats
            if pump is not None:
                pump.reset()
            pipe.send(None)
        elif cmd == "stats":
            pipe.send(_report(stats, pump, latencies=False))
        elif cmd == "collect":
            pipe.send(_report(stats, pump, latencies=True))
        elif cmd == "publish":
            channels, seconds, rate, in_flight, per_publication, slots = arg
            counters = shared_counters(shared, slots) if shared is not None else []
            cpu = time.process_time()
            try:
                pub, probe = conns[0], conns[1]
                result = await publish(
                    pub, probe, channels, seconds, rate, in_flight, per_publication, counters
                )
            except (ConnectionError, TimeoutError) as exc:
                result = {"error": str(exc) or type(exc).__name__}
            result["cpu"] = time.process_time() - cpu
            pipe.send(result)
        elif cmd == "stop":
            if pump is not None:
                pump.stop()
            for conn in conns:
                if conn.transport is not None:
                    conn.transport.abort()
            pipe.send(None)
            return


def worker_main(
    inbox: Any,
    pipe: Any,
    cpu: int | None,
    publisher: bool = False,
    library: str | None = None,
    shared: Any = None,
    slot: int = -1,
) -> None:
    """Entry point of a client process: pinned to the clients' core, on uvloop."""
    import uvloop

    if cpu is not None:
        pin(0, cpu)
    if publisher:
        # The publisher shares the clients' core with the subscriber processes: ahead of them
        # it hands the server its next publication as soon as the probe saw one delivered.
        with contextlib.suppress(PermissionError):
            os.setpriority(os.PRIO_PROCESS, 0, -10)
    raise_fd_limit()
    # Workers are killed by the orchestrator; Ctrl-C in the terminal is its business.
    import signal

    signal.signal(signal.SIGINT, signal.SIG_IGN)
    uvloop.run(_serve(inbox, pipe, library, shared, slot))
    os._exit(0)
