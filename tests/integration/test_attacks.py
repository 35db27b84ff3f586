"""One connection must not stall every client of a node.

Each case runs an adversary in a process of its own (so it floods as fast as a real one, not
as fast as the test's event loop lets it) against a server in this process, while a control
client on the same node makes a publish round trip every 50 ms. The control's round trips are
measured first without the attack (the baseline), then during it. Every case checks that the
attacker's connections are closed with the documented code within a bound, that the control's
99th percentile stays within twice its baseline with no round trip timing out, and that the
server's memory grows by a bounded amount.

The attacker reconnects each time it is closed, so the attack lasts the whole window.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
import sys
from typing import Any

import pytest
import websockets
from websockets.asyncio.client import ClientConnection

from hubbub.auth import mint_connection_token
from tests.conftest import SECRET, UNIT, RunningServer, suite_settings

PERIOD = 0.05  # the control's round trips, one every 50 ms
BASELINE = 1.0  # seconds of round trips before the attack
ATTACK = 2.0  # seconds the attack lasts
TIMEOUT = 1.0 * UNIT  # a round trip slower than this is a timeout
CLOSED_WITHIN = 1.0 * UNIT  # an attacking connection is closed this soon after it starts
RSS_BOUND = 48 * 2**20
"""What one attack may add to the server's memory. The unbounded buffers this guards against
(pongs nobody reads, fragments, header bytes) grow by hundreds of MiB in seconds."""

ATTACKER = r"""
import base64, json, os, select, socket, struct, sys, time

port, kind, seconds, deaf = int(sys.argv[1]), sys.argv[2], float(sys.argv[3]), sys.argv[4] == "deaf"
path = sys.argv[5]
os.nice(19)  # the server, not the attacker, should get the CPU when both want it
MASK = b"\0\0\0\0"  # clients must mask; a zero key leaves the payload as it is


def frame(opcode, payload=b"", fin=True):
    return bytes([(0x80 if fin else 0) | opcode, 0x80 | len(payload)]) + MASK + payload


FLOODS = {  # what opens the flood, what is repeated
    "cont": (frame(1, b"x", fin=False), frame(0, fin=False)),  # empty continuation frames
    "fragments": (frame(1, b"x", fin=False), frame(0, b"x", fin=False)),  # one endless message
    "ping": (b"", frame(9)),
    "pong": (b"", frame(10)),
    "header_size": (b"X-Filler: ", b"a" * 65536),  # one endless header
    "header_count": (b"", b"X-H: 1\r\n" * 4096),  # endless headers
}
HEAD = (
    "GET {} HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\n"
    "Connection: Upgrade\r\nSec-WebSocket-Key: {}\r\nSec-WebSocket-Version: 13\r\n"
)
LIMIT = 50 * 2**20  # bytes an attacking connection sends at most
RATE = 10 * 10**6 / 8  # bytes per second: the attacker floods at about 10 Mbit/s


def outcome(data):
    # The HTTP status of a refusal, or the code of the server's close frame, or None.
    if data.startswith(b"HTTP/1.1 "):
        return int(data[9:12]) if data[9:12] != b"101" else None
    pos = 0
    while pos + 2 <= len(data):
        opcode, size = data[pos] & 0x0F, data[pos + 1] & 0x7F
        pos += 2
        if size == 126:
            size = struct.unpack("!H", data[pos : pos + 2])[0]
            pos += 2
        elif size == 127:
            size = struct.unpack("!Q", data[pos : pos + 8])[0]
            pos += 8
        if opcode == 8 and size >= 2 and pos + 2 <= len(data):
            return struct.unpack("!H", data[pos : pos + 2])[0]
        pos += size
    return None


def attack(started_all, sent_before):
    sock = socket.create_connection(("127.0.0.1", port))
    first, repeated = FLOODS[kind]
    head = HEAD.format(path, base64.b64encode(os.urandom(16)).decode()).encode()
    received = b""
    if kind.startswith("header"):
        sock.sendall(head + first)
    else:
        sock.sendall(head + b"\r\n")
        while b"\r\n\r\n" not in received:
            received += sock.recv(4096)
        received = received.split(b"\r\n\r\n", 1)[1]
        sock.sendall(first)
    flood = repeated * max(1, 65536 // len(repeated))
    sock.setblocking(False)
    started, sent, code, ended = time.monotonic(), 0, None, False
    while time.monotonic() < started + seconds and not ended:
        allowed = int((time.monotonic() - started_all) * RATE) - sent_before - sent
        sending = sent < LIMIT and allowed > 0
        readable, writable, _ = select.select(
            [] if deaf else [sock], [sock] if sending else [], [], 0.002
        )
        try:
            if readable:
                data = sock.recv(65536)
                ended = not data
                received += data if len(received) < 2**20 else b""
                code = outcome(received)
                ended = ended or code is not None
            if writable and not ended:
                offset = sent % len(flood)  # the stream goes on where the last send stopped
                sent += sock.send(flood[offset : offset + allowed])
        except BlockingIOError:
            pass
        except OSError:
            ended = True
    after = time.monotonic() - started if ended else None
    sock.close()
    return {"code": code, "after": after, "sent": sent}


results = []
start = time.monotonic()
while time.monotonic() < start + seconds:
    results.append(attack(start, sum(r["sent"] for r in results)))
    if results[-1]["after"] is None:
        break
print(json.dumps(results))
"""


def rss() -> int:
    """The resident memory of this process, which runs the server under test."""
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS in /proc/self/status")


def p99(samples: list[float]) -> float:
    ordered = sorted(samples)
    return ordered[max(0, math.ceil(0.99 * len(ordered)) - 1)]


class ControlClient:
    """A client that publishes to a channel it is subscribed to and times each round trip:
    from sending the publish to receiving its publication."""

    def __init__(self, ws: ClientConnection) -> None:
        self.ws = ws
        self.n = 0
        self.timeouts = 0

    @classmethod
    async def connect(cls, server: RunningServer) -> ControlClient:
        ws = await websockets.connect(server.url, open_timeout=5 * UNIT)
        token = mint_connection_token(SECRET, "control")
        await ws.send(json.dumps({"id": 1, "connect": {"token": token}}))
        await ws.send(json.dumps({"id": 2, "subscribe": {"channel": "live:control"}}))
        client = cls(ws)
        await client._until(lambda msg: msg.get("id") == 2)
        return client

    async def _until(self, wanted: Any) -> None:
        while True:
            frame = await self.ws.recv()
            for line in str(frame).split("\n"):
                if wanted(json.loads(line)):
                    return

    async def round_trip(self) -> float:
        """Seconds from publishing to receiving the publication; one of ``TIMEOUT`` or more
        is counted in ``timeouts`` too."""
        self.n += 1
        n = self.n
        loop = asyncio.get_running_loop()
        started = loop.time()
        await self.ws.send(
            json.dumps({"id": 100 + n, "publish": {"channel": "live:control", "data": {"n": n}}})
        )
        # A stalled loop may deliver it late yet inside the wait: late is late, either way.
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(
                self._until(lambda msg: msg.get("push", {}).get("pub", {}).get("data") == {"n": n}),
                TIMEOUT,
            )
        took = loop.time() - started
        if took >= TIMEOUT:
            self.timeouts += 1
        return took

    async def sample(self, seconds: float) -> list[float]:
        """Round trips, one every ``PERIOD``, for ``seconds``."""
        loop = asyncio.get_running_loop()
        times: list[float] = []
        end = loop.time() + seconds
        while loop.time() < end:
            due = loop.time() + PERIOD
            times.append(await self.round_trip())
            await asyncio.sleep(max(0.0, due - loop.time()))
        return times


async def attacked(
    server: RunningServer, kind: str, deaf: bool = False, path: str = "/connection/websocket"
) -> tuple[list[dict[str, Any]], list[float], list[float], ControlClient, int]:
    """Run the attack ``kind`` against ``server`` while the control client measures:
    the attacker's connections, the baseline and attack round trips, the control client,
    and how much the server's memory grew."""
    control = await ControlClient.connect(server)
    baseline = await control.sample(BASELINE)
    before = rss()
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        ATTACKER,
        str(server.port),
        kind,
        str(ATTACK),
        "deaf" if deaf else "reads",
        path,
        stdout=asyncio.subprocess.PIPE,
    )
    try:
        during = await control.sample(ATTACK)
        out, _ = await asyncio.wait_for(proc.communicate(), ATTACK + 10 * UNIT)
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    grown = rss() - before
    await control.ws.close()
    return json.loads(out), baseline, during, control, grown


ATTACKS = [  # kind, whether it never reads, its close codes, the counter of its limit
    ("cont", False, {1009}, "limit.max_fragments"),  # empty continuation frames
    ("fragments", False, {1009}, "limit.max_fragments"),
    ("ping", False, {3013}, "limit.frame_rate"),
    # Never reads: it may only see the socket close, and its pongs may fill its buffer first.
    ("ping", True, {3013, 3008, None}, "limit.frame_rate|disconnect.3008"),
    ("pong", False, {3013}, "limit.frame_rate"),
    ("header_size", False, {431}, "limit.max_header_size"),
    ("header_count", False, {431}, "limit.max_headers"),
]
# The frame-level attacks again on the ASGI transport, whose frames uvicorn's protocol parses
# (with hubbub's limits on top); the header limits are the same code for both transports.
CASES = [(*attack, "native") for attack in ATTACKS] + [
    (*attack, "asgi") for attack in ATTACKS if not attack[0].startswith("header")
]
# The native transport hands every other WebSocket path to uvicorn's protocol: the same limits
# must hold there (a ping flood on the unidirectional WebSocket endpoint).
UNI = "/connection/uni_websocket"
CASES += [("ping", False, {3013}, "limit.frame_rate", "native-uni")]


@pytest.mark.slow
@pytest.mark.parametrize(
    ("kind", "deaf", "codes", "counters", "transport"),
    CASES,
    ids=[f"{kind}{'-deaf' if deaf else ''}-{transport}" for kind, deaf, _, _, transport in CASES],
)
async def test_an_attacker_does_not_stall_the_node(
    start_server: Any,
    kind: str,
    deaf: bool,
    codes: set[int | None],
    counters: str,
    transport: str,
) -> None:
    path = UNI if transport.endswith("-uni") else "/connection/websocket"
    transport = transport.removesuffix("-uni")
    settings = suite_settings(transport=transport, uni_websocket={"enabled": True})
    server: RunningServer = await start_server(settings)
    # A shared machine can preempt this process for a slice during one window and not the
    # next: a case whose control p99 misses its bound is measured again, and fails if it misses
    # three times. A stalled loop misses every time (hundreds to thousands of milliseconds).
    for _ in range(3):
        closes, baseline, during, control, grown = await attacked(server, kind, deaf, path)
        print(  # the figures, for -s
            f"{kind}{'-deaf' if deaf else ''}: baseline p99 {p99(baseline) * 1000:.1f} ms, "
            f"attack p99 {p99(during) * 1000:.1f} ms, {control.timeouts} timeouts, "
            f"{len(closes)} attacking connections, closed after "
            f"{[None if c['after'] is None else round(c['after'], 3) for c in closes[:5]]} s "
            f"with {sorted({str(c['code']) for c in closes})}, RSS +{grown / 2**20:.1f} MiB"
        )

        assert closes, "the attacker made no connection"
        for attempt in closes:
            assert attempt["after"] is not None, (
                f"an attacking connection was never closed: {closes}"
            )
            assert attempt["after"] < CLOSED_WITHIN, attempt
            assert attempt["code"] in codes, attempt
        assert any(server.node.counters[name] for name in counters.split("|"))
        # Twice the baseline, with a floor: a baseline of a millisecond or two doubles with any
        # scheduling hiccup of a busy machine (on two loaded cores, the attack's own CPU use
        # gets this process preempted for a slice or two: up to about 90 ms measured during a
        # full test run), which is not what this test is about; a stalled loop adds hundreds
        # to thousands of ms.
        bound = max(2 * p99(baseline), p99(baseline) + 0.1 * UNIT)
        if control.timeouts == 0 and p99(during) <= bound:
            break
    assert control.timeouts == 0, f"{control.timeouts} control round trips timed out"
    assert p99(during) <= bound, (
        f"control p99 {p99(during) * 1000:.1f} ms under attack, "
        f"baseline {p99(baseline) * 1000:.1f} ms (three times in a row)"
    )
    assert grown < RSS_BOUND, f"the server grew by {grown / 2**20:.0f} MiB"


async def test_ordinary_requests_pass_the_header_limits(server: RunningServer) -> None:
    # A handshake with a large cookie and many headers, under both limits: it opens.
    headers = {"Cookie": "session=" + "c" * 20_000, **{f"X-Header-{i}": "v" for i in range(80)}}
    ws = await websockets.connect(server.url, additional_headers=headers, open_timeout=5 * UNIT)
    await ws.close()
    # Many requests on one kept-alive connection, more header bytes than one request may
    # have in all: each request's head is counted on its own.
    reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
    request = b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Filler: " + b"f" * 2000 + b"\r\n\r\n"
    writer.write(request * 40)
    statuses = []
    for _ in range(40):
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5 * UNIT)
        statuses.append(head.split(b" ")[1])
        length = int(head.lower().split(b"content-length: ")[1].split(b"\r\n")[0])
        await reader.readexactly(length)
    writer.close()
    assert statuses == [b"200"] * 40
    # A head of max_header_size bytes passes; one byte more is refused.
    limit = server.node.settings.limits.max_header_size
    start = b"GET /healthz HTTP/1.1\r\nConnection: close\r\nX-Filler: "
    for size, status in ((limit, b"200"), (limit + 1, b"431")):
        reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
        writer.write(start + b"f" * (size - len(start) - 4) + b"\r\n\r\n")
        reply = await asyncio.wait_for(reader.read(), 5 * UNIT)
        writer.close()
        assert reply.split(b" ")[1] == status, size
