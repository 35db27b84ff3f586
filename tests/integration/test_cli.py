"""The ``hubbub`` command as a user runs it: a real process, real ports, exit codes."""

from __future__ import annotations

import asyncio
import json
import socket
import subprocess
import sys
from pathlib import Path

import jwt
import websockets

from hubbub.config import DEV_SECRET
from tests.conftest import UNIT

HUBBUB = [sys.executable, "-m", "hubbub"]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def test_token_command() -> None:
    out = subprocess.run(
        [*HUBBUB, "token", "--dev", "--user", "alice", "--ttl", "60", "--channel", "news"],
        capture_output=True,
        text=True,
        check=True,
        timeout=30 * UNIT,
    ).stdout.strip()
    claims = jwt.decode(out, DEV_SECRET, algorithms=["HS256"])
    assert claims["sub"] == "alice" and claims["channels"] == ["news"] and "exp" in claims


def test_token_without_secret_is_a_usage_error() -> None:
    result = subprocess.run(
        [*HUBBUB, "token", "--user", "alice"], capture_output=True, text=True, timeout=30 * UNIT
    )
    assert result.returncode == 2
    assert "hmac_secret_key" in result.stderr and "Traceback" not in result.stderr


def test_config_error_exit_code(tmp_path: Path) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text("[client]\nping_interval = -1\n")
    result = subprocess.run(
        [*HUBBUB, "serve", "--config", str(bad)], capture_output=True, text=True, timeout=30 * UNIT
    )
    assert result.returncode == 2
    assert "client.ping_interval" in result.stderr and "Traceback" not in result.stderr


def test_help_everywhere() -> None:
    for args in ([], ["serve"], ["token"]):
        result = subprocess.run(
            [*HUBBUB, *args, "--help"], capture_output=True, text=True, timeout=30 * UNIT
        )
        assert result.returncode == 0 and "usage: hubbub" in result.stdout


async def test_serve_runs_the_server(tmp_path: Path) -> None:
    port = free_port()
    config = tmp_path / "hubbub.toml"
    config.write_text(
        f'port = {port}\n[token]\nhmac_secret_key = "cli-secret-cli-secret-cli-secret-cli-secret"\n'
        "[channel.without_namespace]\nallow_subscribe_for_client = true\n"
    )
    proc = await asyncio.create_subprocess_exec(
        *HUBBUB,
        "serve",
        "--config",
        str(config),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        url = f"ws://127.0.0.1:{port}/connection/websocket"
        for _ in range(int(100 * UNIT)):
            try:
                ws = await websockets.connect(url)
                break
            except OSError:
                await asyncio.sleep(0.1)
        else:
            raise AssertionError("hubbub serve did not start listening")
        token = jwt.encode(
            {"sub": "alice"}, "cli-secret-cli-secret-cli-secret-cli-secret", algorithm="HS256"
        )
        await ws.send(json.dumps({"id": 1, "connect": {"token": token}}))
        reply = json.loads(await asyncio.wait_for(ws.recv(), 5 * UNIT))
        assert reply["connect"]["client"]
        await ws.close()
    finally:
        proc.terminate()
        await asyncio.wait_for(proc.wait(), 10 * UNIT)
    assert proc.returncode == 0
