"""The npm ``centrifuge`` client under Node.js against a real server on a loopback port."""

from __future__ import annotations

import asyncio
import json
import shutil
from pathlib import Path

import pytest

from hubbub.auth import mint_connection_token
from tests.conftest import SECRET, UNIT, RunningServer

JS = Path(__file__).resolve().parents[1] / "js"

# What a client sees over the wire: on both WebSocket transports (tests/conftest.py::transport).
pytestmark = [pytest.mark.js, pytest.mark.usefixtures("transport")]


def _require_node() -> str:
    node = shutil.which("node")
    assert node, "Node.js is required (make test installs it)"
    assert (JS / "node_modules" / "centrifuge").is_dir(), "run `make test-deps`"
    return node


async def _run(script: str, *args: str) -> list[dict[str, object]]:
    proc = await asyncio.create_subprocess_exec(
        _require_node(),
        str(JS / script),
        *args,
        cwd=JS,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        out, err = await asyncio.wait_for(proc.communicate(), 20 * UNIT)
    except TimeoutError:
        proc.kill()
        await proc.wait()
        raise AssertionError(f"{script} did not finish") from None
    assert proc.returncode == 0, f"{script} failed: {err.decode()}"
    return [json.loads(line) for line in out.decode().splitlines() if line.strip()]


@pytest.mark.parametrize("wire_format", ["json", "protobuf"])
async def test_node_client_connects_subscribes_and_receives(
    server: RunningServer, wire_format: str
) -> None:
    token = mint_connection_token(SECRET, "nodeuser")

    async def publish_when_subscribed() -> None:
        for _ in range(int(200 * UNIT)):
            if server.node.channels().get("news"):
                break
            await asyncio.sleep(0.05)
        for n in range(3):
            await server.node.publish("news", {"n": n})

    publisher = asyncio.create_task(publish_when_subscribed())
    events = await _run("subscribe.mjs", server.url, token, "news", "3", wire_format)
    await publisher
    assert server.node.counters[f"connections.{wire_format}"] == 1
    kinds = [e["event"] for e in events]
    assert kinds[0] == "connected"
    assert kinds.count("publication") == 3
    pubs = [e for e in events if e["event"] == "publication"]
    assert [p["data"] for p in pubs] == [{"n": 0}, {"n": 1}, {"n": 2}]
    assert [p["offset"] for p in pubs] == [1, 2, 3]


async def test_node_client_sends_connect_and_subscribe_in_one_frame(
    server: RunningServer,
) -> None:
    token = mint_connection_token(SECRET, "nodeuser")
    frames = await _run("first_frame.mjs", server.url, token)
    (first,) = [f for f in frames if f["event"] == "first_frame"]
    lines = str(first["text"]).split("\n")
    assert '"connect"' in lines[0] and '"subscribe"' in lines[1]
    assert any(f["event"] == "subscribed" for f in frames)
