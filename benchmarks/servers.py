"""The servers under test: hubbub in its configurations and the three reference servers.

Each :class:`Server` knows how to start itself on a loopback port (pinned to the server core),
which client protocol it speaks, and the paths its subscribers and its publisher use.
"""

from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from harness import CLOCK_TICKS, HOST, LOCAL, ROOT, Processes, start_redis, wait_for_port

REFS = ROOT / "benchmarks" / "refs"
SECRET = "benchmark-hmac-secret-0123456789abcdef-not-for-production"


def bun_binary() -> str | None:
    """Bun from the suite's own npm install (``benchmarks/setup.sh``), if it runs here."""
    candidates = [LOCAL / "npm" / "node_modules" / ".bin" / "bun"]
    candidates += sorted((LOCAL / "npm" / "node_modules" / "@oven").glob("bun-linux-*/bin/bun"))
    for path in candidates:
        if path.is_file() and os.access(path, os.X_OK):
            try:
                out = subprocess.run([str(path), "--version"], capture_output=True, timeout=20)
            except (OSError, subprocess.TimeoutExpired):
                continue
            if out.returncode == 0:
                return str(path)
    return None


@dataclass
class Server:
    """One server configuration (a row of the tables)."""

    key: str
    label: str
    kind: str  # the client protocol: hubbub, tutorial, socketio, bun
    many_channels: bool = True
    options: dict[str, Any] = field(default_factory=dict)
    # hubbub's subscribers ask for a recoverable subscription (history and recovery on, as a
    # chat page does): positioned subscribers, whose offsets the server checks.
    recoverable: bool = False
    proc: subprocess.Popen[bytes] | None = None
    redis: subprocess.Popen[bytes] | None = None
    port: int = 0
    profiler: list[str] = field(default_factory=list)  # a py-spy command that starts hubbub
    server_pid: int = 0
    started_at: float = 0.0  # time.monotonic() when the server process started

    @property
    def pids(self) -> list[int]:
        """The processes whose CPU counts as the server's (hubbub and its Redis)."""
        return [self.server_pid, *([self.redis.pid] if self.redis is not None else [])]

    def sub_path(self, channel: str) -> str:
        return {
            "hubbub": "/connection/websocket",
            "tutorial": "/ws",
            "socketio": "/socket.io/?EIO=4&transport=websocket",
            "bun": f"/?channel={channel}",
        }[self.kind]

    def pub_path(self) -> str:
        return "/publish" if self.kind == "tutorial" else self.sub_path("")

    def start(
        self,
        procs: Processes,
        cpu: int | None,
        port: int,
        bun: str | None,
        client_cpu: int | None = None,
    ) -> None:
        self.port = port
        folder = procs.tempdir()
        log = folder / "server.log"
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        if self.kind == "hubbub":
            redis_url = ""
            if self.options.get("engine") == "redis":
                self.redis, redis_url = start_redis(procs, cpu)
            config = folder / "hubbub.toml"
            config.write_text(hubbub_config(port, redis_url, **self.options))
            cmd = [sys.executable, "-m", "hubbub", "serve", "--config", str(config)]
            if self.profiler:
                # py-spy runs on the clients' core; the server moves itself to its own.
                pin_self = (
                    "import os, runpy, sys; os.sched_setaffinity(0, {int(sys.argv.pop(1))}); "
                )
                pin_self += (
                    "sys.argv[0] = 'hubbub'; runpy.run_module('hubbub', run_name='__main__')"
                )
                core = cpu if cpu is not None else 0
                cmd = [*self.profiler, sys.executable, "-c", pin_self, str(core), *cmd[3:]]
                cpu = client_cpu
        elif self.kind in ("tutorial", "socketio"):
            module = "tutorial_manager" if self.kind == "tutorial" else "socketio_server"
            cmd = [sys.executable, "-m", "uvicorn", f"{module}:app", "--app-dir", str(REFS)]
            cmd += ["--host", HOST, "--port", str(port), "--log-level", "warning"]
        else:
            if bun is None:
                raise RuntimeError("Bun is not installed (benchmarks/setup.sh)")
            cmd = [bun, "run", str(REFS / "bun_server.js")]
            env["PORT"] = str(port)
        self.proc = procs.start(cmd, cpu, log=log, env=env, cwd=folder)
        try:
            wait_for_port(port, self.proc)
        except RuntimeError as exc:
            raise RuntimeError(f"{self.label}: {exc}\n{log.read_text()[-2000:]}") from exc
        self.server_pid = self.proc.pid
        if self.profiler:
            self.server_pid = next(iter(children(self.proc.pid)))
        self.started_at = process_start(self.server_pid)

    def stop(self, procs: Processes) -> None:
        for proc in (self.proc, self.redis):
            if proc is not None:
                procs.stop(proc)
        self.proc = self.redis = None


def hubbub_config(
    port: int,
    redis_url: str = "",
    transport: str = "native",
    write_delay: float | None = None,
    engine: str = "memory",
    history: bool = False,
    ping_interval: float = 25.0,
) -> str:
    """The TOML of ``hubbub serve``: authenticated clients, limits off for 20,000 connections
    from one address, and one subscription per connection (no automatic personal channel)."""
    lines = [
        f'host = "{HOST}"',
        f"port = {port}",
        'log_level = "warning"',
        f'transport = "{transport}"',
        *([] if write_delay is None else [f"write_delay = {write_delay}"]),
        f'engine = "{engine}"',
        "shutdown_drain_period = 0",
        "[token]",
        f'hmac_secret_key = "{SECRET}"',
        "[client]",
        "personal_channel = false",
        # The probe of the 1,000-channel scenario subscribes to every channel on one connection.
        "channel_limit = 2048",
        f"ping_interval = {ping_interval}",
        f"pong_timeout = {min(8.0, ping_interval / 2)}",
        "[limits]",
        "connections_per_ip = 0",
        "max_connections = 0",
        "connections_per_user = 0",
        # The publisher sends thousands of commands per second on one connection.
        "command_rate = 0",
        *[
            f"{name} = 0"
            for name in _known_limits()
            if name in ("user_command_rate", "frame_rate", "frame_byte_rate")
        ],
        "[channel.without_namespace]",
        "allow_subscribe_for_client = true",
        "allow_publish_for_client = true",
    ]
    if history:
        # Recovery allowed: the recoverable rows' subscribers ask for it (the others do not).
        lines += ["history_size = 100", "history_ttl = 300", "allow_recovery = true"]
    if redis_url:
        lines += ["[redis]", f'url = "{redis_url}"']
    return "\n".join(lines) + "\n"


def _known_limits() -> set[str]:
    """Options of ``[limits]`` this hubbub has (newer ones are only set where they exist)."""
    from hubbub.config import LimitSettings

    return set(LimitSettings.model_fields)


def catalogue() -> dict[str, Server]:
    """Every configuration the suite knows, by key (``--servers`` picks from these)."""
    servers = [
        Server("hubbub", "hubbub native", "hubbub"),
        Server(
            "hubbub-nodelay",
            "hubbub native, write_delay 0",
            "hubbub",
            options={"write_delay": 0.0},
        ),
        Server("hubbub-asgi", "hubbub asgi", "hubbub", options={"transport": "asgi"}),
        Server("hubbub-history", "hubbub native, history", "hubbub", options={"history": True}),
        Server("hubbub-redis", "hubbub native, Redis", "hubbub", options={"engine": "redis"}),
        Server(
            "hubbub-redis-history",
            "hubbub native, Redis, history",
            "hubbub",
            options={"engine": "redis", "history": True},
        ),
        Server(
            "hubbub-recoverable",
            "hubbub native, history, recoverable",
            "hubbub",
            options={"history": True},
            recoverable=True,
        ),
        Server(
            "hubbub-redis-recoverable",
            "hubbub native, Redis, history, recoverable",
            "hubbub",
            options={"engine": "redis", "history": True},
            recoverable=True,
        ),
        Server("bun", "Bun pub/sub", "bun"),
        Server("tutorial", "FastAPI tutorial manager", "tutorial", many_channels=False),
        Server("socketio", "python-socketio", "socketio"),
    ]
    return {s.key: s for s in servers}


def connection_token(user: str) -> str:
    from hubbub.auth import mint_connection_token

    return mint_connection_token(SECRET, user)


def children(pid: int) -> list[int]:
    """Child processes of ``pid`` (from /proc)."""
    out = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        out += [int(c) for c in (task / "children").read_text().split()]
    return out


def process_start(pid: int) -> float:
    """When a process started, on the clock of ``time.monotonic()`` (10 ms resolution)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return int(fields[19]) / CLOCK_TICKS
