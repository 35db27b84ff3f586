"""The capacity model of docs/scaling.md, checked at small scale on this machine.

Starts a private redis-server (or, with ``--redis-cluster``, a private Redis Cluster of 3
masters and 3 replicas) and K ``hubbub serve`` processes on it: each on its own port, the
clients spread over them in turn as a TCP balancer would (``--nodes K``), or all K behind ONE
port as workers of one ``hubbub serve --workers K`` (``--workers K``: the kernel hands each
new connection to one of them). Then it opens N subscriber connections from client
processes, either all in one channel or in rooms of R, publishes P publications/s over
WebSocket connections (rooms taken in turn; one connection per node, or per worker behind the
one port), and prints the model's prediction next to what was measured: deliveries/s, hubbub
CPU (all nodes), Redis CPU (every Redis process) and RSS per node.

Channels have no presence, join/leave or history (the script sets the options of channels
without a namespace, which replaces development mode's playground defaults).

The model (docs/scaling.md, "Capacity model") prices a node's CPU as
``P_in * C_PUB + P_recv * C_RECV + D * C_DELIVERY`` and its memory as
``BASE + connections * C_CONN``; the constants below come from the benchmark run cited there.

Run:  .venv/bin/python benchmarks/capacity.py [--nodes 2 | --workers 2] [--redis-cluster]
          [--connections 2000] [--room-size 10] [--rate 1000] [--seconds 5]
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
from pathlib import Path
from typing import Any

import websockets

sys.path.insert(0, str(Path(__file__).resolve().parent))
from fanout import (
    count_messages,
    cpu_seconds,
    free_port,
    start_redis,
    start_redis_cluster,
    wait_for_port,
)

# The model's constants, two sets (docs/scaling.md, "Capacity model").
HIGH_RATE = {"pub": 40e-6, "recv": 40e-6, "delivery": 1.44e-6}
"""From the benchmark run of 2026-11-24 (docs/benchmarks.md), at rates where a node works on
many publications per wake-up: 1.44 µs per delivery (one channel, 10,000 subscribers, maximum
rate); 1,000 rooms of 10 at 8,215 publications/s cost 93.5 µs per publication, of which 14.4 µs
are deliveries, the remaining 79 µs split evenly between the publishing and receiving node."""
LOW_RATE = {"pub": 245e-6, "recv": 160e-6, "delivery": 5.5e-6}
"""Fitted to three runs of this script (docs/scaling.md): a node that wakes up for each
publication pays several times more per publication and per delivery."""
C_CONN = 14.4 * 1024
"""Bytes of RSS per connection subscribed to one channel, measured by this script (its
clients, one subscription each, no presence or history); the suite's clients measured 6.1 KiB
in the benchmark run."""


def receiving_nodes(size: int, nodes: int, at_random: bool) -> float:
    """The nodes a publication is sent to: those with a subscriber of its channel. Members
    spread over the nodes in turn reach min(R, K) of them; members placed at random (by the
    kernel, behind one port) reach K * (1 - (1 - 1/K)^R) on average."""
    if at_random:
        return nodes * (1 - (1 - 1 / nodes) ** size)
    return min(size, nodes)


def predict(
    nodes: int, conns: int, room: int, rate: float, c: dict[str, float], at_random: bool = False
) -> dict[str, float]:
    """What the model says of this run: deliveries/s, hubbub CPU cores, RSS per node added."""
    size = room or conns
    deliveries = rate * size
    receiving = receiving_nodes(size, nodes, at_random)
    cores = rate * c["pub"] + rate * receiving * c["recv"] + deliveries * c["delivery"]
    return {"delivered/s": deliveries, "cores": cores, "rss": conns / nodes * C_CONN}


def rss(pid: int) -> int:
    with open(f"/proc/{pid}/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def start_node(port: int, redis_toml: str, workers: int = 1) -> subprocess.Popen[bytes]:
    """``hubbub serve`` on ``port`` with the ``[redis]`` section given; with ``workers`` > 1,
    that many worker processes behind the one port (``--workers``)."""
    config = Path(tempfile.mkdtemp()) / "capacity.toml"
    config.write_text(
        f'port = {port}\ndevelopment = true\nlog_level = "warning"\nengine = "redis"\n'
        f"{redis_toml}[client]\nqueue_max_size = 16777216\n"
        "[limits]\nconnections_per_ip = 0\nconnections_per_user = 0\ncommand_rate = 0\n"
        "user_command_rate = 0\n[chat]\nenabled = false\n[notifications]\nenabled = false\n"
        "[channel.without_namespace]\nallow_subscribe_for_client = true\n"
        "allow_publish_for_client = true\n"
    )
    cmd = [sys.executable, "-m", "hubbub", "serve", "--config", str(config)]
    cmd += ["--workers", str(workers)] if workers > 1 else []
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_for_port(port)
    except BaseException:
        # Not listening (or interrupted): it is not anyone's to stop yet.
        proc.kill()
        proc.wait(10)
        raise
    return proc


def worker_pids(main: subprocess.Popen[bytes], port: int, workers: int) -> list[int]:
    """The worker processes of ``hubbub serve --workers``, once every one of them serves.

    The port accepts connections as soon as the parent bound it, before any worker runs: a
    worker is ready when the cluster's ``info`` (answered by whichever worker takes the call)
    lists it, and it is one of the parent's children (not multiprocessing's helper).
    """
    import urllib.request

    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if main.poll() is not None:
            raise SystemExit(f"hubbub serve --workers exited with {main.returncode}")
        pids = [
            pid
            for pid in _children(main.pid)
            if "resource_tracker" not in Path(f"/proc/{pid}/cmdline").read_text()
        ]
        try:
            request = urllib.request.Request(
                f"http://127.0.0.1:{port}/api/info",
                data=b"{}",
                headers={"Content-Type": "application/json"},
                method="POST",
            )
            with urllib.request.urlopen(request, timeout=2) as answer:
                nodes = json.load(answer)["result"]["nodes"]
        except OSError:
            nodes = []
        if len(pids) == workers and len(nodes) == workers:
            return pids
        time.sleep(0.2)
    raise SystemExit(f"{workers} workers did not start within 60 s")


def _children(pid: int) -> list[int]:
    out: list[int] = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        out += [int(c) for c in (task / "children").read_text().split()]
    return out


def connections_per_process(pids: list[int], port: int) -> list[int]:
    """How many established TCP connections on ``port`` each process holds (from
    /proc/net/tcp and each process's descriptors): where the kernel put the clients."""
    inodes = set()
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        fields = line.split()
        if int(fields[1].rsplit(":", 1)[1], 16) == port and fields[3] == "01":
            inodes.add(fields[9])
    counts = []
    for pid in pids:
        found = 0
        for fd in Path(f"/proc/{pid}/fd").iterdir():
            try:
                target = os.readlink(fd)
            except OSError:
                continue
            if target.startswith("socket:[") and target[8:-1] in inodes:
                found += 1
        counts.append(found)
    return counts


def channel_of(i: int, room: int) -> str:
    return f"room{i // room}" if room else "big"


async def _subscribers(
    urls: list[str], first: int, count: int, room: int, ready: Any, stop: Any, out: Any
) -> None:
    received = 0

    async def one(i: int) -> None:
        nonlocal received
        async with websockets.connect(urls[i % len(urls)], compression=None) as ws:
            sub = {"id": 2, "subscribe": {"channel": channel_of(i, room)}}
            await ws.send('{"id":1,"connect":{}}\n' + json.dumps(sub))
            answered = 0
            while answered < 2:
                answered += count_messages(await ws.recv())
            ready.release()
            async for data in ws:
                if data == "{}":
                    await ws.send("{}")
                    continue
                received += str(data).count('"pub"')

    tasks = [asyncio.create_task(one(first + i)) for i in range(count)]
    # This process's own CPU while it listens: near a whole core, the clients would be the
    # bottleneck, not the servers.
    start_cpu = time.process_time()
    while not stop.is_set():  # noqa: ASYNC110 (a multiprocessing event cannot be awaited)
        await asyncio.sleep(0.05)
    busy = time.process_time() - start_cpu
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    out.put((received, busy))


def subscriber_process(*args: Any) -> None:
    asyncio.run(_subscribers(*args))


async def publish(urls: list[str], channels: list[str], rate: float, seconds: float) -> int:
    """Publish ~100-byte messages at ``rate``/s in turn through every node, to the channels
    in turn; how many were acknowledged."""
    socks = [await websockets.connect(u, compression=None) for u in urls]
    acked = 0

    async def read(ws: Any) -> None:
        nonlocal acked
        async for data in ws:
            acked += str(data).count('"publish"')

    for ws in socks:
        await ws.send('{"id":1,"connect":{}}')
        await ws.recv()
    readers = [asyncio.create_task(read(ws)) for ws in socks]
    sent, start = 0, time.monotonic()
    while time.monotonic() - start < seconds:
        due = int((time.monotonic() - start) * rate) + 1
        while sent < due:
            data = {"t": time.monotonic_ns(), "pad": "x" * 60}
            cmd = {
                "id": sent + 2,
                "publish": {"channel": channels[sent % len(channels)], "data": data},
            }
            await socks[sent % len(socks)].send(json.dumps(cmd, separators=(",", ":")))
            sent += 1
        await asyncio.sleep(0.002)
    deadline = time.monotonic() + 5
    while acked < sent and time.monotonic() < deadline:  # noqa: ASYNC110
        await asyncio.sleep(0.01)
    for task in readers:
        task.cancel()
    for ws in socks:
        await ws.close()
    return acked


def run(
    nodes: int,
    conns: int,
    room: int,
    rate: float,
    seconds: float,
    procs: int,
    cluster: bool = False,
    workers: int = 0,
) -> None:
    """One measurement, printed as a table. ``workers``: K workers behind one port instead of
    ``nodes`` processes on ports of their own."""
    redis: Any = None
    if cluster:
        redis = start_redis_cluster(None)
        redis_pids = [p.pid for p in redis.procs.values()]
        redis_toml = f"[redis]\ncluster_addresses = {json.dumps(redis.addresses)}\n"
    else:
        redis, redis_url = start_redis(None)
        redis_pids = [redis.pid]
        redis_toml = f'[redis]\nurl = "{redis_url}"\n'
    servers: list[subprocess.Popen[bytes]] = []
    workers_ = []
    ctx = mp.get_context("spawn")
    ready, stop, out = ctx.Semaphore(0), ctx.Event(), ctx.Queue()
    try:
        if workers:
            port = free_port()
            servers.append(start_node(port, redis_toml, workers))
            pids = worker_pids(servers[0], port, workers)
            ports = [port]
            nodes = workers
        else:
            ports = [free_port() for _ in range(nodes)]
            for port in ports:
                servers.append(start_node(port, redis_toml))
            pids = [s.pid for s in servers]
        urls = [f"ws://127.0.0.1:{p}/connection/websocket" for p in ports]
        # Behind one port, one publishing connection per worker (the kernel places them too).
        pub_urls = urls * nodes if workers else urls
        time.sleep(1.0)
        base = [rss(p) for p in pids]
        per = [conns // procs + (1 if i < conns % procs else 0) for i in range(procs)]
        starts = [sum(per[:i]) for i in range(procs)]
        workers_ = [
            ctx.Process(target=subscriber_process, args=(urls, s, n, room, ready, stop, out))
            for s, n in zip(starts, per, strict=True)
            if n
        ]
        for w in workers_:
            w.start()
        for _ in range(conns):
            if not ready.acquire(timeout=120):
                raise SystemExit("subscribers did not connect")
        time.sleep(1.5)
        loaded = [rss(p) for p in pids]
        placed = connections_per_process(pids, ports[0]) if workers else []
        channels = sorted({channel_of(i, room) for i in range(conns)})
        watched = pids + ([servers[0].pid] if workers else [])
        cpu0 = sum(cpu_seconds(p) for p in watched)
        redis0 = sum(cpu_seconds(p) for p in redis_pids)
        published = asyncio.run(publish(pub_urls, channels, rate, seconds))
        time.sleep(1.0)
        cpu = sum(cpu_seconds(p) for p in watched) - cpu0
        redis_cpu = sum(cpu_seconds(p) for p in redis_pids) - redis0
        stop.set()
        results = [out.get(timeout=60) for _ in workers_]
        delivered = sum(got for got, _ in results)
        busiest = max(spent for _, spent in results) / (seconds + 1.0)
    finally:
        stop.set()
        for w in workers_:
            w.join(10)
            if w.is_alive():
                w.kill()
        for server in servers:
            server.terminate()  # the parent of --workers stops its workers
            try:
                server.wait(15)
            except subprocess.TimeoutExpired:
                server.kill()
                server.wait(5)
        if cluster:
            redis.stop()
        else:
            redis.terminate()
            redis.wait(10)
    at_random = bool(workers)
    high = predict(nodes, conns, room, published / seconds, HIGH_RATE, at_random)
    low = predict(nodes, conns, room, published / seconds, LOW_RATE, at_random)
    added = [b - a for a, b in zip(base, loaded, strict=True)]
    shape = f"rooms of {room}" if room else "one channel"
    where = f"{workers} workers behind one port" if workers else f"{nodes} nodes"
    backend = "a Redis Cluster (3 masters, 3 replicas)" if cluster else "one Redis"
    print(f"\n{where} on {backend}, {conns:,} connections, {shape}, {rate:,.0f} pub/s")
    if placed:
        print(f"connections per worker (placed by the kernel): {placed}")
    reach = receiving_nodes(room or conns, nodes, at_random)
    print(f"nodes a publication reaches (model): {reach:.2f}")
    print("| | predicted, high-rate constants | predicted, low-rate constants | measured |")
    print("|---|---:|---:|---:|")
    # Rates over the publishing window: the second after it only lets the last ones land.
    print(f"| deliveries/s | {high['delivered/s']:,.0f} | | {delivered / seconds:,.0f} |")
    print(f"| hubbub CPU, cores | {high['cores']:.2f} | {low['cores']:.2f} | {cpu / seconds:.2f} |")
    print(f"| lost (expected minus delivered) | | | {published * (room or conns) - delivered} |")
    print(f"| Redis CPU, cores | | | {redis_cpu / seconds:.2f} |")
    spread = f" ({min(added) / 2**20:.1f}-{max(added) / 2**20:.1f})" if len(added) > 1 else ""
    mean = sum(added) / len(added) / 2**20
    print(f"| RSS added per node, MiB | {high['rss'] / 2**20:.1f} | | {mean:.1f}{spread} |")
    print(f"| RSS per node at rest, MiB | | | {sum(base) / len(base) / 2**20:.0f} |")
    print(f"| busiest client process | | | {busiest:.0%} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--nodes", type=int, default=2, help="processes on ports of their own")
    parser.add_argument("--workers", type=int, default=0, help="processes behind one port")
    parser.add_argument("--redis-cluster", action="store_true", help="on a Redis Cluster")
    parser.add_argument("--connections", type=int, default=2000)
    parser.add_argument("--room-size", type=int, default=10, help="0 = one channel for all")
    parser.add_argument("--rate", type=float, default=1000)
    parser.add_argument("--seconds", type=float, default=5)
    parser.add_argument("--client-processes", type=int, default=4)
    a = parser.parse_args()
    run(a.nodes, a.connections, a.room_size, a.rate, a.seconds, a.client_processes,
        a.redis_cluster, a.workers)  # fmt: skip


if __name__ == "__main__":
    main()
