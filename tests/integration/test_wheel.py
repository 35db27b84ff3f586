"""The package as users install it: ``pip install hubbub`` without extras, in a fresh virtualenv.

The wheel is built from a copy of the sources (the working tree is left alone), installed into
a new virtualenv with nothing else (pip fetches the core dependencies: from its cache, else the
package index), and then, from that virtualenv only: the server starts in development mode and
answers, hubbub's Python client connects to it and gets back what it published, and a
configuration naming the Redis engine, whose extra is not installed, fails with one line.

The installed size and the number of distributions are measured against a bare virtualenv
made the same way, printed (``pytest -s`` shows them), and held under bounds: the core must
stay small.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from tests.conftest import UNIT

ROOT = Path(__file__).resolve().parents[2]

# Measured for the core when these bounds were set: 24 distributions, 34.5 MB (Linux, CPython
# 3.11). The bounds leave a little room for new releases of the dependencies.
MAX_DISTRIBUTIONS = 26
MAX_MEGABYTES = 45
# What the extras bring: none of it may come with the core.
EXTRA_DISTRIBUTIONS = {
    "redis",
    "asyncpg",
    "prompt-toolkit",
    "cryptography",
    "uvloop",
    "nats-py",
    "aiohttp",
}

CLIENT = """
import asyncio, sys
import hubbub.client as hc
from hubbub.auth import mint_connection_token
from hubbub.config import DEV_SECRET

async def main() -> None:
    token = mint_connection_token(DEV_SECRET, "alice")
    async with hc.connect(sys.argv[1], token=token) as client:
        sub = await client.subscribe("news")
        await sub.publish({"text": "hello from the wheel"})
        async for item in sub:
            print(item)
            return

asyncio.run(asyncio.wait_for(main(), float(sys.argv[2])))
"""

INSPECT = """
import importlib.metadata, json, os, sysconfig
paths = {sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"]}
size = 0
for top in paths:
    for folder, _, files in os.walk(top):
        size += sum(os.lstat(os.path.join(folder, name)).st_size for name in files)
names = {d.metadata["Name"].lower().replace("_", "-") for d in importlib.metadata.distributions()}
print(json.dumps({"size": size, "names": sorted(names)}))
"""


def run(*argv: str | Path, cwd: Path, timeout: float) -> subprocess.CompletedProcess[str]:
    """Run a command with an environment that points at no source tree, and check it."""
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    result = subprocess.run(
        [str(a) for a in argv], cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout
    )
    assert result.returncode == 0, (argv, result.stdout, result.stderr)
    return result


def make_venv(path: Path, cwd: Path) -> Path:
    run(sys.executable, "-m", "venv", path, cwd=cwd, timeout=60 * UNIT)
    return path / "bin" / "python"


def inspect(python: Path, cwd: Path) -> tuple[int, set[str]]:
    """Bytes in the virtualenv's site-packages and the names of its distributions."""
    found = json.loads(run(python, "-c", INSPECT, cwd=cwd, timeout=30 * UNIT).stdout)
    return found["size"], set(found["names"])


def build_wheel(tmp: Path) -> Path:
    source = tmp / "source"
    source.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy2(ROOT / name, source / name)
    ignore = shutil.ignore_patterns("__pycache__", "*.egg-info", "*.pyc")
    shutil.copytree(ROOT / "src", source / "src", ignore=ignore)
    wheels = tmp / "wheels"
    run(
        sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "-w", wheels, source,
        cwd=tmp, timeout=120 * UNIT,
    )  # fmt: skip
    (wheel,) = wheels.glob("hubbub-*.whl")
    return wheel


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def wait_healthy(server: subprocess.Popen[str], url: str) -> None:
    deadline = time.monotonic() + 30 * UNIT
    while time.monotonic() < deadline:
        assert server.poll() is None, server.communicate()
        try:
            with urllib.request.urlopen(url, timeout=UNIT) as response:
                if response.status == 200:
                    return
        except OSError:
            pass
        time.sleep(0.1 * UNIT)
    raise AssertionError(f"{url} did not answer")


@pytest.mark.slow
@pytest.mark.timeout(180 * UNIT)
def test_wheel_installs_small_and_serves(tmp_path: Path) -> None:
    wheel = build_wheel(tmp_path)
    bare = make_venv(tmp_path / "bare", tmp_path)
    python = make_venv(tmp_path / "venv", tmp_path)
    run(python, "-m", "pip", "install", "--quiet", wheel, cwd=tmp_path, timeout=150 * UNIT)

    # What the core costs: measured against a virtualenv made the same way, left empty.
    bare_size, bare_names = inspect(bare, tmp_path)
    size, names = inspect(python, tmp_path)
    added = names - bare_names
    megabytes = (size - bare_size) / 1e6
    figures = f"plain install: {len(added)} distributions, {megabytes:.1f} MB: {sorted(added)}"
    print(figures)
    assert "hubbub" in added and not added & EXTRA_DISTRIBUTIONS, figures
    assert len(added) <= MAX_DISTRIBUTIONS and megabytes <= MAX_MEGABYTES, figures

    # The installed package is the one that runs, not the source tree.
    where = run(python, "-c", "import hubbub; print(hubbub.__file__)", cwd=tmp_path, timeout=30)
    assert Path(where.stdout.strip()).is_relative_to(tmp_path / "venv"), where.stdout

    port = free_port()
    server = subprocess.Popen(
        [python, "-m", "hubbub", "serve", "--dev", "--port", str(port)],
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        wait_healthy(server, f"http://127.0.0.1:{port}/healthz")
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=5 * UNIT) as page:
            assert page.status == 200 and b"<html" in page.read().lower()
        # The page's client, the npm SDK's browser build, is package data of the wheel.
        sdk_url = f"http://127.0.0.1:{port}/static/vendor/centrifuge.js"
        with urllib.request.urlopen(sdk_url, timeout=5 * UNIT) as sdk:
            assert sdk.status == 200 and b"globalThis.Centrifuge=" in sdk.read()
        url = f"ws://127.0.0.1:{port}/connection/websocket"
        answer = run(python, "-c", CLIENT, url, str(20 * UNIT), cwd=tmp_path, timeout=30 * UNIT)
        assert "hello from the wheel" in answer.stdout, answer.stdout
    finally:
        server.terminate()
        server.communicate(timeout=30 * UNIT)
    assert server.returncode == 0

    # An extra that is not installed: one line naming it, exit 1, no traceback.
    config = tmp_path / "redis.toml"
    config.write_text('engine = "redis"\n')
    hubbub = tmp_path / "venv" / "bin" / "hubbub"
    refused = subprocess.run(
        [hubbub, "serve", "--config", config, "--port", str(port)],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=30 * UNIT,
    )
    assert (refused.returncode, refused.stderr) == (
        1,
        "hubbub serve: the Redis engine needs the redis extra: pip install 'hubbub[redis]'\n",
    )
