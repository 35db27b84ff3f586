"""Fan-out over the HTTP fallbacks: server CPU per delivery on http_stream and SSE next to
WebSocket, in one run (JSON, one channel, N subscribers, one node on the memory engine).

Like ``fanout.py`` (whose server, publisher and CPU accounting it reuses): ``hubbub serve``
pinned to CPU 0 when there are several, subscribers spread over client processes on the other
CPUs, 100-byte publications at a fixed rate from one WebSocket connection. A stream subscriber
is a raw asyncio HTTP/1.1 client: its stream request with the connect, then one ``/emulation``
request with the subscribe. Pings are set far apart so that no pong traffic is measured.

Run:  .venv/bin/python benchmarks/streams.py [--subscribers 1000] [--rate 20] [--seconds 5]
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

sys.path.insert(0, str(Path(__file__).resolve().parent))

from fanout import (
    Result,
    cpu_seconds,
    free_port,
    machine,
    publish,
    subscriber_process,
    wait_for_port,
)

TRANSPORTS = ("websocket", "http_stream", "sse")


def start_server(port: int, cpu: int | None) -> subprocess.Popen[bytes]:
    config = Path(tempfile.mkdtemp()) / "bench.toml"
    config.write_text(
        f'port = {port}\ndevelopment = true\nlog_level = "warning"\n'
        "[client]\nqueue_max_size = 16777216\nping_interval = 300\npong_timeout = 8\n"
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


async def _post(port: int, path: str, body: bytes) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    head = (
        f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n"
    )
    writer.write(head.encode() + body)
    await reader.read()
    writer.close()


async def _stream_subscribers(
    port: int, kind: str, count: int, ready: Any, stop: Any, results: Any
) -> None:
    received = 0
    latencies: list[float] = []
    connect = b'{"id":1,"connect":{}}'

    async def one() -> None:
        nonlocal received
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        path = "/connection/http_stream" if kind == "http_stream" else "/connection/sse"
        head = (
            f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(connect)}\r\n\r\n"
        )
        writer.write(head.encode() + connect)
        carry = b""
        subscribed = False
        while True:
            data = await reader.read(65536)
            if not data:
                return
            lines = (carry + data).split(b"\n")
            carry = lines.pop()
            now = time.monotonic_ns()
            for line in lines:
                if b'"pub"' in line:
                    received += 1
                    if received % 16 == 0:
                        message = json.loads(line.removeprefix(b"data: "))
                        latencies.append((now - message["push"]["pub"]["data"]["t"]) / 1e6)
                elif not subscribed and b'"connect"' in line:
                    result = json.loads(line.removeprefix(b"data: "))["connect"]
                    command = '{"id":2,"subscribe":{"channel":"bench"}}'
                    request = {"session": result["session"], "node": result["node"]}
                    body = json.dumps({**request, "data": command}).encode()
                    await _post(port, "/emulation", body)
                elif not subscribed and b'"subscribe"' in line:
                    subscribed = True
                    ready.release()

    tasks = [asyncio.create_task(one()) for _ in range(count)]
    start_cpu = time.process_time()
    while not stop.is_set():  # noqa: ASYNC110
        await asyncio.sleep(0.05)
    busy = time.process_time() - start_cpu
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    results.put((received, latencies, busy))


def stream_subscriber_process(
    port: int, kind: str, count: int, cpu: int | None, ready: Any, stop: Any, results: Any
) -> None:
    if cpu is not None:
        os.sched_setaffinity(0, {cpu})
    asyncio.run(_stream_subscribers(port, kind, count, ready, stop, results))


def run(kind: str, subscribers: int, rate: float, seconds: float, procs: int) -> Result:
    cpus = sorted(os.sched_getaffinity(0))
    server_cpu = cpus[0] if len(cpus) > 1 else None
    client_cpus = cpus[1:] or [None]
    port = free_port()
    server = start_server(port, server_cpu)
    url = f"ws://127.0.0.1:{port}/connection/websocket"
    ctx = mp.get_context("spawn")
    ready, stop, results = ctx.Semaphore(0), ctx.Event(), ctx.Queue()
    per = [subscribers // procs + (1 if i < subscribers % procs else 0) for i in range(procs)]
    workers = []
    for i, n in enumerate(per):
        cpu = client_cpus[i % len(client_cpus)]
        if kind == "websocket":
            args: tuple[Any, ...] = (url, "json", n, cpu, ready, stop, results)
            workers.append(ctx.Process(target=subscriber_process, args=args))
        else:
            args = (port, kind, n, cpu, ready, stop, results)
            workers.append(ctx.Process(target=stream_subscriber_process, args=args))
    try:
        for w in workers:
            w.start()
        for _ in range(subscribers):
            if not ready.acquire(timeout=60):
                raise SystemExit(f"{kind}: subscribers did not subscribe")
        before = cpu_seconds(server.pid)
        started = time.monotonic()
        published = asyncio.run(publish(url, rate, seconds))
        time.sleep(1.0)  # let the last deliveries land
        elapsed = time.monotonic() - started
        used = cpu_seconds(server.pid) - before
        stop.set()
        delivered, latencies, busy = 0, [], 0.0
        for _ in workers:
            got, lat, b = results.get(timeout=30)
            delivered += got
            latencies.extend(lat)
            busy = max(busy, b / elapsed)
        return Result(kind, subscribers, published, delivered, elapsed, used, latencies, busy)
    finally:
        stop.set()
        for w in workers:
            w.join(10)
            if w.is_alive():
                w.kill()
        server.terminate()
        server.wait(10)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--subscribers", type=int, default=1000)
    parser.add_argument("--rate", type=float, default=20.0)
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--procs", type=int, default=max(1, min(4, (os.cpu_count() or 2) - 1)))
    parser.add_argument("--transports", nargs="+", default=list(TRANSPORTS))
    args = parser.parse_args()
    print(machine())
    print()
    print(
        "| transport | subscribers | publications | deliveries/s | lost | server CPU-µs "
        "per delivery | latency p50 / p99 / max (ms) | busiest client |"
    )
    print("|---|---|---|---|---|---|---|---|")
    for kind in args.transports:
        result = run(kind, args.subscribers, args.rate, args.seconds, args.procs)
        print(result.row(), flush=True)


if __name__ == "__main__":
    main()
