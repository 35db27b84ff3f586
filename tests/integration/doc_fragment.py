"""Runs one fragment of the docs (a ``python`` block with top-level ``await``) the way the
docs mean it: inside a running hub in development mode, with the names the docs use bound.

Usage: ``python -m tests.integration.doc_fragment FILE SECONDS`` (run by
``test_doc_python.py``).

``127.0.0.1:8000`` in the block is this hub's address. The names: ``hub`` (a
:class:`hubbub.Hub` with the chat and notifications), ``node`` (its node), ``url`` and ``URL``
(its WebSocket endpoint), ``http_url``, ``token`` (a connection token of ``alice``),
``api_key`` (empty: development mode's HTTP API needs none), ``hc`` (:mod:`hubbub.client`),
``asyncio``.

Exit status 0 when the fragment ends, or when it has printed a line and is still running (it
reads a stream until interrupted: it is cancelled then); 1 with the traceback when it raises,
2 when it neither ends nor prints within SECONDS.
"""

from __future__ import annotations

import ast
import asyncio
import contextlib
import sys
import traceback
from typing import Any, TextIO

import hubbub.client as hc
from hubbub.auth import mint_connection_token
from hubbub.config import DEV_SECRET, Settings
from hubbub.testing import run_hub


class _Watch:
    """Standard output that tells when a whole line was printed."""

    def __init__(self, out: TextIO, printed: asyncio.Event) -> None:
        self.out = out
        self.printed = printed

    def write(self, text: str) -> int:
        if "\n" in text:
            self.printed.set()
        return self.out.write(text)

    def flush(self) -> None:
        self.out.flush()


async def main(source: str, limit: float) -> int:
    settings = Settings(development=True, store={"url": "sqlite:///:memory:"})
    async with run_hub(settings) as running:
        source = source.replace("127.0.0.1:8000", f"127.0.0.1:{running.port}")
        code = compile(source, "<doc block>", "exec", flags=ast.PyCF_ALLOW_TOP_LEVEL_AWAIT)
        names: dict[str, Any] = {
            "__name__": "__doc_block__",
            "asyncio": asyncio,
            "hc": hc,
            "hub": running.server,
            "node": running.node,
            "url": running.url,
            "URL": running.url,
            "http_url": running.http,
            "token": mint_connection_token(DEV_SECRET, "alice"),
            "api_key": "",
        }
        printed = asyncio.Event()
        sys.stdout = _Watch(sys.__stdout__, printed)  # type: ignore[assignment]
        result = eval(code, names)
        if not asyncio.iscoroutine(result):
            return 0  # no await at the top level after all: it ran
        block = asyncio.ensure_future(result)
        line = asyncio.ensure_future(printed.wait())
        done, _ = await asyncio.wait({block, line}, timeout=limit, return_when="FIRST_COMPLETED")
        if block in done:
            line.cancel()
            block.result()  # raises what the fragment raised
            return 0
        line.cancel()
        if printed.is_set():  # give it a moment to end on its own and report its errors
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(asyncio.shield(block), 1.0)
        if block.done():
            block.result()
            return 0
        block.cancel()
        if printed.is_set():
            return 0  # a reader of a stream: it printed, then was interrupted
        print(f"the block neither ended nor printed within {limit} s", file=sys.stderr)
        return 2


if __name__ == "__main__":
    with open(sys.argv[1]) as file:
        text = file.read()
    try:
        status = asyncio.run(main(text, float(sys.argv[2])))
    except Exception:
        traceback.print_exc()
        status = 1
    sys.exit(status)
