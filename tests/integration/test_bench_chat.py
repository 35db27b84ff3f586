"""The chat-shaped load of ``benchmarks/chat_load.py`` at its quick size, hubbub only (the
reference servers need Bun and python-socketio): every kind of delivery arrives, none is
lost, and the table and the results file say so."""

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

pytestmark = [pytest.mark.slow]


@pytest.mark.timeout(int(90 * UNIT))
def test_chat_load_quick_hubbub(tmp_path: Path) -> None:
    results = tmp_path / "chat.json"
    cmd = [sys.executable, str(ROOT / "benchmarks" / "chat_load.py"), "--quick"]
    cmd += ["--servers", "hubbub", "--client-processes", "2", "--json", str(results)]
    proc = subprocess.Popen(
        cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True
    )
    try:
        out, err = proc.communicate(timeout=60 * UNIT)
    finally:
        # Whatever the script started and left (it should leave nothing) goes with it.
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
    assert proc.returncode == 0, err[-3000:]
    assert "hubbub messages p99" in out, out
    (row,) = json.loads(results.read_text())["rows"]
    assert row["members"] == 200, row
    assert row["lost_total"] == 0, row["lost"]
    assert row["send_errors"] == 0, row["first_error"]
    assert row["closed"] == 0, row
    sent, counted = row["sent"], row["counted"]
    assert sent["message"] > 0 and sent["typing"] > 0, sent
    # The quick run's churn (20% per 10 s) makes members leave and come back in 3 s.
    assert sent["join"] > 0 and sent["leave"] > 0, sent
    assert counted["observer_message"] == sent["message"], (sent, counted)
    assert counted["observer_join"] == sent["join"], (sent, counted)
    assert counted["readers"] > 0 and row["latency_samples"] > 0, row
    # Members who came back recovered what their room said while they were away.
    assert row["recovered_on_rejoin"] > 0, row
