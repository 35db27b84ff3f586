"""``hubbub notify USER TEXT``: send a notification to users through the server HTTP API.

The notification lands in each recipient's inbox and is pushed live to their personal channel
(``#USER``). Recipients must be known to the server: a user becomes known by connecting once.
``--to`` adds recipients; ``--everyone`` sends to every known user instead. Prints one line:
``notified alice (id 12)`` or ``notified 3 users``.
"""

from __future__ import annotations

import argparse
import json
from typing import Any

from hubbub.commands.common import (
    APIRefused,
    CommandError,
    UsageError,
    add_api_options,
    call_api,
    describe,
)
from hubbub.config import Settings

# The notification service's error code for recipients it has never seen.
_UNKNOWN_USERS = 404


def add_parser(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = commands.add_parser(
        "notify",
        help="send a notification to users (HTTP API)",
        description=describe(__doc__),
        epilog="examples:\n  hubbub notify alice 'Your export is ready' --link /exports/7\n"
        "  hubbub notify alice 'Standup in 5' --to bob --to carol --title Reminder\n"
        "  hubbub notify --everyone 'Maintenance at 22:00'",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("user", metavar="USER", nargs="?", help="recipient (not with --everyone)")
    parser.add_argument("text", metavar="TEXT", help="the notification's body")
    parser.add_argument(
        "--to", action="append", default=[], metavar="USER", help="another recipient (repeatable)"
    )
    parser.add_argument("--everyone", action="store_true", help="every user who has ever connected")
    parser.add_argument("--title", default="", help="a short headline")
    parser.add_argument("--link", default="", help="an http(s) URL or a path starting with /")
    parser.add_argument(
        "--data", metavar="JSON", help="JSON for the application, e.g. '{\"order\": 7}'"
    )
    add_api_options(parser)


def _request(args: argparse.Namespace) -> tuple[dict[str, Any], list[str]]:
    """The ``notify`` parameters and the recipients named (empty for everyone)."""
    users = [u for u in [args.user, *args.to] if u is not None]
    if args.everyone and users:
        raise UsageError("give recipients or --everyone, not both")
    if not args.everyone and not users:
        raise UsageError("give a USER (and --to USER for more), or --everyone")
    if any(not user for user in users):
        raise UsageError("a user name cannot be empty")
    params: dict[str, Any] = {"body": args.text}
    if args.everyone:
        params["everyone"] = True
    elif len(users) == 1:
        params["user"] = users[0]
    else:
        params["users"] = users
    if args.title:
        params["title"] = args.title
    if args.link:
        params["link"] = args.link
    if args.data is not None:
        try:
            params["data"] = json.loads(args.data)
        except json.JSONDecodeError as exc:
            raise UsageError(f"--data must be JSON ({exc.msg})") from None
    return params, users


def run(args: argparse.Namespace, settings: Settings) -> int:
    params, users = _request(args)
    try:
        result = call_api(args, settings, "notify", params)
    except APIRefused as exc:
        if exc.code == _UNKNOWN_USERS:
            # The server's message lists the names ("... unknown users 'bob', 'carol'").
            names = exc.message.partition("unknown users ")[2] or ", ".join(map(repr, users))
            noun = "user" if len(users) == 1 else "users"
            raise CommandError(
                f"unknown {noun} {names}: a user must connect once before they can be notified"
            ) from None
        raise
    notes = result.get("notifications", []) if isinstance(result, dict) else []
    if len(notes) == 1 and not args.everyone:
        print(f"notified {notes[0]['user']} (id {notes[0]['id']})")
    elif not notes:
        print("notified nobody: no user has connected yet")
    else:
        print(f"notified {len(notes)} user{'s' if len(notes) != 1 else ''}")
    return 0
