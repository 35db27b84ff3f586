"""The ``hubbub`` command line.

Exit codes: 0 success; 1 failure, in one line on stderr (the server could not start: the port
is taken, the configuration is wrong, Redis or the database cannot be reached; the server could
not be reached or refused); 2 a usage error (the command line itself is wrong).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from hubbub import __version__
from hubbub.commands import admin_hash, bench, chat, listen, notify, publish, serve
from hubbub.commands.common import CommandError, token_ttl
from hubbub.commands.serve import is_loopback
from hubbub.config import ConfigError, Settings, load_settings
from hubbub.extras import MissingExtra
from hubbub.extras import check as check_extras

__all__ = ["is_loopback", "main"]

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
        prog="hubbub",
        description="hubbub: real-time messaging server and tools.",
        epilog="Every server option can also be set in the environment: HUBBUB_<OPTION> or "
        "HUBBUB_<SECTION>__<OPTION>, e.g. HUBBUB_PORT=9000, HUBBUB_CLIENT__PING_INTERVAL=10. "
        "The client commands read HUBBUB_URL, HUBBUB_TOKEN, HUBBUB_API and HUBBUB_API_KEY.",
    )
    parser.add_argument("--version", action="version", version=f"hubbub {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")

    serve = commands.add_parser(
        "serve",
        help="run the server",
        description="Run the server. It says in one line why when it cannot start (exit 1), "
        "and once started logs where to go: the page's URL, the engine and the store.",
        epilog="Options come from --config FILE, then the environment (HUBBUB_<OPTION>, "
        "HUBBUB_<SECTION>__<OPTION>, e.g. HUBBUB_ENGINE=redis, HUBBUB_REDIS__URL=..., "
        "HUBBUB_STORE__URL=...), then these flags, which win.",
    )
    serve.add_argument("--config", metavar="FILE", help="TOML configuration file")
    serve.add_argument("--host", help="address to listen on (default 127.0.0.1, or HUBBUB_HOST)")
    serve.add_argument("--port", type=int, help="port to listen on (default 8000, or HUBBUB_PORT)")
    serve.add_argument(
        "--dev",
        action="store_true",
        help="development mode: a public HMAC secret, anonymous connections, every channel "
        "open to clients; never use it in production",
    )
    serve.add_argument(
        "--log-level",
        choices=["debug", "info", "warning", "error"],
        help="default info, or HUBBUB_LOG_LEVEL",
    )
    serve.add_argument(
        "--workers",
        type=int,
        default=1,
        metavar="N",
        help='run N server processes on one port (default 1; more need engine = "redis")',
    )

    token = commands.add_parser(
        "token",
        help="mint a connection or subscription token (development)",
        description="Print a JWT signed with the configured HMAC secret (or the development "
        "secret with --dev), carrying the configured token.audience and token.issuer.",
    )
    token.add_argument(
        "--config",
        metavar="FILE",
        help="TOML configuration file (its [token] section; or HUBBUB_TOKEN__HMAC_SECRET_KEY)",
    )
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
    admin_hash.add_parser(commands)
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


EXIT_INTERRUPTED = 130
"""Ctrl-C outside the commands that stop on it by design (128 + SIGINT, as shells report)."""


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit code."""
    try:
        return _main(list(sys.argv[1:] if argv is None else argv))
    except KeyboardInterrupt:
        return EXIT_INTERRUPTED  # no traceback for a Ctrl-C


def _main(argv: list[str]) -> int:
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
    if args.command == "admin-hash":  # reads no configuration
        try:
            return admin_hash.run(args)
        except CommandError as exc:
            print(f"hubbub admin-hash: {exc}", file=sys.stderr)
            return exc.exit_code
    try:
        settings = _settings(args)
    except ConfigError as exc:
        print(f"hubbub {args.command}: {exc}", file=sys.stderr)
        return EXIT_FAILURE
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
        if args.workers > 1 and settings.engine == "memory":
            print(
                f'hubbub serve: --workers {args.workers} needs engine = "redis" (or "nats") '
                f"(the {settings.engine} engine lives in one process); set engine and "
                "[redis] url in --config or HUBBUB_ENGINE=redis",
                file=sys.stderr,
            )
            return EXIT_USAGE
        try:
            # A configured engine, store or key whose extra is missing: one line, before
            # anything starts.
            check_extras(settings)
            return serve.serve(settings, args.workers)
        except MissingExtra as exc:
            print(f"hubbub serve: {exc}", file=sys.stderr)
            return EXIT_FAILURE
    return _token(args, settings)


if __name__ == "__main__":
    sys.exit(main())
