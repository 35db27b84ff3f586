"""Details where hubbub answers as Centrifugo v6 does (docs/protocol.md): RPC without a
handler (108), short HMAC keys (taken with a start-up warning, or refused on request), and
subscription types other than streams (108 for shared-poll, 103 for maps), in JSON and
Protobuf over real sockets."""

from __future__ import annotations

import asyncio
import json
import logging
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import websockets

import hubbub.client as hc
from hubbub.auth import mint_connection_token
from hubbub.protocol import client_pb2 as pb
from tests.conftest import SECRET, UNIT, RunningServer, suite_settings
from tests.integration.test_bad_input import connect_ws, replies
from tests.integration.test_node_client import _run as run_node
from tests.integration.test_protobuf import frame, raw_protobuf_ws
from tests.integration.test_protobuf import replies as pb_replies

WAIT = 5 * UNIT
SHORT_KEY = "sixteen-byte-key"

# What a client sees over the wire: on both WebSocket transports (tests/conftest.py::transport).
pytestmark = pytest.mark.usefixtures("transport")


# ---------------------------------------------------------------------------------------------
# RPC without a handler


async def test_rpc_without_any_handler_is_108(start_server: Callable[..., Any]) -> None:
    # No application registers RPC methods: RPC is off, as in Centrifugo's default config.
    server: RunningServer = await start_server(
        suite_settings(chat={"enabled": False}, notifications={"enabled": False})
    )
    assert not server.node.rpc_handlers
    async with hc.connect(server.url, token=mint_connection_token(SECRET, "alice")) as client:
        with pytest.raises(hc.ReplyError) as exc_info:
            await client.rpc("anything")
        assert (exc_info.value.code, exc_info.value.message) == (108, "not available")
        # The connection stays usable.
        assert await client.presence_stats("chat:x") == (0, 0)


async def test_rpc_unknown_method_beside_handlers_is_104(server: RunningServer) -> None:
    assert server.node.rpc_handlers  # the chat's methods
    async with hc.connect(server.url, token=mint_connection_token(SECRET, "alice")) as client:
        with pytest.raises(hc.ReplyError) as exc_info:
            await client.rpc("nope")
        assert exc_info.value.code == 104


# ---------------------------------------------------------------------------------------------
# Short HMAC keys


def _warnings_about_the_key(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [
        r
        for r in caplog.records
        if r.levelno == logging.WARNING and "token.hmac_secret_key" in r.getMessage()
    ]


async def test_short_hmac_key_is_taken_with_one_warning(
    start_server: Callable[..., Any], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="hubbub")
    server: RunningServer = await start_server(suite_settings(token={"hmac_secret_key": SHORT_KEY}))
    for user in ("alice", "bob"):
        async with hc.connect(server.url, token=mint_connection_token(SHORT_KEY, user)) as client:
            assert client.client_id
            await client.subscribe("news")
    # A token signed with another key is still refused.
    wrong = mint_connection_token(SECRET, "mallory")
    ws = await websockets.connect(server.url, open_timeout=WAIT)
    await ws.send(json.dumps({"id": 1, "connect": {"token": wrong}}))
    with pytest.raises(websockets.ConnectionClosed) as closed:
        await asyncio.wait_for(ws.recv(), WAIT)
    assert closed.value.rcvd is not None and closed.value.rcvd.code == 3500
    (warning,) = _warnings_about_the_key(caplog)  # once, at start-up, not per connection
    message = warning.getMessage()
    assert "16 bytes" in message and "require_strong_keys" in message
    assert SHORT_KEY not in message  # the key itself is never logged


async def test_long_key_and_development_mode_do_not_warn(
    start_server: Callable[..., Any], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="hubbub")
    await start_server(suite_settings())
    await start_server(suite_settings(development=True, token={"hmac_secret_key": SHORT_KEY}))
    assert _warnings_about_the_key(caplog) == []


@pytest.mark.parametrize("transport", ["native"])  # a start-up refusal: no wire involved
def test_require_strong_keys_refuses_a_short_key(tmp_path: Path) -> None:
    config = tmp_path / "hubbub.toml"
    config.write_text(
        f'port = 0\n[token]\nhmac_secret_key = "{SHORT_KEY}"\nrequire_strong_keys = true\n'
    )
    result = subprocess.run(
        [sys.executable, "-m", "hubbub", "serve", "--config", str(config)],
        capture_output=True,
        text=True,
        timeout=30 * UNIT,
    )
    assert result.returncode == 1
    assert "hmac_secret_key" in result.stderr and "require_strong_keys" in result.stderr
    assert "Traceback" not in result.stderr and SHORT_KEY not in result.stderr


# ---------------------------------------------------------------------------------------------
# Subscription types (0 stream, 1 map, 2 map_clients, 3 map_users, 4 shared_poll)

TYPE_CASES = [
    # (type, channel, expected error code or None for a stream subscription)
    (4, "news", 108),
    (4, "nope:x", 108),  # shared-poll is refused before any channel check
    (1, "news", 103),
    (2, "chat:room", 103),
    (3, "chat:room", 103),
    (1, "nope:x", 102),  # map types: the namespace is checked first...
    (1, "x" * 256, 107),  # ...after the channel name
    (5, "news", None),  # unknown values: a stream subscription
]


@pytest.mark.parametrize(("sub_type", "channel", "code"), TYPE_CASES)
async def test_subscription_type_json(
    server: RunningServer, sub_type: int, channel: str, code: int | None
) -> None:
    ws = await connect_ws(server)
    await ws.send(json.dumps({"id": 2, "subscribe": {"channel": channel, "type": sub_type}}))
    (reply,) = await replies(ws, 1)
    if code is None:
        assert "subscribe" in reply and reply["subscribe"]["recoverable"]
    else:
        assert reply["error"]["code"] == code
    # The connection stays, and a stream subscription still works.
    await ws.send(json.dumps({"id": 3, "subscribe": {"channel": "live:ok"}}))
    assert await replies(ws, 1) == [{"id": 3, "subscribe": {}}]
    await ws.close()


@pytest.mark.parametrize(("sub_type", "channel", "code"), TYPE_CASES)
async def test_subscription_type_protobuf(
    server: RunningServer, sub_type: int, channel: str, code: int | None
) -> None:
    ws = await raw_protobuf_ws(server)
    connect_cmd = pb.Command(id=1)
    connect_cmd.connect.token = mint_connection_token(SECRET, "probe")
    sub_cmd = pb.Command(id=2)
    sub_cmd.subscribe.channel = channel
    sub_cmd.subscribe.type = sub_type
    await ws.send(frame(connect_cmd, sub_cmd))
    got: list[pb.Reply] = []
    while len(got) < 2:
        data = await asyncio.wait_for(ws.recv(), WAIT)
        assert isinstance(data, bytes)
        got.extend(pb_replies(data))
    assert got[0].connect.client
    reply = got[1]
    assert reply.id == 2
    if code is None:
        assert not reply.HasField("error") and reply.subscribe.recoverable
    else:
        assert reply.error.code == code
    await ws.close()


@pytest.mark.js
@pytest.mark.parametrize("wire_format", ["json", "protobuf"])
async def test_the_npm_client_is_told_which_types_are_served(
    server: RunningServer, wire_format: str
) -> None:
    # centrifuge-js ends a subscription refused with a non-temporary error (no retry).
    token = mint_connection_token(SECRET, "nodeuser")
    events = await run_node("sub_types.mjs", server.url, token, "news", wire_format)
    ended = {e["kind"]: (e["event"], e.get("code")) for e in events if e["event"] != "error"}
    assert ended == {
        "shared_poll": ("unsubscribed", 108),
        "map": ("unsubscribed", 103),
        "stream": ("subscribed", None),
    }
