"""Shared parts of the soak and churn benchmarks (``soak.py``, ``churn.py``).

A server under test (``hubbub serve`` on a loopback port, memory engine, a configuration in a
temporary folder), client worker processes holding WebSocket connections that subscribe and
answer the server's pings, a sampler reading the server process's RSS and open descriptors
from /proc and its asyncio task count from ``/metrics``, and the growth verdict over those
samples.
"""

from __future__ import annotations

import asyncio
import contextlib
import http.client
import itertools
import json
import os
import platform
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import websockets

from harness import free_port, raise_fd_limit

SECRET = "soak-benchmark-hmac-secret-0123456789abcdef"
API_KEY = "soak-benchmark-api-key"

# Growth tolerances of the verdict, comparing the peak of the last third of the samples taken
# after the warm-up with the peak of the first third. Peaks, not means: the task count dips
# while messages are being handled (a connection's pending receive is a task that ends and is
# created again for every frame), so only its ceiling is steady. Memory may settle a little
# (allocator arenas, interned strings): 5% is far below what a per-message or per-connection
# leak would add over a run. Descriptors and tasks must stay flat: the slack covers the
# publisher's and the sampler's own HTTP connections and requests in flight.
RSS_TOLERANCE = 0.05
COUNT_TOLERANCE = 0.005
COUNT_SLACK = 10
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def machine() -> str:
    cpu = "unknown CPU"
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            cpu = line.split(":", 1)[1].strip()
            break
    mem = int(Path("/proc/meminfo").read_text().split()[1]) // 1024 // 1024
    return (
        f"{platform.system()} {platform.release()}, {os.cpu_count()} x {cpu}, {mem} GiB, "
        f"Python {platform.python_version()}"
    )


def commit() -> str:
    try:
        out = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"],
            capture_output=True,
            text=True,
            check=True,
            cwd=Path(__file__).parent,
        )
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return out.stdout.strip()


def cpus() -> tuple[int | None, list[int | None]]:
    """The server's CPU and the clients' CPUs: the first CPU for the server when there are
    several, so the clients cannot steal its time; no pinning on one CPU."""
    if not hasattr(os, "sched_getaffinity"):
        return None, [None]
    mine = sorted(os.sched_getaffinity(0))
    if len(mine) < 2:
        return None, [None]
    return mine[0], list(mine[1:])


def pin(pid: int, cpu: int | None) -> None:
    if cpu is not None and hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(pid, {cpu})


# ---------------------------------------------------------------------------------------------
# The server under test


class Server:
    """``hubbub serve`` in a subprocess with a configuration for many loopback connections.

    Use as a context manager: leaving it stops the server (SIGTERM, then SIGKILL) and removes
    the temporary folder, also after an exception or Ctrl-C.
    """

    def __init__(
        self, *, ping_interval: float, pong_timeout: float, cpu: int | None, transport: str = ""
    ) -> None:
        self.port = free_port()
        self.cpu = cpu
        self.folder = Path(tempfile.mkdtemp(prefix="hubbub-soak-"))
        self.config = self.folder / "soak.toml"
        # Production mode with a real secret and API key, so connect and publish take the same
        # paths as in a deployment. Every limit that would refuse 10,000 connections from one
        # address is lifted: the limits are tested elsewhere, the point here is what stays
        # allocated. No presence or join/leave: with thousands of subscribers per channel,
        # every connect would fan out a join to all of them and the run would measure that.
        chosen = f'transport = "{transport}"\n' if transport else ""  # else the default
        self.config.write_text(
            f'port = {self.port}\nlog_level = "warning"\nshutdown_drain_period = 0\n{chosen}'
            f'[token]\nhmac_secret_key = "{SECRET}"\n'
            f'[http_api]\nkey = "{API_KEY}"\n'
            f"[client]\nping_interval = {ping_interval}\npong_timeout = {pong_timeout}\n"
            "[limits]\nconnections_per_ip = 0\nconnections_per_user = 0\nmax_connections = 0\n"
            "[channel.without_namespace]\nallow_subscribe_for_client = true\n"
            "history_size = 100\nhistory_ttl = 300\n"
            '[store]\nurl = "sqlite:///hubbub.db"\n'
        )
        self.proc: subprocess.Popen[bytes] | None = None
        self.log = self.folder / "server.log"

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    @property
    def url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/connection/websocket"

    def __enter__(self) -> Server:
        cmd = [sys.executable, "-m", "hubbub", "serve", "--config", str(self.config)]
        with self.log.open("wb") as log:
            self.proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT)
        pin(self.proc.pid, self.cpu)
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise SystemExit(f"the server exited:\n{self.log.read_text()}")
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.2).close()
                return self
            except OSError:
                time.sleep(0.05)
        self.__exit__(None, None, None)
        raise SystemExit(f"nothing listens on port {self.port}")

    def __exit__(self, *exc: object) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        shutil.rmtree(self.folder, ignore_errors=True)

    def log_summary(self) -> tuple[str, int]:
        """A one-line count of the server log's lines by level (and tracebacks), and how many
        tracebacks: a traceback during a soak is a server bug, whatever caused it."""
        text = self.log.read_text(errors="replace") if self.log.exists() else ""
        levels: Counter[str] = Counter()
        tracebacks = 0
        for line in text.splitlines():
            if line.startswith("Traceback"):
                tracebacks += 1
            parts = line.split(" ", 3)
            if len(parts) > 2 and parts[2] in ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"):
                levels[parts[2]] += 1
        counts = ", ".join(f"{n} {level}" for level, n in levels.most_common()) or "empty"
        return f"server log: {counts}; {tracebacks} tracebacks", tracebacks

    def log_tail(self, lines: int = 20) -> str:
        try:
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""


# ---------------------------------------------------------------------------------------------
# Publishing and sampling


class Publisher:
    """Publishes through the HTTP API at a fixed rate, on one keep-alive connection, in a thread
    of its own: a slow server delays publications, never the sampling."""

    def __init__(self, port: int, channels: list[str], rate: float) -> None:
        self.conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        self.channels = channels
        self.rate = rate
        self.published: Counter[str] = Counter()
        self.errors = 0
        self.count = 0
        self.latencies: list[float] = []
        self.seconds = 0.0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> float:
        """Stop publishing; returns the seconds it published for."""
        self._stop.set()
        self._thread.join(30)
        return self.seconds

    def _run(self) -> None:
        start = time.monotonic()
        while not self._stop.is_set():
            due = int((time.monotonic() - start) * self.rate) + 1
            while self.count < due and not self._stop.is_set():
                self.publish_next()
            self._stop.wait(0.002)
        self.seconds = time.monotonic() - start

    def publish_next(self) -> None:
        channel = self.channels[self.count % len(self.channels)]
        self.count += 1
        body = json.dumps(
            {"channel": channel, "data": {"n": self.published[channel], "pad": "x" * 60}}
        )
        headers = {"X-API-Key": API_KEY, "Content-Type": "application/json"}
        started = time.monotonic()
        try:
            self.conn.request("POST", "/api/publish", body, headers)
            response = self.conn.getresponse()
            reply = response.read()
            self.latencies.append(time.monotonic() - started)
        except (OSError, http.client.HTTPException):
            self.errors += 1
            self.conn.close()  # reconnects on the next request
            return
        if response.status == 200 and b'"result"' in reply:
            self.published[channel] += 1
        else:
            self.errors += 1


@dataclass
class Sample:
    t: float
    rss_kib: int
    fds: int
    tasks: int
    clients: int
    scrape_ms: float = 0.0


def scrape(port: int) -> dict[str, float]:
    """The unlabelled samples of ``/metrics`` (name -> value)."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        conn.request("GET", "/metrics")
        text = conn.getresponse().read().decode()
    finally:
        conn.close()
    values: dict[str, float] = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            name, _, value = line.rpartition(" ")
            with contextlib.suppress(ValueError):
                values[name] = float(value)
    return values


def cpu_seconds(pid: int) -> float:
    """User plus system CPU time of a process, from /proc."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS


def sample(pid: int, port: int, t0: float) -> Sample:
    rss = 0
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            rss = int(line.split()[1])
    fds = len(os.listdir(f"/proc/{pid}/fd"))
    started = time.monotonic()
    metrics = scrape(port)
    return Sample(
        t=time.monotonic() - t0,
        rss_kib=rss,
        fds=fds,
        tasks=int(metrics.get("hubbub_asyncio_tasks", -1)),
        clients=int(metrics.get("hubbub_clients", -1)),
        scrape_ms=(time.monotonic() - started) * 1000,
    )


def sample_for(
    server: Server, seconds: float, every: float, label: str, start: float
) -> list[Sample]:
    """Sample ``server`` every ``every`` seconds for ``seconds`` from ``start`` (monotonic),
    showing each sample on the status line as ``label``."""
    samples: list[Sample] = []
    next_sample = start
    while time.monotonic() - start < seconds:
        s = sample(server.pid, server.port, start)
        samples.append(s)
        progress(
            f"{label} {s.t:.0f}/{seconds:g} s: RSS {s.rss_kib / 1024:.1f} MiB, "
            f"fds {s.fds:,}, tasks {s.tasks:,}, clients {s.clients:,}"
        )
        next_sample += every
        time.sleep(max(0.0, next_sample - time.monotonic()))
    return samples


def slope_per_minute(xs: list[float], ys: list[float]) -> float:
    """Least-squares slope of ys over xs (seconds), per minute."""
    if len(xs) < 2:
        return 0.0
    mx, my = statistics.fmean(xs), statistics.fmean(ys)
    var = sum((x - mx) ** 2 for x in xs)
    if var == 0:
        return 0.0
    return sum((x - mx) * (y - my) for x, y in zip(xs, ys, strict=True)) / var * 60


@dataclass
class Growth:
    name: str
    unit: str
    first: float
    last: float
    low: float
    high: float
    slope: float
    allowed: float

    @property
    def ok(self) -> bool:
        return self.last - self.first <= self.allowed

    def row(self) -> str:
        change = self.last - self.first
        pct = change / self.first * 100 if self.first else 0.0
        return (
            f"| {self.name} | {self.first:,.0f} | {self.last:,.0f} | {change:+,.0f} ({pct:+.2f}%) "
            f"| {self.slope:+,.1f} | {self.low:,.0f} .. {self.high:,.0f} | {self.allowed:,.0f} | "
            f"{'ok' if self.ok else 'GROWS'} |"
        )


def growth(
    samples: list[Sample], slack: int = COUNT_SLACK, task_slack: int | None = None
) -> list[Growth]:
    """Peak of the first third against peak of the last third of ``samples`` (already past the
    warm-up); ``slack``: how much descriptors may move without a leak (connections in flight),
    ``task_slack`` the same for tasks (default ``slack``)."""
    third = max(1, len(samples) // 3)
    first, last = samples[:third], samples[-third:]
    xs = [s.t for s in samples]
    out = []
    for name, unit, attr in (
        ("RSS (KiB)", "KiB", "rss_kib"),
        ("open fds", "", "fds"),
        ("asyncio tasks", "", "tasks"),
    ):
        ys = [float(getattr(s, attr)) for s in samples]
        a = max(float(getattr(s, attr)) for s in first)
        b = max(float(getattr(s, attr)) for s in last)
        tolerance = RSS_TOLERANCE if attr == "rss_kib" else COUNT_TOLERANCE
        room = task_slack if attr == "tasks" and task_slack is not None else slack
        allowed = a * tolerance if attr == "rss_kib" else max(room, a * tolerance)
        out.append(Growth(name, unit, a, b, min(ys), max(ys), slope_per_minute(xs, ys), allowed))
    return out


GROWTH_HEADER = (
    "| metric | peak, first third | peak, last third | change | slope per minute "
    "| min .. max | allowed growth | verdict |\n|---|---|---|---|---|---|---|---|"
)


def verdict(rows: list[Growth], slack: int = COUNT_SLACK, task_slack: int | None = None) -> str:
    bad = [g.name for g in rows if not g.ok]
    counts = (
        f"fds and tasks +max({slack}, {COUNT_TOLERANCE:.1%})"
        if task_slack is None or task_slack == slack
        else f"fds +max({slack}, {COUNT_TOLERANCE:.1%}), tasks +max({task_slack}, "
        f"{COUNT_TOLERANCE:.1%})"
    )
    tolerance = (
        f"tolerance: RSS +{RSS_TOLERANCE:.0%}, {counts}, peak of the last third against the first"
    )
    if bad:
        return f"verdict: GROWTH in {', '.join(bad)} ({tolerance})"
    return f"verdict: no growth ({tolerance})"


def samples_table(samples: list[Sample], every: int = 1) -> str:
    lines = [
        "| t (s) | RSS (MiB) | open fds | asyncio tasks | clients | /metrics answered in (ms) |",
        "|---|---|---|---|---|---|",
    ]
    for s in samples[::every]:
        lines.append(
            f"| {s.t:.0f} | {s.rss_kib / 1024:,.1f} | {s.fds:,} | {s.tasks:,} | {s.clients:,} "
            f"| {s.scrape_ms:,.0f} |"
        )
    return "\n".join(lines)


# ---------------------------------------------------------------------------------------------
# Client worker processes


@dataclass
class WorkerReport:
    """What one client process saw."""

    connected: int = 0
    failed_connects: int = 0
    subscribers: Counter[str] = field(default_factory=Counter)
    received: Counter[str] = field(default_factory=Counter)
    gaps: int = 0
    dropped: Counter[str] = field(default_factory=Counter)
    cycles: int = 0
    cycle_errors: Counter[str] = field(default_factory=Counter)
    busy: float = 0.0
    max_lag: float = 0.0
    max_ping_gap: float = 0.0


def _connect(url: str) -> Any:
    # No client-side WebSocket pings and no compression: the only heartbeats are the server's
    # protocol pings the clients must answer, and the server has compression off.
    return websockets.connect(
        url, compression=None, ping_interval=None, proxy=None, open_timeout=30, max_size=None
    )


def _frame(token: str, channel: str) -> str:
    connect = {"id": 1, "connect": {"token": token}}
    subscribe = {"id": 2, "subscribe": {"channel": channel}}
    return json.dumps(connect) + "\n" + json.dumps(subscribe)


async def _replies(ws: Any, count: int) -> None:
    """Wait for ``count`` replies; a reply with an error fails the connection."""
    got = 0
    while got < count:
        data = await ws.recv()
        for line in str(data).split("\n"):
            if line == "{}":
                await ws.send("{}")
                continue
            if '"error"' in line:
                raise RuntimeError(f"error reply: {line[:200]}")
            got += 1


async def hold_connections(
    url: str,
    users: list[tuple[str, str]],
    ready: Any,
    stop: Any,
    concurrency: int = 32,
) -> WorkerReport:
    """Open one connection per (user, channel), each with its own token; keep them, answer
    pings, count publications per channel (and gaps in their per-channel sequence numbers)
    until ``stop`` is set. A connection the server closes is counted in ``dropped``."""
    from hubbub.auth import mint_connection_token

    report = WorkerReport()
    gate = asyncio.Semaphore(concurrency)  # a bounded handshake burst, like real reconnects

    async def one(user: str, channel: str) -> None:
        token = mint_connection_token(SECRET, user)
        try:
            async with gate:
                ws = await _connect(url)
                await ws.send(_frame(token, channel))
                await _replies(ws, 2)
        except Exception as exc:
            report.failed_connects += 1
            report.dropped[f"connect: {type(exc).__name__}"] += 1
            return
        report.connected += 1
        report.subscribers[channel] += 1
        with ready.get_lock():
            ready.value += 1
        last = -1
        pinged = 0.0
        try:
            while True:
                data = await ws.recv()
                for line in str(data).split("\n"):
                    if line == "{}":
                        await ws.send("{}")  # pong
                        now = time.monotonic()
                        if pinged:
                            report.max_ping_gap = max(report.max_ping_gap, now - pinged)
                        pinged = now
                        continue
                    if '"pub"' not in line:
                        continue
                    report.received[channel] += 1
                    n = json.loads(line)["push"]["pub"]["data"]["n"]
                    if last >= 0 and n != last + 1:
                        report.gaps += 1
                    last = n
        except websockets.ConnectionClosed as exc:
            code = exc.rcvd.code if exc.rcvd is not None else "without close frame"
            report.dropped[f"closed by server: {code}"] += 1
        finally:
            # Stopping cancels this task: leave without a close handshake, so 10,000
            # connections end at once and the server sees them all vanish together.
            ws.transport.abort()

    start_cpu = time.process_time()
    tasks = [asyncio.create_task(one(user, channel)) for user, channel in users]
    # A multiprocessing event cannot be awaited: poll it, and see how late this loop wakes (a
    # client too busy to answer pings in time would make the server's 3012 the client's fault).
    while not stop.is_set():
        before = time.monotonic()
        await asyncio.sleep(0.05)
        report.max_lag = max(report.max_lag, time.monotonic() - before - 0.05)
    report.busy = time.process_time() - start_cpu
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    return report


async def churn_connections(
    url: str, worker: int, loops: int, stop: Any, started: Any, fresh_users: bool = True
) -> WorkerReport:
    """Connect, subscribe and leave in ``loops`` concurrent loops until ``stop`` is set.

    Every cycle is a new user (``fresh_users``), or each loop is always the same user. Cycles
    rotate through three ways of leaving: a clean close
    handshake after the subscribe reply; an abrupt TCP abort (no close frame) after the
    subscribe reply; and an abort right after sending the connect command, before the server
    has answered, so the server also sees connections vanish while it is still authenticating
    them.
    """
    from hubbub.auth import mint_connection_token

    report = WorkerReport()

    async def loop(slot: int) -> None:
        for cycle in itertools.count():
            if stop.is_set():
                return
            mode = (slot + cycle) % 3
            # A new user every cycle: whatever the server keeps per user (the user's index,
            # command bucket, personal channel) must go when the user's last connection does.
            # The same user every cycle isolates what is kept per connection.
            user = f"churn-{worker}-{slot}-{cycle}" if fresh_users else f"churn-{worker}-{slot}"
            token = mint_connection_token(SECRET, user)
            try:
                ws = await _connect(url)
            except Exception as exc:
                report.cycle_errors[f"connect: {type(exc).__name__}"] += 1
                await asyncio.sleep(0.05)
                continue
            try:
                await ws.send(_frame(token, f"churn-{slot % 4}"))
                if mode == 2:
                    ws.transport.abort()
                else:
                    await _replies(ws, 2)
                    if mode == 0:
                        await ws.close()
                    else:
                        ws.transport.abort()
                report.cycles += 1
            except Exception as exc:
                report.cycle_errors[type(exc).__name__] += 1
                ws.transport.abort()

    started.set()
    start_cpu = time.process_time()
    await asyncio.gather(*(loop(slot) for slot in range(loops)))
    report.busy = time.process_time() - start_cpu
    return report


def holder_process(
    url: str, users: list[tuple[str, str]], cpu: int | None, ready: Any, stop: Any, out: Any
) -> None:
    raise_fd_limit()
    if cpu is not None:
        os.sched_setaffinity(0, {cpu})
    # Ctrl-C reaches the whole process group: the parent stops the workers through ``stop``.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    report = asyncio.run(hold_connections(url, users, ready, stop))
    out.put(report)


def churn_process(
    url: str,
    worker: int,
    loops: int,
    cpu: int | None,
    stop: Any,
    started: Any,
    out: Any,
    fresh_users: bool = True,
) -> None:
    raise_fd_limit()
    if cpu is not None:
        os.sched_setaffinity(0, {cpu})
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    report = asyncio.run(churn_connections(url, worker, loops, stop, started, fresh_users))
    out.put(report)


def stop_processes(procs: list[Any], timeout: float = 20) -> None:
    """Join worker processes; kill the ones that do not end in time."""
    deadline = time.monotonic() + timeout
    for p in procs:
        p.join(max(0.1, deadline - time.monotonic()))
    for p in procs:
        if p.is_alive():
            p.kill()
            p.join(5)


def timing_line(publisher: Publisher, reports: list[WorkerReport]) -> str:
    """How responsive both sides were: publish round trips (the server's event loop), the
    longest gap between two pings a client saw (the server's timers), and the longest a
    client's event loop woke late (the clients' own share of any missed pong)."""
    lat = sorted(publisher.latencies) or [0.0]
    p99 = lat[min(len(lat) - 1, int(len(lat) * 0.99))]
    gap = max((r.max_ping_gap for r in reports), default=0.0)
    lag = max((r.max_lag for r in reports), default=0.0)
    return (
        f"publish API round trip ms p50 / p99 / max: {statistics.median(lat) * 1000:.1f} / "
        f"{p99 * 1000:.1f} / {lat[-1] * 1000:.1f}; longest gap between two pings seen by a "
        f"client: {gap:.1f} s; longest client event-loop lag: {lag * 1000:.0f} ms"
    )


def wait_until(predicate: Any, timeout: float, step: float = 0.5) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(step)
    return bool(predicate())


def progress(label: str, end: bool = False) -> None:
    """A status line on a terminal's stderr (the tables on stdout stay clean for pipes)."""
    if sys.stderr.isatty():
        print(f"\r{label:<78}", end="\n" if end else "", file=sys.stderr, flush=True)
