"""Every ``curl`` example of README.md and docs/ runs as written against a real server in
development mode (the real ``curl``; only the address is changed) and gets an answer from the
API, not a refusal: the examples send what the server accepts."""

from __future__ import annotations

import asyncio
import json
import os
import re
import shutil
import signal
from pathlib import Path

from hubbub.testing import Hub, hub_settings, run_hub
from tests.apps.test_notify import known
from tests.conftest import UNIT

ROOT = Path(__file__).resolve().parents[2]
ADDRESS = "http://127.0.0.1:8000"


MARK = "--- end of answer ---"
# Each curl of a block prints its answer and a mark, so the answers can be told apart.
WRAPPER = f'curl() {{ command curl "$@"; echo; echo "{MARK}"; }}\n'


def curl_blocks() -> list[tuple[str, str, int]]:
    """(file, block, number of curl commands) of every ``sh`` block that runs curl."""
    found: list[tuple[str, str, int]] = []
    for path in [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]:
        for block in re.findall(r"^```sh\n(.*?)^```", path.read_text(), re.S | re.M):
            commands = len(re.findall(r"^curl ", block, re.M))
            if commands and not re.search(STREAMING, block, re.M):
                found.append((path.relative_to(ROOT).as_posix(), block, commands))
    return found


STREAMING = r"^curl -N "
"""A ``curl -N`` block listens to a stream (uni_http_stream…): it runs until interrupted."""


def stream_blocks() -> list[tuple[str, str]]:
    """(file, block) of every ``sh`` block that listens with ``curl -N``."""
    found: list[tuple[str, str]] = []
    for path in [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]:
        for block in re.findall(r"^```sh\n(.*?)^```", path.read_text(), re.S | re.M):
            if re.search(STREAMING, block, re.M):
                found.append((path.relative_to(ROOT).as_posix(), block))
    return found


async def run(block: str, hub: Hub, env: dict[str, str]) -> list[str]:
    """The answers of the block's curl commands, run as one bash script."""
    script = WRAPPER + "set -e\n" + block.replace(ADDRESS, hub.http)
    proc = await asyncio.create_subprocess_exec(
        "bash", "-c", script, env=env,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    out, err = await asyncio.wait_for(proc.communicate(), 20 * UNIT)
    assert proc.returncode == 0, (block, err.decode())
    return out.decode().split(MARK + "\n")[:-1]


async def test_every_curl_example_gets_an_answer() -> None:
    assert shutil.which("curl"), "the examples are run with curl"
    blocks = curl_blocks()
    posts = sum(block.count("-X POST") for _, block, _ in blocks)
    assert posts >= 15 and any("/api/publish" in block for _, block, _ in blocks), blocks
    async with run_hub(hub_settings()) as hub:
        await known(hub, "alice", "bob")
        env = {
            "PATH": os.environ.get("PATH", ""),
            "KEY": "",  # development mode: the API needs no key
            "TOKEN": hub.token("alice"),
        }
        for source, block, commands in blocks:
            answers = await run(block, hub, env)
            assert len(answers) == commands, (source, block, answers)
            for answer in answers:
                # JSON means the route answered; a refusal (401, 415) is empty or plain text.
                try:
                    decoded = json.loads(answer)
                except ValueError:
                    raise AssertionError(f"{source}: {block!r} answered {answer!r}") from None
                assert isinstance(decoded, dict), (source, block, answer)


async def test_every_streaming_curl_example_listens() -> None:
    """A ``curl -N`` example gets the connect message, then what is published to the
    channels it was subscribed to, each a JSON line, until it is interrupted."""
    blocks = stream_blocks()
    assert any("uni_http_stream" in block for _, block in blocks), blocks
    async with run_hub(hub_settings()) as hub:
        env = {"PATH": os.environ.get("PATH", ""), "TOKEN": hub.token("alice")}
        for source, block in blocks:
            proc = await asyncio.create_subprocess_exec(
                "bash", "-c", block.replace(ADDRESS, hub.http), env=env,
                stdout=asyncio.subprocess.PIPE, start_new_session=True,
            )  # fmt: skip
            assert proc.stdout is not None
            try:
                line = await asyncio.wait_for(proc.stdout.readline(), 10 * UNIT)
                first = json.loads(line.removeprefix(b"data: "))
                connect = first.get("connect")
                assert isinstance(connect, dict), (source, block, line)
                for channel in connect.get("subs", {}):
                    await hub.node.publish(channel, {"doc": source})
                    line = await asyncio.wait_for(proc.stdout.readline(), 10 * UNIT)
                    while line.strip() in (b"", b"{}"):  # SSE's blank lines, pings
                        line = await asyncio.wait_for(proc.stdout.readline(), 10 * UNIT)
                    # A bare push (uni transports) or one in a reply (bidirectional ones).
                    assert json.dumps(channel) in line.decode(), (source, block, line)
            finally:
                os.killpg(proc.pid, signal.SIGTERM)  # Ctrl-C, for curl and its shell
                await proc.wait()
