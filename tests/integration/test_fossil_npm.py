"""hubbub's Fossil codec against the npm ``fossil-delta`` package: each applies the other's
deltas, on random and realistic JSON pairs."""

from __future__ import annotations

import asyncio
import base64
import json
import random
import shutil
from pathlib import Path

import pytest

from hubbub.protocol import fossil
from tests.conftest import UNIT

JS = Path(__file__).resolve().parents[1] / "js"

pytestmark = pytest.mark.js


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def _pairs() -> list[tuple[bytes, bytes]]:
    rnd = random.Random(11)
    accented = '{"a":"' + "x" * 40 + "é" + "y" * 40 + '"}'
    pairs: list[tuple[bytes, bytes]] = [
        (b"", b""),
        (b"tiny", b"little"),
        (b"shared-body-payload-" * 64, b""),
        (accented.encode(), accented.replace("é", "è").encode()),
    ]
    for n in range(60):  # a ticker: a large object, a few fields change each time
        state = {
            "seq": n,
            "quotes": [
                {"s": f"S{i}", "px": round(rnd.uniform(1, 900), 2), "name": f"Name {i} ✓"}
                for i in range(rnd.randint(1, 80))
            ],
        }
        before = json.dumps(state, ensure_ascii=False).encode()
        for quote in rnd.sample(state["quotes"], min(3, len(state["quotes"]))):  # type: ignore[arg-type]
            quote["px"] = round(quote["px"] + 1, 2)
        state["seq"] = n + 1
        pairs.append((before, json.dumps(state, ensure_ascii=False).encode()))
    for _ in range(60):  # random bytes, related and unrelated
        source = rnd.randbytes(rnd.randint(0, 4000))
        target = bytearray(source)
        for _ in range(rnd.randint(0, 6)):
            pos = rnd.randint(0, len(target))
            target[pos : pos + rnd.randint(0, 30)] = rnd.randbytes(rnd.randint(0, 30))
        pairs.append((source, bytes(target) if rnd.random() < 0.8 else rnd.randbytes(500)))
    return pairs


async def test_npm_fossil_delta_and_hubbub_apply_each_others_deltas() -> None:
    node = shutil.which("node")
    assert node, "Node.js is required (make test installs it)"
    assert (JS / "node_modules" / "fossil-delta").is_dir(), "run `make test-deps`"
    pairs = _pairs()
    lines = [
        json.dumps({"source": _b64(s), "target": _b64(t), "delta": _b64(fossil.create(s, t))})
        for s, t in pairs
    ]
    proc = await asyncio.create_subprocess_exec(
        node,
        str(JS / "fossil.mjs"),
        cwd=JS,
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        out, err = await asyncio.wait_for(
            proc.communicate("\n".join(lines).encode() + b"\n"), 20 * UNIT
        )
    except TimeoutError:
        proc.kill()
        await proc.wait()
        raise AssertionError("fossil.mjs did not finish") from None
    assert proc.returncode == 0, err.decode()
    results = [json.loads(line) for line in out.decode().splitlines()]
    assert len(results) == len(pairs)
    for (source, target), result in zip(pairs, results, strict=True):
        assert "error" not in result, result
        assert base64.b64decode(result["applied"]) == target
        theirs = base64.b64decode(result["created"])
        assert fossil.apply(source, theirs) == target
