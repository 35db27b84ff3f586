"""``hubbub bench``: run a benchmark of a source checkout and print its tables.

The benchmarks live in ``benchmarks/`` beside the package (they start servers, Redis, Bun and
client processes); this command finds them from the current directory and passes the options
through. ``hubbub bench [options]`` runs the suite (``benchmarks/suite.py``: hubbub next to
Bun, python-socketio and the FastAPI tutorial manager); ``hubbub bench NAME [options]`` runs
``benchmarks/NAME.py`` instead (``chat_load``, ``storm``, ``topologies``, ``fanout``, ``soak``,
``churn``). The scripts draw a progress
bar on stderr while their tables build on stdout.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import textwrap
from pathlib import Path

from hubbub.commands.common import CommandError, describe, plain

DEFAULT = "suite"
# The benchmarks a user runs by name (the other scripts of the folder are their parts).
_NAMES = ("chat_load", "storm", "topologies", "fanout", "soak", "churn")


def add_parser(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = commands.add_parser(
        "bench",
        help="run the benchmark suite (from a source checkout)",
        description=describe(__doc__),
    )
    parser.add_argument(
        "options",
        nargs="*",
        help="[NAME] then options for benchmarks/NAME.py (default: the suite), e.g. "
        "--quick, or fanout --subscribers 100 1000 (hubbub bench --help shows the suite's)",
    )


def find_benchmarks(start: Path) -> Path | None:
    """The ``benchmarks`` folder of the checkout holding ``start``, if any."""
    for folder in (start, *start.parents):
        candidate = folder / "benchmarks"
        if (candidate / f"{DEFAULT}.py").is_file():
            return candidate
    return None


def split(options: list[str], folder: Path) -> tuple[Path, list[str]]:
    """Which script the options name (a first word that is a benchmark), and the rest."""
    if options and not options[0].startswith("-"):
        script = folder / f"{options[0]}.py"
        if options[0].isidentifier() and not options[0].startswith("_") and script.is_file():
            return script, options[1:]
        raise CommandError(f"no benchmark {options[0]!r} in {folder.name}/")
    return folder / f"{DEFAULT}.py", options


def run(options: list[str]) -> int:
    """Run a benchmark with ``options`` (all of them, ``--help`` included, go to the script)."""
    folder = find_benchmarks(Path.cwd())
    if folder is None:
        raise CommandError(
            f"no benchmarks/{DEFAULT}.py here or above: run hubbub bench inside a source checkout"
        )
    if options[:1] in (["-h"], ["--help"]):
        # What hubbub adds (which benchmarks there are), then the suite's own options.
        names = sorted(p.stem for p in folder.glob("*.py") if p.stem in _NAMES or p.stem == DEFAULT)
        print(textwrap.fill(plain(" ".join((__doc__ or "").split())), 80))
        print(f"benchmarks here: {', '.join(names)}; hubbub bench NAME --help shows its options.\n")
        sys.stdout.flush()
    script, rest = split(options, folder)
    return subprocess.call([sys.executable, str(script), *rest])
