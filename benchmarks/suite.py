"""The benchmark suite: hubbub next to Bun, python-socketio and the FastAPI tutorial manager.

Every server runs on loopback pinned to one core (with its Redis, when it has one); the
subscribers are spread over client processes pinned to the other core, and the publisher runs
in one more process on that core. The clients speak each server's protocol on raw sockets, set
up in Python and then read by a C loop (``pump.c``, compiled on first use) that counts
deliveries in constant work per chunk (see ``clients.py``); the tables show how busy both cores
were: a client core near 100% means the clients, not the server, may have set the pace.

Scenarios (``--quick`` runs a subset):

- one channel with N = 100, 1,000 and 10,000 subscribers; 1,000 channels with 10 subscribers
  each; hubbub with history, and on the Redis engine (a private ``redis-server``);
- in each, the maximum rate, then a fixed rate of half of hubbub native's maximum.
  Maximum rate is a closed loop with ``--in-flight`` deliveries (50,000: 500 publications at
  N = 100, 5 at N = 10,000) in flight, "in flight" meaning sent but not yet received by a probe
  subscriber of every channel that connected last: the publisher goes as fast as the server
  delivers, and a server that acknowledges publications before writing them out cannot run
  ahead. A server whose maximum is below the fixed rate is not run at it (it could only fall
  behind without bound);
- connections: ``--connections`` (20,000, or what the descriptor limit allows) authenticated
  connections with one subscription each, opened ``--setup-concurrency`` at a time: set-up
  rate, set-up time p50/p99, the server's CPU time per set-up (handshake, ``connect`` with a
  JWT, ``subscribe``) and so the set-ups per second its one core could do, RSS per idle
  connection, then held for ``--hold`` seconds with heartbeats (hubbub pings every 10 s here)
  to count the connections that survive them;
- py-spy profiles of hubbub native (with --native) during the set-up of the subscribers and the
  maximum-rate run that follows: one channel with 10,000 subscribers, and the many channels.

Printed per scenario and server: delivered messages/s, server CPU µs per delivery (utime+stime
of the server's processes from /proc over the measured window, divided by the deliveries),
latency p50/p99/max (publisher timestamp in the payload against the client's clock when the
chunk was read), messages lost (expected deliveries minus those counted after the last one
arrived, or 10 s of nothing moving), how busy the server and client cores were, and the ratios
of hubbub to each reference. Results also go to a JSON file, and ``--chart`` draws a PNG.

Run:  .venv/bin/python benchmarks/suite.py [--quick] [--servers ...] [--json FILE] [--chart FILE]
(``benchmarks/setup.sh`` installs Bun and the Python extras first; ``make bench`` does both.)
"""

from __future__ import annotations

import argparse
import contextlib
import json
import multiprocessing as mp
import os
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import harness
import report
from clients import counter_words, worker_main
from harness import (
    ClientProcess,
    Processes,
    broadcast,
    cpu_seconds,
    percentile,
    progress,
    system_seconds,
    write_calls,
)
from servers import Server, bun_binary, catalogue, connection_token

MAIN = ["hubbub", "hubbub-nodelay", "hubbub-asgi", "bun", "tutorial", "socketio"]
VARIANTS = ["hubbub", "hubbub-history", "hubbub-redis", "hubbub-redis-history"]
# Recoverable subscribers next to plain ones of the same channel with history (issue 19's
# target: within 1.2x of them).
RECOVERABLE = [
    "hubbub-history",
    "hubbub-recoverable",
    "hubbub-redis-history",
    "hubbub-redis-recoverable",
]


def heartbeat(server: Server) -> str:
    """Which application heartbeat the clients answer (``clients.HEARTBEATS``)."""
    if server.kind == "hubbub":
        return "hubbub-joined" if server.options.get("transport") == "asgi" else "hubbub"
    return "socketio" if server.kind == "socketio" else ""


@dataclass
class Scenario:
    key: str
    title: str
    subscribers: int
    channels: int = 1
    servers: list[str] = field(default_factory=list)
    publish: bool = True  # False: the connections scenario
    profile: bool = False


def scenarios(args: argparse.Namespace, fd_limit: int) -> list[Scenario]:
    chosen = args.servers or MAIN
    out = []
    for n in args.subscribers:
        out.append(
            Scenario(
                f"one-{n}",
                f"one channel, {n:,} subscribers",
                n,
                servers=chosen,
                profile=n == args.profile_at and not args.no_profile,
            )
        )
    if not args.quick:
        many = [s for s in chosen if catalogue()[s].many_channels]
        channels, each = args.many
        title = f"{channels:,} channels, {each:,} subscribers each"
        out.append(
            Scenario(
                f"many-{channels}x{each}",
                title,
                channels * each,
                channels,
                many,
                profile=not args.no_profile and not args.no_many_profile,
            )
        )
        for n in args.variant_subscribers:
            out.append(
                Scenario(
                    f"variants-{n}",
                    f"hubbub: history, Redis; one channel, {n:,} subscribers",
                    n,
                    servers=VARIANTS,
                )
            )
        for n in args.variant_subscribers:
            out.append(
                Scenario(
                    f"recoverable-{n}",
                    f"hubbub: recoverable subscribers; one channel, {n:,} subscribers",
                    n,
                    servers=RECOVERABLE,
                )
            )
    # The server needs a descriptor per connection plus a few of its own.
    connections = min(args.connections, fd_limit - 150)
    conn_servers = [s for s in chosen if s != "hubbub-nodelay"]
    out.append(
        Scenario(
            "connections",
            f"{connections:,} idle connections, one subscription each",
            connections,
            servers=conn_servers,
            publish=False,
        )
    )
    if args.only:
        out = [s for s in out if s.key in args.only]
    return out


# ---------------------------------------------------------------------------------------------
# Client processes


class Worker(ClientProcess):
    """A client process of ``clients.worker_main``: subscribers, or the publisher."""

    def __init__(
        self,
        ctx: Any,
        procs: Processes,
        cpu: int | None,
        publisher: bool = False,
        library: str | None = None,
        shared: Any = None,
        slot: int = -1,
    ) -> None:
        super().__init__(ctx, procs, worker_main, cpu, publisher, library, shared, slot)


# ---------------------------------------------------------------------------------------------
# One server in one scenario


class Run:
    """A server with its subscribers and publisher, set up once for the scenario's runs."""

    def __init__(
        self,
        scn: Scenario,
        server: Server,
        args: argparse.Namespace,
        ctx: Any,
        procs: Processes,
        bun: str | None,
    ) -> None:
        self.scn, self.server, self.args = scn, server, args
        self.procs = procs
        self.server_cpu, self.client_cpu = args.cores
        self.channels = (
            ["bench"] if scn.channels == 1 else [f"bench.{i}" for i in range(scn.channels)]
        )
        self.subs_per_channel = {c: 0 for c in self.channels}
        # Publications in flight at maximum rate: enough deliveries queued that the server never
        # waits for the clients' core to hand it the next publication.
        per_channel = max(1, scn.subscribers // scn.channels)
        self.window = min(5000, max(4, -(-args.in_flight // per_channel)))
        if not scn.publish and server.kind == "hubbub":
            # Heartbeats every 10 s (pong within 5 s) instead of 25: every connection is
            # pinged while the others connect and during the hold.
            server.options = {**server.options, "ping_interval": 10.0}
        server.start(procs, self.server_cpu, harness.free_port(), bun, self.client_cpu)
        # The C loops count deliveries in shared memory, so the publisher can pace itself on
        # every subscriber's count (deliveries in flight), not on one connection's.
        slots = args.client_processes
        self.shared = ctx.RawArray("q", counter_words(slots)) if args.pump else None
        self.workers = [
            Worker(ctx, procs, self.client_cpu, library=args.pump, shared=self.shared, slot=i)
            for i in range(slots)
        ]
        self.publisher = Worker(ctx, procs, self.client_cpu, publisher=True, shared=self.shared)
        self.result: dict[str, Any] = {"server": server.key, "label": server.label}

    def spec(self, i: int, role: str, channels: list[str], sample: bool = False) -> dict[str, Any]:
        server = self.server
        if role == "pub":
            path = server.pub_path()
        elif role == "probe" and server.kind == "bun":
            path = "/"  # subscribes to its channels with messages
        else:
            path = server.sub_path(channels[0])
        return {
            "kind": server.kind,
            "port": server.port,
            "path": path,
            "channels": channels,
            "role": role,
            "sample": sample,
            "beat": heartbeat(server),
            "token": connection_token(f"{role}{i}") if server.kind == "hubbub" else None,
            "recoverable": server.recoverable,
        }

    def connect(self) -> None:
        """Open every subscriber, all client processes at once; set-up rate and times."""
        scn, args = self.scn, self.args
        # RSS only where it is reported (the connections scenario): settling takes seconds.
        rss = not scn.publish
        rss_before = harness.settle_rss(self.server.server_pid, 1.0) if rss else 0
        step = max(1, scn.subscribers // args.latency_sample)
        per_worker: list[list[dict[str, Any]]] = [[] for _ in self.workers]
        for i in range(scn.subscribers):
            channel = self.channels[i % len(self.channels)]
            self.subs_per_channel[channel] += 1
            per_worker[i % len(self.workers)].append(self.spec(i, "sub", [channel], i % step == 0))
        concurrency = max(1, args.setup_concurrency // len(self.workers))
        # The server's CPU time over the set-up gives what one core could do, whatever set
        # the wall rate (the clients' core, or the clients' concurrency).
        server_pids = self.server.pids
        client_pids = [w.proc.pid for w in self.workers]
        cpu0 = sum(cpu_seconds(p) for p in server_pids)
        client0 = sum(cpu_seconds(p) for p in client_pids)
        t0 = time.monotonic()
        for w, specs in zip(self.workers, per_worker, strict=True):
            w.send("connect", (specs, concurrency))
        answers = [w.recv(600) for w in self.workers]
        t1 = time.monotonic()
        setup_cpu = sum(cpu_seconds(p) for p in server_pids) - cpu0
        client_cpu = sum(cpu_seconds(p) for p in client_pids) - client0
        opened = sum(a["opened"] for a in answers)
        timings = [t / 1e6 for a in answers for t in a["timings"]]
        wall = (max(a["ended"] for a in answers) - min(a["began"] for a in answers)) / 1e9
        failures = [f for a in answers for f in a["failures"]]
        rss_after = harness.settle_rss(self.server.server_pid, 2.0) if rss else 0
        self.result["setup"] = {
            "began": min(a["began"] for a in answers) / 1e9,
            "ended": max(a["ended"] for a in answers) / 1e9,
            "connections": scn.subscribers,
            "opened": opened,
            "failed": sum(a["failed"] for a in answers),
            "failures": failures[:3],
            "per_second": opened / wall if wall else 0.0,
            "p50_ms": percentile(timings, 0.5),
            "p99_ms": percentile(timings, 0.99),
            "max_ms": max(timings, default=float("nan")),
            "concurrency": concurrency * len(self.workers),
            "client_processes": len(self.workers),
            "server_cpu_s": setup_cpu,
            "cpu_us_per_setup": setup_cpu / max(opened, 1) * 1e6,
            "setups_per_core_s": opened / setup_cpu if setup_cpu > 0 else float("nan"),
            "server_core_percent": setup_cpu / max(t1 - t0, 1e-9) * 100,
            "client_core_percent": client_cpu / max(t1 - t0, 1e-9) * 100,
            "rss_before_mib": rss_before / 2**20,
            "rss_after_mib": rss_after / 2**20,
            "rss_per_connection_kib": (rss_after - rss_before) / max(opened, 1) / 1024,
        }
        if opened < scn.subscribers:
            raise RuntimeError(f"{opened} of {scn.subscribers} connected: {failures[:3]}")
        if scn.publish:
            answer = self.publisher.call(
                "connect", ([self.spec(0, "pub", []), self.spec(0, "probe", self.channels)], 1)
            )
            if answer["opened"] != 2:
                raise RuntimeError(f"the publisher could not connect: {answer['failures']}")

    def hold(self) -> None:
        """Idle connections for ``--hold`` seconds: heartbeats answered, nobody dropped."""
        pids = self.server.pids
        broadcast(self.workers, "reset")
        cpu0, t0 = sum(cpu_seconds(p) for p in pids), time.monotonic()
        time.sleep(self.args.hold)
        cpu1, t1 = sum(cpu_seconds(p) for p in pids), time.monotonic()
        stats = broadcast(self.workers, "stats")
        self.result["hold"] = {
            "seconds": t1 - t0,
            "server_cpu_percent": (cpu1 - cpu0) / (t1 - t0) * 100,
            "closed": sum(s["closed"] for s in stats),
            "pongs": sum(s["pongs"] for s in stats),
            "alive": self.scn.subscribers - sum(s["closed"] for s in stats),
        }

    def measure(self, rate: float | None, seconds: float) -> dict[str, Any]:
        """One publishing run (maximum rate when ``rate`` is None) and its drain."""
        pids = self.server.pids
        broadcast(self.workers, "reset")
        self.publisher.call("reset")
        writes0 = write_calls(self.server.server_pid)
        sys0 = system_seconds(self.server.server_pid)
        cpu0, t0 = sum(cpu_seconds(p) for p in pids), time.monotonic()
        if self.shared is not None:
            # Deliveries in flight: every subscriber of a channel, and the probe, per publication.
            per_publication = max(self.subs_per_channel.values()) + 1
            pacing = (self.args.in_flight, per_publication, self.args.client_processes)
        else:
            # Subscribers read in Python count only for themselves: paced on the probe alone.
            pacing = (self.window, 1, 0)
        pub = self.publisher.call(
            "publish", (self.channels, seconds, rate, *pacing), timeout=seconds + 90
        )
        if "error" in pub:
            raise RuntimeError(f"publisher: {pub['error']}")
        expected = sum(n * self.subs_per_channel[c] for c, n in pub["per_channel"].items())
        # Drain: until everything arrived, nothing moved for 2 s, or the time is up.
        deadline = time.monotonic() + self.args.drain
        last_total, last_change = -1, time.monotonic()
        while True:
            stats = broadcast(self.workers, "stats")
            total = sum(s["received"] for s in stats)
            now = time.monotonic()
            if total >= expected or now > deadline:
                break
            if total != last_total:
                last_total, last_change = total, now
            elif now - last_change > 2.0:
                break
            time.sleep(0.05)
        cpu1, t1 = sum(cpu_seconds(p) for p in pids), time.monotonic()
        writes = write_calls(self.server.server_pid) - writes0
        kernel = system_seconds(self.server.server_pid) - sys0
        collected = broadcast(self.workers, "collect")
        publisher_cpu = self.publisher.call("stats")["cpu"]
        delivered = sum(c["received"] for c in collected)
        last = max((c["last"] for c in collected), default=0)
        window = max(last - pub["first_ns"], 1) / 1e9
        latencies = [x / 1e6 for c in collected for x in c["latencies"]]
        client_cpu = sum(c["cpu"] for c in collected) + publisher_cpu
        return {
            "rate": rate,
            "window": self.window if rate is None else None,
            "published": pub["published"],
            "acked": pub["acked"],
            "errors": pub["errors"],
            "expected": expected,
            "delivered": delivered,
            "lost": max(expected - delivered, 0),
            "closed": sum(c["closed"] for c in collected),
            "seconds": window,
            "publications_per_s": pub["published"] / window,
            "deliveries_per_s": delivered / window,
            "server_cpu_s": cpu1 - cpu0,
            "cpu_us_per_delivery": (cpu1 - cpu0) / max(delivered, 1) * 1e6,
            # The server's write system calls (its Redis's not counted) per delivery, where the
            # kernel counts them (write/writev: uvloop's, not Bun's send), and the kernel's
            # share of the server process's CPU time.
            "writes_per_delivery": writes / max(delivered, 1),
            "server_kernel_percent": kernel / max(cpu1 - cpu0, 1e-9) * 100,
            "server_core_percent": (cpu1 - cpu0) / (t1 - t0) * 100,
            "client_core_percent": client_cpu / (t1 - t0) * 100,
            "latency_samples": len(latencies),
            "p50_ms": percentile(latencies, 0.5),
            "p99_ms": percentile(latencies, 0.99),
            "max_ms": max(latencies, default=float("nan")),
        }

    def warm_up(self) -> None:
        self.measure(None, self.args.warmup)

    def close(self) -> None:
        for w in [*self.workers, self.publisher]:
            with contextlib.suppress(RuntimeError, OSError, EOFError):
                w.call("stop", timeout=10)
            self.procs.stop_worker(w.proc)
        self.server.stop(self.procs)


def profile_run(
    scn: Scenario, args: argparse.Namespace, ctx: Any, bun: str | None
) -> dict[str, Any]:
    """hubbub native under py-spy: the subscribers' set-up, then a maximum-rate run.

    py-spy starts the server itself (attaching to a running process is not permitted in every
    sandbox) and records every sample, idle ones included, in time order; the samples of the
    two phases are picked out by their time. Its numbers are not those of the tables: the
    profiler shares the clients' core and slows the server a little.
    """
    pyspy = shutil.which("py-spy", path=str(Path(sys.executable).parent)) or shutil.which("py-spy")
    if pyspy is None:
        return {"error": "py-spy is not installed (pip install -e '.[bench]')"}
    harness.LOCAL.mkdir(parents=True, exist_ok=True)
    out = harness.LOCAL / f"profile-hubbub-{scn.key}.speedscope.json"
    out.unlink(missing_ok=True)
    server = catalogue()["hubbub"]
    server.profiler = [
        pyspy,
        "record",
        "--format",
        "speedscope",
        "--idle",
        "--native",
        "--rate",
        "200",
        "--output",
        str(out),
        "--",
    ]
    with Processes() as procs:
        run = None
        try:
            run = Run(scn, server, args, ctx, procs, bun)
            run.connect()
            setup = run.result["setup"]
            run.warm_up()
            began = time.monotonic()
            measured = run.measure(None, args.seconds)
            ended = time.monotonic()
            started = server.started_at
            if server.proc is not None:
                server.proc.send_signal(signal.SIGINT)  # py-spy writes its file and exits
                try:
                    server.proc.wait(60)
                except subprocess.TimeoutExpired:
                    return {"error": "py-spy did not stop"}
        finally:
            if run is not None:
                run.close()
    if not out.exists():
        return {"error": "py-spy wrote nothing"}
    data = json.loads(out.read_text())
    phases = {
        "max": report.summarize_speedscope(data, started, began, ended),
        "setup": report.summarize_speedscope(data, started, setup["began"], setup["ended"]),
    }
    return {
        "file": str(out.relative_to(harness.ROOT)),
        "title": scn.title,
        "command": " ".join(["py-spy", *server.profiler[1:-2], "<file> -- hubbub serve ..."]),
        "run": measured,
        "setup": setup,
        "phases": phases,
    }


def run_scenario(
    scn: Scenario, args: argparse.Namespace, ctx: Any, bun: str | None, tick: Any
) -> dict[str, Any]:
    out: dict[str, Any] = {
        "key": scn.key,
        "title": scn.title,
        "subscribers": scn.subscribers,
        "channels": scn.channels,
        "rows": [],
    }
    fixed_rate: float | None = None
    for key in scn.servers:
        server = catalogue()[key]
        tick(f"{scn.key}: {server.label}")
        if server.kind == "bun" and bun is None:
            out["rows"].append(
                {
                    "server": key,
                    "label": server.label,
                    "skipped": "Bun is not installed or does not run here",
                }
            )
            continue
        if server.options.get("engine") == "redis" and not shutil.which("redis-server"):
            out["rows"].append(
                {"server": key, "label": server.label, "skipped": "redis-server is not installed"}
            )
            continue
        with Processes() as procs:
            run = None
            try:
                run = Run(scn, server, args, ctx, procs, bun)
                run.connect()
                if not scn.publish:
                    run.hold()
                else:
                    run.warm_up()
                    best = run.measure(None, args.seconds)
                    run.result["max"] = best
                    if fixed_rate is None and key == scn.servers[0]:
                        fixed_rate = best["publications_per_s"] / 2
                    if fixed_rate is not None:
                        if best["publications_per_s"] < fixed_rate:
                            run.result["fixed"] = {
                                "rate": fixed_rate,
                                "skipped": "the rate is above its maximum",
                            }
                        else:
                            run.result["fixed"] = run.measure(fixed_rate, args.seconds)
            except (RuntimeError, OSError, EOFError) as exc:
                run_result = (
                    run.result if run is not None else {"server": key, "label": server.label}
                )
                run_result["error"] = (str(exc) or type(exc).__name__)[:500]
                print(f"\n{server.label}: {exc}", file=sys.stderr)
                out["rows"].append(run_result)
                continue
            finally:
                if run is not None:
                    run.close()
            out["rows"].append(run.result)
    if scn.profile:
        tick(f"{scn.key}: hubbub native under py-spy")
        try:
            out["profile"] = profile_run(scn, args, ctx, bun)
        except (RuntimeError, OSError, EOFError) as exc:
            out["profile"] = {"error": (str(exc) or type(exc).__name__)[:500]}
    return out


def _relative(value: Any) -> str:
    """A setting as text, paths relative to the checkout (results name no machine's folders)."""
    text = str(value)
    root = str(harness.ROOT) + os.sep
    return text.replace(root, "") if isinstance(value, (str, Path)) else text


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__.splitlines()[0] if __doc__ else None,
        epilog="Other benchmarks of the checkout: "
        "hubbub bench chat_load|storm|topologies|fanout|soak|churn [options].",
    )
    parser.add_argument(
        "--quick",
        action="store_true",
        help="a 2-minute subset: N = 100 and 1,000, 1,000 connections, 2 s runs, no "
        "write_delay row and no profile",
    )
    parser.add_argument(
        "--servers",
        nargs="+",
        choices=list(catalogue()),
        help=f"servers of the main scenarios (default: {' '.join(MAIN)})",
    )
    parser.add_argument(
        "--subscribers", type=int, nargs="+", help="one-channel scenarios (default 100 1000 10000)"
    )
    parser.add_argument(
        "--many",
        type=int,
        nargs=2,
        default=[1000, 10],
        metavar=("CHANNELS", "EACH"),
        help="the many-channel scenario (default 1000 channels, 10 subscribers each)",
    )
    parser.add_argument(
        "--variant-subscribers",
        type=int,
        nargs="*",
        default=[10_000],
        help="subscribers of the history/Redis scenarios (default 10000)",
    )
    parser.add_argument(
        "--connections",
        type=int,
        help="connections scenario (default 20000, capped by the descriptor limit)",
    )
    parser.add_argument("--seconds", type=float, help="publishing time of each run (default 5)")
    parser.add_argument("--warmup", type=float, default=1.0, help="seconds before measuring")
    parser.add_argument(
        "--in-flight",
        type=int,
        default=50_000,
        help="deliveries in flight at maximum rate: the window of publications is this divided "
        "by the subscribers of a channel, at least 4 (default 50000)",
    )
    parser.add_argument(
        "--drain",
        type=float,
        default=20.0,
        help="seconds to wait for the last deliveries (default 20)",
    )
    parser.add_argument(
        "--hold",
        type=float,
        help="seconds the idle connections are held (default 12; hubbub pings every 10 s there)",
    )
    parser.add_argument("--client-processes", type=int, default=4)
    parser.add_argument(
        "--setup-concurrency",
        type=int,
        default=100,
        help="connection set-ups in flight, all client processes together",
    )
    parser.add_argument(
        "--latency-sample",
        type=int,
        default=1000,
        help="about this many connections record every latency",
    )
    parser.add_argument("--no-profile", action="store_true", help="skip the py-spy runs")
    parser.add_argument(
        "--no-many-profile",
        action="store_true",
        help="skip the py-spy run of the many-channel scenario only",
    )
    parser.add_argument(
        "--only",
        nargs="+",
        metavar="KEY",
        help="run only these scenarios (keys: one-N, many-CxE, variants-N, recoverable-N, "
        "connections; e.g. --only many-1000x10)",
    )
    parser.add_argument(
        "--python-clients",
        action="store_true",
        help="read the subscribers' sockets in Python instead of the C loop of pump.c",
    )
    parser.add_argument(
        "--profile-at",
        type=int,
        default=10_000,
        help="profile hubbub native in the one-channel scenario of this many subscribers",
    )
    parser.add_argument(
        "--json",
        type=Path,
        help="results file (default benchmarks/results.json; "
        "with --quick benchmarks/.local/quick.json)",
    )
    parser.add_argument(
        "--chart",
        type=Path,
        help="draw the chart there (default with the full suite: docs/benchmarks.png)",
    )
    args = parser.parse_args()
    quick = args.quick
    args.subscribers = args.subscribers or ([100, 1000] if quick else [100, 1000, 10_000])
    args.connections = args.connections or (1000 if quick else 20_000)
    args.seconds = args.seconds or (2.0 if quick else 5.0)
    args.hold = args.hold if args.hold is not None else (2.0 if quick else 12.0)
    if quick:
        args.no_profile = True
        args.warmup = min(args.warmup, 0.5)
        args.servers = args.servers or [s for s in MAIN if s != "hubbub-nodelay"]
    # A part of the suite (--quick, --only) does not replace the full run's results and chart.
    args.json = args.json or (
        harness.LOCAL / "quick.json"
        if quick or args.only
        else harness.ROOT / "benchmarks" / "results.json"
    )
    if args.chart is None and not quick and not args.only:
        args.chart = harness.ROOT / "docs" / "benchmarks.png"

    fd_limit = harness.raise_fd_limit()
    server_cpu, client_cpu = args.cores = harness.cpu_split()
    # The orchestrator (which also mints the tokens) stays off the server's core.
    harness.pin(0, client_cpu)
    bun = bun_binary()
    args.pump = None if args.python_clients else harness.build_pump()
    info = harness.machine(bun)
    info["clients"] = (
        "subscribers read in C (benchmarks/pump.c), set up in Python"
        if args.pump
        else "subscribers read in Python (no C compiler, or --python-clients)"
    )
    info["command"] = " ".join(["python", "benchmarks/suite.py", *sys.argv[1:]])
    info["server_core"], info["client_core"] = str(server_cpu), str(client_cpu)
    plan = scenarios(args, fd_limit)
    total = sum(len(s.servers) for s in plan) + sum(s.profile for s in plan)
    done = 0

    def tick(label: str) -> None:
        nonlocal done
        progress(min(done, total), total, label)
        done += 1

    print(report.machine_text(info, args), flush=True)
    settings = {k: _relative(v) for k, v in vars(args).items()}
    results: dict[str, Any] = {
        "machine": info,
        "settings": settings,
        "scenarios": [],
    }
    ctx = mp.get_context("spawn")
    started = time.monotonic()
    try:
        for scn in plan:
            result = run_scenario(scn, args, ctx, bun, tick)
            results["scenarios"].append(result)
            print("\n" + report.scenario_text(result), flush=True)
    except KeyboardInterrupt:
        print("\ninterrupted: everything started was stopped", file=sys.stderr)
        return 130
    progress(total, total, f"done in {time.monotonic() - started:.0f} s")
    results["elapsed_s"] = time.monotonic() - started
    results["targets"] = report.targets(results)
    print("\n" + report.targets_text(results["targets"]), flush=True)
    for scn_result in results["scenarios"]:
        if "profile" in scn_result:
            print("\n" + report.profile_text(scn_result["profile"]), flush=True)
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(results, indent=1, default=str) + "\n")
    print(f"\nresults: {os.path.relpath(args.json)}", flush=True)
    if args.chart is not None:
        report.chart(results, args.chart)
        print(f"chart: {os.path.relpath(args.chart)}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
