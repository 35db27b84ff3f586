"""Fan-out CPU per delivery on every engine topology, in one run, next to a single Redis.

For each topology (1 node on the memory engine; 2 nodes on one Redis, on Redis Sentinel, on
a Redis Cluster, and on NATS with history in Redis) and each shape (one big channel; many
small rooms), starts the backend's private servers and the ``hubbub serve`` nodes on loopback
(all pinned to CPU 0 when the machine has two), opens the subscribers from client processes
pinned to CPU 1 (spread over the nodes in turn, so every room has members on both nodes),
publishes ~100-byte JSON messages at a fixed rate through the nodes in turn, and counts the
CPU of everything on the server side: the nodes and every Redis, Sentinel and NATS process.

Channels keep history (100 publications, 300 s), as deployments that offer recovery do: each
publication is appended to a Redis stream where there is one. The printed table gives, per
row, the deliveries, the losses (expected minus delivered), the CPU per delivery of the nodes
and of the backend, and the total as a ratio to the single-Redis row of the same shape. The
"idle" column is what the same processes burnt per delivery while nothing was published
(Sentinels' and cluster-bus pings, heartbeats), measured for 2 s before publishing; it is
included in the totals. With ``--repeat N`` every row runs N times, round after round, and
the table shows each row's run with the median total and the range of the totals.

With ``--bench`` it runs only the comparison ``make bench`` carries: "memory, 1 node" next to
"one Redis, 2 nodes", for the one channel and the rooms, each at its low rate (``--rate``,
``--room-rate``: fixed costs such as wake-ups weigh in) and at a high rate that both sustain
(``--high-rate``, ``--high-room-rate``: near what the memory node can take on one core), then
prints the ratio of Redis to memory per shape and rate against the target (``--target``) and
writes the rows and ratios as JSON (``--json``, by default benchmarks/.local/topologies.json).

Run:  .venv/bin/python benchmarks/topologies.py [--subscribers 1000] [--rate 100]
          [--rooms 1000] [--room-size 10] [--room-rate 1000] [--seconds 5]
          [--topologies memory redis sentinel cluster nats] [--repeat 1]
      .venv/bin/python benchmarks/topologies.py --bench [--high-rate 500]
          [--high-room-rate 3000] [--target 1.2] [--json FILE] [--repeat 1]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing as mp
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from capacity import _subscribers, channel_of, publish
from fanout import (
    cpu_seconds,
    free_port,
    machine,
    progress,
    start_redis,
    start_redis_cluster,
    wait_for_port,
)

IDLE_SECONDS = 2.0
LOCAL = Path(__file__).resolve().parent / ".local"


@dataclass
class Backend:
    """The servers a topology's nodes talk to: the TOML that points the nodes at them, the
    processes whose CPU counts, and how to stop them."""

    toml: str
    pids: list[int] = field(default_factory=list)
    stops: list[Callable[[], None]] = field(default_factory=list)

    def stop(self) -> None:
        for stop in self.stops:
            try:
                stop()
            except Exception as exc:  # clean-up goes on
                print(f"clean-up: {exc}", file=sys.stderr)


def _pin_all(pids: list[int], cpu: int | None) -> None:
    """Every thread of each process onto ``cpu`` (Redis and nats-server start threads)."""
    if cpu is None:
        return
    for pid in pids:
        for task in Path(f"/proc/{pid}/task").iterdir():
            try:
                os.sched_setaffinity(int(task.name), {cpu})
            except ProcessLookupError:
                continue


def _popen_stop(proc: subprocess.Popen[bytes]) -> Callable[[], None]:
    def stop() -> None:
        if proc.poll() is None:
            proc.kill()
        proc.wait(10)

    return stop


def memory_backend(cpu: int | None) -> Backend:
    return Backend('engine = "memory"\n')


def redis_backend(cpu: int | None) -> Backend:
    proc, url = start_redis(cpu)
    return Backend(f'engine = "redis"\n[redis]\nurl = "{url}"\n', [proc.pid], [_popen_stop(proc)])


def sentinel_backend(cpu: int | None) -> Backend:
    from tests.integration.sentinel_kit import MASTER_NAME, SentinelGroup

    group = SentinelGroup(Path(tempfile.mkdtemp(prefix="hubbub-sentinel-")))
    backend = Backend("", stops=[group.stop])
    try:
        group.start()
    except BaseException:
        group.stop()
        raise
    backend.pids = [p.pid for p in group.procs.values()]
    backend.toml = (
        f'engine = "redis"\n[redis]\nsentinel_addresses = {json.dumps(group.addresses)}\n'
        f'sentinel_master_name = "{MASTER_NAME}"\n'
    )
    return backend


def cluster_backend(cpu: int | None) -> Backend:
    cluster = start_redis_cluster(cpu)
    return Backend(
        f'engine = "redis"\n[redis]\ncluster_addresses = {json.dumps(cluster.addresses)}\n',
        [p.pid for p in cluster.procs.values()],
        [cluster.stop],
    )


def nats_backend(cpu: int | None) -> Backend:
    from tests.nats_process import NatsProcess

    redis, url = start_redis(cpu)
    backend = Backend("", [redis.pid], [_popen_stop(redis)])
    nats = NatsProcess()
    backend.stops.append(nats.stop)
    nats.start()
    assert nats.proc is not None
    backend.pids.append(nats.proc.pid)
    backend.toml = (
        f'engine = "nats"\n[nats]\nurl = "{nats.url}"\nhistory = "redis"\npresence = "redis"\n'
        f'[redis]\nurl = "{url}"\n'
    )
    return backend


TOPOLOGIES: dict[str, tuple[str, int, Callable[[int | None], Backend]]] = {
    "memory": ("memory, 1 node", 1, memory_backend),
    "redis": ("one Redis, 2 nodes", 2, redis_backend),
    "sentinel": ("Redis Sentinel (master, replica, 3 Sentinels), 2 nodes", 2, sentinel_backend),
    "cluster": ("Redis Cluster (3 masters, 3 replicas), 2 nodes", 2, cluster_backend),
    "nats": ("NATS, history and presence in one Redis, 2 nodes", 2, nats_backend),
}
"""key: (label, nodes, backend). The single-Redis row is what the ratios divide by."""


def start_node(port: int, cpu: int | None, engine_toml: str) -> subprocess.Popen[bytes]:
    """``hubbub serve`` on ``port`` with the topology's engine, limits off for one address,
    and history in channels without a namespace."""
    folder = Path(tempfile.mkdtemp(prefix="hubbub-topology-"))
    engine_line, _, engine_tables = engine_toml.partition("\n")
    (folder / "node.toml").write_text(
        f'port = {port}\ndevelopment = true\nlog_level = "warning"\n{engine_line}\n'
        f"{engine_tables}"
        "[client]\nqueue_max_size = 16777216\n"
        "[limits]\nconnections_per_ip = 0\nconnections_per_user = 0\ncommand_rate = 0\n"
        "user_command_rate = 0\nframe_rate = 0\n"
        "[chat]\nenabled = false\n[notifications]\nenabled = false\n"
        "[channel.without_namespace]\nallow_subscribe_for_client = true\n"
        "allow_publish_for_client = true\nhistory_size = 100\nhistory_ttl = 300\n"
    )
    cmd = [sys.executable, "-m", "hubbub", "serve", "--config", str(folder / "node.toml")]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=folder)
    if cpu is not None:
        os.sched_setaffinity(proc.pid, {cpu})
    try:
        wait_for_port(port)
    except BaseException:
        # Not listening (or interrupted): it is not anyone's to stop yet.
        proc.kill()
        proc.wait(10)
        raise
    return proc


def settle(pids: list[int], idle_rate: float, longest: float = 15.0) -> None:
    """Until the last deliveries have landed: the servers and clients are back to what they
    burn at rest (plus a fifth of a core) over a quarter of a second, at least 1 s after the
    publisher stopped and at most ``longest``. A loaded machine delivers late: a fixed wait
    would count the late deliveries as lost."""
    start = time.monotonic()
    last = sum(cpu_seconds(p) for p in pids)
    while time.monotonic() - start < longest:
        time.sleep(0.25)
        now = sum(cpu_seconds(p) for p in pids)
        busy, last = (now - last) / 0.25, now
        if time.monotonic() - start >= 1.0 and busy < idle_rate + 0.2:
            return


def subscriber_process(cpu: int | None, *args: Any) -> None:
    if cpu is not None:
        os.sched_setaffinity(0, {cpu})
    asyncio.run(_subscribers(*args))


@dataclass
class Row:
    key: str
    shape: str
    label: str
    rate: float
    subscribers: int
    per_channel: int
    published: int
    delivered: int
    nodes_cpu: float
    backend_cpu: float
    idle_cpu: float
    busiest_client: float

    @property
    def lost(self) -> int:
        return self.published * self.per_channel - self.delivered

    def per_delivery(self, cpu: float) -> float:
        return cpu / max(self.delivered, 1) * 1e6

    @property
    def total(self) -> float:
        return self.per_delivery(self.nodes_cpu + self.backend_cpu)


def run_row(key: str, conns: int, room: int, rate: float, seconds: float, procs: int) -> Row:
    """One topology, one shape: ``room`` subscribers per channel (0: one channel for all)."""
    label, nodes, make_backend = TOPOLOGIES[key]
    cpus = sorted(os.sched_getaffinity(0))
    server_cpu = cpus[0] if len(cpus) > 1 else None
    client_cpus = cpus[1:] or [None]
    backend = make_backend(server_cpu)
    _pin_all(backend.pids, server_cpu)
    servers: list[subprocess.Popen[bytes]] = []
    workers: list[Any] = []
    ctx = mp.get_context("spawn")
    ready, stop, out = ctx.Semaphore(0), ctx.Event(), ctx.Queue()
    try:
        ports = [free_port() for _ in range(nodes)]
        for port in ports:
            servers.append(start_node(port, server_cpu, backend.toml))
        urls = [f"ws://127.0.0.1:{port}/connection/websocket" for port in ports]
        per = [conns // procs + (1 if i < conns % procs else 0) for i in range(procs)]
        starts = [sum(per[:i]) for i in range(procs)]
        workers = [
            ctx.Process(
                target=subscriber_process,
                args=(client_cpus[i % len(client_cpus)], urls, s, n, room, ready, stop, out),
            )
            for i, (s, n) in enumerate(zip(starts, per, strict=True))
            if n
        ]
        for w in workers:
            w.start()
        for _ in range(conns):
            if not ready.acquire(timeout=120):
                raise SystemExit(f"{label}: subscribers did not connect")
        node_pids = [s.pid for s in servers]

        def cpu_now() -> tuple[float, float]:
            return (
                sum(cpu_seconds(p) for p in node_pids),
                sum(cpu_seconds(p) for p in backend.pids),
            )

        idle0 = cpu_now()
        time.sleep(IDLE_SECONDS)
        idle1 = cpu_now()
        idle_rate = (sum(idle1) - sum(idle0)) / IDLE_SECONDS
        channels = sorted({channel_of(i, room) for i in range(conns)})
        started = time.monotonic()
        published = asyncio.run(publish(urls, channels, rate, seconds))
        settle([*node_pids, *backend.pids, *(w.pid for w in workers)], idle_rate)
        elapsed = time.monotonic() - started
        end = cpu_now()
        stop.set()
        delivered, busy = 0, 0.0
        for _ in workers:
            got, spent = out.get(timeout=60)
            delivered += got
            busy = max(busy, spent / (elapsed + IDLE_SECONDS))
        return Row(
            key,
            f"rooms of {room}" if room else "one channel",
            label,
            rate,
            conns,
            room or conns,
            published,
            delivered,
            end[0] - idle1[0],
            end[1] - idle1[1],
            idle_rate * elapsed,
            busy,
        )
    finally:
        stop.set()
        for w in workers:
            w.join(10)
            if w.is_alive():
                w.kill()
        for server in servers:
            server.terminate()
            try:
                server.wait(10)
            except subprocess.TimeoutExpired:
                server.kill()
                server.wait(5)
        backend.stop()


Key = tuple[str, float, str]
"""A row's shape, rate and topology."""


def _medians(rows: list[Row]) -> tuple[dict[Key, Row], dict[Key, list[Row]]]:
    """The run with the median total of each (shape, rate, topology), and every run of it."""
    groups: dict[Key, list[Row]] = {}
    for row in rows:
        groups.setdefault((row.shape, row.rate, row.key), []).append(row)
    median = {k: sorted(g, key=lambda r: r.total)[(len(g) - 1) // 2] for k, g in groups.items()}
    return median, groups


def table(rows: list[Row]) -> str:
    """One line per topology, shape and rate: the run with the median total (of
    ``--repeat``), the range of the totals, and the ratio of the medians to the single-Redis
    line's."""
    median, groups = _medians(rows)
    lines = [
        "| topology | shape | subscribers | published | lost | nodes µs/delivery "
        "| Redis/NATS µs/delivery | total µs/delivery (of which idle) | range of totals "
        "| ratio to one Redis | Redis/NATS µs/publication | busiest client process |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for (shape, rate, key), row in median.items():
        base = median.get((shape, rate, "redis"))
        ratio = f"{row.total / base.total:.2f}" if base is not None else "n/a"
        runs = groups[(shape, rate, key)]
        totals = [r.total for r in runs]
        lines.append(
            f"| {row.label} | {shape} at {rate:g}/s | {row.subscribers:,} | {row.published:,} | "
            f"{sum(r.lost for r in runs)} | "
            f"{row.per_delivery(row.nodes_cpu):.2f} | "
            f"{row.per_delivery(row.backend_cpu):.2f} | {row.total:.2f} "
            f"({row.per_delivery(row.idle_cpu):.2f}) | {min(totals):.2f}-{max(totals):.2f} | "
            f"{ratio} | {row.backend_cpu / max(row.published, 1) * 1e6:.0f} | "
            f"{row.busiest_client:.0%} |"
        )
    return "\n".join(lines)


def comparison(rows: list[Row], target: float) -> list[dict[str, Any]]:
    """Per shape and rate: the medians of "one Redis, 2 nodes" and "memory, 1 node" (total
    µs per delivery, the backend's CPU included), their ratio and whether it meets
    ``target``."""
    median, _ = _medians(rows)
    out = []
    for (shape, rate, key), redis in median.items():
        memory = median.get((shape, rate, "memory"))
        if key != "redis" or memory is None:
            continue
        ratio = redis.total / max(memory.total, 1e-9)
        out.append(
            {
                "shape": shape,
                "rate": rate,
                "memory_us": round(memory.total, 2),
                "redis_us": round(redis.total, 2),
                "redis_backend_us": round(redis.per_delivery(redis.backend_cpu), 2),
                "ratio": round(ratio, 2),
                "target": target,
                "met": ratio <= target,
                "lost": memory.lost + redis.lost,
            }
        )
    return out


def comparison_table(ratios: list[dict[str, Any]]) -> str:
    lines = [
        "| shape | publications/s | memory, 1 node µs/delivery | one Redis, 2 nodes µs/delivery "
        "(of which Redis) | ratio | target | met |",
        "|---|---:|---:|---:|---:|---:|---|",
    ]
    for r in ratios:
        lines.append(
            f"| {r['shape']} | {r['rate']:g} | {r['memory_us']:.2f} | {r['redis_us']:.2f} "
            f"({r['redis_backend_us']:.2f}) | x{r['ratio']:.2f} | x{r['target']:g} | "
            f"{'yes' if r['met'] else 'no'} |"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--topologies", nargs="+", default=list(TOPOLOGIES), choices=TOPOLOGIES)
    parser.add_argument("--subscribers", type=int, default=1000, help="of the one channel")
    parser.add_argument("--rate", type=float, default=100, help="publications/s, one channel")
    parser.add_argument("--rooms", type=int, default=1000, help="0: no rooms rows")
    parser.add_argument("--room-size", type=int, default=10)
    parser.add_argument("--room-rate", type=float, default=1000, help="publications/s, rooms")
    parser.add_argument("--seconds", type=float, default=5)
    parser.add_argument("--client-processes", type=int, default=4)
    parser.add_argument(
        "--repeat", type=int, default=1, help="rounds over every row; the median is shown"
    )
    parser.add_argument(
        "--bench", action="store_true", help="memory next to one Redis, at two rates per shape"
    )
    parser.add_argument("--high-rate", type=float, default=500, help="--bench: one channel")
    parser.add_argument("--high-room-rate", type=float, default=3000, help="--bench: rooms")
    parser.add_argument("--target", type=float, default=1.2, help="--bench: Redis/memory")
    parser.add_argument("--json", type=Path, help="--bench: results file")
    a = parser.parse_args()
    topologies = ["memory", "redis"] if a.bench else a.topologies
    rates = [a.rate, a.high_rate] if a.bench else [a.rate]
    room_rates = [a.room_rate, a.high_room_rate] if a.bench else [a.room_rate]
    shapes = [(a.subscribers, 0, r) for r in rates] if a.subscribers else []
    shapes += [(a.rooms * a.room_size, a.room_size, r) for r in room_rates] if a.rooms else []
    # Round after round over every row, so that a burst of load elsewhere on the machine
    # touches every topology alike rather than one.
    runs = [(key, *shape) for _ in range(a.repeat) for shape in shapes for key in topologies]
    load_before = os.getloadavg()[0]
    print(f"machine: {machine()}")
    print(f"load average before the run: {load_before:.2f}")
    print(
        f"one channel: {a.subscribers:,} subscribers, {'/'.join(f'{r:g}' for r in rates)} "
        f"publications/s; rooms: {a.rooms:,} rooms of {a.room_size}, "
        f"{'/'.join(f'{r:g}' for r in room_rates)} publications/s; "
        f"{a.seconds:g} s each, {a.repeat} round(s); ~100-byte JSON, history on\n"
    )
    rows = []
    for i, (key, conns, room, rate) in enumerate(runs):
        progress(i, len(runs), f"{key}, {'rooms' if room else 'one channel'} at {rate:g}/s")
        rows.append(run_row(key, conns, room, rate, a.seconds, a.client_processes))
    progress(len(runs), len(runs), "done")
    print(table(rows))
    load_after = os.getloadavg()[0]
    if a.bench:
        ratios = comparison(rows, a.target)
        print(f"\none Redis, 2 nodes against memory, 1 node (target: at most x{a.target:g}):")
        print(comparison_table(ratios))
        path = a.json or LOCAL / "topologies.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        results = {
            "machine": machine(),
            "load_before": load_before,
            "load_after": load_after,
            "seconds": a.seconds,
            "repeat": a.repeat,
            "ratios": ratios,
            "rows": [{**asdict(r), "lost": r.lost, "total_us": round(r.total, 2)} for r in rows],
        }
        path.write_text(json.dumps(results, indent=1) + "\n")
        print(f"\nresults: {os.path.relpath(path)}")
    print(f"\nload average after the run: {load_after:.2f}")


if __name__ == "__main__":
    main()
