"""Listen to a channel with the hubbub client; every publication once and in order, even
across reconnects (a Gap says when the server could not recover some).

Run the server (`make run`), then:  .venv/bin/python examples/client_listen.py news
"""

from __future__ import annotations

import asyncio
import sys

import hubbub.client as hc
from hubbub.auth import mint_connection_token
from hubbub.config import DEV_SECRET


async def main(channel: str) -> None:
    token = mint_connection_token(DEV_SECRET, "listener")  # development mode's public secret
    async with hc.connect("ws://127.0.0.1:8000/connection/websocket", token=token) as client:
        sub = await client.subscribe(channel)
        print(f"listening to {channel!r}; publish with: curl -X POST "
              f"http://127.0.0.1:8000/api/publish -d '{{\"channel\": \"{channel}\", "
              f"\"data\": {{\"text\": \"hi\"}}}}'")  # fmt: skip
        async for item in sub:
            if isinstance(item, hc.Gap):
                print(f"-- gap: publications before offset {item.offset} may be missing")
            else:
                print(f"{item.offset}: {item.data}")


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1] if len(sys.argv) > 1 else "news"))
