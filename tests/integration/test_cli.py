"""The ``hubbub`` command as a user runs it: a real process, real ports, exit codes."""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

import jwt
import pytest
import websockets
from centrifuge import Client as CentrifugeClient
from centrifuge import ClientEventHandler, ConnectedContext, DisconnectedContext

from hubbub.auth import mint_connection_token
from hubbub.config import DEV_SECRET, load_settings
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
    assert result.returncode == 1  # a start-up failure, like a port in use
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
    assert len(about_connections) == 2  # one line per bad connection: bad token, bad frame
    assert all("conn" in e for e in about_connections)
    assert bad_token not in err.decode() and secret not in err.decode()
    assert "Traceback" not in err.decode()


ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.slow
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


class _Outcome(ClientEventHandler):
    def __init__(self) -> None:
        self.first: asyncio.Queue[str | int] = asyncio.Queue()

    async def on_connected(self, ctx: ConnectedContext) -> None:
        await self.first.put("connected")

    async def on_disconnected(self, ctx: DisconnectedContext) -> None:
        await self.first.put(ctx.code)


async def connect_outcome(url: str, token: str) -> str | int:
    """What a centrifuge-python client with ``token`` gets first: "connected" or the code."""
    events = _Outcome()
    client = CentrifugeClient(url, token=token, events=events, proxy=None)
    await client.connect()
    try:
        return await asyncio.wait_for(events.first.get(), 5 * UNIT)
    finally:
        await client.disconnect()


@pytest.mark.parametrize("require_exp", [False, True])
async def test_token_from_the_config_is_accepted_by_a_server_with_that_config(
    tmp_path: Path, start_server: Any, require_exp: bool
) -> None:
    config = tmp_path / "hubbub.toml"
    config.write_text(
        f'[token]\nhmac_secret_key = "{SECRET}"\naudience = "hubbub-clients"\n'
        f'issuer = "https://auth.example"\n{"require_exp = true" if require_exp else ""}\n'
        "[channel.without_namespace]\nallow_subscribe_for_client = true\n"
    )
    running: RunningServer = await start_server(load_settings(config))
    token = await asyncio.create_subprocess_exec(
        *HUBBUB, "token", "--config", str(config), "--user", "alice",
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    out, err = await asyncio.wait_for(token.communicate(), 30 * UNIT)
    assert token.returncode == 0, err.decode()
    minted = out.decode().strip()
    claims = jwt.decode(minted, options={"verify_signature": False})
    assert claims["aud"] == "hubbub-clients" and claims["iss"] == "https://auth.example"
    assert ("exp" in claims) is require_exp  # without --ttl: only when the server requires it
    assert await connect_outcome(running.url, minted) == "connected"
    # Without the configured claims the same server refuses the token: the check is real.
    bare = mint_connection_token(SECRET, "alice", ttl=60)
    assert await connect_outcome(running.url, bare) == 3500
    forever = mint_connection_token(
        SECRET, "alice", audience="hubbub-clients", issuer="https://auth.example"
    )
    assert await connect_outcome(running.url, forever) == (3500 if require_exp else "connected")
    # The client commands mint the same way (`--user` with `--config`).
    listen = await asyncio.create_subprocess_exec(
        *HUBBUB, "listen", "news", "--url", running.url, "--config", str(config),
        "--user", "alice", "--count", "1",
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    for _ in range(int(200 * UNIT)):
        if running.node.channels().get("news") or listen.returncode is not None:
            break
        await asyncio.sleep(0.05)
    await running.node.publish("news", {"n": 1})
    out, err = await asyncio.wait_for(listen.communicate(), 20 * UNIT)
    assert listen.returncode == 0, err.decode()
    assert json.loads(out)["data"] == {"n": 1}


@pytest.mark.parametrize(("host", "warned"), [("0.0.0.0", True), ("127.0.0.1", False)])
async def test_dev_mode_warns_when_not_on_loopback(host: str, warned: bool) -> None:
    port = free_port()
    proc = await asyncio.create_subprocess_exec(
        *HUBBUB, "serve", "--dev", "--host", host, "--port", str(port),
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    try:
        for _ in range(int(100 * UNIT)):
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                await asyncio.sleep(0.1)
        else:
            raise AssertionError("hubbub serve did not start listening")
    finally:
        proc.terminate()
        _, err = await asyncio.wait_for(proc.communicate(), 10 * UNIT)
    lines = [line for line in err.decode().splitlines() if "reachable from other machines" in line]
    assert len(lines) == (1 if warned else 0), err.decode()
    if warned:
        assert "WARNING" in lines[0] and host in lines[0] and "--host 127.0.0.1" in lines[0]
