"""``hubbub bench``: run the benchmark suite of a source checkout and print its table.

The suite lives in ``benchmarks/`` beside the package (it starts servers, Redis and client
processes); this command finds it from the current directory, passes the options through,
and shows a progress bar on stderr while the table builds on stdout.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

from hubbub.commands.common import CommandError


def add_parser(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = commands.add_parser(
        "bench",
        help="run the benchmark suite (from a source checkout)",
        description=__doc__.splitlines()[0] if __doc__ else None,
    )
    parser.add_argument(
        "options",
        nargs="*",
        help="passed to benchmarks/fanout.py, e.g. --subscribers 100 1000 --cluster "
        "(see hubbub bench --help)",
    )


def find_suite(start: Path) -> Path | None:
    for folder in (start, *start.parents):
        candidate = folder / "benchmarks" / "fanout.py"
        if candidate.is_file():
            return candidate
    return None


def run(options: list[str]) -> int:
    """Run the suite with ``options`` (all of them, ``--help`` included, go to the suite)."""
    suite = find_suite(Path.cwd())
    if suite is None:
        raise CommandError(
            "no benchmarks/fanout.py here or above: run hubbub bench inside a source checkout"
        )
    return subprocess.call([sys.executable, str(suite), *options])
