"""Which HTTP client the proxies use: httpx or aiohttp, on loopback against a trivial backend.

Starts a backend in a separate process (uvicorn + a bare ASGI app answering every POST with
``{"result":{"user":"42"}}``), then for each client: one pooled client, ``--concurrency``
coroutines posting a connect-proxy-sized JSON body ``--requests`` times in all, and prints
requests/s and latency p50/p99 per client. Each client runs twice, the first run as warm-up.

Run:  .venv/bin/python benchmarks/proxy_client.py [--requests 20000] [--concurrency 50]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable

import aiohttp
import httpx

from harness import free_port, wait_for_port

BODY = (
    b'{"client":"9a1f5a3e-3c3c-4c7e-9f3e-2a4b5c6d7e8f","transport":"websocket",'
    b'"protocol":"json","encoding":"json","name":"js","version":"5.0.0","data":{"lang":"en"}}'
)

BACKEND = """
import uvicorn

async def app(scope, receive, send):
    if scope["type"] != "http":
        return
    more = True
    while more:
        more = (await receive()).get("more_body", False)
    await send({"type": "http.response.start", "status": 200,
                "headers": [(b"content-type", b"application/json")]})
    await send({"type": "http.response.body", "body": b'{"result":{"user":"42"}}'})

uvicorn.run(app, host="127.0.0.1", port=PORT, log_level="warning", access_log=False)
"""

Post = Callable[[], Awaitable[None]]


async def measure(post: Post, requests: int, concurrency: int) -> tuple[float, list[float]]:
    latencies: list[float] = []
    left = requests

    async def worker() -> None:
        nonlocal left
        while left > 0:
            left -= 1
            start = time.perf_counter()
            await post()
            latencies.append(time.perf_counter() - start)

    start = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return requests / (time.perf_counter() - start), latencies


async def run_httpx(url: str, requests: int, concurrency: int) -> tuple[float, list[float]]:
    limits = httpx.Limits(max_connections=100, max_keepalive_connections=100)
    async with httpx.AsyncClient(limits=limits, timeout=5.0) as client:

        async def post() -> None:
            response = await client.post(
                url, content=BODY, headers={"content-type": "application/json"}
            )
            response.json()

        await measure(post, requests // 4, concurrency)
        return await measure(post, requests, concurrency)


async def run_aiohttp(url: str, requests: int, concurrency: int) -> tuple[float, list[float]]:
    connector = aiohttp.TCPConnector(limit=100)
    timeout = aiohttp.ClientTimeout(total=5.0)
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as client:

        async def post() -> None:
            async with client.post(
                url, data=BODY, headers={"content-type": "application/json"}
            ) as response:
                await response.read()

        await measure(post, requests // 4, concurrency)
        return await measure(post, requests, concurrency)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=20000)
    parser.add_argument("--concurrency", type=int, default=50)
    args = parser.parse_args()
    port = free_port()
    backend = subprocess.Popen([sys.executable, "-c", BACKEND.replace("PORT", str(port))])
    try:
        wait_for_port(port)
        url = f"http://127.0.0.1:{port}/proxy"
        print(f"{args.requests} requests, {args.concurrency} at a time, loopback")
        print(f"{'client':8} {'req/s':>8} {'p50 ms':>8} {'p99 ms':>8}")
        for name, run in (("httpx", run_httpx), ("aiohttp", run_aiohttp)):
            rate, lat = asyncio.run(run(url, args.requests, args.concurrency))
            q = statistics.quantiles(lat, n=100)
            print(f"{name:8} {rate:8.0f} {q[49] * 1000:8.2f} {q[98] * 1000:8.2f}")
    finally:
        backend.terminate()
        backend.wait(timeout=10)


if __name__ == "__main__":
    main()
