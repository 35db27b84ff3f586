"""``hubbub publish CHANNEL DATA``: publish JSON data through the server HTTP API.

Prints the API's result (the stream position when the channel keeps history).
"""

from __future__ import annotations

import argparse
import json

from hubbub.commands.common import UsageError, add_api_options, call_api, describe
from hubbub.config import Settings


def add_parser(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = commands.add_parser(
        "publish",
        help="publish data to a channel (HTTP API)",
        description=describe(__doc__),
    )
    parser.add_argument("channel", metavar="CHANNEL")
    parser.add_argument("data", metavar="DATA", help='JSON, e.g. \'{"text": "hi"}\' or \'"hi"\'')
    add_api_options(parser)


def run(args: argparse.Namespace, settings: Settings) -> int:
    try:
        data = json.loads(args.data)
    except json.JSONDecodeError as exc:
        raise UsageError(f"DATA must be JSON ({exc.msg}); quote text as '\"hi\"'") from None
    result = call_api(args, settings, "publish", {"channel": args.channel, "data": data})
    print(json.dumps(result))
    return 0
