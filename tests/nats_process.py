"""A private ``nats-server`` on a free loopback port, which a test may kill and restart.

``make test`` (scripts/test-deps.sh) installs nats-server when missing; Debian puts it in
``/usr/sbin``, which is not on every user's PATH, so that is looked at too.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time

from tests.conftest import UNIT


def nats_server_binary() -> str:
    found = shutil.which("nats-server") or shutil.which("nats-server", path="/usr/sbin:/usr/bin")
    assert found, "nats-server is required (make test installs it with apt-get)"
    return found


class NatsProcess:
    """A nats-server of the tests' own on one port; it keeps nothing, so a restart is empty."""

    def __init__(self) -> None:
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            self.port = sock.getsockname()[1]
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"nats://127.0.0.1:{self.port}"

    def start(self) -> None:
        self.proc = subprocess.Popen(
            [nats_server_binary(), "-a", "127.0.0.1", "-p", str(self.port)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            env={**os.environ},
        )
        for _ in range(int(200 * UNIT)):
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.1).close()
                return
            except OSError:
                time.sleep(0.05)
        raise AssertionError("nats-server did not start")

    def kill(self) -> None:
        """``kill -9``: connections drop without a goodbye."""
        assert self.proc is not None
        self.proc.kill()
        self.proc.wait(10)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.kill()
