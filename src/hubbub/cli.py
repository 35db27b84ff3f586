"""The ``hubbub`` command line.

Exit codes: 0 success; 1 runtime failure (the server could not start, e.g. the port is taken;
the server could not be reached or refused); 2 usage or configuration error (the message names
the option).
"""

from __future__ import annotations

import argparse
import gc
import ipaddress
import logging
import os
import socket
import sys
from collections.abc import Sequence
from types import FrameType

from hubbub import __version__, logs
from hubbub.commands import bench, chat, listen, notify, publish
from hubbub.commands.common import CommandError, token_ttl
from hubbub.config import ConfigError, Settings, load_settings

EXIT_OK = 0
EXIT_FAILURE = 1
EXIT_USAGE = 2

# Commands that talk to a running server; they read --config only for its secret or API key.
_CLIENT_COMMANDS = {
    "listen": listen.run,
    "publish": publish.run,
    "notify": notify.run,
    "chat": chat.run,
}


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="hubbub", description="hubbub: real-time messaging server and tools."
    )
    parser.add_argument("--version", action="version", version=f"hubbub {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")

    serve = commands.add_parser("serve", help="run the server", description="Run the server.")
    serve.add_argument("--config", metavar="FILE", help="TOML configuration file")
    serve.add_argument("--host", help="address to listen on (default 127.0.0.1)")
    serve.add_argument("--port", type=int, help="port to listen on (default 8000)")
    serve.add_argument(
        "--dev",
        action="store_true",
        help="development mode: a public HMAC secret, anonymous connections, every channel "
        "open to clients; never use it in production",
    )
    serve.add_argument("--log-level", choices=["debug", "info", "warning", "error"])
    serve.add_argument(
        "--workers",
        type=int,
        default=1,
        metavar="N",
        help='run N server processes on one port (needs engine = "redis")',
    )

    token = commands.add_parser(
        "token",
        help="mint a connection or subscription token (development)",
        description="Print a JWT signed with the configured HMAC secret (or the development "
        "secret with --dev), carrying the configured token.audience and token.issuer.",
    )
    token.add_argument("--config", metavar="FILE", help="TOML configuration file")
    token.add_argument("--user", required=True, help="user id (the token's sub claim)")
    token.add_argument(
        "--ttl",
        type=float,
        help="seconds until the token expires (default: never, or one hour when the "
        "configuration sets token.require_exp)",
    )
    token.add_argument(
        "--channel",
        action="append",
        default=[],
        help="connection token: subscribe server-side to this channel (repeatable)",
    )
    token.add_argument(
        "--subscription",
        metavar="CHANNEL",
        help="mint a subscription token for CHANNEL instead of a connection token",
    )
    token.add_argument("--dev", action="store_true", help="use the development secret")
    listen.add_parser(commands)
    publish.add_parser(commands)
    notify.add_parser(commands)
    chat.add_parser(commands)
    bench.add_parser(commands)
    return parser


def _settings(args: argparse.Namespace) -> Settings:
    if args.command in _CLIENT_COMMANDS:
        return load_settings(args.config)
    overrides: dict[str, object] = {}
    for name in ("host", "port", "log_level"):
        value = getattr(args, name, None)
        if value is not None:
            overrides[name] = value
    if getattr(args, "dev", False):
        overrides["development"] = True
    return load_settings(args.config, **overrides)


def is_loopback(host: str) -> bool:
    """Whether ``host`` (a listening address) is reachable from this machine only:
    ``localhost``, 127.0.0.0/8 or ``::1``. Any other name or address counts as exposed."""
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def _serve(settings: Settings, workers: int = 1) -> int:
    import uvicorn

    from hubbub.app import SETTINGS_ENV, create_app
    from hubbub.transports.serving import uvicorn_options

    logs.configure(settings.log_level, settings.log_format)
    log = logging.getLogger("hubbub")
    if settings.development:
        log.warning(
            "development mode: tokens are signed with a public secret and every channel is "
            "open; do not expose this server"
        )
        if not is_loopback(settings.host):
            log.warning(
                "development mode listening on %s, reachable from other machines: anyone "
                "who can reach it can sign tokens, connect, and use the key-less API; "
                "use --host 127.0.0.1, or drop --dev",
                settings.host,
            )
    options: dict[str, object] = {
        **uvicorn_options(settings),
        "host": settings.host,
        "port": settings.port,
        "log_level": settings.log_level,
        "log_config": None,  # uvicorn logs through ours (text or JSON)
        "lifespan": "on",
    }
    if workers > 1:
        # Each worker process builds its app from exactly these validated settings.
        os.environ[SETTINGS_ENV] = settings.model_dump_json()
        uvicorn.run("hubbub.app:app_from_environment", factory=True, workers=workers, **options)  # type: ignore[arg-type]
        return EXIT_OK

    app = create_app(settings)

    class Server(uvicorn.Server):
        def handle_exit(self, sig: int, frame: FrameType | None) -> None:
            super().handle_exit(sig, frame)
            # SIGTERM/SIGINT are how operators stop the server: after the graceful shutdown
            # the process exits 0 instead of dying again by the same signal.
            self._captured_signals.clear()

        async def startup(self, sockets: list[socket.socket] | None = None) -> None:
            await super().startup(sockets)
            # What start-up made (modules, the app, settings) lives as long as the process:
            # frozen, the collector no longer walks it, and young collections run every
            # 10,000 allocations instead of 700, so opening thousands of connections does
            # not stop the loop for a collection every few of them.
            gc.freeze()
            gc.set_threshold(10_000, 20, 10)

        async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
            # Our drain first (3001 in batches), so clients do not get uvicorn's 1012.
            await app.state.node.drain(settings.shutdown_drain_period)
            await super().shutdown(sockets)

    server = Server(uvicorn.Config(app, **options))  # type: ignore[arg-type]
    server.run()
    return EXIT_OK if server.started else EXIT_FAILURE


def _token(args: argparse.Namespace, settings: Settings) -> int:
    from hubbub.auth import mint_connection_token, mint_subscription_token

    secret = settings.token.hmac_secret_key
    if not secret:
        print(
            "hubbub token: no HMAC secret configured: set token.hmac_secret_key in --config, "
            "HUBBUB_TOKEN__HMAC_SECRET_KEY, or use --dev",
            file=sys.stderr,
        )
        return EXIT_USAGE
    # The configured audience and issuer go into the token: the server requires them.
    aud, iss = settings.token.audience, settings.token.issuer
    if args.subscription:
        token = mint_subscription_token(
            secret, args.user, args.subscription, ttl=args.ttl, audience=aud, issuer=iss
        )
    else:
        ttl = token_ttl(args.ttl, settings.token)
        channels = args.channel or None
        token = mint_connection_token(
            secret, args.user, ttl=ttl, channels=channels, audience=aud, issuer=iss
        )
    print(token)
    return EXIT_OK


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit code."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["bench"]:
        # Everything after "bench" belongs to the benchmark suite, options included.
        try:
            return bench.run(argv[1:])
        except CommandError as exc:
            print(f"hubbub bench: {exc}", file=sys.stderr)
            return exc.exit_code
    parser = _parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return EXIT_USAGE
    try:
        settings = _settings(args)
    except ConfigError as exc:
        print(f"hubbub {args.command}: {exc}", file=sys.stderr)
        return EXIT_USAGE
    try:
        if args.command in _CLIENT_COMMANDS:
            return _CLIENT_COMMANDS[args.command](args, settings)
    except CommandError as exc:
        print(f"hubbub {args.command}: {exc}", file=sys.stderr)
        return exc.exit_code
    if args.command == "serve":
        if args.workers < 1:
            print("hubbub serve: --workers must be at least 1", file=sys.stderr)
            return EXIT_USAGE
        if args.workers > 1 and settings.engine != "redis":
            print(
                f'hubbub serve: --workers {args.workers} needs engine = "redis" '
                f"(the {settings.engine} engine lives in one process); set engine and "
                "[redis] url in --config or HUBBUB_ENGINE=redis",
                file=sys.stderr,
            )
            return EXIT_USAGE
        return _serve(settings, args.workers)
    return _token(args, settings)


if __name__ == "__main__":
    sys.exit(main())
