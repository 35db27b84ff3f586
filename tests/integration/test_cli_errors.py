"""The ``hubbub`` command explains itself: start-up failures and unreachable servers are one
line on stderr with exit 1, within a bound; help texts are plain and show defaults and the
``HUBBUB_*`` variables; Ctrl-C ends the README's client example without a traceback."""

from __future__ import annotations

import asyncio
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from hubbub.config import Settings
from tests.conftest import API_KEY, UNIT, RunningServer

HUBBUB = [sys.executable, "-m", "hubbub"]
ROOT = Path(__file__).resolve().parents[2]


def free_port() -> int:
    """A loopback port nobody listens on (bound, then released)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def clean_env(**extra: str) -> dict[str, str]:
    """The environment without the caller's ``HUBBUB_*`` options (the time factor stays)."""
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith("HUBBUB_") or k.startswith("HUBBUB_TEST_")
    }
    return {**env, **extra}


def run(
    args: list[str], cwd: Path, timeout: float = 30, prefix: list[str] | None = None, **env: str
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*(prefix or []), *HUBBUB, *args],
        cwd=cwd,
        env=clean_env(**env),
        capture_output=True,
        text=True,
        timeout=timeout * UNIT,
    )


def one_line(result: subprocess.CompletedProcess[str]) -> str:
    """The failure's only line on stderr (asserting there is exactly one, no traceback)."""
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in result.stderr, result.stderr
    return lines[0]


@pytest.fixture
def taken_port() -> Iterator[int]:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        yield sock.getsockname()[1]


def test_serve_on_a_port_in_use(tmp_path: Path, taken_port: int) -> None:
    result = run(["serve", "--dev", "--port", str(taken_port)], tmp_path)
    assert result.returncode == 1
    line = one_line(result)
    assert line == (
        f"hubbub serve: cannot listen on 127.0.0.1:{taken_port}: address already in use"
    )


def test_serve_on_a_privileged_port(tmp_path: Path) -> None:
    prefix: list[str] = []
    if os.geteuid() == 0:
        # Root may listen on any port: in a user namespace of its own the server keeps its
        # files but loses the right to bind below 1024, as any other user.
        unshare = shutil.which("unshare")
        assert unshare, "unshare (util-linux) is needed to run this test as root"
        prefix = [unshare, "--user"]
    result = run(["serve", "--dev", "--port", "1"], tmp_path, prefix=prefix)
    assert result.returncode == 1
    assert "cannot listen on 127.0.0.1:1: permission denied" in one_line(result)


def test_unknown_option_in_the_file(tmp_path: Path) -> None:
    config = tmp_path / "hubbub.toml"
    config.write_text("[client]\nping_intervall = 10\n")
    result = run(["serve", "--config", str(config)], tmp_path)
    assert result.returncode == 1
    line = one_line(result)
    assert f"unknown option client.ping_intervall in {config}" in line
    assert line.endswith("did you mean client.ping_interval?")
    assert "Extra inputs" not in line


def test_unknown_option_in_the_environment(tmp_path: Path) -> None:
    result = run(["serve", "--dev"], tmp_path, HUBBUB_CLIENT__PING_INTERVALL="10")
    assert result.returncode == 1
    assert one_line(result) == (
        "hubbub serve: unknown option HUBBUB_CLIENT__PING_INTERVALL; "
        "did you mean HUBBUB_CLIENT__PING_INTERVAL?"
    )
    # A top-level typo is not ignored either.
    result = run(["serve", "--dev"], tmp_path, HUBBUB_PORTT="9000")
    assert result.returncode == 1
    assert one_line(result).endswith("did you mean HUBBUB_PORT?")


def test_client_variables_are_not_options(tmp_path: Path) -> None:
    # HUBBUB_TOKEN holds a JWT for the client commands: not the [token] section.
    result = run(
        ["token", "--dev", "--user", "alice"], tmp_path, HUBBUB_TOKEN="a.b.c", HUBBUB_URL="ws://x"
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.count(".") == 2


@pytest.mark.parametrize("workers", ["1", "2"])
def test_unreachable_redis(tmp_path: Path, workers: str) -> None:
    port = free_port()
    result = run(
        ["serve", "--dev", "--port", str(free_port()), "--workers", workers],
        tmp_path,
        HUBBUB_ENGINE="redis",
        HUBBUB_REDIS__URL=f"redis://127.0.0.1:{port}/0",
    )
    assert result.returncode == 1
    line = one_line(result)
    assert line == (
        f"hubbub serve: cannot reach Redis at redis://127.0.0.1:{port}/0: connection refused"
    )


def test_unreachable_database(tmp_path: Path) -> None:
    port = free_port()
    result = run(
        ["serve", "--dev", "--port", str(free_port())],
        tmp_path,
        HUBBUB_STORE__URL=f"postgresql://hubbub:s3cret@127.0.0.1:{port}/hubbub",
    )
    assert result.returncode == 1
    line = one_line(result)
    assert line.startswith("hubbub serve: cannot open the store: PostgreSQL database 'hubbub'")
    assert f"127.0.0.1:{port}" in line and "s3cret" not in line


async def wait_for_line(stream: asyncio.StreamReader, pattern: str, seconds: float) -> str:
    """The first line of ``stream`` that contains ``pattern``, read within ``seconds``."""
    seen = []
    async with asyncio.timeout(seconds):
        while True:
            raw = await stream.readline()
            if not raw:
                raise AssertionError(f"no line with {pattern!r} in {seen}")
            line = raw.decode()
            seen.append(line)
            if pattern in line:
                return line


async def test_startup_line_says_where_to_go(tmp_path: Path) -> None:
    port = free_port()
    proc = await asyncio.create_subprocess_exec(
        *HUBBUB, "serve", "--dev", "--port", str(port),
        cwd=tmp_path, env=clean_env(), stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    assert proc.stderr is not None
    try:
        line = await wait_for_line(proc.stderr, "serving", 30 * UNIT)
    finally:
        proc.terminate()
        rest = await asyncio.wait_for(proc.communicate(), 15 * UNIT)
    assert "INFO" in line
    assert f"serving http://127.0.0.1:{port} (chat page)" in line
    assert "engine memory" in line and "development mode" in line
    assert f"store SQLite {tmp_path / 'hubbub.db'};" in line  # absolute: where it is
    # uvicorn's own start-up lines are replaced by that one.
    assert "Uvicorn running" not in (rest[1] or b"").decode()
    assert proc.returncode == 0


async def run_async(args: list[str], seconds: float) -> tuple[int, str]:
    proc = await asyncio.create_subprocess_exec(
        *HUBBUB, *args, env=clean_env(), stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    _, err = await asyncio.wait_for(proc.communicate(), seconds)
    assert proc.returncode is not None
    return proc.returncode, err.decode()


async def test_listen_fails_fast(server: RunningServer) -> None:
    wrong_path = f"ws://127.0.0.1:{server.port}/no/such/path"
    closed = f"ws://127.0.0.1:{free_port()}/connection/websocket"
    for url, why in [(wrong_path, "HTTP 403"), (closed, "connection refused")]:
        # Well within the client's own timeout (twice 5 s): the first failure ends it.
        code, err = await run_async(
            ["listen", "news", "--dev", "--user", "alice", "--url", url], 8 * UNIT
        )
        assert code == 1, err
        lines = err.strip().splitlines()
        assert len(lines) == 1 and "Traceback" not in err, err
        assert lines[0].startswith(f"hubbub listen: cannot connect to {url}: {why}"), err
        assert ("--retry" if why == "connection refused" else "path") in lines[0], err


@pytest.mark.slow
async def test_listen_retry_keeps_trying(tmp_path: Path) -> None:
    port = free_port()
    url = f"ws://127.0.0.1:{port}/connection/websocket"
    listen = await asyncio.create_subprocess_exec(
        *HUBBUB, "listen", "news", "--dev", "--user", "alice", "--url", url, "--retry",
        "--count", "1", env=clean_env(), stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    serve: asyncio.subprocess.Process | None = None
    assert listen.stderr is not None and listen.stdout is not None
    try:
        line = await wait_for_line(listen.stderr, "retrying", 20 * UNIT)
        assert "connection refused" in line
        await asyncio.sleep(3 * UNIT)
        assert listen.returncode is None  # still trying
        # The server comes: the listener connects and gets what is published.
        serve = await asyncio.create_subprocess_exec(
            *HUBBUB, "serve", "--dev", "--port", str(port), cwd=tmp_path, env=clean_env(),
            stderr=asyncio.subprocess.DEVNULL,
        )  # fmt: skip
        for _ in range(int(100 * UNIT)):
            await run_async(
                ["publish", "news", '{"n": 1}', "--api", f"http://127.0.0.1:{port}"], 30 * UNIT
            )
            if listen.returncode is not None:
                break
            await asyncio.sleep(0.2)
        out = await asyncio.wait_for(listen.stdout.read(), 30 * UNIT)
        await asyncio.wait_for(listen.wait(), 10 * UNIT)
        assert listen.returncode == 0
        assert json.loads(out.splitlines()[0])["data"] == {"n": 1}
    finally:
        for proc in (listen, serve):
            if proc is not None and proc.returncode is None:
                proc.terminate()
                await asyncio.wait_for(proc.wait(), 15 * UNIT)


async def test_publish_to_a_base_url(server: RunningServer) -> None:
    for api in (server.http, server.http + "/", server.http + "/api"):
        proc = await asyncio.create_subprocess_exec(
            *HUBBUB, "publish", "news", '{"text": "base"}', "--api", api, "--api-key", API_KEY,
            env=clean_env(), stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        )  # fmt: skip
        out, err = await asyncio.wait_for(proc.communicate(), 20 * UNIT)
        assert proc.returncode == 0, err.decode()
        assert "offset" in json.loads(out)
    history = await server.node.history("news", limit=-1)
    assert len(history.publications) == 3


COMMANDS = ["serve", "token", "listen", "publish", "notify", "chat"]


@pytest.mark.parametrize("command", [None, *COMMANDS])
def test_help_is_plain_and_shows_defaults(tmp_path: Path, command: str | None) -> None:
    result = run([command, "--help"] if command else ["--help"], tmp_path)
    assert result.returncode == 0, result.stderr
    text = result.stdout
    assert "`" not in text and "**" not in text and ":class:" not in text, text
    assert "HUBBUB_" in text, text
    if command in ("serve", "listen", "publish", "notify", "chat"):
        assert re.search(r"default:?\s+\S", text), text


def test_bench_help_is_plain(tmp_path: Path) -> None:
    result = run(["bench", "--help"], ROOT)
    assert result.returncode == 0, result.stderr
    assert "`" not in result.stdout, result.stdout
    names = "chat_load, churn, fanout, soak, storm, suite, topologies"  # what NAME can be
    assert names in result.stdout, result.stdout


async def test_readme_example_ends_quietly_on_ctrl_c(tmp_path: Path, start_server: Any) -> None:
    running: RunningServer = await start_server(
        Settings(development=True, store={"url": "sqlite:///:memory:"})
    )
    readme = (ROOT / "README.md").read_text()
    blocks = re.findall(r"^```python\n(.*?)^```", readme, re.S | re.M)
    example = next(block for block in blocks if "asyncio.run(main())" in block)
    assert "ws://127.0.0.1:8000/connection/websocket" in example
    script = tmp_path / "example.py"
    script.write_text(example.replace("ws://127.0.0.1:8000/connection/websocket", running.url))
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-X", "dev", str(script), env=clean_env(),
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        # As in a terminal: SIGINT raises KeyboardInterrupt (a background shell ignores it).
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )  # fmt: skip
    assert proc.stdout is not None
    try:
        first = await asyncio.wait_for(proc.stdout.readline(), 20 * UNIT)
        assert b"hello" in first  # connected, subscribed, got its own publication
    finally:
        proc.send_signal(signal.SIGINT)
        _, err = await asyncio.wait_for(proc.communicate(), 15 * UNIT)
    assert "Traceback" not in err.decode() and "Task was destroyed" not in err.decode(), err
    assert proc.returncode == 0, err.decode()


@pytest.mark.slow
async def test_bench_fanout_configures_its_server() -> None:
    # More subscribers than the default per-address limit (1,000) allows from one address:
    # the benchmark's server must be configured for them (its defaults go up to 1,000 plus
    # the publisher), in a short run.
    proc = await asyncio.create_subprocess_exec(
        *HUBBUB, "bench", "fanout", "--subscribers", "1001", "--formats", "json",
        "--seconds", "0.3", "--rate", "20", "--client-processes", "1",
        cwd=ROOT, env=clean_env(), stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    out, err = await asyncio.wait_for(proc.communicate(), 180 * UNIT)
    assert proc.returncode == 0 and b"Traceback" not in err, err.decode()
    rows = [line for line in out.decode().splitlines() if line.startswith("| json, 1 node")]
    assert len(rows) == 1 and "| 1001 |" in rows[0], out.decode()


async def test_client_connect_fails_fast_or_cancels_cleanly() -> None:
    from hubbub.client import Client, State

    url = f"ws://127.0.0.1:{free_port()}/connection/websocket"
    client = Client(url)
    with pytest.raises(ConnectionError, match="connection refused"):
        await asyncio.wait_for(client.connect(retry=False), 5 * UNIT)
    assert client.last_error == "connection refused" and client.state is State.DISCONNECTED
    # Cancelled while retrying (Ctrl-C under asyncio.run): closed, no task left behind.
    before = asyncio.all_tasks()
    client = Client(url)
    attempt = asyncio.create_task(client.connect())
    await asyncio.sleep(0.5 * UNIT)
    attempt.cancel()
    with pytest.raises(asyncio.CancelledError):
        await attempt
    assert client.state is State.DISCONNECTED
    await asyncio.sleep(0)
    assert asyncio.all_tasks() - before == set()
