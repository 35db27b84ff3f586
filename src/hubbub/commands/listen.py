"""``hubbub listen CHANNEL…``: print a channel's publications as they arrive.

JSON lines by default (one object per publication, for pipes); ``--pretty`` for people. A
server that cannot be reached is reported in one line within seconds (exit 1), unless
``--retry``: then it is tried until it answers. Once connected the client reconnects and
recovers by itself; a publication the server could not recover is reported as a
``{"gap": …}`` line. Stops with Ctrl-C (exit 0), or after ``--count`` messages.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys

from hubbub.client import Client, ClientClosed, Gap, Publication, ReplyError, Subscription
from hubbub.commands.common import (
    CommandError,
    add_server_options,
    connect_client,
    describe,
    resolve_token,
    websocket_url,
)
from hubbub.config import Settings


def add_parser(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = commands.add_parser(
        "listen",
        help="print publications of channels",
        description=describe(__doc__),
    )
    parser.add_argument("channels", nargs="+", metavar="CHANNEL")
    parser.add_argument(
        "--pretty", action="store_true", help="human-readable lines (default: JSON lines)"
    )
    parser.add_argument(
        "--count",
        type=int,
        default=0,
        metavar="N",
        help="exit after N publications (default 0: run until Ctrl-C)",
    )
    add_server_options(parser)


def _line(item: Publication | Gap, pretty: bool) -> str:
    if isinstance(item, Gap):
        if pretty:
            return f"[{item.channel}] -- publications may be missing before {item.offset}"
        return json.dumps({"gap": {"channel": item.channel, "offset": item.offset}})
    user = item.info.user if item.info else None
    if pretty:
        who = f"{user}: " if user else ""
        return f"[{item.channel} #{item.offset}] {who}{json.dumps(item.data)}"
    record = {"channel": item.channel, "offset": item.offset, "data": item.data}
    if user is not None:
        record["user"] = user
    return json.dumps(record)


async def _listen(args: argparse.Namespace, token: str) -> int:
    client = Client(args.url, token=token)
    await connect_client(client, args.retry, "listen")
    queue: asyncio.Queue[Publication | Gap | BaseException] = asyncio.Queue()

    async def pump(sub: Subscription) -> None:
        try:
            async for item in sub:
                await queue.put(item)
        except ClientClosed as exc:
            await queue.put(exc)

    try:
        subs = [await client.subscribe(channel) for channel in args.channels]
    except ReplyError as exc:
        await client.close()
        raise CommandError(f"cannot subscribe: {exc.message} ({exc.code})") from None
    tasks = [asyncio.create_task(pump(sub)) for sub in subs]
    shown = 0
    try:
        while not args.count or shown < args.count:
            item = await queue.get()
            if isinstance(item, BaseException):
                print(f"hubbub listen: disconnected: {item}", file=sys.stderr)
                return 1
            print(_line(item, args.pretty), flush=True)
            shown += isinstance(item, Publication)
        return 0
    finally:
        for task in tasks:
            task.cancel()
        await client.close()


def run(args: argparse.Namespace, settings: Settings) -> int:
    args.url = websocket_url(args.url)
    token = resolve_token(args, settings)
    try:
        return asyncio.run(_listen(args, token))
    except KeyboardInterrupt:
        return 0
    except ClientClosed as exc:
        raise CommandError(
            f"the server refused the connection: {exc.reason} ({exc.code})"
        ) from None
