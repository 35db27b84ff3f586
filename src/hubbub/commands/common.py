"""What the client subcommands share: where the server is, which token or API key to use, and
how to call the server HTTP API."""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import sys
import textwrap
import urllib.error
import urllib.request
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit, urlunsplit

from hubbub.config import DEV_SECRET, Settings, TokenSettings

if TYPE_CHECKING:
    from hubbub.client import Client

DEFAULT_PATH = "/connection/websocket"
DEFAULT_URL = f"ws://127.0.0.1:8000{DEFAULT_PATH}"
DEFAULT_API = "http://127.0.0.1:8000/api"


class CommandError(Exception):
    """A failure to report as one line (no traceback) with an exit code: 1 by default (the
    server could not be reached, or refused)."""

    exit_code = 1


class UsageError(CommandError):
    """A mistake in how the command was called: exit code 2."""

    exit_code = 2


_ROLE = re.compile(r":[a-z]+:`~?([^`]*)`")


def plain(text: str) -> str:
    """``text`` (a docstring) without its markup: what ``--help`` may print."""
    return _ROLE.sub(r"\1", text).replace("``", "").replace("**", "")


def describe(doc: str | None) -> str | None:
    """The first paragraph of a command module's docstring, as ``--help`` prints it."""
    if not doc:
        return None
    # Wrapped here: commands with a raw description formatter print it as it is.
    return textwrap.fill(plain(" ".join(doc.strip().split("\n\n")[0].split())), 78)


def add_server_options(parser: argparse.ArgumentParser) -> None:
    """``--url``, ``--token``, ``--user``, ``--dev``, ``--config`` and ``--retry``: for
    commands that connect over WebSocket."""
    parser.add_argument(
        "--url",
        default=os.environ.get("HUBBUB_URL", DEFAULT_URL),
        metavar="URL",
        help="the server's WebSocket endpoint, or the server (http://host:port) "
        f"(default {DEFAULT_URL}, or HUBBUB_URL)",
    )
    parser.add_argument(
        "--token",
        default=os.environ.get("HUBBUB_TOKEN", ""),
        metavar="JWT",
        help="connection token (default: HUBBUB_TOKEN, else minted for --user)",
    )
    parser.add_argument(
        "--user", default="", metavar="NAME", help="mint a token for NAME (with --dev or --config)"
    )
    parser.add_argument(
        "--dev", action="store_true", help="mint tokens with the development secret"
    )
    parser.add_argument(
        "--config", metavar="FILE", help="TOML configuration (its secret signs --user's token)"
    )
    parser.add_argument(
        "--retry",
        action="store_true",
        help="keep trying when the server cannot be reached (default: fail after one attempt)",
    )


async def connect_client(client: Client, retry: bool, command: str) -> None:
    """Connect ``client``: one attempt (a refused or failed connection is a
    :class:`CommandError` within seconds), or with ``retry`` as many as it takes, saying
    on stderr, once, why the first one failed.

    Raises:
        CommandError: not ``retry``, and the server could not be reached.
        ClientClosed: the server refused the connection for good (a bad token, say).
    """
    try:
        await client.connect(retry=False)
        return
    except (OSError, TimeoutError) as exc:
        if not retry:
            if client.last_error.startswith("HTTP"):
                hint = f"is the path right? hubbub serves {DEFAULT_PATH}"
            else:
                hint = "is hubbub serve running there? (--retry keeps trying)"
            raise CommandError(f"{exc}; {hint}") from None
        print(f"hubbub {command}: {exc}; retrying", file=sys.stderr, flush=True)
    while True:
        # The client's backoff between attempts: 0.1 s doubling up to 10 s.
        with contextlib.suppress(TimeoutError):
            await client.connect()
            return


def websocket_url(url: str) -> str:
    """The WebSocket endpoint from ``--url``: ``ws://`` or ``wss://`` as given; a server's
    ``http(s)://host:port`` becomes ``ws(s)://host:port`` + the default endpoint path.

    Raises:
        UsageError: ``url`` is neither.
    """
    parts = urlsplit(url.strip())
    scheme = {"http": "ws", "https": "wss"}.get(parts.scheme, parts.scheme)
    if scheme not in ("ws", "wss") or not parts.netloc:
        raise UsageError(f"--url {url!r} is not a WebSocket URL, e.g. {DEFAULT_URL}")
    path = parts.path if parts.path not in ("", "/") or parts.scheme == scheme else DEFAULT_PATH
    return urlunsplit(parts._replace(scheme=scheme, path=path))


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
        "--api",
        default=os.environ.get("HUBBUB_API", DEFAULT_API),
        metavar="URL",
        help="the server (http://host:port) or its API's URL "
        f"(default {DEFAULT_API}, or HUBBUB_API)",
    )
    parser.add_argument(
        "--api-key",
        default=os.environ.get("HUBBUB_API_KEY", ""),
        metavar="KEY",
        help="API key (default: HUBBUB_API_KEY, else the key of --config; development mode "
        "needs none)",
    )
    parser.add_argument("--config", metavar="FILE", help="TOML configuration (for its API key)")


def api_url(url: str) -> str:
    """The API's URL from ``--api``: a server's base URL (``http://host:port``) gets the
    API's default path ``/api``; a URL with a path is taken as it is."""
    parts = urlsplit(url.strip())
    if parts.path in ("", "/"):
        return urlunsplit(parts._replace(path="/api"))
    return url.strip().rstrip("/")


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
    api = api_url(args.api)
    request = urllib.request.Request(
        f"{api}/{method}",
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
        raise CommandError(f"{api} answered HTTP {exc.code}: {body}") from None
    except urllib.error.URLError as exc:
        raise CommandError(f"cannot reach {api} ({exc.reason}): is hubbub serve running?") from None
    except (OSError, ValueError) as exc:
        # A reset connection, a timeout, or something that is not the API answering.
        raise CommandError(f"no valid answer from {api}: {exc}") from None
    if not isinstance(reply, dict):
        raise CommandError(f"{api} did not answer like the hubbub API")
    if "error" in reply:
        error = reply["error"]
        raise APIRefused(int(error.get("code", 0)), str(error.get("message", "")))
    return reply.get("result", {})
