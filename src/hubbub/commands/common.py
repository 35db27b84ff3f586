"""What the client subcommands share: where the server is, which token or API key to use, and
how to call the server HTTP API."""

from __future__ import annotations

import argparse
import json
import os
import urllib.error
import urllib.request
from typing import Any

from hubbub.config import DEV_SECRET, Settings, TokenSettings

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
    with the development secret (``--dev``) or the configured HMAC secret, carrying the
    configured audience and issuer."""
    if args.token:
        return str(args.token)
    if not args.user:
        raise UsageError("give --token (or HUBBUB_TOKEN), or --user NAME with --dev or --config")
    from hubbub.auth import mint_connection_token

    tokens = settings.token
    secret = DEV_SECRET if args.dev else tokens.hmac_secret_key
    if not secret:
        raise UsageError("--user needs a secret to sign with: add --dev, or --config FILE")
    return mint_connection_token(
        secret,
        args.user,
        ttl=token_ttl(None, tokens),
        audience=tokens.audience,
        issuer=tokens.issuer,
    )


REQUIRED_EXP_TTL = 3600.0
"""Seconds a minted connection token lasts when the configuration requires ``exp`` and no
lifetime was asked for."""


def token_ttl(ttl: float | None, tokens: TokenSettings) -> float | None:
    """The lifetime of a minted connection token: ``ttl``, else none (it never expires), or
    :data:`REQUIRED_EXP_TTL` when ``token.require_exp`` would refuse a token without ``exp``."""
    if ttl is None and tokens.require_exp:
        return REQUIRED_EXP_TTL
    return ttl


def add_api_options(parser: argparse.ArgumentParser) -> None:
    """``--api``, ``--api-key`` and ``--config``: for commands that use the server HTTP API."""
    parser.add_argument(
        "--api", default=os.environ.get("HUBBUB_API", DEFAULT_API), help="API base URL"
    )
    parser.add_argument(
        "--api-key", default=os.environ.get("HUBBUB_API_KEY", ""), help="API key (or config)"
    )
    parser.add_argument("--config", metavar="FILE", help="TOML configuration (for its API key)")


class APIRefused(CommandError):
    """The server API answered with an error object: its ``code`` and ``message``."""

    def __init__(self, code: int, message: str) -> None:
        super().__init__(f"refused: {message} ({code})")
        self.code = code
        self.message = message


def call_api(
    args: argparse.Namespace, settings: Settings, method: str, params: dict[str, Any]
) -> Any:
    """POST ``params`` to ``<--api>/<method>`` with the API key of ``--api-key``, else the
    configuration's; the ``result`` of the answer.

    Raises:
        APIRefused: the API answered ``{"error": ...}``.
        CommandError: the server could not be reached, refused the key, or did not answer with
            the API's JSON.
    """
    key = args.api_key or settings.http_api.key
    request = urllib.request.Request(
        f"{args.api.rstrip('/')}/{method}",
        data=json.dumps(params).encode(),
        headers={"Content-Type": "application/json", **({"X-API-Key": key} if key else {})},
        method="POST",
    )
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            reply = json.loads(response.read() or b"{}")
    except urllib.error.HTTPError as exc:
        if exc.code == 401:
            raise CommandError(
                "the API key was refused: give --api-key or HUBBUB_API_KEY"
            ) from None
        # One line, whatever the body is (an HTML error page from a proxy, say).
        body = " ".join(exc.read().decode(errors="replace").split())[:200]
        raise CommandError(f"{args.api} answered HTTP {exc.code}: {body}") from None
    except urllib.error.URLError as exc:
        raise CommandError(
            f"cannot reach {args.api} ({exc.reason}): is `hubbub serve` running?"
        ) from None
    except (OSError, ValueError) as exc:
        # A reset connection, a timeout, or something that is not the API answering.
        raise CommandError(f"no valid answer from {args.api}: {exc}") from None
    if not isinstance(reply, dict):
        raise CommandError(f"{args.api} did not answer like the hubbub API")
    if "error" in reply:
        error = reply["error"]
        raise APIRefused(int(error.get("code", 0)), str(error.get("message", "")))
    return reply.get("result", {})
