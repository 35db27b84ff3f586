"""A refused WebSocket handshake gets the HTTP status the docs state, on both transports."""

from __future__ import annotations

import logging
import re
from pathlib import Path
from typing import Any

import pytest
import websockets

from tests.conftest import UNIT, RunningServer, suite_settings

DOCS = Path(__file__).resolve().parents[2] / "docs"
FOREIGN = "https://evil.example"


def documented_statuses() -> dict[str, int]:
    """What the docs say a refusal answers, by case, from every place that says it."""
    protocol = (DOCS / "protocol.md").read_text()
    rows = dict(re.findall(r"^\| (\d{3}) \| ([^|]+) \|", protocol, re.M))
    by_status = {int(status): when for status, when in rows.items()}
    configuration = (DOCS / "configuration.md").read_text()
    per_ip = re.search(r"^\| `connections_per_ip` \|.*?HTTP (\d{3})", configuration, re.M)
    operations = (DOCS / "operations.md").read_text()
    drain = re.search(r"handshakes are refused with HTTP (\d{3})", operations)
    assert per_ip and drain, "the docs no longer state the refusal statuses where expected"
    found = {
        "draining": [s for s, when in by_status.items() if "draining" in when],
        "connections_per_ip": [s for s, when in by_status.items() if "connections_per_ip" in when],
        "max_connections": [s for s, when in by_status.items() if "max_connections" in when],
        "origin": [s for s, when in by_status.items() if "Origin" in when],
    }
    assert all(len(statuses) == 1 for statuses in found.values()), found
    statuses = {case: statuses[0] for case, statuses in found.items()}
    assert int(per_ip.group(1)) == statuses["connections_per_ip"]
    assert int(drain.group(1)) == statuses["draining"]
    return statuses


async def refusal_status(running: RunningServer, **options: Any) -> int:
    with pytest.raises(websockets.exceptions.InvalidStatus) as refused:
        async with websockets.connect(running.url, open_timeout=5 * UNIT, **options):
            pass
    status: int = refused.value.response.status_code
    return status


class Errors(logging.Handler):
    """Collects the ERROR records of the loggers it is attached to."""

    def __init__(self) -> None:
        super().__init__(logging.ERROR)
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(record.getMessage())


async def test_refusals_answer_the_documented_status(start_server: Any, transport: str) -> None:
    documented = documented_statuses()
    assert documented["draining"] == 503 and documented["origin"] == 403
    per_ip, full, running = [
        await start_server(suite_settings(transport=transport, limits=limits))
        for limits in ({"connections_per_ip": 1}, {"max_connections": 1}, {})
    ]
    # Attached once the servers run (starting one configures logging anew); the server's own
    # log does not reach the root logger.
    errors = Errors()
    loggers = [logging.getLogger(name) for name in ("uvicorn.error", "hubbub")]
    for logger in loggers:
        logger.addHandler(errors)
    try:
        async with websockets.connect(per_ip.url):
            assert await refusal_status(per_ip) == documented["connections_per_ip"]
        assert per_ip.node.counters["handshake.connection_limit"] == 1
        async with websockets.connect(full.url):
            assert await refusal_status(full) == documented["max_connections"]
        assert await refusal_status(running, origin=FOREIGN) == documented["origin"]
        assert running.node.counters["handshake.origin_refused"] == 1
        running.node.draining = True
        assert await refusal_status(running) == documented["draining"]
    finally:
        for logger in loggers:
            logger.removeHandler(errors)
    # A refusal is one warning of ours, not an error of the server's.
    assert errors.lines == []
