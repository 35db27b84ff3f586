"""The measurements of docs/scaling.md run: ``benchmarks/topologies.py`` (every topology, one
channel and rooms) and ``benchmarks/capacity.py`` (workers behind one port on a Redis
Cluster), at a tiny size, end to end, with nothing lost."""

from __future__ import annotations

import contextlib
import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import UNIT

ROOT = Path(__file__).resolve().parents[2]

pytestmark = [pytest.mark.redis, pytest.mark.nats, pytest.mark.slow]


def _run(script: str, *args: str, timeout: float) -> str:
    proc = subprocess.Popen(
        [sys.executable, str(ROOT / "benchmarks" / script), *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    try:
        out, err = proc.communicate(timeout=timeout * UNIT)
    finally:
        # Whatever the script started and left (it should leave nothing) goes with it.
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
    assert proc.returncode == 0, err[-3000:]
    return out


@pytest.mark.timeout(int(300 * UNIT))  # 10 rows, each starting its servers: ~1.5 min here
def test_topologies_table() -> None:
    out = _run(
        "topologies.py", "--subscribers", "20", "--rate", "10", "--rooms", "4",
        "--room-size", "5", "--room-rate", "20", "--seconds", "1", "--client-processes", "2",
        timeout=280,
    )  # fmt: skip
    rows = [line for line in out.splitlines() if line.startswith("| ") and "µs" not in line]
    assert len(rows) == 10, out  # 5 topologies, 2 shapes
    for row in rows:
        cells = [c.strip() for c in row.strip("|").split("|")]
        assert cells[4] == "0", row  # lost
        assert int(cells[3].replace(",", "")) > 0, row  # published
    redis_rows = [r for r in rows if r.startswith("| one Redis")]
    assert all(" 1.00 " in r for r in redis_rows), redis_rows


@pytest.mark.timeout(int(200 * UNIT))
def test_capacity_workers_on_a_cluster() -> None:
    out = _run(
        "capacity.py", "--workers", "2", "--redis-cluster", "--connections", "40",
        "--room-size", "10", "--rate", "20", "--seconds", "1", "--client-processes", "2",
        timeout=180,
    )  # fmt: skip
    assert "2 workers behind one port on a Redis Cluster" in out, out
    placed = re.search(r"connections per worker \(placed by the kernel\): \[(\d+), (\d+)\]", out)
    assert placed and int(placed[1]) + int(placed[2]) == 40, out
    assert re.search(r"\| lost \(expected minus delivered\) \| \| \| 0 \|", out), out
