"""Every ``python`` block of README.md and docs/*.md runs as written (the convention is in
docs/developing.md, "Code blocks in the docs"). Each block runs in a fresh Python process in a
scratch directory, bounded in time, in the order of its file:

* a block that assigns a module-level ``app`` is saved as ``app.py`` and served with uvicorn,
  as the doc tells its reader; the blocks after it talk to that app;
* a block that defines ``test_`` functions is a test module, run with pytest;
* a block with top-level ``await`` is a fragment, run inside a running hub with the names the
  docs use (``tests/integration/doc_fragment.py``);
* any other block is a program: it must end with status 0, or print a line and then end
  quietly on Ctrl-C (a reader of a stream);

``127.0.0.1:8000`` in a block is the address of the server of its doc: the doc's app, or else
a hub in development mode (``hubbub serve --dev``). A block preceded by the line
``<!-- illustration -->`` is not run: it must be rare, and never in the first-hour docs.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import signal
import socket
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from hubbub.config import Settings
from hubbub.testing import run_hub
from tests.conftest import UNIT

ROOT = Path(__file__).resolve().parents[2]
ADDRESS = "127.0.0.1:8000"
ILLUSTRATION = "<!-- illustration -->"
BLOCK = re.compile(r"^(?P<before>.*\n)?```python\n(?P<code>.*?)^```", re.S | re.M)
LIMIT = 30 * UNIT
FIRST_HOUR = {"README.md", "docs/embedding.md", "docs/install.md"}
MOST_ILLUSTRATIONS = 3


def doc_files() -> list[Path]:
    return [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]


def blocks_of(path: Path) -> list[tuple[str, bool]]:
    """(code, illustration) of every ``python`` block of ``path``, in order."""
    found: list[tuple[str, bool]] = []
    lines = path.read_text().splitlines(keepends=True)
    inside: list[str] | None = None
    illustration = False
    for number, line in enumerate(lines):
        if inside is None and line.rstrip() == "```python":
            inside = []
            before = lines[number - 1].strip() if number else ""
            illustration = before == ILLUSTRATION
        elif inside is not None and line.rstrip() == "```":
            found.append(("".join(inside), illustration))
            inside = None
        elif inside is not None:
            inside.append(line)
    return found


def kind(code: str) -> str:
    """``app``, ``test``, ``fragment`` or ``program`` (see the module's docstring)."""
    if re.search(r"^app\s*=", code, re.M):
        return "app"
    if re.search(r"^(async )?def test_", code, re.M):
        return "test"
    try:
        compile(code, "<doc block>", "exec")
    except SyntaxError as exc:
        if "outside" in str(exc) and ("await" in str(exc) or "async" in str(exc)):
            return "fragment"
        raise
    return "program"


DOCS = [p.relative_to(ROOT).as_posix() for p in doc_files() if blocks_of(p)]


def env() -> dict[str, str]:
    """The environment of a block: no HUBBUB_ options of this shell, the checkout on the
    path (``examples``, ``tests``)."""
    clean = {k: v for k, v in os.environ.items() if not k.startswith("HUBBUB_")}
    clean["PYTHONPATH"] = os.pathsep.join([str(ROOT), str(ROOT / "src")])
    return clean


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


async def run_program(args: list[str], cwd: Path, source: str, *, reader: bool = True) -> None:
    """Run ``args``: it ends with 0, or (a ``reader``) prints a line and ends quietly on
    Ctrl-C."""
    proc = await asyncio.create_subprocess_exec(
        *args, cwd=cwd, env=env(),
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        # As in a terminal: SIGINT raises KeyboardInterrupt.
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )  # fmt: skip
    assert proc.stdout is not None and proc.stderr is not None
    line = b""
    if reader:
        with contextlib.suppress(TimeoutError):  # no line (the end of output comes at once)
            line = await asyncio.wait_for(proc.stdout.readline(), LIMIT)
    try:
        await asyncio.wait_for(proc.wait(), 2 * UNIT if reader else LIMIT)
    except TimeoutError:
        with contextlib.suppress(ProcessLookupError):
            if line:
                proc.send_signal(signal.SIGINT)  # still running after a line: Ctrl-C
            else:
                proc.kill()  # neither ended nor printed: a failure
    try:
        out, err = await asyncio.wait_for(proc.communicate(), 15 * UNIT)
    except TimeoutError:
        proc.kill()
        out, err = await proc.communicate()
    text = err.decode()
    assert proc.returncode == 0, f"{source}: exit {proc.returncode}\n{(line + out).decode()}{text}"
    assert "Traceback" not in text, f"{source}:\n{text}"


@contextlib.asynccontextmanager
async def serve_app(cwd: Path, source: str) -> AsyncIterator[str]:
    """``uvicorn app:app`` in ``cwd`` on a free port, until the block ends: its address."""
    port = free_port()
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "uvicorn", "app:app", "--host", "127.0.0.1",
        "--port", str(port), "--log-level", "warning",
        cwd=cwd, env=env(), stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    try:
        for _ in range(int(200 * UNIT)):
            with contextlib.suppress(OSError):
                _, writer = await asyncio.open_connection("127.0.0.1", port)
                writer.close()
                break
            assert proc.returncode is None, f"{source}: the app did not start"
            await asyncio.sleep(0.05)
        else:
            raise AssertionError(f"{source}: the app did not listen on {port}")
        yield f"127.0.0.1:{port}"
    finally:
        if proc.returncode is None:
            proc.send_signal(signal.SIGINT)
        assert proc.stderr is not None
        err = (await asyncio.wait_for(proc.communicate(), 15 * UNIT))[1].decode()
        assert "Traceback" not in err, f"{source}: the app failed\n{err}"


@pytest.mark.parametrize("doc", DOCS)
async def test_every_python_block_runs(doc: str, tmp_path: Path) -> None:
    blocks = blocks_of(ROOT / doc)
    settings = Settings(development=True, store={"url": "sqlite:///:memory:"})
    async with contextlib.AsyncExitStack() as stack:
        address: str | None = None
        for number, (code, illustration) in enumerate(blocks, 1):
            source = f"{doc}, python block {number}"
            if illustration:
                continue
            what = kind(code)
            if what == "app":
                (tmp_path / "app.py").write_text(code)
                address = await stack.enter_async_context(serve_app(tmp_path, source))
                continue
            if address is None and what == "program" and ADDRESS in code:
                hub = await stack.enter_async_context(run_hub(settings))
                address = hub.http.removeprefix("http://")
            code = code.replace(ADDRESS, address or ADDRESS)
            script = tmp_path / f"block_{number}.py"
            if what == "test":
                script = tmp_path / f"test_block_{number}.py"
                script.write_text(code)
                pytest_args = ["-q", "-p", "no:cacheprovider", "-o", "asyncio_mode=auto"]
                rootdir = ["--rootdir", str(tmp_path)]
                args = [sys.executable, "-m", "pytest", *pytest_args, *rootdir, str(script)]
            elif what == "fragment":
                script.write_text(code)
                fragment = "tests.integration.doc_fragment"
                args = [sys.executable, "-m", fragment, str(script), str(LIMIT)]
            else:
                script.write_text(code)
                args = [sys.executable, str(script)]
            await run_program(args, tmp_path, source, reader=what != "test")


def test_illustrations_are_rare_and_never_in_the_first_hour_docs() -> None:
    marked = [
        (path.relative_to(ROOT).as_posix(), code)
        for path in doc_files()
        for code, illustration in blocks_of(path)
        if illustration
    ]
    assert len(marked) <= MOST_ILLUSTRATIONS, marked
    assert not {doc for doc, _ in marked} & FIRST_HOUR, marked
    total = sum(len(blocks_of(path)) for path in doc_files())
    assert total >= 12, total  # the collector finds the blocks
