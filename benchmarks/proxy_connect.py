"""What the connect proxy adds to a connect: p50/p99 of the connect command through the proxy,
next to a JWT connect, in one run on loopback.

Starts a trivial proxy backend (uvicorn, a bare ASGI app answering ``{"result":{"user":..}}``)
and ``hubbub serve`` with ``[client.proxy.connect]`` pointing at it, each in its own process.
Then, one connection at a time (``--connects`` of each kind, interleaved so both see the same
machine): open a WebSocket, send ``connect`` (with a token, or without one and with a
``Cookie`` header the proxy forwards), time until the reply, close. Prints p50/p99/max of the
connect round trip (the WebSocket opening is excluded: the same for both).

Run:  .venv/bin/python benchmarks/proxy_connect.py [--connects 1000]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import websockets

from harness import free_port, wait_for_port
from hubbub.auth import mint_connection_token

SECRET = "benchmark-secret-of-at-least-thirty-two-bytes"

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


async def connect_once(url: str, connect: dict[str, object], headers: dict[str, str]) -> float:
    async with websockets.connect(url, additional_headers=headers) as ws:
        start = time.perf_counter()
        await ws.send(json.dumps({"id": 1, "connect": connect}))
        reply = json.loads(str(await ws.recv()).split("\n")[0])
        elapsed = time.perf_counter() - start
        assert "connect" in reply, reply
        return elapsed


async def run(port: int, connects: int) -> dict[str, list[float]]:
    url = f"ws://127.0.0.1:{port}/connection/websocket"
    token = mint_connection_token(SECRET, "42")
    times: dict[str, list[float]] = {"jwt": [], "proxy": []}
    for i in range(connects + 50):
        # Alternating which goes first: each pays for the previous connection's cleanup.
        if i % 2:
            jwt = await connect_once(url, {"token": token}, {})
            proxied = await connect_once(url, {}, {"Cookie": "session=abc"})
        else:
            proxied = await connect_once(url, {}, {"Cookie": "session=abc"})
            jwt = await connect_once(url, {"token": token}, {})
        if i >= 50:  # warm-up: pools, caches
            times["jwt"].append(jwt)
            times["proxy"].append(proxied)
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--connects", type=int, default=1000)
    args = parser.parse_args()
    backend_port, port = free_port(), free_port()
    with tempfile.TemporaryDirectory() as folder:
        config = Path(folder) / "proxy.toml"
        config.write_text(
            f'port = {port}\nlog_level = "warning"\n'
            f'[token]\nhmac_secret_key = "{SECRET}"\n'
            "[limits]\nconnections_per_ip = 0\ncommand_rate = 0\n"
            "[client.proxy.connect]\nenabled = true\n"
            f'endpoint = "http://127.0.0.1:{backend_port}/connect"\n'
            'timeout = "1s"\nhttp_headers = ["Cookie"]\n'
        )
        backend = subprocess.Popen(
            [sys.executable, "-c", BACKEND.replace("PORT", str(backend_port))]
        )
        server = subprocess.Popen(
            [sys.executable, "-m", "hubbub", "serve", "--config", str(config)],
            stdout=subprocess.DEVNULL,
        )
        try:
            wait_for_port(backend_port, backend)
            wait_for_port(port, server)
            times = asyncio.run(run(port, args.connects))
        finally:
            for proc in (server, backend):
                proc.terminate()
                proc.wait(timeout=10)
    print(f"{args.connects} connects of each kind, one at a time, loopback")
    print(f"{'connect':8} {'p50 ms':>8} {'p99 ms':>8} {'max ms':>8}")
    for kind, values in times.items():
        q = statistics.quantiles(values, n=100)
        print(f"{kind:8} {q[49] * 1000:8.2f} {q[98] * 1000:8.2f} {max(values) * 1000:8.2f}")


if __name__ == "__main__":
    main()
