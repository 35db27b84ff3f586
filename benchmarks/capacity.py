"""The capacity model of docs/scaling.md, checked at small scale on this machine.

Starts a private redis-server and K ``hubbub serve`` processes on it (each on its own port,
the clients spread over them in turn, as a TCP balancer would), opens N subscriber
connections from client processes, either all in one channel or in rooms of R, publishes P
publications/s over WebSocket connections (one per node, rooms taken in turn), and prints the
model's prediction next to what was measured: deliveries/s, hubbub CPU (all nodes), Redis CPU
and RSS per node.

The model (docs/scaling.md, "Capacity model") prices a node's CPU as
``P_in * C_PUB + P_recv * C_RECV + D * C_DELIVERY`` and its memory as
``BASE + connections * C_CONN``; the constants below come from the benchmark run cited there.

Run:  .venv/bin/python benchmarks/capacity.py [--nodes 2] [--connections 2000]
          [--room-size 10] [--rate 1000] [--seconds 5]
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
from fanout import count_messages, cpu_seconds, free_port, start_redis, wait_for_port

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
"""Bytes of RSS per connection subscribed to one channel with presence, join/leave and
history (the development defaults this script runs with; 6.1 KiB without them, in the
benchmark run)."""


def predict(
    nodes: int, conns: int, room: int, rate: float, c: dict[str, float]
) -> dict[str, float]:
    """What the model says of this run: deliveries/s, hubbub CPU cores, RSS per node added."""
    size = room or conns
    deliveries = rate * size
    # The nodes a publication is sent to: those with a subscriber of its channel. Members are
    # spread over the nodes in turn, so a room of R reaches min(R, K) of them.
    receiving = min(size, nodes)
    cores = rate * c["pub"] + rate * receiving * c["recv"] + deliveries * c["delivery"]
    return {"delivered/s": deliveries, "cores": cores, "rss": conns / nodes * C_CONN}


def rss(pid: int) -> int:
    with open(f"/proc/{pid}/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def start_node(port: int, redis_url: str) -> subprocess.Popen[bytes]:
    config = Path(tempfile.mkdtemp()) / "capacity.toml"
    config.write_text(
        f'port = {port}\ndevelopment = true\nlog_level = "warning"\nengine = "redis"\n'
        f'[redis]\nurl = "{redis_url}"\n[client]\nqueue_max_size = 16777216\n'
        "[limits]\nconnections_per_ip = 0\nconnections_per_user = 0\ncommand_rate = 0\n"
        "user_command_rate = 0\n[chat]\nenabled = false\n[notifications]\nenabled = false\n"
        "[channel.without_namespace]\nallow_subscribe_for_client = true\n"
        "allow_publish_for_client = true\n"
    )
    cmd = [sys.executable, "-m", "hubbub", "serve", "--config", str(config)]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wait_for_port(port)
    return proc


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
    while not stop.is_set():  # noqa: ASYNC110 (a multiprocessing event cannot be awaited)
        await asyncio.sleep(0.05)
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    out.put(received)


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


def run(nodes: int, conns: int, room: int, rate: float, seconds: float, procs: int) -> None:
    redis, redis_url = start_redis(None)
    ports = [free_port() for _ in range(nodes)]
    servers = [start_node(port, redis_url) for port in ports]
    urls = [f"ws://127.0.0.1:{p}/connection/websocket" for p in ports]
    time.sleep(1.0)
    base = [rss(s.pid) for s in servers]
    ctx = mp.get_context("spawn")
    ready, stop, out = ctx.Semaphore(0), ctx.Event(), ctx.Queue()
    per = [conns // procs + (1 if i < conns % procs else 0) for i in range(procs)]
    starts = [sum(per[:i]) for i in range(procs)]
    workers = [
        ctx.Process(target=subscriber_process, args=(urls, s, n, room, ready, stop, out))
        for s, n in zip(starts, per, strict=True)
        if n
    ]
    try:
        for w in workers:
            w.start()
        for _ in range(conns):
            if not ready.acquire(timeout=120):
                raise SystemExit("subscribers did not connect")
        time.sleep(1.5)
        loaded = [rss(s.pid) for s in servers]
        channels = sorted({channel_of(i, room) for i in range(conns)})
        pids = [s.pid for s in servers]
        cpu0, redis0 = sum(cpu_seconds(p) for p in pids), cpu_seconds(redis.pid)
        published = asyncio.run(publish(urls, channels, rate, seconds))
        time.sleep(1.0)
        cpu = sum(cpu_seconds(p) for p in pids) - cpu0
        redis_cpu = cpu_seconds(redis.pid) - redis0
        stop.set()
        delivered = sum(out.get(timeout=60) for _ in workers)
    finally:
        stop.set()
        for w in workers:
            w.join(10)
            if w.is_alive():
                w.kill()
        for s in servers:
            s.terminate()
            s.wait(10)
        redis.terminate()
        redis.wait(10)
    high = predict(nodes, conns, room, published / seconds, HIGH_RATE)
    low = predict(nodes, conns, room, published / seconds, LOW_RATE)
    added = sum(b - a for a, b in zip(base, loaded, strict=True)) / nodes
    shape = f"rooms of {room}" if room else "one channel"
    print(f"\n{nodes} nodes on one Redis, {conns:,} connections, {shape}, {rate:,.0f} pub/s")
    print("| | predicted, high-rate constants | predicted, low-rate constants | measured |")
    print("|---|---:|---:|---:|")
    # Rates over the publishing window: the second after it only lets the last ones land.
    print(f"| deliveries/s | {high['delivered/s']:,.0f} | | {delivered / seconds:,.0f} |")
    print(f"| hubbub CPU, cores | {high['cores']:.2f} | {low['cores']:.2f} | {cpu / seconds:.2f} |")
    print(f"| Redis CPU, cores | | | {redis_cpu / seconds:.2f} |")
    print(f"| RSS added per node, MiB | {high['rss'] / 2**20:.1f} | | {added / 2**20:.1f} |")
    print(f"| RSS per node at rest, MiB | | | {sum(base) / nodes / 2**20:.0f} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--nodes", type=int, default=2)
    parser.add_argument("--connections", type=int, default=2000)
    parser.add_argument("--room-size", type=int, default=10, help="0 = one channel for all")
    parser.add_argument("--rate", type=float, default=1000)
    parser.add_argument("--seconds", type=float, default=5)
    parser.add_argument("--client-processes", type=int, default=4)
    a = parser.parse_args()
    run(a.nodes, a.connections, a.room_size, a.rate, a.seconds, a.client_processes)


if __name__ == "__main__":
    main()
