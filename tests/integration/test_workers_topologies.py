"""``hubbub serve --workers 2`` behind one port on a Redis Cluster and on Redis Sentinel: both
workers come up and see each other, and a publication reaches every subscriber, whichever
worker the kernel gave it to."""

from __future__ import annotations

import asyncio
import json
import sys
import uuid
from pathlib import Path
from typing import Any

import pytest
from cent import AsyncClient, InfoRequest, PublishRequest

from tests.conftest import API_KEY, SECRET, UNIT
from tests.integration.test_centrifuge_python import next_item
from tests.integration.test_cluster import connect, free_port

# The fixture is asked for by parameter, which the marking hook of tests/conftest.py misses.
pytestmark = pytest.mark.redis


def _redis_section(kind: str, backend: Any) -> str:
    if kind == "cluster":
        return f"cluster_addresses = {json.dumps(backend.addresses)}\n"
    settings = backend.settings
    lines = [f"sentinel_addresses = {json.dumps(settings['sentinel_addresses'])}"]
    lines += [f'{key} = "{settings[key]}"' for key in settings if key != "sentinel_addresses"]
    return "\n".join(lines) + "\n"


@pytest.mark.parametrize("kind", ["cluster", "sentinel"])
async def test_workers_on_one_port(
    kind: str, request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    backend = request.getfixturevalue("redis_cluster" if kind == "cluster" else "redis_sentinel")
    port = free_port()
    config = tmp_path / "workers.toml"
    config.write_text(
        f'port = {port}\nengine = "redis"\nlog_level = "warning"\n'
        f'[redis]\nprefix = "workers-{uuid.uuid4().hex[:8]}"\n{_redis_section(kind, backend)}'
        f'[token]\nhmac_secret_key = "{SECRET}"\n[http_api]\nkey = "{API_KEY}"\n'
        "[channel.without_namespace]\nallow_subscribe_for_client = true\n"
    )
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "hubbub", "serve", "--config", str(config), "--workers", "2",
        stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    clients = []
    api = AsyncClient(f"http://127.0.0.1:{port}/api", API_KEY)
    try:
        for _ in range(int(300 * UNIT)):
            try:
                if len((await api.info(InfoRequest())).nodes) == 2:
                    break
            except Exception:
                pass
            assert proc.returncode is None, "hubbub serve --workers 2 exited"
            await asyncio.sleep(0.05)
        else:
            raise AssertionError("two workers did not come up and see each other")
        url = f"ws://127.0.0.1:{port}/connection/websocket"
        subscribers = []
        for i in range(8):
            client, events, _ = await connect(url, f"u{i}", "news")
            clients.append(client)
            subscribers.append(events)
        result = await api.publish(PublishRequest(channel="news", data={"on": kind}))
        for events in subscribers:
            ctx = await next_item(events.publications, "publication")
            assert ctx.pub.data == {"on": kind} and ctx.pub.offset == result.offset
    finally:
        for client in clients:
            await client.disconnect()
        await api.close()
        if proc.returncode is None:
            proc.terminate()
        _, err = await asyncio.wait_for(proc.communicate(), 15 * UNIT)
    assert b"Traceback" not in err, err.decode()[-2000:]
