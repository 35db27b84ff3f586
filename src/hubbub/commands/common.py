"""What the client subcommands share: where the server is, and which token to use."""

from __future__ import annotations

import argparse
import os

from hubbub.config import DEV_SECRET, Settings

DEFAULT_URL = "ws://127.0.0.1:8000/connection/websocket"
DEFAULT_API = "http://127.0.0.1:8000/api"


class CommandError(Exception):
    """A failure to report as one line (no traceback) with an exit code: 1 by default (the
    server could not be reached, or refused)."""

    exit_code = 1


class UsageError(CommandError):
    """A mistake in how the command was called: exit code 2."""

    exit_code = 2


def add_server_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--url", default=os.environ.get("HUBBUB_URL", DEFAULT_URL), help="WebSocket endpoint"
    )
    parser.add_argument("--token", default=os.environ.get("HUBBUB_TOKEN", ""), help="JWT")
    parser.add_argument("--user", default="", help="mint a token for this user (see --dev)")
    parser.add_argument(
        "--dev", action="store_true", help="mint tokens with the development secret"
    )
    parser.add_argument("--config", metavar="FILE", help="TOML configuration (for its secret)")


def resolve_token(args: argparse.Namespace, settings: Settings) -> str:
    """The token to connect with: ``--token``/``HUBBUB_TOKEN``, else one minted for ``--user``
    with the development secret (``--dev``) or the configured HMAC secret."""
    if args.token:
        return str(args.token)
    if not args.user:
        raise UsageError("give --token (or HUBBUB_TOKEN), or --user NAME with --dev or --config")
    from hubbub.auth import mint_connection_token

    secret = DEV_SECRET if args.dev else settings.token.hmac_secret_key
    if not secret:
        raise UsageError("--user needs a secret to sign with: add --dev, or --config FILE")
    return mint_connection_token(secret, args.user)
