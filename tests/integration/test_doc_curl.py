"""Every ``curl`` example of README.md and docs/ runs as written against a real server in
development mode (the real ``curl``; only the address is changed) and gets an answer from the
API, not a refusal: the examples send what the server accepts."""

from __future__ import annotations

import asyncio
import json
import os
import re
import shutil
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
            if commands:
                found.append((path.relative_to(ROOT).as_posix(), block, commands))
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
