"""The ``hubbub`` command as a user runs it: a real process, real ports, exit codes."""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
import subprocess
import sys
from pathlib import Path

import jwt
import websockets

from hubbub.auth import mint_connection_token
from hubbub.config import DEV_SECRET
from tests.conftest import API_KEY, SECRET, UNIT, RunningServer

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


async def test_listen_prints_json_lines(server: RunningServer) -> None:
    token = mint_connection_token(SECRET, "cli-listener")
    proc = await asyncio.create_subprocess_exec(
        *HUBBUB, "listen", "news", "chat:room", "--url", server.url, "--token", token,
        "--count", "3",
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    for _ in range(int(200 * UNIT)):
        if server.node.channels().get("chat:room"):
            break
        await asyncio.sleep(0.05)
    await server.node.publish("news", {"n": 1})
    await server.node.publish("chat:room", "hello")
    await server.node.publish("news", [1, 2])
    out, err = await asyncio.wait_for(proc.communicate(), 20 * UNIT)
    assert proc.returncode == 0, err.decode()
    lines = [json.loads(line) for line in out.decode().splitlines()]
    # In order within each channel (channels interleave freely).
    assert [line for line in lines if line["channel"] == "news"] == [
        {"channel": "news", "offset": 1, "data": {"n": 1}},
        {"channel": "news", "offset": 2, "data": [1, 2]},
    ]
    assert [line for line in lines if line["channel"] == "chat:room"] == [
        {"channel": "chat:room", "offset": 1, "data": "hello"}
    ]


async def test_publish_through_the_api(server: RunningServer) -> None:
    proc = await asyncio.create_subprocess_exec(
        *HUBBUB, "publish", "news", '{"text": "from the terminal"}',
        "--api", f"{server.http}/api", "--api-key", API_KEY,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    out, err = await asyncio.wait_for(proc.communicate(), 20 * UNIT)
    assert proc.returncode == 0, err.decode()
    assert json.loads(out)["offset"] == 1
    history = await server.node.history("news", limit=-1)
    assert [json.loads(bytes(p.data)) for p in history.publications] == [
        {"text": "from the terminal"}
    ]


async def test_client_commands_fail_in_one_line(server: RunningServer) -> None:
    cases = [
        (["publish", "news", "not json", "--api", f"{server.http}/api"], 2, "must be JSON"),
        (["publish", "news", "1", "--api", f"{server.http}/api", "--api-key", "x"], 1, "refused"),
        (["publish", "news", "1", "--api", "http://127.0.0.1:9/api"], 1, "cannot reach"),
        (["listen", "news", "--url", server.url], 2, "--token"),
        (["listen", "news", "--url", server.url, "--token", "bad"], 1, "refused the connection"),
        (["listen", "nope:x", "--url", server.url, "--token",
          mint_connection_token(SECRET, "u")], 1, "unknown channel"),
    ]  # fmt: skip
    for args, code, fragment in cases:
        proc = await asyncio.create_subprocess_exec(
            *HUBBUB, *args, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
        )
        _, err = await asyncio.wait_for(proc.communicate(), 20 * UNIT)
        text = err.decode()
        assert proc.returncode == code, (args, text)
        assert fragment in text and "Traceback" not in text, (args, text)
        assert len(text.strip().splitlines()) == 1, text


async def test_json_logs_with_connection_ids(tmp_path: Path) -> None:
    port = free_port()
    secret = "json-logs-secret-json-logs-secret-json"
    config = tmp_path / "hubbub.toml"
    config.write_text(
        f'port = {port}\nlog_format = "json"\n[token]\nhmac_secret_key = "{secret}"\n'
    )
    proc = await asyncio.create_subprocess_exec(
        *HUBBUB, "serve", "--config", str(config),
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    bad_token = jwt.encode({"sub": "mallory"}, "a-different-secret-of-32-bytes-min", "HS256")
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
        await ws.send(json.dumps({"id": 1, "connect": {"token": bad_token}}))
        with contextlib.suppress(websockets.exceptions.ConnectionClosed):
            await asyncio.wait_for(ws.recv(), 5 * UNIT)
        ws2 = await websockets.connect(url)
        await ws2.send("garbage")
        with contextlib.suppress(websockets.exceptions.ConnectionClosed):
            await asyncio.wait_for(ws2.recv(), 5 * UNIT)
    finally:
        proc.terminate()
        _, err = await asyncio.wait_for(proc.communicate(), 15 * UNIT)
    lines = [json.loads(line) for line in err.decode().splitlines() if line.strip()]
    assert lines and all({"time", "level", "logger", "message"} <= set(e) for e in lines)
    about_connections = [e for e in lines if e["logger"] == "hubbub.session"]
    assert len(about_connections) == 3  # invalid token, its close, the bad frame's close
    assert all("conn" in e for e in about_connections)
    assert bad_token not in err.decode() and secret not in err.decode()
    assert "Traceback" not in err.decode()


ROOT = Path(__file__).resolve().parents[2]


async def test_bench_runs_the_suite_from_a_checkout(tmp_path: Path) -> None:
    root = ROOT
    proc = await asyncio.create_subprocess_exec(
        *HUBBUB, "bench", "fanout", "--subscribers", "5", "--formats", "json", "--seconds", "0.3",
        "--rate", "20", "--client-processes", "1",
        cwd=root, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    out, err = await asyncio.wait_for(proc.communicate(), 120 * UNIT)
    assert proc.returncode == 0, err.decode()
    rows = [line for line in out.decode().splitlines() if line.startswith("| json, 1 node")]
    assert len(rows) == 1 and "| 0 |" in rows[0]  # one scenario, nothing lost
    assert "1/1 done" in err.decode()  # the progress bar
    elsewhere = await asyncio.create_subprocess_exec(
        *HUBBUB, "bench", cwd=tmp_path, stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    _, err = await asyncio.wait_for(elsewhere.communicate(), 30 * UNIT)
    assert elsewhere.returncode == 1 and b"source checkout" in err
