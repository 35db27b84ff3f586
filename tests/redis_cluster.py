"""A private Redis Cluster for the tests: 3 masters with one replica each, on loopback ports.

Six ``redis-server`` processes with ``cluster-enabled yes`` in temporary directories, joined by
``redis-cli --cluster create … --cluster-replicas 1``. Every wait is bounded; :meth:`stop`
kills what is left. A master may be killed (SIGKILL) to test a failover: the cluster promotes
its replica after ``cluster-node-timeout`` (1 s here) and a vote.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

UNIT = float(os.environ.get("HUBBUB_TEST_TIME_FACTOR", "1"))

NODE_TIMEOUT_MS = 1000
"""How long a master may be silent before the others take it for failed (then its replica is
promoted). Redis's default is 15 s; 1 s keeps the failover tests short."""


def free_ports(n: int) -> list[int]:
    """``n`` free loopback ports whose cluster bus ports (+10000) are free too."""
    ports: list[int] = []
    while len(ports) < n:
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            port = sock.getsockname()[1]
        if port + 10000 > 65535 or port in ports:
            continue
        try:
            with socket.socket() as bus:
                bus.bind(("127.0.0.1", port + 10000))
        except OSError:
            continue
        ports.append(port)
    return ports


def _cli(port: int, *args: str, timeout: float = 5.0) -> str:
    out = subprocess.run(
        ["redis-cli", "-p", str(port), *args],
        capture_output=True,
        text=True,
        timeout=timeout * UNIT,
        check=False,
    )
    return out.stdout


@dataclass
class RedisCluster:
    """Six ``redis-server`` processes forming one cluster (3 masters, 3 replicas)."""

    workdir: Path
    ports: list[int] = field(default_factory=list)
    procs: dict[int, subprocess.Popen[bytes]] = field(default_factory=dict)

    @property
    def addresses(self) -> list[str]:
        """``host:port`` of every node, as ``[redis] cluster_addresses`` takes them."""
        return [f"127.0.0.1:{port}" for port in self.ports]

    def start(self) -> None:
        assert shutil.which("redis-server") and shutil.which("redis-cli"), "redis is required"
        self.ports = free_ports(6)
        for port in self.ports:
            self._spawn(port)
        for port in self.ports:
            self._wait_listening(port)
        subprocess.run(
            ["redis-cli", "--cluster", "create", *self.addresses,
             "--cluster-replicas", "1", "--cluster-yes"],
            capture_output=True, timeout=30 * UNIT, check=True,
        )  # fmt: skip
        self.wait_healthy()

    def _spawn(self, port: int) -> None:
        folder = self.workdir / str(port)
        folder.mkdir(parents=True, exist_ok=True)
        self.procs[port] = subprocess.Popen(
            ["redis-server", "--port", str(port), "--bind", "127.0.0.1",
             "--cluster-enabled", "yes", "--cluster-config-file", "nodes.conf",
             "--cluster-node-timeout", str(NODE_TIMEOUT_MS),
             # Slots of other masters stay served while one master is being replaced.
             "--cluster-require-full-coverage", "no",
             "--save", "", "--appendonly", "no", "--dir", str(folder)],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip

    def _wait_listening(self, port: int) -> None:
        for _ in range(int(200 * UNIT)):
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.1).close()
                return
            except OSError:
                time.sleep(0.05)
        raise AssertionError(f"redis-server on {port} did not start")

    def _live(self) -> list[int]:
        return [p for p, proc in self.procs.items() if proc.poll() is None]

    def masters(self) -> list[int]:
        """Ports of the live masters, as the cluster itself sees them."""
        for port in self._live():
            lines = _cli(port, "cluster", "nodes").splitlines()
            found = [
                int(line.split()[1].split("@")[0].rsplit(":", 1)[1])
                for line in lines
                if "master" in line.split()[2] and "fail" not in line.split()[2]
            ]
            return [p for p in found if p in self._live()]
        return []

    def wait_healthy(self, timeout: float = 20.0) -> None:
        """Until every live node says ``cluster_state:ok``, 3 live masters serve the slots and
        every replica is in sync (a replica that never synced refuses to take over)."""
        deadline = time.monotonic() + timeout * UNIT
        while time.monotonic() < deadline:
            states = [_cli(p, "cluster", "info") for p in self._live()]
            replication = [_cli(p, "info", "replication") for p in self._live()]
            synced = all("master_link_status:up" in r for r in replication if "role:slave" in r)
            if all("cluster_state:ok" in s for s in states) and len(self.masters()) == 3 and synced:
                return
            time.sleep(0.1)
        raise AssertionError("the Redis Cluster did not become healthy")

    def master_of(self, key: str) -> int:
        """The port of the master serving ``key``'s slot."""
        slot = int(_cli(self._live()[0], "cluster", "keyslot", key).strip())
        for port in self._live():
            for line in _cli(port, "cluster", "nodes").splitlines():
                parts = line.split()
                if "master" not in parts[2] or "fail" in parts[2]:
                    continue
                for span in parts[8:]:
                    low, _, high = span.partition("-")
                    if low.isdigit() and int(low) <= slot <= int(high or low):
                        return int(parts[1].split("@")[0].rsplit(":", 1)[1])
            break
        raise AssertionError(f"no master serves {key!r}")

    def kill(self, port: int) -> None:
        """SIGKILL the node on ``port`` (its replica, if it was a master, takes over)."""
        proc = self.procs[port]
        proc.kill()
        proc.wait(10)

    def stop(self) -> None:
        for proc in self.procs.values():
            if proc.poll() is None:
                proc.kill()
                proc.wait(10)
