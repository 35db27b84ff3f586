"""Churn test: connections come and go at a high rate next to a steady population.

Starts ``hubbub serve`` like ``soak.py`` (memory engine, token secret and API key, pings every
5 s, connection limits lifted, pinned to the first CPU when there are several). First a
background population connects and stays: each connection with its own user's token,
subscribed to one of four channels, answering pings, counting publications, which a publisher
posts through ``POST /api/publish`` at a low fixed rate the whole time.

Then churn processes (pinned to the other CPUs) each run many concurrent loops of: connect
with the token of a new user (``--users reuse``: the same user for each loop), subscribe,
leave. The way of leaving rotates: a clean close handshake; an abrupt TCP abort without a
close frame after the subscribe reply; an abort right after sending the connect command,
before the server has answered. It reports the cycles per
second achieved (with the server's and the busiest client's CPU, to tell which side set the
pace), and samples the server's RSS, open descriptors and asyncio tasks during the churn
(growth verdict as in ``soak.py``, descriptors and tasks allowed to move by the connections in
flight).

When the churn stops, the server must come back to exactly the background population (the
``hubbub_clients`` gauge; any excess is a stale session) and to the descriptor and task counts
it had with the background alone; and the background must have received every publication,
with no connection closed by the server. Exits 1 otherwise.

Run:  .venv/bin/python benchmarks/churn.py [--seconds 60] [--background 1000]
          [--churn-processes 3] [--loops 32] [--users fresh|reuse] [--transport native|asgi]
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
    Publisher,
    Server,
    WorkerReport,
    churn_process,
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
    parser.add_argument("--seconds", type=float, default=60.0, help="churn time")
    parser.add_argument("--background", type=int, default=1000, help="connections that stay")
    parser.add_argument("--churn-processes", type=int, default=3)
    parser.add_argument("--loops", type=int, default=32, help="concurrent loops per process")
    parser.add_argument("--rate", type=float, default=2.0, help="publications per second")
    parser.add_argument(
        "--users",
        choices=["fresh", "reuse"],
        default="fresh",
        help="a new user every cycle, or the same user for each loop (what is kept per user vs "
        "per connection)",
    )
    parser.add_argument("--sample-every", type=float, default=5.0, help="seconds")
    parser.add_argument("--warmup", type=float, default=10.0, help="seconds of churn ignored")
    parser.add_argument(
        "--transport", default="", help="the server's `transport` setting (default: its own)"
    )
    args = parser.parse_args()

    raise_fd_limit()
    server_cpu, client_cpus = cpus()
    channels = [f"bg-{i}" for i in range(4)]
    transport = args.transport or "the default"
    print(f"machine: {machine()}; hubbub {commit()}; transport: {transport}")
    users = "a new user every cycle" if args.users == "fresh" else "one user per loop"
    print(
        f"churn: {args.churn_processes} processes x {args.loops} concurrent connect/subscribe/"
        f"leave loops ({users}) for {args.seconds:g} s next to {args.background:,} steady "
        f"connections ({args.rate:g} publications/s to them), samples every "
        f"{args.sample_every:g} s, first {args.warmup:g} s ignored\n",
        flush=True,
    )
    ctx = mp.get_context("spawn")
    workers: list[Any] = []
    stops = [ctx.Event(), ctx.Event()]  # background, churn
    server = Server(ping_interval=5.0, pong_timeout=2.0, cpu=server_cpu, transport=args.transport)
    with server:
        try:
            return run(args, server, channels, client_cpus, ctx, stops, workers)
        finally:
            for stop in stops:
                stop.set()
            stop_processes(workers)


def run(
    args: argparse.Namespace,
    server: Server,
    channels: list[str],
    client_cpus: list[int | None],
    ctx: Any,
    stops: list[Any],
    workers: list[Any],
) -> int:
    bg_stop, churn_stop = stops
    t0 = time.monotonic()
    time.sleep(1.0)
    idle = sample(server.pid, server.port, t0)

    ready, bg_out = ctx.Value("i", 0), ctx.Queue()
    users = [(f"bg-{i}", channels[i % len(channels)]) for i in range(args.background)]
    holders = [
        ctx.Process(
            target=holder_process,
            args=(
                server.url,
                users[i::2],
                client_cpus[i % len(client_cpus)],
                ready,
                bg_stop,
                bg_out,
            ),
        )
        for i in range(2)
    ]
    workers.extend(holders)
    for w in holders:
        w.start()
    if not wait_until(lambda: ready.value >= args.background, timeout=60 + args.background / 50):
        print(f"only {ready.value} background connections opened", file=sys.stderr)
        return 1
    publisher = Publisher(server.port, channels, args.rate)
    publisher.start()

    # The background alone, settled: what the server must come back to after the churn.
    time.sleep(2.0)
    before = sample(server.pid, server.port, t0)

    churn_out = ctx.Queue()
    started = [ctx.Event() for _ in range(args.churn_processes)]
    churners = [
        ctx.Process(
            target=churn_process,
            args=(
                server.url,
                i,
                args.loops,
                client_cpus[i % len(client_cpus)],
                churn_stop,
                started[i],
                churn_out,
                args.users == "fresh",
            ),
        )
        for i in range(args.churn_processes)
    ]
    workers.extend(churners)
    for w in churners:
        w.start()
    for event in started:
        event.wait(60)
    cpu_before = cpu_seconds(server.pid)
    churn_start = time.monotonic()
    samples = sample_for(server, args.seconds, args.sample_every, "churn", churn_start)
    churn_stop.set()
    churn_reports: list[WorkerReport] = [churn_out.get(timeout=60) for _ in churners]
    churn_seconds = time.monotonic() - churn_start
    server_busy = (cpu_seconds(server.pid) - cpu_before) / churn_seconds
    stop_processes(churners)
    progress("churn done", True)

    # Every churned connection is gone from the client side: the server must forget them all.
    def settled() -> bool:
        return scrape(server.port).get("hubbub_clients") == args.background

    wait_until(settled, timeout=30)
    time.sleep(2.0)
    after = sample(server.pid, server.port, t0)
    publisher.stop()
    time.sleep(5.0)  # the last publications land, one more ping round passes
    metrics = scrape(server.port)
    bg_stop.set()
    bg_reports: list[WorkerReport] = [bg_out.get(timeout=60) for _ in holders]
    stop_processes(holders)

    cycles = sum(r.cycles for r in churn_reports)
    errors: Counter[str] = Counter()
    for r in churn_reports:
        errors.update(r.cycle_errors)
    client_busy = max(r.busy for r in churn_reports) / churn_seconds
    subscribers: Counter[str] = Counter()
    received: Counter[str] = Counter()
    dropped: Counter[str] = Counter()
    gaps = 0
    for r in bg_reports:
        subscribers.update(r.subscribers)
        received.update(r.received)
        dropped.update(r.dropped)
        gaps += r.gaps
    expected = sum(publisher.published[c] * subscribers[c] for c in channels)
    got = sum(received.values())
    accepted = sum(v for k, v in metrics.items() if k.startswith("hubbub_connections_accepted"))
    disconnects = {k: v for k, v in metrics.items() if k.startswith("hubbub_disconnects")}

    print("## Churn\n")
    print(
        f"{cycles:,} connect/subscribe/leave cycles in {churn_seconds:.1f} s: "
        f"**{cycles / churn_seconds:,.0f} connections/s** ({sum(errors.values())} failed"
        + (f": {dict(errors)}" if errors else "")
        + f"); server CPU {server_busy:.0%} of its core, busiest churn process "
        f"{client_busy:.0%} of one CPU; connections accepted by the server in all: "
        f"{accepted:,.0f}"
    )
    print(f"\n## Samples during the churn (every {args.sample_every:g} s)\n")
    print(samples_table(samples, every=max(1, len(samples) // 12)))
    # Connections in flight move the counts: one descriptor each, and as many tasks as a
    # connection holds (measured on the background: 3 through ASGI, none natively).
    slack = args.churn_processes * args.loops
    per_connection = max(1, round((before.tasks - idle.tasks) / max(args.background, 1)))
    task_slack = slack * per_connection
    steady = [s for s in samples if s.t >= args.warmup]
    rows = growth(steady, slack=slack, task_slack=task_slack)
    print(f"\n## Growth during the churn, after the warm-up ({len(steady)} samples)\n")
    print(GROWTH_HEADER)
    for g in rows:
        print(g.row())
    print()
    print(verdict(rows, slack=slack, task_slack=task_slack))

    print("\n## After the churn\n")
    print("| server | RSS (MiB) | open fds | asyncio tasks | clients |\n|---|---|---|---|---|")
    for label, s in (("idle", idle), ("background only, before", before), ("after", after)):
        print(f"| {label} | {s.rss_kib / 1024:,.1f} | {s.fds:,} | {s.tasks:,} | {s.clients:,} |")
    stale = after.clients - args.background
    left_fds = after.fds - before.fds
    left_tasks = after.tasks - before.tasks
    print(
        f"\nstale sessions: {stale} (clients {after.clients:,}, background {args.background:,});"
        f" descriptors left behind: {left_fds:+}; tasks left behind: {left_tasks:+}"
    )
    print(
        f"background: deliveries expected {expected:,}, received {got:,}, lost {expected - got:,},"
        f" sequence gaps {gaps}; closed by the server: {sum(dropped.values())}"
        + (f" {dict(dropped)}" if dropped else "")
        + f"; server disconnect counters: {disconnects or 'none'}"
    )
    print(timing_line(publisher, bg_reports))
    log_line, tracebacks = server.log_summary()
    print(log_line)
    failed = (
        tracebacks
        or stale != 0
        or left_fds > 2
        or left_tasks > 2
        or expected != got
        or gaps
        or dropped
        or publisher.errors
        or not all(g.ok for g in rows)
    )
    if failed:
        print("\nserver log (tail):\n" + server.log_tail(), file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
