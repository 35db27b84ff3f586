"""Fan-out benchmark: one channel, N subscribers; JSON and Protobuf; one node or several.

Starts ``hubbub serve`` on loopback ports (pinned to CPU 0 when the machine has more than one),
opens N subscriber connections spread over client processes (pinned to the other CPUs) and
over the nodes, publishes 100-byte JSON messages from one more connection to the first node at
a fixed rate, and prints per scenario: publications, deliveries per second, messages lost,
server CPU microseconds per delivery (all nodes together), delivery latency p50/p99/max, and
how busy the client processes were (a client near 100% would make the numbers about the
client, not the server). With ``--cluster`` it also runs 2 nodes on the Redis engine (a private
redis-server on a free port) next to 1 node on the memory engine; with ``--redis-cluster`` also
2 nodes on a private Redis Cluster (3 masters, 3 replicas; its six processes' CPU counted).

Run:  .venv/bin/python benchmarks/fanout.py [--subscribers 100 1000] [--rate 50] [--seconds 5]
          [--formats json protobuf] [--cluster] [--redis-cluster]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing as mp
import os
import platform
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import websockets

CHANNEL = "bench"
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def cpu_seconds(pid: int) -> float:
    """User plus system CPU time of a process, from /proc."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS


def varint(data: bytes, pos: int) -> tuple[int, int]:
    value = shift = 0
    while True:
        byte = data[pos]
        pos += 1
        value |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return value, pos
        shift += 7


def count_messages(data: str | bytes) -> int:
    """How many protocol messages one frame holds."""
    if isinstance(data, str):
        return data.count("\n") + 1
    count = pos = 0
    while pos < len(data):
        size, pos = varint(data, pos)
        pos += size
        count += 1
    return count


# ---------------------------------------------------------------------------------------------
# Subscriber processes


async def _subscribers(url: str, fmt: str, count: int, ready: Any, stop: Any, results: Any) -> None:
    from hubbub.protocol import client_pb2 as pb

    protobuf = fmt == "protobuf"
    received = 0
    latencies: list[float] = []

    def on_frame(data: str | bytes) -> None:
        nonlocal received
        now = time.monotonic_ns()
        if protobuf:
            assert isinstance(data, bytes)
            pos = 0
            while pos < len(data):
                size, pos = varint(data, pos)
                body = data[pos : pos + size]
                pos += size
                if size == 0:
                    continue  # ping
                reply = pb.Reply.FromString(body)
                if reply.push.HasField("pub"):
                    received += 1
                    if received % 16 == 0:
                        sent = json.loads(reply.push.pub.data)["t"]
                        latencies.append((now - sent) / 1e6)
        else:
            assert isinstance(data, str)
            for line in data.split("\n"):
                if '"pub"' in line:
                    received += 1
                    if received % 16 == 0:
                        sent = json.loads(line)["push"]["pub"]["data"]["t"]
                        latencies.append((now - sent) / 1e6)

    async def one() -> None:
        subprotocols = [websockets.Subprotocol("centrifuge-protobuf")] if protobuf else None
        async with websockets.connect(
            url, subprotocols=subprotocols, max_size=None, compression=None
        ) as ws:
            if protobuf:
                frame = b""
                for cmd in (
                    pb.Command(id=1, connect=pb.ConnectRequest()),
                    pb.Command(id=2, subscribe=pb.SubscribeRequest(channel=CHANNEL)),
                ):
                    body = cmd.SerializeToString()
                    frame += bytes([len(body)]) + body
                await ws.send(frame)
            else:
                await ws.send('{"id":1,"connect":{}}\n{"id":2,"subscribe":{"channel":"bench"}}')
            answered = 0
            while answered < 2:
                answered += count_messages(await ws.recv())
            ready.release()
            while True:
                data = await ws.recv()
                if data in (b"\x00", "{}"):
                    await ws.send(data)  # pong
                    continue
                on_frame(data)

    tasks = [asyncio.create_task(one()) for _ in range(count)]
    start_cpu = time.process_time()
    # A multiprocessing event cannot be awaited: poll it.
    while not stop.is_set():  # noqa: ASYNC110
        await asyncio.sleep(0.05)
    busy = time.process_time() - start_cpu
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    results.put((received, latencies, busy))


def subscriber_process(
    url: str, fmt: str, count: int, cpu: int | None, ready: Any, stop: Any, results: Any
) -> None:
    if cpu is not None:
        os.sched_setaffinity(0, {cpu})
    asyncio.run(_subscribers(url, fmt, count, ready, stop, results))


# ---------------------------------------------------------------------------------------------
# Publisher


async def publish(url: str, rate: float, seconds: float) -> int:
    """Publish ~100-byte JSON messages at ``rate`` per second; how many were acknowledged."""
    pad = "x" * 60
    async with websockets.connect(url, compression=None) as ws:
        await ws.send('{"id":1,"connect":{}}')
        await ws.recv()
        sent = 0
        acked = 0
        start = time.monotonic()
        next_id = 2

        async def read_acks() -> None:
            nonlocal acked
            async for data in ws:
                acked += str(data).count('"publish"')

        reader = asyncio.create_task(read_acks())
        while time.monotonic() - start < seconds:
            due = int((time.monotonic() - start) * rate) + 1
            while sent < due:
                msg = {"t": time.monotonic_ns(), "pad": pad}
                cmd = {"id": next_id, "publish": {"channel": CHANNEL, "data": msg}}
                await ws.send(json.dumps(cmd, separators=(",", ":")))
                next_id += 1
                sent += 1
            await asyncio.sleep(0.002)
        deadline = time.monotonic() + 5
        while acked < sent and time.monotonic() < deadline:  # noqa: ASYNC110
            await asyncio.sleep(0.01)
        reader.cancel()
        return acked


# ---------------------------------------------------------------------------------------------
# Scenarios


@dataclass
class Result:
    fmt: str
    subscribers: int
    published: int
    delivered: int
    seconds: float
    server_cpu: float
    latencies: list[float]
    client_busy: float

    @property
    def lost(self) -> int:
        return self.published * self.subscribers - self.delivered

    def row(self) -> str:
        lat = sorted(self.latencies) or [0.0]
        p99 = lat[min(len(lat) - 1, int(len(lat) * 0.99))]
        per_delivery = self.server_cpu / max(self.delivered, 1) * 1e6
        return (
            f"| {self.fmt} | {self.subscribers} | {self.published} | "
            f"{self.delivered / self.seconds:,.0f} | {self.lost} | {per_delivery:.2f} | "
            f"{statistics.median(lat):.1f} / {p99:.1f} / {lat[-1]:.1f} | "
            f"{self.client_busy:.0%} |"
        )


def start_server(
    port: int, cpu: int | None, redis_url: str = "", cluster: list[str] | None = None
) -> subprocess.Popen[bytes]:
    config = Path(tempfile.mkdtemp()) / "bench.toml"
    engine = f'engine = "redis"\n[redis]\nurl = "{redis_url}"\n' if redis_url else ""
    if cluster:
        engine = f'engine = "redis"\n[redis]\ncluster_addresses = {json.dumps(cluster)}\n'
    config.write_text(
        f'port = {port}\ndevelopment = true\nlog_level = "warning"\n{engine}'
        "[client]\nqueue_max_size = 16777216\n"
        # Every subscriber connects from 127.0.0.1 and the publisher sends --rate commands
        # per second: the per-address, per-user and command-rate limits would refuse them.
        "[limits]\nconnections_per_ip = 0\nconnections_per_user = 0\ncommand_rate = 0\n"
        "user_command_rate = 0\n"
        "[channel.without_namespace]\nallow_subscribe_for_client = true\n"
        "allow_publish_for_client = true\n"
    )
    cmd = [sys.executable, "-m", "hubbub", "serve", "--config", str(config)]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    if cpu is not None:
        os.sched_setaffinity(proc.pid, {cpu})
    wait_for_port(port)
    return proc


def wait_for_port(port: int) -> None:
    for _ in range(200):
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.1).close()
            return
        except OSError:
            time.sleep(0.05)
    raise SystemExit(f"nothing listens on port {port}")


def start_redis(cpu: int | None) -> tuple[subprocess.Popen[bytes], str]:
    port = free_port()
    cmd = ["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", ""]
    cmd += ["--appendonly", "no", "--dir", tempfile.mkdtemp()]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    if cpu is not None:
        os.sched_setaffinity(proc.pid, {cpu})
    wait_for_port(port)
    return proc, f"redis://127.0.0.1:{port}/0"


def start_redis_cluster(cpu: int | None) -> Any:
    """A private Redis Cluster (the tests' kit: 3 masters, 3 replicas), pinned to ``cpu``."""
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from tests.redis_cluster import RedisCluster

    cluster = RedisCluster(Path(tempfile.mkdtemp()))
    try:
        cluster.start()
        if cpu is not None:
            for proc in cluster.procs.values():
                os.sched_setaffinity(proc.pid, {cpu})
    except BaseException:
        # A cluster that did not come up must not leave its half-started servers behind.
        cluster.stop()
        raise
    return cluster


def run_scenario(
    fmt: str,
    subscribers: int,
    rate: float,
    seconds: float,
    procs: int,
    nodes: int = 1,
    redis_cluster: bool = False,
) -> Result:
    cpus = sorted(os.sched_getaffinity(0))
    server_cpu = cpus[0] if len(cpus) > 1 else None
    client_cpus = cpus[1:] or [None]
    redis: subprocess.Popen[bytes] | None = None
    redis_url = ""
    cluster = None
    servers: list[subprocess.Popen[bytes]] = []
    ctx = mp.get_context("spawn")
    ready, stop, results = ctx.Semaphore(0), ctx.Event(), ctx.Queue()
    workers: list[Any] = []
    # Everything started from here on is stopped in the `finally`, even when a later start fails.
    try:
        cluster = start_redis_cluster(server_cpu) if redis_cluster else None
        if nodes > 1 and cluster is None:
            redis, redis_url = start_redis(server_cpu)
        ports = [free_port() for _ in range(nodes)]
        addresses = cluster.addresses if cluster is not None else None
        for port in ports:
            servers.append(start_server(port, server_cpu, redis_url, addresses))
        urls = [f"ws://127.0.0.1:{port}/connection/websocket" for port in ports]
        per = [subscribers // procs + (1 if i < subscribers % procs else 0) for i in range(procs)]
        workers = [
            ctx.Process(
                target=subscriber_process,
                args=(
                    urls[i % nodes],
                    fmt,
                    n,
                    client_cpus[i % len(client_cpus)],
                    ready,
                    stop,
                    results,
                ),
            )
            for i, n in enumerate(per)
            if n
        ]
        watched = [s.pid for s in servers] + ([redis.pid] if redis is not None else [])
        watched += [p.pid for p in cluster.procs.values()] if cluster is not None else []
        for w in workers:
            w.start()
        for _ in range(subscribers):
            if not ready.acquire(timeout=60):
                raise SystemExit("subscribers did not connect")
        cpu_before = sum(cpu_seconds(pid) for pid in watched)
        started = time.monotonic()
        published = asyncio.run(publish(urls[0], rate, seconds))
        time.sleep(1.0)  # let the last deliveries land
        elapsed = time.monotonic() - started
        server_cpu_used = sum(cpu_seconds(pid) for pid in watched) - cpu_before
        stop.set()
        delivered, latencies, busy = 0, [], 0.0
        for _ in workers:
            got, lat, b = results.get(timeout=30)
            delivered += got
            latencies.extend(lat)
            busy = max(busy, b / elapsed)
        engine = "redis cluster" if cluster else "redis" if nodes > 1 else "memory"
        label = f"{fmt}, {nodes} node{'s' if nodes > 1 else ''} ({engine})"
        return Result(label, subscribers, published, delivered, elapsed, server_cpu_used,
                      latencies, busy)  # fmt: skip
    finally:
        stop.set()
        for w in workers:
            if w.pid is None:  # never started: a start before it failed
                continue
            w.join(10)
            if w.is_alive():
                w.kill()
        for server in servers:
            server.terminate()
            server.wait(10)
        if redis is not None:
            redis.terminate()
            redis.wait(10)
        if cluster is not None:
            cluster.stop()


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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--subscribers", type=int, nargs="+", default=[100, 1000])
    parser.add_argument("--formats", nargs="+", default=["json", "protobuf"])
    parser.add_argument("--rate", type=float, default=200.0, help="publications per second")
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--client-processes", type=int, default=4)
    parser.add_argument(
        "--cluster", action="store_true", help="also 2 nodes on Redis next to 1 on memory"
    )
    parser.add_argument(
        "--redis-cluster", action="store_true", help="also 2 nodes on a Redis Cluster"
    )
    args = parser.parse_args()
    print(f"machine: {machine()}")
    print(f"one channel, {args.rate:g} publications/s for {args.seconds:g} s, ~100-byte JSON\n")
    print("| scenario | subscribers | published | delivered/s | lost | server CPU µs/delivery "
          "| latency ms p50 / p99 / max | busiest client process |")  # fmt: skip
    print("|---|---|---|---|---|---|---|---|", flush=True)
    setups = [(1, False)] + [(2, False)] * args.cluster + [(2, True)] * args.redis_cluster
    scenarios = [
        (n, fmt, nodes, rc)
        for n in args.subscribers
        for fmt in args.formats
        for nodes, rc in setups
    ]
    for i, (n, fmt, nodes, rc) in enumerate(scenarios):
        progress(i, len(scenarios), f"{fmt}, {n} subscribers, {nodes} node(s)")
        result = run_scenario(fmt, n, args.rate, args.seconds, args.client_processes, nodes, rc)
        print(result.row(), flush=True)
    progress(len(scenarios), len(scenarios), "done")


def progress(done: int, total: int, label: str) -> None:
    """A progress bar on stderr (the table on stdout stays clean for pipes)."""
    width = 20
    filled = width * done // max(total, 1)
    bar = "#" * filled + "-" * (width - filled)
    end = "\n" if done == total else ""
    print(f"\r[{bar}] {done}/{total} {label:<40}", end=end, file=sys.stderr, flush=True)


if __name__ == "__main__":
    main()
