"""Soak test: many long-lived connections under steady traffic; does anything grow?

Starts ``hubbub serve`` (memory engine, production mode with a token secret and an API key,
protocol pings every 5 s with a 2 s pong timeout, connection limits lifted) on a loopback port,
pinned to the first CPU when there are several. Client processes (pinned to the other CPUs)
open N connections, each with its own user's token, subscribed to one of a few channels; they
answer every ping and count the publications they receive. A publisher posts to
``POST /api/publish`` at a fixed rate, round-robin over the channels, each publication
carrying its channel's sequence number.

Every few seconds it samples the server process: RSS (VmRSS of /proc/<pid>/status), open file
descriptors (/proc/<pid>/fd) and asyncio tasks (``hubbub_asyncio_tasks`` of ``/metrics``).
Samples of the warm-up are dropped; of the rest, the peak of the last third is compared with
the peak of the first third (tolerances in ``_load.py``: RSS 5%, descriptors and tasks 0.5% or
10) and a least-squares slope is shown. It then checks deliveries: every subscriber must have
received every publication of its channel, in sequence (lost = expected - received = 0, no
gaps), no connection may have been closed by the server (a missed pong would be 3012). Last,
the clients leave without close frames and the server must come back to its idle descriptor
and task counts with 0 clients.

Exits 1 when something grew, was lost, or was left behind. Always bounded: connecting has a
deadline, traffic runs ``--seconds``, and everything started is stopped on exit or Ctrl-C.

Run:  .venv/bin/python benchmarks/soak.py [--connections 10000] [--seconds 120] [--rate 5]
          [--ping-interval 5] [--pong-timeout 2] [--transport native|asgi] [--hold-cycles 1]

With ``--hold-cycles N`` it does all of that N times on the same server (the same users
connect, hold through the traffic, leave) and then compares the peak RSS of each cycle with the
first: what closed connections leave behind adds up from cycle to cycle.
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import sys
import time
from collections import Counter
from typing import Any

from _load import (
    GROWTH_HEADER,
    RSS_TOLERANCE,
    Publisher,
    Server,
    WorkerReport,
    commit,
    cpu_seconds,
    cpus,
    growth,
    holder_process,
    machine,
    progress,
    raise_fd_limit,
    sample,
    sample_for,
    samples_table,
    scrape,
    stop_processes,
    timing_line,
    verdict,
    wait_until,
)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--connections", type=int, default=10_000)
    parser.add_argument("--seconds", type=float, default=120.0, help="traffic time")
    parser.add_argument("--rate", type=float, default=5.0, help="publications per second")
    parser.add_argument("--channels", type=int, default=4)
    parser.add_argument("--client-processes", type=int, default=4)
    parser.add_argument("--ping-interval", type=float, default=5.0)
    parser.add_argument("--pong-timeout", type=float, default=2.0)
    parser.add_argument("--sample-every", type=float, default=5.0, help="seconds")
    parser.add_argument("--warmup", type=float, default=20.0, help="seconds of traffic ignored")
    parser.add_argument(
        "--transport", default="", help="the server's `transport` setting (default: its own)"
    )
    parser.add_argument(
        "--hold-cycles",
        type=int,
        default=1,
        help="connect, hold (the traffic time) and leave this many times on one server; the "
        "peak RSS of every later cycle must stay within 5%% of the first",
    )
    args = parser.parse_args()

    limit = raise_fd_limit()
    if limit < args.connections + 200:
        print(
            f"soak: the descriptor limit is {limit}; {args.connections} connections need "
            f"{args.connections + 200} in the server (raise `ulimit -Hn`)",
            file=sys.stderr,
        )
        return 2
    server_cpu, client_cpus = cpus()
    channels = [f"soak-{i}" for i in range(args.channels)]
    transport = args.transport or "the default"
    print(f"machine: {machine()}; hubbub {commit()}; transport: {transport}")
    print(
        f"soak: {args.connections:,} connections over {args.client_processes} client processes, "
        f"{len(channels)} channels, {args.rate:g} publications/s for {args.seconds:g} s, "
        f"pings every {args.ping_interval:g} s (pong timeout {args.pong_timeout:g} s), "
        f"samples every {args.sample_every:g} s, first {args.warmup:g} s of traffic ignored\n",
        flush=True,
    )

    ctx = mp.get_context("spawn")
    codes: list[int] = []
    peaks: list[int] = []
    with Server(
        ping_interval=args.ping_interval,
        pong_timeout=args.pong_timeout,
        cpu=server_cpu,
        transport=args.transport,
    ) as server:
        for cycle in range(args.hold_cycles):
            if args.hold_cycles > 1:
                print(f"# Hold cycle {cycle + 1} of {args.hold_cycles}\n", flush=True)
            ready, stop, out = ctx.Value("i", 0), ctx.Event(), ctx.Queue()
            workers: list[Any] = []
            try:
                codes.append(
                    run(args, server, channels, client_cpus, ctx, ready, stop, out, workers, peaks)
                )
            finally:
                stop.set()
                stop_processes(workers)
            print()
    if args.hold_cycles > 1 and not hold_cycles_report(peaks):
        return 1
    return max(codes)


def hold_cycles_report(peaks: list[int]) -> bool:
    """Print the peak RSS of every hold cycle against the first; True when every later
    cycle stays within 5% of it (what a closed connection leaves for the collector shows
    here: it adds up cycle after cycle until a full collection runs)."""
    print("## Peak RSS per hold cycle\n")
    print("| cycle | peak RSS (MiB) | against cycle 1 |\n|---|---|---|")
    for i, peak in enumerate(peaks, 1):
        print(f"| {i} | {peak / 1024:,.1f} | {peak / peaks[0] - 1:+.1%} |")
    ok = all(peak <= peaks[0] * (1 + RSS_TOLERANCE) for peak in peaks[1:])
    print(
        f"\nverdict: {'no growth' if ok else 'GROWTH'} (tolerance: every cycle's peak RSS "
        f"within +{RSS_TOLERANCE:.0%} of the first)"
    )
    return ok


def run(
    args: argparse.Namespace,
    server: Server,
    channels: list[str],
    client_cpus: list[int | None],
    ctx: Any,
    ready: Any,
    stop: Any,
    out: Any,
    workers: list[Any],
    peaks: list[int],
) -> int:
    t0 = time.monotonic()
    time.sleep(1.0)  # let the server finish starting its background tasks
    idle = sample(server.pid, server.port, t0)
    users = [(f"soak-{i}", channels[i % len(channels)]) for i in range(args.connections)]
    for i in range(args.client_processes):
        part = users[i :: args.client_processes]
        cpu = client_cpus[i % len(client_cpus)]
        workers.append(
            ctx.Process(target=holder_process, args=(server.url, part, cpu, ready, stop, out))
        )
    for w in workers:
        w.start()

    # Connect: a deadline that grows with N, and give up when nothing moved for 30 s.
    started = time.monotonic()
    last_count, last_move = 0, started
    while ready.value < args.connections:
        now = time.monotonic()
        if ready.value != last_count:
            last_count, last_move = ready.value, now
        if now - last_move > 30 or now - started > 60 + args.connections / 50:
            break
        progress(f"connecting: {ready.value:,}/{args.connections:,}")
        time.sleep(0.2)
    connect_seconds = time.monotonic() - started
    connected = ready.value
    progress(f"connected: {connected:,}/{args.connections:,} in {connect_seconds:.1f} s", True)
    if connected < args.connections:
        print(f"only {connected:,} of {args.connections:,} connections opened", file=sys.stderr)
    full = sample(server.pid, server.port, t0)

    publisher = Publisher(server.port, channels, args.rate)
    cpu_before = cpu_seconds(server.pid)
    traffic_start = time.monotonic()
    publisher.start()
    samples = sample_for(server, args.seconds, args.sample_every, "traffic", traffic_start)
    traffic_seconds = publisher.stop()
    server_busy = (cpu_seconds(server.pid) - cpu_before) / (time.monotonic() - traffic_start)
    # Let the last publications land and at least one more ping round pass.
    time.sleep(max(2.0, args.ping_interval))
    samples.append(sample(server.pid, server.port, traffic_start))
    metrics_during = scrape(server.port)
    peaks.append(max(s.rss_kib for s in [full, *samples]))

    stop.set()
    reports: list[WorkerReport] = []
    for _ in workers:
        reports.append(out.get(timeout=60))
    stop_processes(workers)
    progress("traffic done", True)

    # Everybody left without a close frame: the server must drop back to idle.
    wait_until(lambda: scrape(server.port).get("hubbub_clients") == 0, timeout=30)
    time.sleep(2.0)
    after = sample(server.pid, server.port, t0)

    subscribers: Counter[str] = Counter()
    received: Counter[str] = Counter()
    dropped: Counter[str] = Counter()
    gaps = busy = 0.0
    for r in reports:
        subscribers.update(r.subscribers)
        received.update(r.received)
        dropped.update(r.dropped)
        gaps += r.gaps
        busy = max(busy, r.busy / (traffic_seconds + connect_seconds))
    expected = sum(publisher.published[c] * subscribers[c] for c in channels)
    got = sum(received.values())
    lost = expected - got
    disconnects = {k: v for k, v in metrics_during.items() if k.startswith("hubbub_disconnects")}

    print("## Connecting\n")
    print(
        f"{connected:,} of {args.connections:,} connections (connect + subscribe) in "
        f"{connect_seconds:.1f} s ({connected / max(connect_seconds, 0.001):,.0f}/s)\n"
    )
    print("| server | RSS (MiB) | open fds | asyncio tasks | clients |\n|---|---|---|---|---|")
    for label, s in (("idle", idle), ("all connected", full), ("after clients left", after)):
        print(f"| {label} | {s.rss_kib / 1024:,.1f} | {s.fds:,} | {s.tasks:,} | {s.clients:,} |")
    per_conn = (full.rss_kib - idle.rss_kib) / max(connected, 1)
    print(f"\nserver memory per connection: {per_conn:.1f} KiB")

    print(f"\n## Samples during traffic (every {args.sample_every:g} s)\n")
    print(samples_table(samples, every=max(1, len(samples) // 12)))

    steady = [s for s in samples if s.t >= args.warmup]
    rows = growth(steady)
    print(f"\n## Growth after the warm-up ({len(steady)} samples)\n")
    print(GROWTH_HEADER)
    for g in rows:
        print(g.row())
    print()
    print(verdict(rows))

    print("\n## Deliveries\n")
    published = sum(publisher.published.values())
    print(
        f"published {published:,} ({published / traffic_seconds:.2f}/s; {publisher.errors} "
        f"API errors); deliveries expected {expected:,}, received {got:,}, lost {lost:,}, "
        f"sequence gaps {gaps:.0f}"
    )
    print(
        f"connections closed by the server during the run: {sum(dropped.values()):,}"
        + (f" {dict(dropped)}" if dropped else "")
        + f"; server disconnect counters: {disconnects or 'none'}"
    )
    print(
        f"server CPU during the traffic: {server_busy:.0%} of its core; busiest client process:"
        f" {busy:.0%} of one CPU"
    )
    print(timing_line(publisher, reports))

    left_behind = (
        after.clients != 0
        or after.fds > idle.fds + 5
        or (after.tasks >= 0 and after.tasks > idle.tasks + 5)
    )
    print(
        f"after the clients left: {after.clients} clients, fds {after.fds:,} (idle {idle.fds:,}),"
        f" tasks {after.tasks:,} (idle {idle.tasks:,}): "
        + ("LEFT BEHIND" if left_behind else "back to idle")
    )
    log_line, tracebacks = server.log_summary()
    print(log_line)
    failed = (
        tracebacks
        or connected < args.connections
        or lost != 0
        or gaps
        or dropped
        or publisher.errors
        or left_behind
        or not all(g.ok for g in rows)
    )
    if failed:
        print("\nserver log (tail):\n" + server.log_tail(), file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
