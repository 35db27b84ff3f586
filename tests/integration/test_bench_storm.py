"""The reconnect-storm benchmark (``benchmarks/storm.py``) at a tiny size, end to end: every
member of a killed node, and of a node whose clients all dropped at once, comes back recovered,
with every publication exactly once and in order, and the control group loses nothing."""

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


@pytest.mark.timeout(int(90 * UNIT))
def test_storm_rows_recover_everyone_exactly_once(tmp_path: Path) -> None:
    out_json = tmp_path / "storm.json"
    cmd = [
        sys.executable, str(ROOT / "benchmarks" / "storm.py"), "--quick", "--rooms", "20",
        "--room-size", "5", "--control", "20", "--room-rate", "100", "--control-rate", "20",
        "--client-processes", "2", "--rows", "kill", "blip", "--json", str(out_json),
    ]  # fmt: skip
    proc = subprocess.Popen(
        cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True
    )
    try:
        out, err = proc.communicate(timeout=80 * UNIT)
    finally:
        # Whatever the script started and left (it should leave nothing) goes with it.
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
    assert proc.returncode == 0, err[-3000:]
    rows = json.loads(out_json.read_text())["rows"]
    assert [r["row"] for r in rows] == ["kill", "blip"]
    for row in rows:
        assert row["members"] == 100, row
        assert row["set_up_again"] == 100, row
        assert row["recovered"] == 100, row
        assert row["not_recovered"] == row["refused"] == 0, row
        assert row["gaps"] == row["duplicates"] == row["behind_at_end"] == 0, row
        assert row["published"] > 0 and row["publish_errors"] == 0, row
        assert row["control_lost"] == 0, row
        assert 0 < row["recovery_ms"][0] <= row["recovery_ms"][2], row
    table = [line for line in out.splitlines() if line.startswith("| hubbub")]
    assert len(table) == 2, out
