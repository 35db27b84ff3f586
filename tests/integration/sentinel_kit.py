"""A private Redis under Sentinel for the tests: a master, a replica and three Sentinels.

All of them are ``redis-server`` processes on free loopback ports (Debian's ``redis-server``
runs as a Sentinel with ``--sentinel``), in a temporary folder, killed by :meth:`stop`. The
Sentinels judge a master down after ``DOWN_AFTER_MS`` without answers, so that a failover
takes seconds, not the default half-minute.
"""

from __future__ import annotations

import signal
import socket
import subprocess
import time
from pathlib import Path
from typing import Any

import redis

from tests.conftest import UNIT

MASTER_NAME = "hubbub-test"
DOWN_AFTER_MS = 500
"""Milliseconds without an answer after which a Sentinel thinks the master is down."""
FAILOVER_TIMEOUT_MS = 2000
"""Sentinel's ``failover-timeout``: a failover that stalls is retried after twice this."""


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _wait_until(check: Any, what: str, seconds: float) -> None:
    """Poll ``check()`` every 50 ms until it is true, at most ``seconds`` (scaled by UNIT)."""
    deadline = time.monotonic() + seconds * UNIT
    while time.monotonic() < deadline:
        try:
            if check():
                return
        except (redis.RedisError, OSError):
            pass
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


class SentinelGroup:
    """A master, its replica and three Sentinels watching it under :data:`MASTER_NAME`.

    With a ``password``, every one of them requires it (``requirepass``), the replica and the
    Sentinels authenticate with it, and so must the nodes (``password``, ``sentinel_password``).
    """

    def __init__(self, workdir: Path, *, password: str = "") -> None:
        self.workdir = workdir
        self.password = password
        self.data_ports = [_free_port(), _free_port()]
        self.master_port = self.data_ports[0]
        self.sentinel_ports = [_free_port() for _ in range(3)]
        self.procs: dict[int, subprocess.Popen[bytes]] = {}

    @property
    def addresses(self) -> list[str]:
        """The Sentinels as ``host:port``, for ``[redis] sentinel_addresses``."""
        return [f"127.0.0.1:{port}" for port in self.sentinel_ports]

    @property
    def settings(self) -> dict[str, Any]:
        """The ``[redis]`` section of a node on this group."""
        settings = {"sentinel_addresses": self.addresses, "sentinel_master_name": MASTER_NAME}
        if self.password:
            settings |= {"password": self.password, "sentinel_password": self.password}
        return settings

    def _spawn(self, port: int, args: list[str]) -> None:
        self.procs[port] = subprocess.Popen(
            ["redis-server", *args], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )

    def _data_server(self, port: int, *replica_of: str) -> None:
        auth = ["--requirepass", self.password, "--masterauth", self.password]
        # No delay before the replica's first full sync (5 s by default, waiting for others).
        folder = self.workdir / f"redis-{port}"
        folder.mkdir(exist_ok=True)
        self._spawn(
            port,
            ["--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
             "--dir", str(folder), "--repl-diskless-sync-delay", "0",
             *(auth if self.password else []), *replica_of],
        )  # fmt: skip

    def _sentinel(self, port: int) -> None:
        # A Sentinel rewrites its configuration file (what it learnt), so each has its own.
        folder = self.workdir / f"sentinel-{port}"
        folder.mkdir(exist_ok=True)
        conf = folder / "sentinel.conf"
        conf.write_text(
            f"port {port}\nbind 127.0.0.1\ndir {folder}\n"
            f"sentinel monitor {MASTER_NAME} 127.0.0.1 {self.master_port} 2\n"
            f"sentinel down-after-milliseconds {MASTER_NAME} {DOWN_AFTER_MS}\n"
            f"sentinel failover-timeout {MASTER_NAME} {FAILOVER_TIMEOUT_MS}\n"
            f"sentinel parallel-syncs {MASTER_NAME} 1\n"
        )
        if self.password:
            with conf.open("a") as file:
                file.write(
                    f"requirepass {self.password}\nsentinel sentinel-pass {self.password}\n"
                    f"sentinel auth-pass {MASTER_NAME} {self.password}\n"
                )
        self._spawn(port, [str(conf), "--sentinel"])

    def client(self, port: int) -> redis.Redis:
        return redis.Redis(
            port=port,
            password=self.password or None,
            socket_timeout=1.0,
            socket_connect_timeout=1.0,
        )

    def start(self) -> None:
        """Start everything and wait (bounded) until the Sentinels know the replica and each
        other: only then can they agree that the master is down and fail over."""
        master, replica = self.data_ports
        self._data_server(master)
        self._data_server(replica, "--replicaof", "127.0.0.1", str(master))
        _wait_until(
            lambda: self.client(replica).info("replication")["master_link_status"] == "up",
            "the replica to sync",
            10,
        )
        # Started after the replica is in sync: a Sentinel's first INFO of the master lists it.
        for port in self.sentinel_ports:
            self._sentinel(port)

        def ready() -> bool:
            for port in self.sentinel_ports:
                with self.client(port) as s:
                    state = s.sentinel_master(MASTER_NAME)
                    if state["num-other-sentinels"] < 2 or state["num-slaves"] < 1:
                        return False
            return True

        _wait_until(ready, "the Sentinels to know the replica and each other", 15)

    def current_master(self) -> int | None:
        """The port of the master the first Sentinel that answers names."""
        for port in self.sentinel_ports:
            try:
                with self.client(port) as s:
                    address = s.sentinel_get_master_addr_by_name(MASTER_NAME)
                    return int(address[1]) if address else None
            except redis.RedisError:
                continue
        return None

    def kill_master(self) -> int:
        """``kill -9`` the current master; returns its port."""
        port = self.current_master()
        assert port is not None
        proc = self.procs[port]
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
        return port

    def replica(self) -> int:
        """The port of the data server that is not the current master."""
        master = self.current_master()
        return next(p for p in self.data_ports if p != master)

    def pause(self, port: int) -> None:
        """Stop the server (SIGSTOP): it neither answers nor reads what its master sends."""
        self.procs[port].send_signal(signal.SIGSTOP)

    def resume(self, port: int) -> None:
        self.procs[port].send_signal(signal.SIGCONT)

    def wait_failover(self, old_master: int, seconds: float = 20) -> int:
        """Until every Sentinel names another master than ``old_master``; its port."""

        def switched() -> bool:
            for port in self.sentinel_ports:
                with self.client(port) as s:
                    address = s.sentinel_get_master_addr_by_name(MASTER_NAME)
                    if not address or int(address[1]) == old_master:
                        return False
            return True

        _wait_until(switched, "the Sentinels to promote the replica", seconds)
        new = self.current_master()
        assert new is not None
        return new

    def stop(self) -> None:
        for proc in self.procs.values():
            if proc.poll() is None:
                proc.send_signal(signal.SIGCONT)  # a paused one too
                proc.kill()
            proc.wait(10)
