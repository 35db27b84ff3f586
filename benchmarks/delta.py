"""Delta compression benchmark: a "ticker" stream with and without ``delta: "fossil"``.

Starts ``hubbub serve`` (pinned to one CPU when the machine has two or more), subscribes one
WebSocket client to a channel whose namespace allows delta and flags every publication
(``allowed_delta_types = ["fossil"]``, ``delta_publish = true``), once without asking for delta
and once asking for it (a fresh server each time), publishes the same stream of publications
from another connection (a ~3.4 KB JSON object of 28 quotes in which 3 prices and a sequence
number change each time), and prints per run: the bytes the subscriber received (WebSocket
message payloads), how many of its publications were deltas, and the server's CPU time per
publication (the publisher's command, the fan-out, the encoding, and for delta the Fossil
delta). It checks that the delta subscriber rebuilds every payload exactly.

Then it times the encoder alone (``hubbub.protocol.fossil.create``/``apply``) on a 2 KB and a
20 KB payload of the same kind.

Run:  .venv/bin/python benchmarks/delta.py [--publications 1000]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import websockets

from harness import cpu_seconds, cpu_split, free_port, pin, wait_for_port
from hubbub.auth import mint_connection_token
from hubbub.protocol import fossil

SECRET = "benchmark-secret-of-at-least-thirty-two-bytes"
CHANNEL = "ticker:eurusd"


def quotes(count: int, seed: int = 1) -> dict[str, Any]:
    rnd = random.Random(seed)
    return {
        "seq": 0,
        "quotes": [
            {
                "sym": f"SYM{i:04d}",
                "name": f"Company {i} holdings plc",
                "bid": round(rnd.uniform(10, 900), 2),
                "ask": round(rnd.uniform(10, 900), 2),
                "volume": rnd.randint(1_000, 9_000_000),
                "ccy": "EUR",
                "venue": "XPAR",
            }
            for i in range(count)
        ],
    }


def stream(count: int, publications: int) -> list[bytes]:
    """The payloads of a ticker stream: each time the sequence and 3 prices change."""
    rnd = random.Random(2)
    state = quotes(count)
    out = []
    for n in range(publications):
        state["seq"] = n
        for quote in rnd.sample(state["quotes"], 3):
            quote["bid"] = round(quote["bid"] + rnd.choice((-0.01, 0.01)), 2)
        out.append(json.dumps(state, separators=(",", ":")).encode())
    return out


def start_server(port: int, cpu: int | None, folder: Path) -> subprocess.Popen[bytes]:
    config = folder / f"delta-{port}.toml"
    config.write_text(
        f'port = {port}\nlog_level = "warning"\n'
        f'[token]\nhmac_secret_key = "{SECRET}"\n'
        "[limits]\ncommand_rate = 0\nuser_command_rate = 0\n"
        "[client]\nqueue_max_size = 67108864\n"
        '[[channel.namespaces]]\nname = "ticker"\nallow_subscribe_for_client = true\n'
        "allow_publish_for_client = true\nhistory_size = 100\nhistory_ttl = 300\n"
        'force_recovery = true\nallowed_delta_types = ["fossil"]\ndelta_publish = true\n'
    )
    cmd = [sys.executable, "-m", "hubbub", "serve", "--config", str(config)]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    pin(proc.pid, cpu)
    wait_for_port(port, proc)
    return proc


async def run(port: int, pid: int, payloads: list[bytes], delta: bool) -> dict[str, Any]:
    url = f"ws://127.0.0.1:{port}/connection/websocket"
    connect = json.dumps({"id": 1, "connect": {"token": mint_connection_token(SECRET, "u")}})
    sub = await websockets.connect(url, max_size=None)
    pub = await websockets.connect(url, max_size=None)
    for ws in (sub, pub):
        await ws.send(connect)
        await ws.recv()
    req: dict[str, Any] = {"channel": CHANNEL}
    if delta:
        req["delta"] = "fossil"
    await sub.send(json.dumps({"id": 2, "subscribe": req}))
    reply = json.loads(await sub.recv())
    assert reply["subscribe"].get("delta", False) is delta, reply

    received: list[dict[str, Any]] = []
    wire = 0

    async def receive() -> None:
        nonlocal wire
        while len(received) < len(payloads):
            frame = await sub.recv()
            wire += len(frame)
            for line in frame.split("\n") if isinstance(frame, str) else [frame.decode()]:
                if line != "{}":
                    received.append(json.loads(line)["push"]["pub"])

    reader = asyncio.create_task(receive())
    cpu_before = cpu_seconds(pid)
    started = time.perf_counter()
    for n, payload in enumerate(payloads, start=100):
        await pub.send(
            f'{{"id":{n},"publish":{{"channel":"{CHANNEL}","data":{payload.decode()}}}}}'
        )
        await pub.recv()  # one at a time: the CPU figure is per publication, not per batch
    await asyncio.wait_for(reader, 60)
    elapsed = time.perf_counter() - started
    cpu = cpu_seconds(pid) - cpu_before
    await sub.close()
    await pub.close()

    deltas = 0
    if delta:  # rebuild every payload as the client does, to prove the stream is exact
        base = b""
        for got, want in zip(received, payloads, strict=True):
            raw = got["data"].encode()
            base = fossil.apply(base, raw) if got.get("delta") else raw
            deltas += bool(got.get("delta"))
            assert json.loads(base) == json.loads(want)
    else:
        assert [got["data"] for got in received] == [json.loads(p) for p in payloads]
    return {
        "wire": wire,
        "deltas": deltas,
        "cpu_us": cpu / len(payloads) * 1e6,
        "elapsed": elapsed,
    }


def encoder_figures() -> list[tuple[int, float, float, int]]:
    rows = []
    for count in (17, 170):  # about 2 KB and 20 KB
        a, b = stream(count, 2)
        rounds = 2000 if len(a) < 5000 else 300
        t = time.perf_counter()
        for _ in range(rounds):
            d = fossil.create(a, b)
        create_us = (time.perf_counter() - t) / rounds * 1e6
        t = time.perf_counter()
        for _ in range(rounds):
            fossil.apply(a, d)
        apply_us = (time.perf_counter() - t) / rounds * 1e6
        rows.append((len(b), create_us, apply_us, len(d)))
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--publications", type=int, default=1000)
    args = parser.parse_args()
    payloads = stream(28, args.publications)  # about 3.4 KB
    server_cpu, _ = cpu_split()
    folder = Path(tempfile.mkdtemp(prefix="hubbub-delta-"))
    results = {}
    for delta in (False, True):
        port = free_port()
        proc = start_server(port, server_cpu, folder)
        try:
            results[delta] = asyncio.run(run(port, proc.pid, payloads, delta))
        finally:
            proc.terminate()
            proc.wait(10)
    size = sum(map(len, payloads)) / len(payloads)
    print(f"{args.publications} publications of a {size:.0f}-byte JSON ticker, JSON wire format\n")
    print("| subscriber | bytes received | per publication | deltas | server CPU µs/publication |")
    print("|---|---:|---:|---:|---:|")
    for delta, label in ((False, "plain"), (True, 'delta: "fossil"')):
        r = results[delta]
        print(
            f"| {label} | {r['wire']:,} | {r['wire'] / args.publications:,.0f} | "
            f"{r['deltas']} | {r['cpu_us']:.0f} |"
        )
    print(f"\nratio (delta / plain bytes): {results[True]['wire'] / results[False]['wire']:.3f}\n")
    print("| payload | fossil.create µs | fossil.apply µs | delta bytes |")
    print("|---:|---:|---:|---:|")
    for size_b, create_us, apply_us, delta_len in encoder_figures():
        print(f"| {size_b:,} B | {create_us:.0f} | {apply_us:.0f} | {delta_len} |")


if __name__ == "__main__":
    main()
