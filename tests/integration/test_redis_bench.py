"""``benchmarks/topologies.py --bench`` (what ``make bench`` runs for the Redis engine's fan-out
cost): memory next to one Redis, both shapes at two rates, the ratios printed and written as
JSON, at a tiny size, end to end, with nothing lost."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import UNIT

ROOT = Path(__file__).resolve().parents[2]

pytestmark = [pytest.mark.redis, pytest.mark.slow]


@pytest.mark.timeout(int(240 * UNIT))  # 8 rows, each starting its servers
def test_bench_mode_compares_redis_with_memory(tmp_path: Path) -> None:
    results = tmp_path / "topologies.json"
    proc = subprocess.Popen(
        [sys.executable, str(ROOT / "benchmarks" / "topologies.py"), "--bench",
         "--subscribers", "20", "--rate", "10", "--high-rate", "20", "--rooms", "4",
         "--room-size", "5", "--room-rate", "20", "--high-room-rate", "40", "--seconds", "1",
         "--client-processes", "2", "--json", str(results)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )  # fmt: skip
    try:
        out, err = proc.communicate(timeout=220 * UNIT)
    finally:
        # Whatever the script started and left (it should leave nothing) goes with it.
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
    assert proc.returncode == 0, err[-3000:]
    assert "target: at most x1.2" in out, out
    data = json.loads(results.read_text())
    ratios = data["ratios"]
    assert {(r["shape"], r["rate"]) for r in ratios} == {
        ("one channel", 10),
        ("one channel", 20),
        ("rooms of 5", 20),
        ("rooms of 5", 40),
    }
    for r in ratios:
        assert r["lost"] == 0, r
        assert r["ratio"] == pytest.approx(r["redis_us"] / r["memory_us"], rel=0.05), r
        assert r["met"] == (r["ratio"] <= r["target"]), r
    assert {row["key"] for row in data["rows"]} == {"memory", "redis"}
    assert len(data["rows"]) == 8
