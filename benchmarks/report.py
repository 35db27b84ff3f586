"""Tables, target verdicts, the profile summary and the chart of the benchmark suite."""

from __future__ import annotations

import argparse
import math
import re
from collections import Counter
from pathlib import Path
from typing import Any

REFERENCES = [("bun", "Bun"), ("tutorial", "tutorial"), ("socketio", "socketio")]


def _n(value: float | None, digits: int = 0) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    return f"{value:,.{digits}f}"


def _ms(value: float | None) -> str:
    if value is None or math.isnan(value):
        return "-"
    return f"{value:.1f}" if value < 100 else f"{value:,.0f}"


def machine_text(info: dict[str, str], args: argparse.Namespace) -> str:
    return (
        f"machine: {info['cpu']}, {info['cores']} cores, {info['memory']}, {info['kernel']}\n"
        f"software: Python {info['python']}, uvloop {info['uvloop']}, websockets "
        f"{info['websockets']}, uvicorn {info['uvicorn']}, FastAPI {info['fastapi']}, "
        f"python-socketio {info['python-socketio']}, Bun {info['bun']}, {info['redis']}\n"
        f"commit {info['commit']}; server on CPU {info['server_core']}, clients on CPU "
        f"{info['client_core']}; descriptor limit {info['fd_limit']}\n"
        f"clients: {info['clients']}\n"
        f"command: {info['command']}\n"
        f"runs: {args.seconds:g} s of publishing after {args.warmup:g} s of warm-up; maximum rate "
        f"= {args.in_flight:,} deliveries in flight (publications: that / subscribers per "
        "channel); 100-byte JSON messages"
    )


def _run_row(label: str, run: dict[str, Any] | None) -> str:
    if run is None:
        return f"| {label} | - | - | - | - | - | - | - |"
    if "skipped" in run:
        return f"| {label} | {run['skipped']} | | | | | | |"
    lost = f"{run['lost']:,}"
    if run.get("closed"):
        lost += f" ({run['closed']} closed)"
    return (
        f"| {label} | {_n(run['deliveries_per_s'])} | {run['cpu_us_per_delivery']:.2f} | "
        f"{_n(run.get('writes_per_delivery') or None, 2)} | "
        f"{_ms(run['p50_ms'])} / {_ms(run['p99_ms'])} / {_ms(run['max_ms'])} | {lost} | "
        f"{run['server_core_percent']:.0f}% | {run['client_core_percent']:.0f}% |"
    )


HEAD = (
    "| server | delivered/s | server CPU µs/delivery | writes/delivery | latency ms p50 / p99 / "
    "max | lost | server core | client core |\n|---|---:|---:|---:|---|---:|---:|---:|"
)


def ratios(rows: list[dict[str, Any]], mode: str) -> list[tuple[str, float, float]]:
    """hubbub native over each reference: (reference, deliveries/s ratio, µs/delivery ratio)."""
    by_key = {r["server"]: r.get(mode) for r in rows}
    ours = by_key.get("hubbub")
    out = []
    if not ours or "skipped" in ours:
        return out
    for key, name in REFERENCES:
        ref = by_key.get(key)
        if ref and "skipped" not in ref and ref["deliveries_per_s"]:
            out.append(
                (
                    name,
                    ours["deliveries_per_s"] / ref["deliveries_per_s"],
                    ours["cpu_us_per_delivery"] / ref["cpu_us_per_delivery"],
                )
            )
    return out


def scenario_text(result: dict[str, Any]) -> str:
    lines = [f"### {result['title']}", ""]
    rows = result["rows"]
    errors = [
        f"- {r['label']}: {r.get('skipped') or r.get('error')}"
        for r in rows
        if "skipped" in r or "error" in r
    ]
    if result["key"] == "connections":
        lines += [
            "| server | connections | set-up/s | set-up ms p50 / p99 / max | server CPU µs "
            "per set-up | set-ups/s one core could do | server / client core during set-up "
            "| RSS per idle connection | alive after hold | pongs | server CPU while idle |",
            "|---|---:|---:|---|---:|---:|---:|---:|---:|---:|---:|",
        ]
        for r in rows:
            s, h = r.get("setup"), r.get("hold")
            if s is None or h is None:
                continue
            lines.append(
                f"| {r['label']} | {s['opened']:,} | {_n(s['per_second'])} | "
                f"{_ms(s['p50_ms'])} / {_ms(s['p99_ms'])} / {_ms(s['max_ms'])} | "
                f"{_n(s.get('cpu_us_per_setup'))} | {_n(s.get('setups_per_core_s'))} | "
                f"{_percent(s.get('server_core_percent'))} / "
                f"{_percent(s.get('client_core_percent'))} | "
                f"{s['rss_per_connection_kib']:.1f} KiB | {h['alive']:,} | {h['pongs']:,} | "
                f"{h['server_cpu_percent']:.1f}% |"
            )
        held = next((r["hold"]["seconds"] for r in rows if "hold" in r), 0.0)
        lines += ["", f"Set-up: {_setup_note(rows)}; held {held:.0f} s."]
    else:
        for mode in ("max", "fixed"):
            present = [r for r in rows if r.get(mode)]
            if not present:
                continue
            if mode == "max":
                lines.append("Maximum rate:")
            else:
                rate = next(r[mode]["rate"] for r in present)
                lines.append(
                    f"Fixed rate, {rate:,.0f} publications/s (half of hubbub native's maximum):"
                )
            lines += ["", HEAD]
            lines += [_run_row(r["label"], r.get(mode)) for r in present]
            pairs = ratios(rows, mode)
            if pairs:
                lines.append("")
                lines.append(
                    "hubbub native / "
                    + "; ".join(
                        f"{name}: x{d:.2f} delivered/s, x{c:.2f} µs/delivery"
                        for name, d, c in pairs
                    )
                )
            lines.append("")
        setups = [r for r in rows if r.get("setup")]
        if setups:
            lines.append(
                "Set-up of the subscribers (per second, p99 ms): "
                + "; ".join(
                    f"{r['label']} {_n(r['setup']['per_second'])}, {_ms(r['setup']['p99_ms'])}"
                    for r in setups
                )
            )
    if errors:
        lines += ["", "Not run or failed:", *errors]
    return "\n".join(lines)


def _percent(value: float | None) -> str:
    return "-" if value is None else f"{value:.0f}%"


def _setup_note(rows: list[dict[str, Any]]) -> str:
    setups = [r["setup"] for r in rows if "setup" in r]
    conc = next((s["concurrency"] for s in setups), 0)
    procs = next((s.get("client_processes") for s in setups), None)
    note = f"{conc} set-ups in flight at a time from the client processes"
    if procs:
        note += f" ({procs}, on one core)"
    note += (
        "; set-ups/s one core could do is 1 / the server's CPU time per set-up (utime + stime "
        "over the set-up), independent of the clients"
    )
    # Python clients on one core: when their core is the busy one, the wall rate is theirs.
    capped = [
        r["label"]
        for r in rows
        if r.get("setup", {}).get("client_core_percent", 0) >= 80
        and r["setup"].get("server_core_percent", 100) < 80
    ]
    if capped:
        note += (
            "; the clients' core was the busy one for "
            + ", ".join(capped)
            + ", so its wall rate is the clients' limit, not the server's"
        )
    return note


# ---------------------------------------------------------------------------------------------
# Targets of the issue


def _find(results: dict[str, Any], key: str) -> dict[str, Any] | None:
    return next((s for s in results["scenarios"] if s["key"] == key), None)


def _row(scn: dict[str, Any] | None, server: str) -> dict[str, Any] | None:
    if scn is None:
        return None
    return next((r for r in scn["rows"] if r["server"] == server), None)


def targets(results: dict[str, Any]) -> list[dict[str, Any]]:
    """Each target of the issue with the measured value and whether it is met."""
    out: list[dict[str, Any]] = []

    def add(name: str, value: str, met: bool | None, note: str = "") -> None:
        out.append({"target": name, "measured": value, "met": met, "note": note})

    big = _find(results, "one-10000")
    ours = _row(big, "hubbub")
    ours_max = (ours or {}).get("max")

    def compare(label: str, ref: dict[str, Any] | None, field: str, unit: str, ok: Any) -> None:
        # hubbub's max-rate figure over the reference's, judged by ``ok(ratio)``.
        if not (ours_max and ref):
            add(label, "not measured", None)
            return
        mine, theirs = ours_max[field], ref[field]
        shown = f"{mine:.2f} vs {theirs:.2f} {unit}" if unit else f"{_n(mine)} vs {_n(theirs)}"
        add(label, f"x{mine / theirs:.2f} ({shown})", ok(mine / theirs))

    for key, name, factor in (
        ("bun", "Bun", 1.0),
        ("tutorial", "the tutorial manager", 5.0),
        ("socketio", "python-socketio", 15.0),
    ):
        ref = (_row(big, key) or {}).get("max")
        compare(
            f"10,000 subscribers, max rate: delivered/s ≥ {factor:g}x {name}",
            ref,
            "deliveries_per_s",
            "",
            lambda ratio, factor=factor: ratio >= factor,
        )
        if key == "bun":
            compare(
                "10,000 subscribers, max rate: server CPU per delivery ≤ Bun's",
                ref,
                "cpu_us_per_delivery",
                "µs",
                lambda ratio: ratio <= 1.0,
            )
    fixed = (ours or {}).get("fixed")
    if fixed and "skipped" not in fixed:
        add(
            "10,000 subscribers at half the max rate: p99 < 50 ms",
            f"{fixed['p99_ms']:.1f} ms at {fixed['rate']:,.0f} publications/s",
            fixed["p99_ms"] < 50,
        )
    else:
        add("10,000 subscribers at half the max rate: p99 < 50 ms", "not measured", None)
    conn = _row(_find(results, "connections"), "hubbub")
    if conn and "setup" in conn:
        s, h = conn["setup"], conn.get("hold", {})
        add(
            "≤ 8 KiB RSS per idle connection (authenticated, one subscription)",
            f"{s['rss_per_connection_kib']:.1f} KiB",
            s["rss_per_connection_kib"] <= 8,
        )
        count = s["opened"]
        alive = h.get("alive", 0)
        add(
            "20,000 connections with heartbeats, p99 set-up < 100 ms",
            f"{alive:,} of {count:,} alive after {h.get('seconds', 0):.0f} s of 10 s pings; "
            f"p99 {s['p99_ms']:.1f} ms",
            count >= 20_000 and alive == count and s["p99_ms"] < 100,
            ""
            if count >= 20_000
            else "fewer than 20,000 in this run: --connections, or the descriptor limit",
        )
    else:
        add("≤ 8 KiB RSS per idle connection", "not measured", None)
        add("20,000 connections with heartbeats, p99 set-up < 100 ms", "not measured", None)
    # Issue 19: the cost of a connection.
    _connection_targets(add, _find(results, "connections"))
    # Issue 19: many small rooms against Bun; recoverable subscribers against plain ones.
    many = next((s for s in results["scenarios"] if s["key"].startswith("many-")), None)
    rooms = "1,000 channels x 10 subscribers, max rate"
    for field, name, limit, unit in (
        ("cpu_us_per_delivery", "server CPU per delivery ≤ 1.3x Bun's", 1.3, "µs"),
        ("deliveries_per_s", "delivered/s ≥ 0.8x Bun's", 0.8, ""),
    ):
        _ratio_target(add, f"{rooms}: {name}", many, "hubbub", "bun", field, limit, unit)
    recoverable = next(
        (s for s in results["scenarios"] if s["key"].startswith("recoverable-")), None
    )
    subscribers = "10,000 recoverable subscribers, max rate"
    for field, name, limit, unit in (
        ("cpu_us_per_delivery", "server CPU per delivery ≤ 1.2x non-recoverable", 1.2, "µs"),
        ("deliveries_per_s", "delivered/s ≥ 1/1.2 of non-recoverable", 1 / 1.2, ""),
    ):
        _ratio_target(
            add,
            f"{subscribers}: {name}",
            recoverable,
            "hubbub-recoverable",
            "hubbub-history",
            field,
            limit,
            unit,
        )
    lost = []
    for scn in results["scenarios"]:
        for r in scn["rows"]:
            if r["server"].startswith("hubbub"):
                for mode in ("max", "fixed"):
                    run = r.get(mode)
                    if run and "lost" in run:
                        lost.append((f"{scn['key']} {r['server']} {mode}", run["lost"]))
    bad = [f"{k}: {n:,}" for k, n in lost if n]
    add(
        "zero messages lost (hubbub, every run)",
        "0 everywhere" if not bad else "; ".join(bad),
        not bad if lost else None,
    )
    return out


def _connection_targets(add: Any, scn: dict[str, Any] | None) -> None:
    """The set-up rate one core could do (≥ 5,000/s, JWT connect and a subscribe) and the RSS
    per idle connection (≤ 4 KiB), with Bun's figures beside them."""
    ours = (_row(scn, "hubbub") or {}).get("setup")
    bun = (_row(scn, "bun") or {}).get("setup")
    label = "set-up (handshake + JWT connect + subscribe) ≥ 5,000/s on one server core"
    if ours and ours.get("cpu_us_per_setup"):
        rate = ours["setups_per_core_s"]
        shown = f"{_n(rate)}/s ({ours['cpu_us_per_setup']:.0f} µs of server CPU per set-up)"
        if bun and bun.get("cpu_us_per_setup"):
            shown += f"; Bun {_n(bun['setups_per_core_s'])}/s ({bun['cpu_us_per_setup']:.0f} µs)"
        add(label, shown, rate >= 5000)
    else:
        add(label, "not measured", None)
    label = "≤ 4 KiB RSS per idle authenticated connection with one subscription"
    if ours:
        shown = f"{ours['rss_per_connection_kib']:.1f} KiB"
        if bun:
            shown += f"; Bun {bun['rss_per_connection_kib']:.1f} KiB"
        add(label, shown, ours["rss_per_connection_kib"] <= 4)
    else:
        add(label, "not measured", None)


def _ratio_target(
    add: Any,
    label: str,
    scn: dict[str, Any] | None,
    ours: str,
    ref: str,
    field: str,
    limit: float,
    unit: str,
) -> None:
    """A target on the ratio of two rows' max-rate ``field`` (``ours`` over ``ref``): at most
    ``limit`` for CPU per delivery, at least ``limit`` for deliveries per second."""
    mine = (_row(scn, ours) or {}).get("max")
    theirs = (_row(scn, ref) or {}).get("max")
    if not mine or not theirs or "skipped" in mine or "skipped" in theirs:
        add(label, "not measured", None)
        return
    a, b = mine[field], theirs[field]
    ratio = a / b
    shown = f"{a:.2f} vs {b:.2f} {unit}" if unit else f"{_n(a)} vs {_n(b)}"
    met = ratio <= limit if field == "cpu_us_per_delivery" else ratio >= limit
    add(label, f"x{ratio:.2f} ({shown})", met)


def targets_text(items: list[dict[str, Any]]) -> str:
    lines = ["### Targets", "", "| target | measured | met |", "|---|---|---|"]
    for t in items:
        met = {True: "yes", False: "no", None: "-"}[t["met"]]
        note = f" ({t['note']})" if t["note"] else ""
        lines.append(f"| {t['target']} | {t['measured']}{note} | {met} |")
    return "\n".join(lines)


# ---------------------------------------------------------------------------------------------
# Profile


def _function(frame: str) -> str:
    """``name (/long/path/to/file.py:123)`` to ``name (package/file.py)``: the lines of one
    function together, and no path of the machine that ran it."""
    name, _, where = frame.partition(" (")
    where = where.rstrip(")").rsplit(":", 1)[0]
    for pattern in (r"site-packages/", r"python3\.\d+/", r"/src/"):
        found = re.search(pattern, where)
        if found:
            where = where[found.end() :]
            break
    else:
        if where.startswith("/"):
            where = where.rsplit("/", 1)[-1]
    return f"{name} ({where})" if where else name


def summarize_speedscope(
    data: dict[str, Any], started: float, begin: float, end: float, top: int = 15
) -> dict[str, Any]:
    """Self and inclusive shares (% of all samples) of functions in the samples of the main
    thread taken between ``begin`` and ``end`` (``time.monotonic()``), from py-spy's speedscope
    output recorded with ``--idle --native`` from the process start at ``started`` (so a
    sample's time is the sum of the intervals before it). Samples in ``epoll_wait`` are the
    thread waiting for events: counted as idle."""
    frames = [
        _function(f"{f['name']} ({f.get('file', '')}:{f.get('line', 0)})")
        for f in data["shared"]["frames"]
    ]
    profiles = data["profiles"]
    main = next(
        (p for p in profiles if "Thread " in p["name"] and "MainThread" in p["name"]),
        max(profiles, key=lambda p: len(p["samples"])),
    )
    own: Counter[str] = Counter()
    inclusive: Counter[str] = Counter()
    total = 0
    idle = 0
    clock = started + main.get("startValue", 0.0)
    for stack, weight in zip(main["samples"], main["weights"], strict=True):
        clock += weight
        if not begin <= clock < end or not stack:
            continue
        total += 1
        names = [frames[i] for i in stack]
        leaf = names[-1]
        if leaf.split(" (")[0] in IDLE:
            idle += 1
            continue
        own[leaf] += 1
        for name in set(names):
            inclusive[name] += 1
    share = 100 / total if total else 0.0
    busy = total - idle
    # Frames on every busy sample (the loop and what started it) say nothing: left out.
    below = [(name, n * share) for name, n in inclusive.most_common() if n < busy * 0.98]
    return {
        "samples": total,
        "idle_percent": idle * share,
        "self": [(name, n * share) for name, n in own.most_common(top)],
        "inclusive": below[:top],
    }


IDLE = {"epoll_wait", "epoll_pwait", "epoll_pwait2"}
"""Leaves of a thread waiting for events (py-spy records them with --idle --native)."""


def profile_text(profile: dict[str, Any]) -> str:
    if "error" in profile:
        return f"### Profile\n\n{profile['error']}"
    run, setup = profile["run"], profile["setup"]
    scenario = profile.get("title", "")
    lines = [f"### Profile: hubbub native under py-spy{': ' if scenario else ''}{scenario}", ""]
    n = f"{setup['connections']:,}"
    titles = {
        "max": f"{n} subscribers, maximum rate ({_n(run['deliveries_per_s'])} delivered/s, "
        f"{run['cpu_us_per_delivery']:.2f} µs/delivery under the profiler)",
        "setup": f"set-up of {n} subscribers ({_n(setup['per_second'])}/s under the profiler)",
    }
    for key, title in titles.items():
        phase = profile["phases"][key]
        lines += [
            f"{title}: {phase['samples']:,} samples, {phase['idle_percent']:.0f}% idle",
            "",
            "| self % | function | | inclusive % | function |",
            "|---:|---|---|---:|---|",
        ]
        pairs = list(zip(phase["self"], phase["inclusive"], strict=False))
        lines += [f"| {a:.1f} | `{an}` | | {b:.1f} | `{bn}` |" for (an, a), (bn, b) in pairs]
        lines.append("")
    lines.append(f"Samples: {profile['file']} (open in speedscope.app)")
    return "\n".join(lines)


# ---------------------------------------------------------------------------------------------
# Chart

COLOURS = {
    "hubbub": "#1f77b4",
    "hubbub-nodelay": "#6baed6",
    "hubbub-asgi": "#9467bd",
    "bun": "#ff7f0e",
    "tutorial": "#2ca02c",
    "socketio": "#d62728",
}


def chart(results: dict[str, Any], path: Path) -> None:
    """Six panels: delivered/s and µs per delivery at max rate, p99 at half of hubbub's max
    (all against N on one channel); RSS per idle connection; the 1,000 small rooms at max
    rate; set-ups per second of one server core."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    one = sorted(
        (s for s in results["scenarios"] if s["key"].startswith("one-")),
        key=lambda s: s["subscribers"],
    )
    fig, axes = plt.subplots(2, 3, figsize=(18, 8.5))
    panels = [
        (
            axes[0][0],
            "max",
            "deliveries_per_s",
            "delivered messages/s at max rate (higher is better)",
        ),
        (
            axes[0][1],
            "max",
            "cpu_us_per_delivery",
            "server CPU µs per delivery at max rate (lower is better)",
        ),
        (
            axes[1][0],
            "fixed",
            "p99_ms",
            "p99 latency ms at half of hubbub's max rate (lower is better)",
        ),
    ]
    labels: dict[str, str] = {}
    for ax, mode, metric, title in panels:
        for key in COLOURS:
            xs, ys = [], []
            for scn in one:
                row = next((r for r in scn["rows"] if r["server"] == key), None)
                run = (row or {}).get(mode)
                if run and metric in run and not math.isnan(run[metric]):
                    xs.append(scn["subscribers"])
                    ys.append(run[metric])
                    labels[key] = row["label"]  # type: ignore[index]
            if xs:
                ax.plot(
                    xs,
                    ys,
                    marker="o",
                    color=COLOURS[key],
                    label=labels[key],
                    linewidth=2.5 if key == "hubbub" else 1.5,
                )
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xticks([s["subscribers"] for s in one], [f"{s['subscribers']:,}" for s in one])
        ax.set_xlabel("subscribers of one channel")
        ax.set_title(title, fontsize=10)
        ax.grid(True, which="both", alpha=0.3)
    axes[0][0].legend(fontsize=8)
    ax = axes[1][1]
    conn = _find(results, "connections")
    rows = [r for r in (conn or {}).get("rows", []) if "setup" in r]
    if rows:
        values = [r["setup"]["rss_per_connection_kib"] for r in rows]
        notes = [
            f"{v:.1f} KiB, set-up p99 {r['setup']['p99_ms']:.0f} ms"
            for v, r in zip(values, rows, strict=True)
        ]
        _bars(
            ax,
            rows,
            values,
            notes,
            lines=[(8, "--"), (4, ":")],
            limits=(0, max(values) * 1.6),
            title=f"RSS per idle connection, {rows[0]['setup']['opened']:,} connections "
            "(dashed: the 8 KiB target, dotted: 4 KiB)",
        )
    _small_rooms_panel(axes[0][2], results)
    _setup_panel(axes[1][2], results)
    m = results["machine"]
    fig.suptitle(
        f"hubbub {m['commit']} vs reference servers — server on 1 core of "
        f"{m['cpu']}, loopback, 100-byte messages",
        fontsize=11,
    )
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)


def _bars(
    ax: Any,
    rows: list[dict[str, Any]],
    values: list[float],
    notes: list[str],
    *,
    lines: list[tuple[float, str]],
    limits: tuple[float, float],
    title: str,
    log: bool = False,
) -> None:
    """A panel of horizontal bars, one per server row, each with its note at its end; the
    reference ``lines`` (x, line style) across them."""
    bars = ax.barh(
        [r["label"] for r in rows],
        values,
        color=[COLOURS.get(r["server"], "grey") for r in rows],
    )
    for bar, note in zip(bars, notes, strict=True):
        ax.text(
            bar.get_width(),
            bar.get_y() + bar.get_height() / 2,
            f" {note}",
            va="center",
            fontsize=8,
        )
    for x, style in lines:
        ax.axvline(x, color="black", linestyle=style, linewidth=1)
    if log:
        ax.set_xscale("log")
    ax.set_xlim(*limits)
    ax.invert_yaxis()
    ax.set_title(title, fontsize=10)


def _small_rooms_panel(ax: Any, results: dict[str, Any]) -> None:
    """Server CPU per delivery over the 1,000 channels of 10 at max rate, delivered/s noted."""
    scn = next((s for s in results["scenarios"] if s["key"].startswith("many-")), None)
    rows = [r for r in (scn or {}).get("rows", []) if r.get("max", {}).get("cpu_us_per_delivery")]
    if scn is None or not rows:
        ax.set_axis_off()
        return
    values = [r["max"]["cpu_us_per_delivery"] for r in rows]
    notes = [
        f"{v:.2f} µs, {r['max']['deliveries_per_s']:,.0f}/s"
        for v, r in zip(values, rows, strict=True)
    ]
    bun = _row(scn, "bun")
    bun_cpu = (bun or {}).get("max", {}).get("cpu_us_per_delivery")
    each = scn["subscribers"] // max(scn["channels"], 1)
    _bars(
        ax,
        rows,
        values,
        notes,
        lines=[(1.3 * bun_cpu, ":")] if bun_cpu else [],
        limits=(min(values) / 1.5, max(values) * 8),
        log=True,
        title=f"{scn['channels']:,} channels x {each} subscribers at max rate: server CPU µs\n"
        "per delivery (lower is better; dotted: 1.3x Bun's)",
    )


def _setup_panel(ax: Any, results: dict[str, Any]) -> None:
    """Set-ups (handshake, JWT connect, subscribe) one server core could do per second."""
    conn = _find(results, "connections")
    rows = [
        r
        for r in (conn or {}).get("rows", [])
        if r.get("setup", {}).get("setups_per_core_s", math.nan) > 0
    ]
    if not rows:
        ax.set_axis_off()
        return
    values = [r["setup"]["setups_per_core_s"] for r in rows]
    notes = [
        f"{v:,.0f}/s ({r['setup']['cpu_us_per_setup']:.0f} µs each)"
        for v, r in zip(values, rows, strict=True)
    ]
    _bars(
        ax,
        rows,
        values,
        notes,
        lines=[(5000, ":")],
        limits=(0, max(max(values), 5000) * 1.6),
        title="set-ups per second of server CPU (hubbub: handshake + JWT\n"
        "connect + subscribe; higher is better; dotted: 5,000/s)",
    )
