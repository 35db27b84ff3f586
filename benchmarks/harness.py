"""Process plumbing of the benchmark suite: ports, CPU pinning, /proc readings, clean-up.

Everything the suite starts (servers, Redis, client and publisher processes, py-spy) is
registered with one :class:`Processes` object, which stops all of it when the run ends:
normally, on an exception, on Ctrl-C or on SIGTERM. Only loopback addresses are used.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import platform
import resource
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from importlib import metadata
from pathlib import Path
from typing import Any

HOST = "127.0.0.1"
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
PAGE_SIZE = os.sysconf("SC_PAGE_SIZE")
PR_SET_PDEATHSIG = 1  # prctl(2)
ROOT = Path(__file__).resolve().parent.parent
LOCAL = ROOT / "benchmarks" / ".local"
"""Git-ignored: the npm install of Bun, profiles and the results of quick runs."""


def build_pump() -> str | None:
    """Compile the clients' C read loop (pump.c) into benchmarks/.local; None without a C
    compiler (the clients then read in Python, and say so)."""
    source = ROOT / "benchmarks" / "pump.c"
    library = LOCAL / "pump.so"
    if library.exists() and library.stat().st_mtime >= source.stat().st_mtime:
        return str(library)
    compiler = shutil.which("cc") or shutil.which("gcc") or shutil.which("clang")
    if compiler is None:
        return None
    LOCAL.mkdir(parents=True, exist_ok=True)
    cmd = [compiler, "-O2", "-shared", "-fPIC", "-o", str(library), str(source)]
    if subprocess.run(cmd, capture_output=True, timeout=120).returncode != 0:
        return None
    return str(library)


def raise_fd_limit() -> int:
    """Raise the soft descriptor limit to the hard one; returns the limit now in force.

    10,000-20,000 sockets need it; children inherit the raised limit, and every client
    process calls this again for itself.
    """
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return hard


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        port: int = sock.getsockname()[1]
        return port


def wait_for_port(
    port: int, proc: subprocess.Popen[bytes] | None = None, timeout: float = 30.0
) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"the server exited with {proc.returncode} before listening")
        try:
            socket.create_connection((HOST, port), timeout=0.2).close()
            return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"nothing listens on port {port} after {timeout:g} s")


def cpu_split() -> tuple[int | None, int | None]:
    """The server's core and the clients' core: the first two CPUs this process may use.

    On a one-CPU machine nothing is pinned (and the numbers mean less: say so in the report).
    """
    cpus = sorted(os.sched_getaffinity(0))
    if len(cpus) < 2:
        return None, None
    return cpus[0], cpus[1]


def pin(pid: int, cpu: int | None) -> None:
    if cpu is not None:
        os.sched_setaffinity(pid, {cpu})


def cpu_seconds(pid: int) -> float:
    """User plus system CPU time of a process (utime + stime of /proc/<pid>/stat)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (FileNotFoundError, ProcessLookupError):
        return 0.0
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS


def system_seconds(pid: int) -> float:
    """System (kernel) CPU time of a process (stime of /proc/<pid>/stat)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (FileNotFoundError, ProcessLookupError):
        return 0.0
    return int(fields[12]) / CLOCK_TICKS


def write_calls(pid: int) -> int:
    """System calls that wrote, so far, by a process (``syscw`` of /proc/<pid>/io): a server's
    writes per delivery say how well it batches; 0 where the file is not readable."""
    try:
        for line in Path(f"/proc/{pid}/io").read_text().splitlines():
            if line.startswith("syscw:"):
                return int(line.split()[1])
    except (OSError, ValueError):
        pass
    return 0


def rss_bytes(pid: int) -> int:
    """Resident set size of a process (the second field of /proc/<pid>/statm)."""
    return int(Path(f"/proc/{pid}/statm").read_text().split()[1]) * PAGE_SIZE


def settle_rss(pid: int, seconds: float = 1.5) -> int:
    """RSS once it stopped moving: the largest of a few readings over ``seconds``."""
    readings = []
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        readings.append(rss_bytes(pid))
        time.sleep(0.1)
    return max(readings[len(readings) // 2 :])


class ClientProcess:
    """A client process started with ``target(commands, answers, *args)`` and its two pipes:
    commands in (``send``), answers out (``recv``), registered with ``procs`` to be stopped."""

    def __init__(self, ctx: Any, procs: Processes, target: Any, *args: Any) -> None:
        cmd_read, self.cmd = ctx.Pipe(duplex=False)
        self.answers, answer_write = ctx.Pipe(duplex=False)
        self.proc = ctx.Process(target=target, args=(cmd_read, answer_write, *args))
        self.proc.start()
        procs.add_worker(self.proc)

    def send(self, cmd: str, arg: Any = None) -> None:
        self.cmd.send((cmd, arg))

    def recv(self, timeout: float = 120.0) -> Any:
        """The next answer; RuntimeError if the process died or ``timeout`` passed first."""
        deadline = time.monotonic() + timeout
        while not self.answers.poll(min(1.0, max(0.0, deadline - time.monotonic()))):
            if not self.proc.is_alive():
                raise RuntimeError(f"a client process died (exit code {self.proc.exitcode})")
            if time.monotonic() >= deadline:
                raise RuntimeError(f"a client process did not answer in {timeout:g} s")
        return self.answers.recv()

    def call(self, cmd: str, arg: Any = None, timeout: float = 120.0) -> Any:
        self.send(cmd, arg)
        return self.recv(timeout)


def broadcast(
    workers: list[ClientProcess], cmd: str, arg: Any = None, timeout: float = 120.0
) -> list[Any]:
    """Send ``cmd`` to every client process, then collect their answers in order."""
    for w in workers:
        w.send(cmd, arg)
    return [w.recv(timeout) for w in workers]


def percentile(values: list[float], q: float) -> float:
    """The ``q`` quantile of ``values`` (nearest rank; NaN for none)."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(len(ordered) * q))]


class Processes:
    """Every process the run started, stopped together whatever happens.

    Servers are started in a session of their own so that anything they spawn goes with them;
    SIGTERM first, SIGKILL for whatever is still there after a moment.
    """

    def __init__(self) -> None:
        self.popen: list[subprocess.Popen[bytes]] = []
        self.mp: list[Any] = []
        self.folders: list[Path] = []

    def __enter__(self) -> Processes:
        # Ctrl-C arrives as KeyboardInterrupt; SIGTERM is made into the same.
        signal.signal(signal.SIGTERM, _interrupt)
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop_all()

    def tempdir(self) -> Path:
        folder = Path(tempfile.mkdtemp(prefix="hubbub-bench-"))
        self.folders.append(folder)
        return folder

    def start(
        self, cmd: list[str], cpu: int | None, log: Path | None = None, **kwargs: Any
    ) -> subprocess.Popen[bytes]:
        out: Any = open(log, "wb") if log is not None else subprocess.DEVNULL  # noqa: SIM115

        def pin_before_exec() -> None:
            # Pinned before exec, so every thread the program starts (Bun's, uvloop's) inherits
            # the core; pinning the pid afterwards would only move the main thread.
            if cpu is not None:
                os.sched_setaffinity(0, {cpu})
            # Killed with the suite even if the suite itself is killed with SIGKILL.
            _die_with_parent()

        try:
            proc = subprocess.Popen(
                cmd,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                preexec_fn=pin_before_exec,
                **kwargs,
            )
        finally:
            if log is not None:
                out.close()
        self.popen.append(proc)
        return proc

    def stop(self, proc: subprocess.Popen[bytes], grace: float = 3.0) -> None:
        if proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(grace)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(5)
        # Whatever it spawned in its session goes too.
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, signal.SIGKILL)
        if proc in self.popen:
            self.popen.remove(proc)

    def add_worker(self, worker: Any) -> None:
        self.mp.append(worker)

    def stop_worker(self, worker: Any) -> None:
        worker.join(2)
        if worker.is_alive():
            worker.kill()
            worker.join(5)
        if worker in self.mp:
            self.mp.remove(worker)

    def stop_all(self) -> None:
        # Clean-up must finish even if Ctrl-C is pressed (or SIGTERM sent) again meanwhile.
        previous = {
            sig: signal.signal(sig, signal.SIG_IGN) for sig in (signal.SIGINT, signal.SIGTERM)
        }
        try:
            for worker in list(self.mp):
                with contextlib.suppress(Exception):
                    worker.kill()
                    worker.join(5)
            self.mp.clear()
            for proc in list(self.popen):
                with contextlib.suppress(Exception):
                    self.stop(proc, grace=2.0)
            self.popen.clear()
            for folder in self.folders:
                shutil.rmtree(folder, ignore_errors=True)
            self.folders.clear()
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)


def _die_with_parent() -> None:
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
    except (OSError, AttributeError):
        pass


def _interrupt(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def start_redis(procs: Processes, cpu: int | None) -> tuple[subprocess.Popen[bytes], str]:
    """A private redis-server on a free loopback port, nothing persisted."""
    port = free_port()
    folder = procs.tempdir()
    cmd = ["redis-server", "--port", str(port), "--bind", HOST, "--save", "", "--appendonly"]
    cmd += ["no", "--dir", str(folder), "--maxclients", "1000"]
    proc = procs.start(cmd, cpu)
    wait_for_port(port, proc)
    return proc, f"redis://{HOST}:{port}/0"


# ---------------------------------------------------------------------------------------------
# What the results were measured on


def _version(package: str) -> str:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return "not installed"


def _command_output(cmd: list[str]) -> str:
    try:
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=10, cwd=ROOT)
    except (OSError, subprocess.TimeoutExpired):
        return "unknown"
    return out.stdout.strip() or "unknown"


def machine(bun: str | None) -> dict[str, str]:
    """CPU, cores, memory, kernel, interpreter and library versions, and the commit."""
    cpu = "unknown CPU"
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            cpu = line.split(":", 1)[1].strip()
            break
    mem_kib = int(Path("/proc/meminfo").read_text().split()[1])
    dirty = _command_output(["git", "status", "--porcelain", "--untracked-files=no"])
    commit = _command_output(["git", "rev-parse", "--short", "HEAD"])
    if dirty not in ("", "unknown"):
        commit += " (with uncommitted changes)"
    return {
        "cpu": cpu,
        "cores": str(os.cpu_count()),
        "memory": f"{mem_kib / 1024 / 1024:.1f} GiB",
        "kernel": f"{platform.system()} {platform.release()}",
        "python": platform.python_version(),
        "uvloop": _version("uvloop"),
        "websockets": _version("websockets"),
        "uvicorn": _version("uvicorn"),
        "fastapi": _version("fastapi"),
        "python-socketio": _version("python-socketio"),
        "bun": _command_output([bun, "--version"]) if bun else "not available",
        "redis": _command_output(["redis-server", "--version"]).split(" sha=")[0],
        "commit": commit,
        "fd_limit": str(resource.getrlimit(resource.RLIMIT_NOFILE)[1]),
    }


def progress(done: int, total: int, label: str) -> None:
    """A progress bar on stderr (the tables on stdout stay clean for pipes)."""
    width = 20
    filled = width * done // max(total, 1)
    bar = "#" * filled + "-" * (width - filled)
    end = "\n" if done == total else ""
    print(f"\r[{bar}] {done}/{total} {label[:56]:<56}", end=end, file=sys.stderr, flush=True)
