"""Reconnect storms: many clients coming back at once, with recovery, while others are served.

Rows (one run, side by side):

- ``kill``: two ``hubbub serve`` nodes (native transport) on one private Redis, history and
  recovery on in the rooms' namespace. The members (``--rooms`` x ``--room-size``, HS256
  tokens) are on node B, each subscribed to its room with ``recoverable: true``; a control
  group (``--control`` clients in rooms of 10, no history) is on node A. A publisher on node A
  publishes ~100-byte timestamped JSON at fixed rates to the rooms and to the control rooms.
  Node B is killed with SIGKILL: its members reconnect at once to node A (as a load balancer
  would send them), each with its token and ``recover: true`` from its last offset and epoch.
- ``restart`` (not run unless asked): the same, but node B is started again at once on its
  port and its members come back to it (retrying while it starts).
- ``blip``: one node on the memory engine, members and control group on it; the members close
  their connections at once (a network blip) and reconnect with recovery.
- ``bun blip``: the same on Bun's pub/sub, which has no recovery: only the time until the
  members are set up again (and subscribed), and the control group's latency meanwhile.

For each row: the time from the kill (or the drop) until the last member recovered (subscribe
reply with ``recovered: true`` read, the missed publications in it), per-member recovery times
(p50/p99/max), members refused or not recovered, gaps and duplicates (each member checks that
offsets follow one another; at the end its offset must be its room's publication count), the
control group's delivery latency p50/p99/max before the storm (as long a window as the storm)
and during it, control deliveries lost, the server processes' CPU during the storm (nodes and
Redis) and the share of the clients' core the client processes used, and the SYNs the kernel
dropped from full listen queues meanwhile (machine-wide: each delays a client by 1 s, then 3 s;
another program's drops count too). Rows on Redis also print the Redis commands run during the
storm per member (the history reads are the Lua scripts that are not publications: ``xrange``).
Servers run on CPU 0 and clients on CPU 1 when the machine has two.

Run:  .venv/bin/python benchmarks/storm.py [--quick] [--rooms 1000] [--room-size 10]
          [--control 1000] [--room-rate 500] [--control-rate 100] [--rows kill restart blip bun]
          [--json PATH] [--profile]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import multiprocessing as mp
import os
import signal
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from harness import (
    LOCAL,
    Processes,
    cpu_seconds,
    cpu_split,
    free_port,
    machine,
    percentile,
    progress,
    raise_fd_limit,
    start_redis,
    wait_for_port,
)
from servers import bun_binary, catalogue, connection_token, hubbub_config
from storm_clients import worker_main

ROOM_NAMESPACE = "room"
BEFORE_SECONDS = 2.0
"""Publishing before the storm: every room has history, the control group a baseline."""
STORM_TIMEOUT = 120.0
"""Longest wait for every member to be set up again."""


def node_config(port: int, redis_url: str) -> str:
    """The suite's configuration plus the rooms' namespace: history and recovery on."""
    engine = "redis" if redis_url else "memory"
    return hubbub_config(port, redis_url, engine=engine) + "\n".join(
        [
            "[[channel.namespaces]]",
            f'name = "{ROOM_NAMESPACE}"',
            "history_size = 100",
            "history_ttl = 300",
            "allow_recovery = true",
            "allow_subscribe_for_client = true",
            "allow_publish_for_client = true",
            "",
        ]
    )


def start_node(procs: Processes, cpu: int | None, redis_url: str, port: int = 0) -> tuple[Any, int]:
    """``hubbub serve`` with :func:`node_config` on ``port`` (a free one if 0)."""
    port = port or free_port()
    folder = procs.tempdir()
    (folder / "node.toml").write_text(node_config(port, redis_url))
    cmd = [sys.executable, "-m", "hubbub", "serve", "--config", str(folder / "node.toml")]
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    proc = procs.start(cmd, cpu, log=folder / "node.log", env=env, cwd=folder)
    wait_for_port(port, proc)
    return proc, port


@dataclass
class Clients:
    """The client processes of a row and their pipes."""

    procs: Processes
    cpu: int | None
    pipes: list[Any] = field(default_factory=list)
    workers: list[Any] = field(default_factory=list)

    def spawn(self, publisher: bool = False) -> Any:
        ctx = mp.get_context("spawn")
        inbox_r, inbox_w = ctx.Pipe(duplex=False)
        out_r, out_w = ctx.Pipe(duplex=False)
        proc = ctx.Process(target=worker_main, args=(inbox_r, out_w, self.cpu, publisher))
        proc.start()
        self.procs.add_worker(proc)
        self.workers.append(proc)
        pipe = (inbox_w, out_r)
        self.pipes.append(pipe)
        return pipe

    @staticmethod
    def ask(pipe: Any, cmd: str, arg: Any = None, timeout: float = 120.0) -> Any:
        pipe[0].send((cmd, arg))
        if not pipe[1].poll(timeout):
            raise RuntimeError(f"a client process did not answer {cmd!r} in {timeout:g} s")
        return pipe[1].recv()

    def cpu_used(self) -> float:
        return sum(cpu_seconds(w.pid) for w in self.workers if w.pid)

    def stop(self) -> None:
        for pipe in self.pipes:
            with contextlib.suppress(OSError, EOFError, RuntimeError):
                self.ask(pipe, "stop", timeout=10)
        for worker in self.workers:
            self.procs.stop_worker(worker)


def listen_drops() -> int:
    """SYNs dropped by full listen queues so far, machine-wide (``ListenDrops`` of TcpExt in
    /proc/net/netstat): each costs its client a retransmission 1 s later (then 3 s, 7 s)."""
    lines = Path("/proc/net/netstat").read_text().splitlines()
    for names, values in zip(lines[::2], lines[1::2], strict=False):
        if names.startswith("TcpExt:"):
            return int(dict(zip(names.split(), values.split(), strict=True))["ListenDrops"])
    return 0


def redis_calls(url: str) -> dict[str, int]:
    """Commands a Redis has run so far, by name (``INFO commandstats``)."""
    import redis

    client = redis.Redis.from_url(url)
    try:
        stats = client.info("commandstats")
    finally:
        client.close()
    return {name.removeprefix("cmdstat_"): int(v["calls"]) for name, v in stats.items()}


def specs(kind: str, prefix: str, rooms: int, size: int, port: int, recoverable: bool,
          sample: bool) -> list[dict[str, Any]]:  # fmt: skip
    """Members of ``rooms`` rooms of ``size``: room ``r`` is ``<prefix><r>``."""
    return [
        {
            "kind": kind,
            "port": port,
            "channel": f"{prefix}{i // size}",
            "user": f"{prefix.rstrip(':')}-{i}",
            "recoverable": recoverable,
            "sample": sample,
        }
        for i in range(rooms * size)
    ]


def split(items: list[Any], parts: int) -> list[list[Any]]:
    return [items[i::parts] for i in range(parts)]


def percentiles(values: list[float]) -> tuple[float, float, float]:
    """p50, p99 and max (0s for no values)."""
    if not values:
        return 0.0, 0.0, 0.0
    return percentile(values, 0.5), percentile(values, 0.99), max(values)


def run_row(row: str, a: argparse.Namespace, procs: Processes, bun: str | None) -> dict[str, Any]:
    """One storm, from start to clean-up: see the module's docstring."""
    server_cpu, client_cpu = cpu_split()
    kind = "bun" if row == "bun" else "hubbub"
    prefix = f"{ROOM_NAMESPACE}:" if kind == "hubbub" else "room-"
    redis, url = None, ""
    started: list[Any] = []
    clients = Clients(procs, client_cpu)
    try:
        if row in ("kill", "restart"):
            redis, url = start_redis(procs, server_cpu)
            node_a, port_a = start_node(procs, server_cpu, url)
            node_b, port_b = start_node(procs, server_cpu, url)
            server_pids = [node_a.pid, node_b.pid, redis.pid]
            started += [node_a, node_b, redis]
        elif row == "blip":
            node_a, port_a = start_node(procs, server_cpu, "")
            node_b, port_b = node_a, port_a
            server_pids = [node_a.pid]
            started.append(node_a)
        else:
            if bun is None:
                raise RuntimeError("Bun is not installed (benchmarks/setup.sh)")
            server = catalogue()["bun"]
            port_a = port_b = free_port()
            server.start(procs, server_cpu, port_a, bun)
            assert server.proc is not None
            node_a = node_b = server.proc
            server_pids = [server.server_pid]
            started.append(node_a)
        members = specs(kind, prefix, a.rooms, a.room_size, port_b, kind == "hubbub", False)
        control = specs(kind, "ctl-", a.control // 10, 10, port_a, False, True)
        member_pipes = [clients.spawn() for _ in range(a.client_processes)]
        control_pipe = clients.spawn()
        pub_pipe = clients.spawn(publisher=True)
        for pipe, part in zip(member_pipes, split(members, len(member_pipes)), strict=True):
            pipe[0].send(("connect", (part, 200)))
        control_pipe[0].send(("connect", (control, 200)))
        setups = [p[1].recv() for p in [*member_pipes, control_pipe]]
        live = sum(s["live"] for s in setups)
        if live != len(members) + len(control):
            raise RuntimeError(f"{row}: {live} of {len(members) + len(control)} set up: {setups}")
        rooms = sorted({m["channel"] for m in members})
        ctl_rooms = sorted({c["channel"] for c in control})
        token = connection_token("publisher") if kind == "hubbub" else ""
        streams = [(rooms, a.room_rate), (ctl_rooms, a.control_rate)]
        Clients.ask(pub_pipe, "publish", (kind, port_a, token, streams))
        time.sleep(BEFORE_SECONDS)
        if row != "restart":
            for pipe in member_pipes:
                Clients.ask(pipe, "retarget", port_a)
        spy = None
        if a.profile_path and kind == "hubbub":
            # From the clients' core, the storm only; the flame graph is written on SIGINT.
            cmd = [str(Path(sys.executable).parent / "py-spy"), "record", "-o", a.profile_path]
            spy = procs.start([*cmd, "-r", "200", "--nonblocking", "--pid", str(node_a.pid)],
                              client_cpu)  # fmt: skip
            time.sleep(1.0)
        if row in ("kill", "restart"):
            server_pids = [p for p in server_pids if p != node_b.pid]  # B's CPU ends with it
        calls0 = redis_calls(url) if url else {}
        drops0 = listen_drops()
        cpu0 = sum(cpu_seconds(p) for p in server_pids)
        clients0 = clients.cpu_used()
        t0 = time.monotonic_ns()
        restarted = None
        if row in ("kill", "restart"):
            os.kill(node_b.pid, signal.SIGKILL)
            if row == "restart":
                # Started again at once on its port: its members retry until it listens.
                node_b.wait(10)
                restarted, _ = start_node(procs, server_cpu, url, port_b)
                started.append(restarted)
        else:
            for pipe in member_pipes:
                pipe[0].send(("drop", None))
            t0 = min(p[1].recv() for p in member_pipes)
        deadline = time.monotonic() + STORM_TIMEOUT
        while time.monotonic() < deadline:
            stats = [Clients.ask(p, "stats", t0) for p in member_pipes]
            if sum(s["back"] + s["refused"] for s in stats) >= len(members):
                break
            time.sleep(0.02)
        storm_end = time.monotonic_ns()
        cpu1 = sum(cpu_seconds(p) for p in server_pids)
        if restarted is not None:
            cpu1 += cpu_seconds(restarted.pid)  # all of it: it started with the storm
        clients1 = clients.cpu_used()
        drops = listen_drops() - drops0
        calls = redis_calls(url) if url else {}
        calls = {k: n - calls0.get(k, 0) for k, n in calls.items() if n > calls0.get(k, 0)}
        if spy is not None:
            os.killpg(spy.pid, signal.SIGINT)
            spy.wait(30)
        # As long again after the storm, then the last publications' deliveries.
        time.sleep(min(max((storm_end - t0) / 1e9, 0.5), 3.0))
        published = Clients.ask(pub_pipe, "unpublish", timeout=60)
        if published.get("closed") and kind == "hubbub":
            log = Path(node_a.args[-1]).parent / "node.log"  # next to its --config file
            tail = log.read_text(errors="replace")[-3000:] if log.exists() else ""
            print(f"{row}: the publisher's connection closed ({published['closed']}); node A's "
                  f"log ends with:\n{tail}", file=sys.stderr)  # fmt: skip
        counts = published.get("counts", {})
        expected = sum(counts.get(c["channel"], 0) for c in [*members, *control])
        settle_deliveries([*member_pipes, control_pipe], expected)
        reports = [r for p in member_pipes for r in Clients.ask(p, "collect")]
        ctl_reports = Clients.ask(control_pipe, "collect")
        result = summarize(row, a, t0, storm_end, reports, ctl_reports, published,
                         cpu1 - cpu0, clients1 - clients0, retries=sum(s["retries"]
                                                                       for s in stats))  # fmt: skip
        result["redis_calls"] = calls
        result["listen_drops"] = drops
        return result
    finally:
        clients.stop()
        for proc in reversed(started):
            procs.stop(proc)


def settle_deliveries(pipes: list[Any], expected: int, quiet: float = 3.0) -> None:
    """Until the clients received the ``expected`` deliveries, or nothing more for ``quiet``
    seconds (a loaded machine delivers the last publications late), 30 s at most."""
    deadline = time.monotonic() + 30
    last, since = -1, time.monotonic()
    while time.monotonic() < deadline:
        received = sum(Clients.ask(p, "stats")["received"] for p in pipes)
        if received >= expected:
            return
        if received != last:
            last, since = received, time.monotonic()
        elif time.monotonic() - since >= quiet:
            return
        time.sleep(0.1)


def summarize(row: str, a: argparse.Namespace, t0: int, end: int, reports: list[dict[str, Any]],
              ctl: list[dict[str, Any]], published: dict[str, Any], server_cpu: float,
              clients_cpu: float, retries: int) -> dict[str, Any]:  # fmt: skip
    """The row's numbers out of every member's and control client's report."""
    counts: dict[str, int] = published.get("counts", {})
    storm = (end - t0) / 1e9
    recovery_ms = [(r["ready_ns"] - t0) / 1e6 for r in reports if r["ready_ns"] > t0]
    behind = [r for r in reports if row != "bun" and r["offset"] != counts.get(r["channel"])]
    # What a member that missed the last publications had, for the JSON.
    behind_examples = [
        (r["channel"], r["offset"], counts.get(r["channel"]), r["state"], r["received"])
        for r in behind[:10]
    ]
    before: list[float] = []
    during: list[float] = []
    for r in ctl:
        for lat, at in zip(r["latencies"], r["arrivals"], strict=True):
            if t0 - max(end - t0, 1e9) <= at < t0:
                before.append(lat / 1e6)
            elif t0 <= at <= end:
                during.append(lat / 1e6)
    expected = sum(counts.get(r["channel"], 0) for r in ctl)
    received = sum(r["received"] for r in ctl)
    return {
        "row": row,
        "label": {
            "kill": "hubbub, 2 nodes on Redis: node B killed, members to node A",
            "restart": "hubbub, 2 nodes on Redis: node B killed and restarted, members back to B",
            "blip": "hubbub, 1 node, memory engine: members drop and reconnect",
            "bun": "Bun pub/sub, 1 server: members drop and reconnect (no recovery)",
        }[row],
        "members": len(reports),
        "rooms": f"{a.rooms} x {a.room_size}",
        "storm_s": storm,
        "setups_per_s": len(recovery_ms) / storm if storm else 0.0,
        "recovery_ms": percentiles(recovery_ms),
        "set_up_again": len(recovery_ms),
        "recovered": sum(r["recoveries"] for r in reports),
        "not_recovered": sum(r["unrecovered"] for r in reports),
        "resubscribed": sum(r["resubscribes"] for r in reports),
        "refused": sum(1 for r in reports if r["refused"]),
        "first_refusal": next((r["refused"] for r in reports if r["refused"]), ""),
        "gaps": sum(r["gaps"] for r in reports),
        "duplicates": sum(r["dups"] for r in reports),
        "behind_at_end": len(behind),
        "behind_examples": behind_examples,
        "retries": retries,
        "control_before_ms": percentiles(before),
        "control_during_ms": percentiles(during),
        "control_lost": expected - received,
        "published": published.get("published", 0),
        "publish_errors": published.get("errors", 0) + bool(published.get("closed")),
        "first_publish_error": published.get("first_error", ""),
        "server_cpu_s": server_cpu,
        "server_cpu_us_per_member": server_cpu / max(len(reports), 1) * 1e6,
        "clients_core_busy": clients_cpu / storm if storm else 0.0,
    }


def table(rows: list[dict[str, Any]]) -> str:
    def ms(values: Any) -> str:
        return "/".join(f"{v:.0f}" if v >= 10 else f"{v:.1f}" for v in values)

    lines = [
        "| storm | members | until all back (s) | set-ups/s | recovery p50/p99/max (ms) "
        "| not recovered | refused | gaps | duplicates | behind at end "
        "| control p50/p99/max before (ms) | control p50/p99/max during (ms) | control lost "
        "| server CPU (s) | server CPU µs/member | clients' core busy | SYNs dropped |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        lines.append(
            f"| {r['label']} | {r['members']:,} | {r['storm_s']:.2f} | {r['setups_per_s']:,.0f} "
            f"| {ms(r['recovery_ms'])} | {r['not_recovered']} | {r['refused']} | {r['gaps']} "
            f"| {r['duplicates']} | {r['behind_at_end']} | {ms(r['control_before_ms'])} "
            f"| {ms(r['control_during_ms'])} | {r['control_lost']} | {r['server_cpu_s']:.2f} "
            f"| {r['server_cpu_us_per_member']:.0f} | {r['clients_core_busy']:.0%} "
            f"| {r['listen_drops']:,} |"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--quick", action="store_true", help="defaults: 100 rooms of 10, 100 controls, 200/s"
    )
    parser.add_argument("--rooms", type=int, help="of members (default 1,000)")
    parser.add_argument("--room-size", type=int, default=10)
    parser.add_argument("--control", type=int, help="clients in rooms of 10 (default 1,000)")
    parser.add_argument("--room-rate", type=float, help="publications/s (default 500)")
    parser.add_argument("--control-rate", type=float, help="publications/s (default 100)")
    parser.add_argument("--client-processes", type=int, default=4, help="for the members")
    parser.add_argument("--rows", nargs="+", default=["kill", "blip", "bun"],
                        choices=["kill", "restart", "blip", "bun"])  # fmt: skip
    parser.add_argument("--json", type=Path, default=LOCAL / "storm.json")
    parser.add_argument(
        "--profile", action="store_true", help="py-spy of the storm's node: storm-<row>.svg"
    )
    a = parser.parse_args()
    defaults = (100, 100, 200.0, 50.0) if a.quick else (1000, 1000, 500.0, 100.0)
    for name, default in zip(
        ("rooms", "control", "room_rate", "control_rate"), defaults, strict=True
    ):
        if getattr(a, name) is None:
            setattr(a, name, default)
    raise_fd_limit()
    bun = bun_binary()
    if bun is None and "bun" in a.rows:
        print("Bun is not installed (benchmarks/setup.sh): its row is skipped", file=sys.stderr)
        a.rows = [r for r in a.rows if r != "bun"]
    info = machine(bun)
    print(f"machine: {info}")
    print(f"load average before the run: {os.getloadavg()[0]:.2f}")
    print(
        f"members: {a.rooms:,} rooms of {a.room_size} ({a.room_rate:g} publications/s over "
        f"the rooms); control group: {a.control:,} clients in rooms of 10 "
        f"({a.control_rate:g} publications/s); ~100-byte JSON\n"
    )
    rows = []
    with Processes() as procs:
        for i, row in enumerate(a.rows):
            progress(i, len(a.rows), row)
            a.profile_path = str(LOCAL / f"storm-{row}.svg") if a.profile else ""
            rows.append(run_row(row, a, procs, bun))
        progress(len(a.rows), len(a.rows), "done")
    print(table(rows))
    for r in rows:
        if r.get("redis_calls"):
            calls = sorted(r["redis_calls"].items(), key=lambda kv: -kv[1])
            listed = ", ".join(f"{name} {n / r['members']:.2f}" for name, n in calls)
            print(f"{r['row']}: Redis commands during the storm, per member: {listed}")
        if r["first_refusal"] or r["first_publish_error"]:
            print(f"{r['row']}: {r['first_refusal'] or r['first_publish_error']}")
    print(f"\nload average after the run: {os.getloadavg()[0]:.2f}")
    a.json.parent.mkdir(parents=True, exist_ok=True)
    a.json.write_text(json.dumps({"machine": info, "rows": rows}, indent=2))


if __name__ == "__main__":
    main()
