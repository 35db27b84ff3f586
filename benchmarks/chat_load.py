"""A chat-shaped load: rooms of members who talk, type, leave and come back, plus notifications.

``--rooms`` rooms (200) of ``--room-size`` members (50), each member on a connection of its own
(10,000), spread over ``--client-processes`` processes pinned to the clients' core, the server
pinned to the other (as in ``suite.py``; see ``chat_clients.py`` for the members):

- every member sends a message to its room once per ``--interval`` (10 s: 1,000 messages/s in
  all), each announced by a typing signal ``--lead`` seconds before it, all members spread
  evenly in time; every message and signal reaches every member of the room, the sender too;
- ``--churn`` of the members (1%) leave their room and come back ``--away`` seconds later per
  10 s: every member of the room is told of both (join and leave notices);
- ``--notify-rate`` notifications per second (1), each to one random member's own channel.

The servers, each doing what it can of it:

- hubbub (native transport, memory engine): rooms are channels ``chat:<room>`` of a namespace
  with history (100 publications, 5 minutes), recovery, presence and join/leave pushed to every
  member; members subscribe to them ``recoverable``, as the chat page does, and a member coming
  back recovers what it missed. Typing signals go to ``typing:<room>``, a namespace without
  history or presence (what is not worth keeping is not kept). Notifications are published on
  the users' personal channels (``#<user>``, subscribed by the server at connect) through the
  HTTP API, ``POST /api/publish`` with the API key;
- python-socketio rooms (``refs/socketio_chat.py``): rooms, join/leave notices, a user's
  notifications to its sid; no history, recovery or presence (it has none);
- Bun (``refs/bun_chat.js``): a topic per room and per user, ``server.publish`` for the rest.

After ``--warmup`` seconds of the load, the counters are zeroed and the load measured for
``--seconds``; then the members stop and the last deliveries drain. Printed per server:
deliveries/s by kind, latency p50/p99/max of messages (sender's clock in the message against
the reader's when the chunk was read), deliveries lost (expected minus counted, members who
churn left out), server CPU (utime+stime from /proc) per delivery and write calls per
delivery, how busy both cores were and how long the server and the clients waited, runnable,
for their core (/proc/<pid>/task/*/schedstat: on a shared machine, what other processes took),
and the ratios of hubbub to the others; whether hubbub's p99 is under 50 ms. Results go to
``benchmarks/.local/chat.json`` (or ``--json``); ``--profile FILE`` records hubbub with py-spy
and prints the measured window's top functions.

Run:  .venv/bin/python benchmarks/chat_load.py [--quick] [--servers hubbub socketio bun]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import multiprocessing as mp
import os
import shutil
import signal
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import harness
import report
from chat_clients import KINDS, worker_main
from harness import HOST, ClientProcess, Processes, broadcast, cpu_seconds, percentile
from servers import REFS, SECRET, bun_binary, children, connection_token, process_start

API_KEY = "chat-benchmark-api-key"
SERVERS = {
    "hubbub": "hubbub native, memory",
    "socketio": "python-socketio rooms",
    "bun": "Bun pub/sub",
}
P99_TARGET_MS = 50.0


def chat_config(port: int, history_size: int = 100, history_ttl: float = 300.0) -> str:
    """The TOML of ``hubbub serve`` for the chat load: authenticated members, an API key, the
    rooms' and typing namespaces, personal channels, the built-in chat and notification
    applications off (the load is on channels), and the per-address and per-node connection
    caps lifted (10,000 members come from one address); other limits as shipped."""
    lines = [
        f'host = "{HOST}"',
        f"port = {port}",
        'log_level = "warning"',
        'transport = "native"',
        'engine = "memory"',
        "shutdown_drain_period = 0",
        "[token]",
        f'hmac_secret_key = "{SECRET}"',
        "[http_api]",
        f'key = "{API_KEY}"',
        "[client]",
        "personal_channel = true",
        "[limits]",
        "connections_per_ip = 0",
        "max_connections = 0",
        # The load is on channels: the chat and notification applications (their archive,
        # routes and store) stay off.
        "[chat]",
        "enabled = false",
        "[notifications]",
        "enabled = false",
        "[[channel.namespaces]]",
        'name = "chat"',
        "presence = true",
        "join_leave = true",
        "force_push_join_leave = true",
        f"history_size = {history_size}",
        f"history_ttl = {history_ttl}",
        "allow_recovery = true",
        "allow_subscribe_for_client = true",
        "allow_publish_for_subscriber = true",
        "allow_presence_for_subscriber = true",
        "allow_history_for_subscriber = true",
        "[[channel.namespaces]]",
        'name = "typing"',
        "allow_subscribe_for_client = true",
        "allow_publish_for_subscriber = true",
    ]
    return "\n".join(lines) + "\n"


def start_server(
    key: str, procs: Processes, cpu: int | None, bun: str | None, profile: Path | None = None
) -> tuple[int, int, Any]:
    """Start one server on a free loopback port pinned to ``cpu``: (port, pid, process).

    With ``profile`` (hubbub only), py-spy starts the server and records it (on the same core,
    100 samples/s, idle ones too, speedscope format) until the process gets SIGINT.
    """
    port = harness.free_port()
    folder = procs.tempdir()
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    if key == "hubbub":
        config = folder / "chat.toml"
        config.write_text(chat_config(port))
        cmd = [sys.executable, "-m", "hubbub", "serve", "--config", str(config)]
        if profile is not None:
            pyspy = shutil.which("py-spy", path=str(Path(sys.executable).parent))
            if pyspy is None:
                raise RuntimeError("py-spy is not installed (pip install -e '.[bench]')")
            cmd = [pyspy, "record", "--format", "speedscope", "--idle", "--rate", "100"]
            cmd += ["--output", str(profile), "--", sys.executable, "-m", "hubbub"]
            cmd += ["serve", "--config", str(config)]
    elif key == "socketio":
        cmd = [sys.executable, "-m", "uvicorn", "socketio_chat:app", "--app-dir", str(REFS)]
        cmd += ["--host", HOST, "--port", str(port), "--log-level", "warning"]
    else:
        if bun is None:
            raise RuntimeError("Bun is not installed (benchmarks/setup.sh)")
        cmd = [bun, "run", str(REFS / "bun_chat.js")]
        env["PORT"] = str(port)
    log = folder / "server.log"
    proc = procs.start(cmd, cpu, log=log, env=env, cwd=folder)
    try:
        harness.wait_for_port(port, proc)
    except RuntimeError as exc:
        raise RuntimeError(f"{key}: {exc}\n{log.read_text()[-2000:]}") from exc
    pid = proc.pid
    if profile is not None:
        pid = next(iter(children(proc.pid)))
    return port, pid, proc


# ---------------------------------------------------------------------------------------------
# Members


def member_spec(key: str, port: int, room: int, user: str, role: str) -> dict[str, Any]:
    """How one member connects (``clients.Connection``'s spec, plus its room and user)."""
    spec: dict[str, Any] = {"kind": key, "port": port, "room": room, "user": user, "role": role}
    spec["sample"] = role == "reader"
    if key == "hubbub":
        spec |= {"path": "/connection/websocket", "beat": "hubbub"}
        spec |= {"channels": [f"chat:r{room}", f"typing:r{room}"], "token": connection_token(user)}
    elif key == "socketio":
        spec |= {"path": "/socket.io/?EIO=4&transport=websocket", "beat": "socketio"}
        spec["channels"] = [f"user:{user}", f"room:r{room}"]
    else:
        spec |= {"path": f"/?channel=room:r{room}&user={user}", "beat": ""}
        spec["channels"] = [f"room:r{room}"]
    return spec


def notifier_spec(key: str, port: int) -> dict[str, Any]:
    spec = member_spec(key, port, -1, "notifier", "notifier")
    spec |= {"channels": [], "api_key": API_KEY}
    if key == "bun":
        spec["path"] = "/"
    return spec


class Worker(ClientProcess):
    """A client process of ``chat_clients.worker_main``: the members of some rooms."""

    def __init__(self, ctx: Any, procs: Processes, cpu: int | None, library: str | None) -> None:
        super().__init__(ctx, procs, worker_main, cpu, library)


def run_queue_wait(pid: int) -> float:
    """Seconds the process (all its threads) waited, runnable, for a CPU: the second field of
    /proc/<pid>/task/*/schedstat. On a shared machine, a server that waited much was slowed
    by other processes on its core, not by its own work."""
    total = 0
    with contextlib.suppress(OSError):
        for task in Path(f"/proc/{pid}/task").iterdir():
            with contextlib.suppress(OSError, ValueError, IndexError):
                total += int((task / "schedstat").read_text().split()[1])
    return total / 1e9


def settle(pid: int, limit: float) -> float:
    """Wait until the server is nearly idle (under 10% of a core over half a second), at most
    ``limit`` seconds; how long it took."""
    began = time.monotonic()
    before = cpu_seconds(pid)
    while time.monotonic() - began < limit:
        time.sleep(0.5)
        now = cpu_seconds(pid)
        if now - before < 0.05:
            break
        before = now
    return time.monotonic() - began


def core_busy() -> dict[int, tuple[int, int]]:
    """Per CPU: (busy, total) jiffies from /proc/stat."""
    out = {}
    for line in Path("/proc/stat").read_text().splitlines():
        if line.startswith("cpu") and line[3].isdigit():
            name, *fields = line.split()
            values = [int(v) for v in fields]
            idle = values[3] + values[4]
            out[int(name[3:])] = (sum(values) - idle, sum(values))
    return out


# ---------------------------------------------------------------------------------------------
# One server


def plan_for(args: argparse.Namespace, seconds: float, start: float, seed: int) -> dict[str, Any]:
    members = args.rooms * args.room_size
    cycles_per_s = args.churn * members / 10.0  # leave-and-come-back cycles per second
    period = args.rooms / cycles_per_s if cycles_per_s > 0 else float("inf")
    return {
        "seconds": seconds,
        "start": start,
        "interval": args.interval,
        "lead": args.lead,
        "period": period,
        "away": min(args.away, period / 2),
        "churn_slots": args.rooms,
        "notify_rate": args.notify_rate,
        "seed": seed,
    }


def run_server(
    key: str, args: argparse.Namespace, ctx: Any, bun: str | None, tick: Any
) -> dict[str, Any]:
    server_cpu, client_cpu = args.cores
    result: dict[str, Any] = {"server": key, "label": SERVERS[key]}
    with Processes() as procs:
        profile = args.profile if key == "hubbub" else None
        port, pid, proc = start_server(key, procs, server_cpu, bun, profile)
        workers = [Worker(ctx, procs, client_cpu, args.pump) for _ in range(args.client_processes)]
        try:
            specs: list[list[dict[str, Any]]] = [[] for _ in workers]
            targets: list[tuple[str, str]] = []
            for room in range(args.rooms):
                for i in range(args.room_size):
                    role = "churner" if i == 0 else "observer" if i == 1 else "reader"
                    user = f"u{room}-{i}"
                    specs[room % len(workers)].append(member_spec(key, port, room, user, role))
                    if role != "churner":
                        targets.append((user, role))
            tick(f"{key}: connecting {args.rooms * args.room_size:,} members")
            began = time.monotonic()
            concurrency = max(1, args.setup_concurrency // len(workers))
            for n, (w, s) in enumerate(zip(workers, specs, strict=True)):
                w.send("connect", (s, concurrency, notifier_spec(key, port) if n == 0 else None))
            answers = [w.recv(900) for w in workers]
            opened = sum(a["opened"] for a in answers)
            result["setup_s"] = time.monotonic() - began
            result["members"] = opened
            if opened < args.rooms * args.room_size or any(a["failed"] for a in answers):
                failures = [f for a in answers for f in a["failures"]]
                raise RuntimeError(f"{opened} members connected: {failures[:3]}")
            # What the set-up started (every member's join told to its room) is done first.
            result["settled_s"] = settle(pid, args.drain * 3)
            tick(f"{key}: warm-up {args.warmup:g} s")
            phase(workers, args, args.warmup, targets, seed=1)
            drain(workers, None, args.drain)
            broadcast(workers, "reset")
            tick(f"{key}: measuring {args.seconds:g} s")
            cpu0, busy0, t0 = cpu_seconds(pid), core_busy(), time.monotonic()
            wait0, writes0 = run_queue_wait(pid), harness.write_calls(pid)
            kernel0 = harness.system_seconds(pid)
            clients0 = sum(run_queue_wait(w.proc.pid) for w in workers)
            sent = phase(workers, args, args.seconds, targets, seed=2)
            expected = expectations(sent, args)
            drain(workers, expected, args.drain)
            cpu1, busy1, t1 = cpu_seconds(pid), core_busy(), time.monotonic()
            result["server_waited_percent"] = (run_queue_wait(pid) - wait0) / (t1 - t0) * 100
            writes = harness.write_calls(pid) - writes0
            kernel = harness.system_seconds(pid) - kernel0
            result["server_kernel_percent"] = kernel / max(cpu1 - cpu0, 1e-9) * 100
            waited = sum(run_queue_wait(w.proc.pid) for w in workers) - clients0
            result["clients_waited_percent"] = waited / (t1 - t0) * 100
            collected = broadcast(workers, "collect")
            result |= summarize(sent, expected, collected, args)
            result["server_cpu_s"] = cpu1 - cpu0
            result["server_core_percent"] = (cpu1 - cpu0) / (t1 - t0) * 100
            result["cores_busy_percent"] = {
                str(cpu): (busy1[cpu][0] - busy0[cpu][0])
                / max(busy1[cpu][1] - busy0[cpu][1], 1)
                * 100
                for cpu in (server_cpu, client_cpu)
                if cpu is not None
            }
            result["client_cpu_percent"] = sum(c["cpu"] for c in collected) / (t1 - t0) * 100
            delivered = result["delivered"]
            result["cpu_us_per_delivery"] = (cpu1 - cpu0) / delivered * 1e6 if delivered else None
            # Write system calls per delivery, where the kernel counts them (not Bun's send).
            result["writes_per_delivery"] = (
                writes / delivered if delivered and key != "bun" else None
            )
            if profile is not None:
                proc.send_signal(signal.SIGINT)  # py-spy writes its file and exits
                proc.wait(60)
                data = json.loads(profile.read_text())
                summary = report.summarize_speedscope(data, process_start(pid), t0, t1)
                result["profile"] = {"file": os.path.relpath(profile), **summary}
        finally:
            for w in workers:
                with contextlib.suppress(RuntimeError, OSError, EOFError):
                    w.send("stop")
                    w.recv(10)
                procs.stop_worker(w.proc)
    return result


def phase(
    workers: list[Worker],
    args: argparse.Namespace,
    seconds: float,
    targets: list[tuple[str, str]],
    seed: int,
) -> dict[str, Any]:
    """Every process sends for ``seconds`` from the same instant; what they sent, merged."""
    start = time.monotonic() + 0.3
    for n, w in enumerate(workers):
        plan = plan_for(args, seconds, start, seed * 1000 + n)
        plan["targets"] = targets if n == 0 else []
        w.send("run", plan)
    answers = [w.recv(seconds + args.lead + 120) for w in workers]
    sent: dict[str, Any] = {k: {} for k in KINDS}
    errors = 0
    first_error = ""
    for a in answers:
        for kind, per in a["sent"].items():
            for where, n in per.items():
                sent[kind][where] = sent[kind].get(where, 0) + n
        errors += a["errors"]
        first_error = first_error or a["first_error"]
    sent["errors"], sent["first_error"] = errors, first_error
    sent["start_ns"] = int(start * 1e9)
    return sent


def expectations(sent: dict[str, Any], args: argparse.Namespace) -> dict[str, int]:
    """What the readers (C-counted: every marker) and the observers (by kind) must receive."""
    readers_per_room = args.room_size - 2
    talk = sum(sent["message"].values()) + sum(sent["typing"].values())
    notes = sent["notification"]
    return {
        "readers": talk * readers_per_room + notes.get("reader", 0),
        "observer_message": sum(sent["message"].values()),
        "observer_typing": sum(sent["typing"].values()),
        "observer_join": sum(sent["join"].values()),
        "observer_leave": sum(sent["leave"].values()),
        "observer_notification": notes.get("observer", 0),
    }


def counted(stats: list[dict[str, Any]]) -> dict[str, int]:
    out = {"readers": sum(s["readers"] for s in stats)}
    for kind in KINDS:
        out[f"observer_{kind}"] = sum(s["observed"]["observer"][kind] for s in stats)
    return out


def drain(workers: list[Worker], expected: dict[str, int] | None, seconds: float) -> None:
    """Until everything expected arrived, or nothing moved for 1 s, or ``seconds`` passed."""
    deadline = time.monotonic() + seconds
    last: dict[str, int] = {}
    changed = time.monotonic()
    while time.monotonic() < deadline:
        now_counts = counted(broadcast(workers, "stats"))
        if expected is not None and all(now_counts[k] >= v for k, v in expected.items()):
            return
        if now_counts != last:
            last, changed = now_counts, time.monotonic()
        elif time.monotonic() - changed > 1.0:
            return
        time.sleep(0.1)


def summarize(
    sent: dict[str, Any],
    expected: dict[str, int],
    collected: list[dict[str, Any]],
    args: argparse.Namespace,
) -> dict[str, Any]:
    got = counted(collected)
    # Each kind is sent over ``seconds`` (messages ``lead`` later than typing signals).
    window = args.seconds
    readers = args.room_size - 2
    # Deliveries to every member (churners included, as far as they were in their room),
    # by kind, from what was sent: the counted ones are compared with them in `lost`.
    members = args.room_size
    per_kind = {
        "message": sum(sent["message"].values()) * members,
        "typing": sum(sent["typing"].values()) * members,
        "join": sum(sent["join"].values()) * (members - 1),
        "leave": sum(sent["leave"].values()) * (members - 1),
        "notification": sum(sent["notification"].values()),
    }
    lost = {k: max(0, v - got[k]) for k, v in expected.items()}
    # Counted: the readers' markers, everything observers and churners read, and the readers'
    # join and leave notices (no marker) as many as their room's observer got.
    observed = [c["observed"][role][k] for c in collected for role in c["observed"] for k in KINDS]
    notices = got["observer_join"] + got["observer_leave"]
    delivered = got["readers"] + sum(observed) + notices * readers
    last = max(c["last"] for c in collected)
    # Messages follow typing signals by ``lead``: a server that keeps up delivers everything
    # in ``seconds`` + ``lead``, at the offered rate over ``seconds``.
    span = max((last - sent["start_ns"]) / 1e9 - args.lead, args.seconds)
    reader_lat = [x / 1e6 for c in collected for x in c["reader_latencies"]]
    observer_lat = {
        k: [x / 1e6 for c in collected for x in c["observer_latencies"][k]]
        for k in ("message", "typing", "notification")
    }
    # Stalls or a steady lag: the first client process's samples (in the order read) cut in
    # twenty, each one's p50 and max.
    first = [x / 1e6 for x in collected[0]["reader_latencies"]]
    step = max(1, len(first) // 20)
    slices = [first[i : i + step] for i in range(0, len(first), step)]
    over_time = [(percentile(p, 0.5), max(p)) for p in slices if p]
    return {
        "latency_over_time_ms": over_time,
        "sent": {k: sum(v.values()) for k, v in sent.items() if isinstance(v, dict)},
        "send_errors": sent["errors"],
        "first_error": sent["first_error"],
        "expected": expected,
        "counted": got,
        "lost": lost,
        "lost_total": sum(lost.values()),
        "closed": sum(c["closed"] for c in collected),
        "recovered_on_rejoin": sum(c["recovered"] for c in collected),
        "window_s": window,
        # Offered: what the members' sends ask the server to deliver, by kind.
        "offered_by_kind_per_s": {k: v / window for k, v in per_kind.items()},
        "offered_per_s": sum(per_kind.values()) / window,
        # Delivered: counted, from the first send to the last delivery read.
        "delivered": delivered,
        "deliveries_per_s": delivered / span,
        "delivery_span_s": span,
        "readers_per_room": readers,
        "latency_samples": len(reader_lat),
        "p50_ms": percentile(reader_lat, 0.5),
        "p99_ms": percentile(reader_lat, 0.99),
        "max_ms": max(reader_lat, default=float("nan")),
        "observer_latency_ms": {
            k: {
                "samples": len(v),
                "p50": percentile(v, 0.5),
                "p99": percentile(v, 0.99),
                "max": max(v, default=float("nan")),
            }
            for k, v in observer_lat.items()
        },
    }


# ---------------------------------------------------------------------------------------------
# Report


def _ms(value: float) -> str:
    return "-" if value != value else f"{value:,.1f}"  # NaN: no samples


def _num(value: float | None, digits: int) -> str:
    return "-" if value is None or value != value else f"{value:,.{digits}f}"


def _ratio(a: float | None, b: float | None) -> str:
    if not a or not b or a != a or b != b:
        return "n/a"
    return f"x{a / b:.2f}"


def _clients(r: dict[str, Any]) -> str:
    return f"{r['client_cpu_percent']:.0f} / {r['clients_waited_percent']:.0f}"


def table(results: dict[str, Any]) -> str:
    rows = [r for r in results["rows"] if "error" not in r and "skipped" not in r]
    head = "| | " + " | ".join(r["label"] for r in rows) + " |"
    lines = [head, "|---|" + "---:|" * len(rows)]

    def row(name: str, cell: Any) -> None:
        lines.append(f"| {name} | " + " | ".join(cell(r) for r in rows) + " |")

    row("offered deliveries/s", lambda r: f"{r['offered_per_s']:,.0f}")
    for kind in KINDS:
        row(f"… {kind}", lambda r, k=kind: f"{r['offered_by_kind_per_s'][k]:,.1f}")
    row("delivered/s (counted)", lambda r: f"{r['deliveries_per_s']:,.0f}")
    row("messages latency p50 ms", lambda r: _ms(r["p50_ms"]))
    row("messages latency p99 ms", lambda r: _ms(r["p99_ms"]))
    row("messages latency max ms", lambda r: _ms(r["max_ms"]))
    for kind in ("typing", "notification"):
        row(f"{kind} p99 ms (observers)", lambda r, k=kind: _ms(r["observer_latency_ms"][k]["p99"]))
    row("lost (expected minus counted)", lambda r: f"{r['lost_total']:,}")
    row("send errors", lambda r: f"{r['send_errors']:,}")
    row("connections closed by the server", lambda r: f"{r['closed']:,}")
    row("server CPU µs per delivery", lambda r: _num(r["cpu_us_per_delivery"], 2))
    row("server writes per delivery", lambda r: _num(r["writes_per_delivery"], 2))
    row("kernel share of the server's CPU %", lambda r: f"{r['server_kernel_percent']:.0f}")
    row("server process on its core %", lambda r: f"{r['server_core_percent']:.0f}")
    row("server waiting for its core %", lambda r: f"{r['server_waited_percent']:.0f}")
    row("client processes on / waiting for their core % (threads summed)", _clients)
    row(
        "cores busy % (server, clients)",
        lambda r: ", ".join(f"{v:.0f}" for v in r["cores_busy_percent"].values()),
    )
    row("set-up of the members s", lambda r: f"{r['setup_s']:.1f}")
    row("… then busy with it for s", lambda r: f"{r['settled_s']:.1f}")
    out = "\n".join(lines)
    hub = next((r for r in rows if r["server"] == "hubbub"), None)
    if hub is not None:
        for other in rows:
            if other is hub:
                continue
            out += (
                f"\nhubbub / {other['label']}: deliveries/s "
                f"{_ratio(hub['deliveries_per_s'], other['deliveries_per_s'])}, CPU per delivery "
                f"{_ratio(hub['cpu_us_per_delivery'], other['cpu_us_per_delivery'])}, p99 "
                f"{_ratio(hub['p99_ms'], other['p99_ms'])}"
            )
        verdict = "yes" if hub["p99_ms"] < P99_TARGET_MS else "NO"
        out += f"\nhubbub messages p99 {_ms(hub['p99_ms'])} ms < {P99_TARGET_MS:g} ms: {verdict}"
    for r in rows:
        profile = r.get("profile")
        if profile:
            out += f"\n\n{r['label']} under py-spy, measured window: {profile['samples']:,} "
            out += f"samples, {profile['idle_percent']:.0f}% idle ({profile['file']})\n"
            out += "| self % | function | | inclusive % | function |\n|---:|---|---|---:|---|\n"
            pairs = zip(profile["self"], profile["inclusive"], strict=False)
            out += "\n".join(f"| {a:.1f} | `{x}` | | {b:.1f} | `{y}` |" for (x, a), (y, b) in pairs)
    for r in results["rows"]:
        if "error" in r or "skipped" in r:
            out += f"\n{r['label']}: {r.get('error') or r.get('skipped')}"
        elif r["first_error"]:
            out += f"\n{r['label']}: first error: {r['first_error']}"
    return out


def describe(args: argparse.Namespace, info: dict[str, str]) -> str:
    members = args.rooms * args.room_size
    return "\n".join(
        [
            f"machine: {info['cpu']}, {info['cores']} cores, {info['memory']}, {info['kernel']}",
            f"Python {info['python']}, uvloop {info['uvloop']}, python-socketio "
            f"{info['python-socketio']}, Bun {info['bun']}, commit {info['commit']}",
            f"server on CPU {args.cores[0]}, {args.client_processes} client processes on CPU "
            f"{args.cores[1]} ({info['clients']})",
            f"load: {args.rooms} rooms x {args.room_size} members = {members:,} connections; a "
            f"message per member every {args.interval:g} s ({members / args.interval:,.0f}/s), "
            f"a typing signal {args.lead:g} s before each; {args.churn:.0%} of the members leave "
            f"and come back {args.away:g} s later per 10 s; {args.notify_rate:g} "
            "notification/s to a random member",
            "hubbub: rooms chat:<room> (history 100 / 300 s, recovery, presence, join/leave "
            "pushed; members subscribe recoverable, come back recovering), typing signals on "
            "typing:<room> (no history), notifications on #<user> via POST /api/publish",
            "python-socketio: rooms, join/leave notices, notifications to the user's sid; no "
            "history, recovery or presence (it has none). Bun: topics per room and per user",
            f"warm-up {args.warmup:g} s, measured {args.seconds:g} s; per room 1 member "
            "churns (left out of the loss count), 1 observer counts by kind, the others are "
            "counted by the C loop",
        ]
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--quick", action="store_true", help="20 rooms x 10 members, short runs")
    parser.add_argument("--servers", nargs="+", choices=list(SERVERS), default=list(SERVERS))
    parser.add_argument("--rooms", type=int, help="rooms (default 200; quick 20)")
    parser.add_argument("--room-size", type=int, help="members per room (default 50; quick 10)")
    parser.add_argument(
        "--interval", type=float, default=10.0, help="s between a member's messages"
    )
    parser.add_argument("--lead", type=float, default=1.0, help="s from typing to message")
    parser.add_argument("--churn", type=float, help="members leaving per 10 s (default 0.01)")
    parser.add_argument("--away", type=float, default=2.0, help="s a leaving member stays away")
    parser.add_argument("--notify-rate", type=float, default=1.0, help="notifications per s")
    parser.add_argument("--warmup", type=float, help="s of load before measuring (default 10)")
    parser.add_argument("--seconds", type=float, help="s measured (default 20)")
    parser.add_argument("--drain", type=float, default=20.0, help="s to wait for the last")
    parser.add_argument("--client-processes", type=int, default=4)
    parser.add_argument("--setup-concurrency", type=int, default=100)
    parser.add_argument("--json", type=Path, help="default benchmarks/.local/chat.json")
    parser.add_argument(
        "--profile", type=Path, help="record hubbub with py-spy there (speedscope JSON)"
    )
    args = parser.parse_args()
    quick = args.quick
    args.rooms = args.rooms or (20 if quick else 200)
    args.room_size = args.room_size or (10 if quick else 50)
    args.churn = args.churn if args.churn is not None else (0.2 if quick else 0.01)
    args.warmup = args.warmup if args.warmup is not None else (2.0 if quick else 10.0)
    args.seconds = args.seconds or (3.0 if quick else 20.0)
    args.client_processes = min(args.client_processes, args.rooms)
    args.json = args.json or harness.LOCAL / "chat.json"
    # py-spy writes from the server's folder: the path must not be relative.
    args.profile = args.profile.resolve() if args.profile else None
    if args.room_size < 3:
        parser.error("--room-size must be 3 or more (a churner, an observer, readers)")

    harness.raise_fd_limit()
    args.cores = harness.cpu_split()
    harness.pin(0, args.cores[1])
    bun = bun_binary()
    args.pump = harness.build_pump()
    info = harness.machine(bun)
    info["clients"] = "readers counted in C (pump.c)" if args.pump else "readers read in Python"
    info["command"] = " ".join(["python", "benchmarks/chat_load.py", *sys.argv[1:]])
    print(describe(args, info), flush=True)
    results: dict[str, Any] = {"machine": info, "settings": {}, "rows": []}
    results["settings"] = {k: str(v) for k, v in vars(args).items() if k != "json"}
    ctx = mp.get_context("spawn")

    def tick(label: str) -> None:
        print(f"  {label}", file=sys.stderr, flush=True)

    try:
        for key in args.servers:
            if key == "bun" and bun is None:
                results["rows"].append(
                    {"server": key, "label": SERVERS[key], "skipped": "Bun is not installed"}
                )
                continue
            try:
                results["rows"].append(run_server(key, args, ctx, bun, tick))
            except (RuntimeError, OSError, EOFError) as exc:
                print(f"{key}: {exc}", file=sys.stderr)
                error = (str(exc) or type(exc).__name__)[:500]
                results["rows"].append({"server": key, "label": SERVERS[key], "error": error})
    except KeyboardInterrupt:
        print("\ninterrupted: everything started was stopped", file=sys.stderr)
        return 130
    print("\n" + table(results), flush=True)
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(results, indent=1, default=str) + "\n")
    print(f"\nresults: {os.path.relpath(args.json)}", flush=True)
    return 0 if all("error" not in r for r in results["rows"]) else 1


if __name__ == "__main__":
    sys.exit(main())
