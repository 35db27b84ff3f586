"""What ``hubbub serve`` logs at INFO: nothing per ordinary event, one line per bad connection.

Normal traffic (HTTP API publishes, connections that come and go) is counted in metrics, not
logged line by line. A connection closed for bad input costs exactly one line, from hubbub,
carrying the connection's id, without a traceback, on every transport: native, ASGI, and with
compression (served by uvicorn's WebSocket implementation).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import jwt
import pytest
import websockets
from websockets.asyncio.client import ClientConnection
from websockets.exceptions import ConnectionClosed

from hubbub.auth import mint_connection_token
from tests.conftest import API_KEY, SECRET, UNIT

EVENTS = 50  # publishes, and connections opened and closed, per test
_TRANSPORTS = {
    "native": "",
    "asgi": 'transport = "asgi"\n',
    "compression": "websocket_compression = true\n",
}


class ServerLog:
    """``hubbub serve`` at INFO with JSON logs, and the lines it wrote so far."""

    def __init__(self, path: Path, port: int) -> None:
        self.path = path
        self.port = port

    @property
    def url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/connection/websocket"

    def lines(self) -> list[dict[str, Any]]:
        """Every line written, parsed; one that is not JSON (a bare traceback) as ``raw``."""
        text = self.path.read_text(errors="replace")
        return [_parse(line) for line in text.splitlines() if line.strip()]

    async def new_lines(self, since: int, expected: int = 0) -> list[dict[str, Any]]:
        """The lines after the first ``since``, once ``expected`` are there and nothing more
        came for a while (what an action logs may come after its reply)."""
        for _ in range(int(200 * UNIT)):
            if len(self.lines()) - since >= expected:
                break
            await asyncio.sleep(0.05)
        await asyncio.sleep(0.5 * UNIT)
        return self.lines()[since:]


def _parse(line: str) -> dict[str, Any]:
    try:
        entry: dict[str, Any] = json.loads(line)
    except ValueError:
        return {"logger": "raw", "message": line}
    return entry


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@contextlib.contextmanager
def serve(tmp_path: Path, extra: str = "") -> Iterator[ServerLog]:
    port = _free_port()
    config = tmp_path / "hubbub.toml"
    config.write_text(
        f'port = {port}\nlog_level = "info"\nlog_format = "json"\n{extra}'
        f'[token]\nhmac_secret_key = "{SECRET}"\n[http_api]\nkey = "{API_KEY}"\n'
        "[channel.without_namespace]\nallow_subscribe_for_client = true\n"
    )
    path = tmp_path / "server.log"
    with path.open("wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "hubbub", "serve", "--config", str(config)],
            stdout=out,
            stderr=subprocess.STDOUT,
            env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)},
        )
    try:
        deadline = time.monotonic() + 20 * UNIT
        while True:
            assert proc.poll() is None, path.read_text()
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
                break
            except OSError:
                assert time.monotonic() < deadline, "hubbub serve did not start listening"
                time.sleep(0.05)
        yield ServerLog(path, port)
    finally:
        proc.terminate()
        try:
            proc.wait(10 * UNIT)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5 * UNIT)


async def _connect(server: ServerLog, token: str, compression: bool) -> ClientConnection:
    ws = await websockets.connect(
        server.url, compression="deflate" if compression else None, open_timeout=10 * UNIT
    )
    await ws.send(json.dumps({"id": 1, "connect": {"token": token}}))
    return ws


async def _until_closed(ws: ClientConnection) -> int | None:
    with contextlib.suppress(ConnectionClosed):
        while True:
            await asyncio.wait_for(ws.recv(), 10 * UNIT)
    return ws.close_code


@pytest.mark.parametrize("transport", ["native", "asgi"])
async def test_normal_traffic_logs_nothing_per_event(tmp_path: Path, transport: str) -> None:
    with serve(tmp_path, _TRANSPORTS[transport]) as server:
        before = len(await server.new_lines(0, expected=1))
        async with httpx.AsyncClient(headers={"X-API-Key": API_KEY}) as http:
            for n in range(EVENTS):
                response = await http.post(
                    f"http://127.0.0.1:{server.port}/api/publish",
                    json={"channel": "news", "data": {"n": n}},
                )
                assert response.status_code == 200 and "result" in response.json()
        for n in range(EVENTS):
            token = mint_connection_token(SECRET, f"user{n}", channels=["news"])
            ws = await _connect(server, token, compression=False)
            reply = json.loads(await asyncio.wait_for(ws.recv(), 10 * UNIT))
            assert "connect" in reply, reply
            await ws.close()
        lines = await server.new_lines(before)
    assert lines == []


async def _bad_json(server: ServerLog, compression: bool) -> None:
    ws = await websockets.connect(
        server.url, compression="deflate" if compression else None, open_timeout=10 * UNIT
    )
    await ws.send("not json at all")
    assert await _until_closed(ws) == 3501


async def _bad_utf8(server: ServerLog, compression: bool) -> None:
    ws = await websockets.connect(
        server.url, compression="deflate" if compression else None, open_timeout=10 * UNIT
    )
    await ws.send(b'{"id": 1, "connect": {"name": "\xff\xfe"}}', text=True)
    assert await _until_closed(ws) == 1007


async def _bad_token(server: ServerLog, compression: bool) -> None:
    forged = jwt.encode({"sub": "mallory"}, "another-secret-of-thirty-two-bytes-min", "HS256")
    ws = await _connect(server, forged, compression)
    assert await _until_closed(ws) == 3500


_BAD = {"invalid JSON": _bad_json, "invalid UTF-8": _bad_utf8, "bad token": _bad_token}


@pytest.mark.slow
@pytest.mark.parametrize("transport", list(_TRANSPORTS))
async def test_one_line_per_bad_connection(tmp_path: Path, transport: str) -> None:
    with serve(tmp_path, _TRANSPORTS[transport]) as server:
        before = len(await server.new_lines(0, expected=1))
        for kind, misbehave in _BAD.items():
            since = len(server.lines())
            for _ in range(3):
                await misbehave(server, transport == "compression")
            lines = await server.new_lines(since, expected=3)
            assert len(lines) == 3, (kind, lines)
            # From hubbub itself: not from uvicorn or websockets.
            loggers = {line["logger"] for line in lines}
            assert all(name.startswith("hubbub.") for name in loggers), (kind, lines)
            assert all("exception" not in line for line in lines), (kind, lines)
            # One line per connection: three different connection ids.
            assert len({line.get("conn") for line in lines} - {None}) == 3, (kind, lines)
        assert not any("exception" in line for line in server.lines()[before:])
