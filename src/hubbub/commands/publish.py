"""``hubbub publish CHANNEL DATA``: publish JSON data through the server HTTP API.

Prints the API's result (the stream position when the channel keeps history).
"""

from __future__ import annotations

import argparse
import json
import os
import urllib.error
import urllib.request

from hubbub.commands.common import DEFAULT_API, CommandError, UsageError
from hubbub.config import Settings


def add_parser(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = commands.add_parser(
        "publish",
        help="publish data to a channel (HTTP API)",
        description=__doc__.splitlines()[0] if __doc__ else None,
    )
    parser.add_argument("channel", metavar="CHANNEL")
    parser.add_argument("data", metavar="DATA", help='JSON, e.g. \'{"text": "hi"}\' or \'"hi"\'')
    parser.add_argument(
        "--api", default=os.environ.get("HUBBUB_API", DEFAULT_API), help="API base URL"
    )
    parser.add_argument(
        "--api-key", default=os.environ.get("HUBBUB_API_KEY", ""), help="API key (or config)"
    )
    parser.add_argument("--config", metavar="FILE", help="TOML configuration (for its API key)")


def run(args: argparse.Namespace, settings: Settings) -> int:
    try:
        data = json.loads(args.data)
    except json.JSONDecodeError as exc:
        raise UsageError(f"DATA must be JSON ({exc.msg}); quote text as '\"hi\"'") from None
    key = args.api_key or settings.http_api.key
    body = json.dumps({"channel": args.channel, "data": data}).encode()
    request = urllib.request.Request(
        f"{args.api.rstrip('/')}/publish",
        data=body,
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
        raise CommandError(f"{args.api} answered HTTP {exc.code}: {exc.read().decode()}") from None
    except urllib.error.URLError as exc:
        raise CommandError(
            f"cannot reach {args.api}: {exc.reason}; is the server running?"
        ) from None
    if "error" in reply:
        error = reply["error"]
        raise CommandError(f"refused: {error['message']} ({error['code']})")
    print(json.dumps(reply.get("result", {})))
    return 0
