"""The package's surface: the lazy public names, what importing the client loads, and the
one-line error of a missing extra.

Which modules an import loads is checked in a fresh interpreter (the test process has loaded
everything already). A missing extra is simulated there the way Python itself blocks an
import: ``sys.modules[name] = None`` makes ``import name`` fail and ``find_spec`` find nothing.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from tests.conftest import UNIT

import hubbub
from hubbub import extras
from hubbub.config import load_settings

# What a client must never load: the server, its web stack, the stores and the engines.
SERVER_SIDE = (
    "starlette",
    "uvicorn",
    "pydantic",
    "prometheus_client",
    "aiosqlite",
    "asyncpg",
    "redis",
    "prompt_toolkit",
    "hubbub.app",
    "hubbub.hub",
    "hubbub.node",
    "hubbub.config",
    "hubbub.store",
    "hubbub.engines",
    "hubbub.transports",
    "hubbub.apps",
    "hubbub.api",
)
# The CLI's client commands read --config, so they load the configuration (pydantic) and the
# store URL check (hubbub.store, hubbub.store.base), but no store, driver, engine or server.
CLI_SERVER_SIDE = (
    "starlette",
    "uvicorn",
    "prometheus_client",
    "aiosqlite",
    "asyncpg",
    "redis",
    "hubbub.app",
    "hubbub.hub",
    "hubbub.node",
    "hubbub.store.sqlite",
    "hubbub.store.postgres",
    "hubbub.engines",
    "hubbub.transports",
    "hubbub.apps",
    "hubbub.api",
)


def python(code: str, *, blocked: tuple[str, ...] = ()) -> subprocess.CompletedProcess[str]:
    """Run ``code`` in a fresh interpreter with the modules ``blocked`` made unimportable."""
    prelude = "import sys\n" + "".join(f"sys.modules[{name!r}] = None\n" for name in blocked)
    return subprocess.run(
        [sys.executable, "-c", prelude + textwrap.dedent(code)],
        capture_output=True,
        text=True,
        timeout=30 * UNIT,
        cwd=Path(__file__).resolve().parents[2],
    )


def loaded_after(statement: str, forbidden: tuple[str, ...]) -> list[str]:
    """The modules among ``forbidden`` (or inside them) loaded after ``statement``."""
    code = textwrap.dedent(statement) + "\nimport json\nprint(json.dumps(sorted(sys.modules)))\n"
    result = python(code)
    assert result.returncode == 0, result.stderr
    modules = json.loads(result.stdout.splitlines()[-1])
    return [m for m in modules if any(m == f or m.startswith(f + ".") for f in forbidden)]


def test_every_public_name_resolves() -> None:
    assert "__version__" in hubbub.__all__ and len(hubbub.__all__) == len(set(hubbub.__all__))
    for name in hubbub.__all__:
        value = getattr(hubbub, name)
        assert value is not None, name
        if name != "__version__":
            # Each name is the defining module's object, not a copy.
            assert getattr(sys.modules[value.__module__], name) is value, name
    assert set(hubbub.__all__) <= set(dir(hubbub))


def test_star_import_gives_the_public_names() -> None:
    result = python("from hubbub import *\nprint(Node.__name__, create_app.__name__, Settings)")
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("Node create_app <class 'hubbub.config.Settings'>")


def test_an_unknown_name_is_an_attribute_error() -> None:
    with pytest.raises(AttributeError, match="no attribute 'Nodes'"):
        _ = hubbub.Nodes  # type: ignore[attr-defined]
    assert not hasattr(hubbub, "_EXPORTS_missing")


@pytest.mark.parametrize(
    "statement",
    ["import hubbub", "import hubbub.client", "import hubbub.protocol.codes"],
)
def test_importing_the_client_loads_no_server(statement: str) -> None:
    assert loaded_after(statement, SERVER_SIDE) == []


def test_a_public_name_loads_its_module_on_first_use() -> None:
    loaded = loaded_after("import hubbub\nhubbub.Node", ("hubbub.node", "starlette"))
    assert "hubbub.node" in loaded


def test_cli_client_commands_load_no_server() -> None:
    # publish and listen to a port nobody listens on: the command fails, having loaded
    # everything its run needs.
    statement = """
        import socket
        from hubbub.cli import main
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
            assert main(["publish", "--api", f"http://127.0.0.1:{port}/api", "news", "{}"]) == 1
            url = f"ws://127.0.0.1:{port}/connection/websocket"
            assert main(["listen", "--url", url, "--dev", "--user", "a", "news"]) == 1
    """
    assert loaded_after(statement, CLI_SERVER_SIDE) == []


def test_missing_extra_message_is_one_line_naming_the_extra() -> None:
    error = extras.MissingExtra("redis")
    assert isinstance(error, ImportError) and error.name == "redis" and error.extra == "redis"
    assert str(error) == "the Redis engine needs the redis extra: pip install 'hubbub[redis]'"
    for extra in extras.EXTRAS:
        message = str(extras.MissingExtra(extra))
        assert "\n" not in message and f"pip install 'hubbub[{extra}]'" in message


def test_missing_keeps_errors_from_inside_an_installed_extra() -> None:
    absent = ModuleNotFoundError("No module named 'asyncpg'", name="asyncpg")
    assert isinstance(extras.missing("postgres", absent), extras.MissingExtra)
    inner = ModuleNotFoundError("No module named 'hiredis'", name="hiredis")
    assert extras.missing("redis", inner) is inner


def test_extras_needed_by_settings(tmp_path: Path) -> None:
    assert extras.needed_by(load_settings(None, development=True)) == []
    config = tmp_path / "hubbub.toml"
    config.write_text(
        'engine = "redis"\n'
        '[store]\nurl = "postgresql://hubbub@127.0.0.1:5432/hubbub"\n'
        '[token]\nrsa_public_key = "-----BEGIN PUBLIC KEY-----"\n'
    )
    assert extras.needed_by(load_settings(str(config))) == ["redis", "postgres", "crypto"]


@pytest.mark.parametrize(
    ("config", "blocked", "line"),
    [
        (
            'engine = "redis"\n',
            "redis",
            "hubbub serve: the Redis engine needs the redis extra: pip install 'hubbub[redis]'",
        ),
        (
            '[store]\nurl = "postgresql://hubbub@127.0.0.1:1/hubbub"\n',
            "asyncpg",
            "hubbub serve: the PostgreSQL store needs the postgres extra: "
            "pip install 'hubbub[postgres]'",
        ),
        (
            '[token]\nrsa_public_key = "-----BEGIN PUBLIC KEY-----"\n',
            "cryptography",
            "hubbub serve: an RSA or ECDSA token key needs the crypto extra: "
            "pip install 'hubbub[crypto]'",
        ),
    ],
)
def test_serve_without_an_extra_exits_1_with_one_line(
    tmp_path: Path, config: str, blocked: str, line: str
) -> None:
    path = tmp_path / "hubbub.toml"
    path.write_text(config)
    argv = ["serve", "--dev", "--config", str(path)]
    result = python(f"from hubbub.cli import main\nsys.exit(main({argv!r}))", blocked=(blocked,))
    assert (result.returncode, result.stderr.strip(), result.stdout) == (1, line, "")


def test_library_raises_missing_extra() -> None:
    result = python(
        """
        import asyncio
        from hubbub import Node, Settings
        from hubbub.extras import MissingExtra
        from hubbub.store import open_store

        try:
            import hubbub.engines.redis
        except MissingExtra as exc:
            print(exc)
        try:
            Node(Settings(engine="redis"))
        except MissingExtra as exc:
            print(exc)
        store = open_store("postgresql://hubbub@127.0.0.1:1/hubbub")  # naming it is fine
        try:
            asyncio.run(store.open())
        except ImportError as exc:
            print(type(exc).__name__, exc)
        """,
        blocked=("redis", "asyncpg"),
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == [
        "the Redis engine needs the redis extra: pip install 'hubbub[redis]'",
        "the Redis engine needs the redis extra: pip install 'hubbub[redis]'",
        "MissingExtra the PostgreSQL store needs the postgres extra: "
        "pip install 'hubbub[postgres]'",
    ]


def test_terminal_chat_without_its_extra_exits_1_with_one_line() -> None:
    # A terminal on both ends (a pseudo-terminal), so the interactive screen is wanted; the
    # check comes before connecting, so no server is needed.
    leader, follower = os.openpty()
    try:
        argv = ["chat", "lobby", "--dev", "--user", "alice"]
        code = "import sys\nsys.modules['prompt_toolkit'] = None\nfrom hubbub.cli import main\n"
        result = subprocess.run(
            [sys.executable, "-c", code + f"sys.exit(main({argv!r}))"],
            stdin=follower,
            stdout=follower,
            stderr=subprocess.PIPE,
            text=True,
            timeout=30 * UNIT,
        )
    finally:
        os.close(follower)
        os.close(leader)
    assert result.returncode == 1, result.stderr
    assert result.stderr.strip() == (
        "hubbub chat: the terminal chat needs the chat-cli extra: pip install 'hubbub[chat-cli]'"
    )
