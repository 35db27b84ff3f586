"""Property tests: whatever a client sends, the session answers with documented replies and
close codes, and never lets an exception out."""

from __future__ import annotations

import asyncio
from typing import Any

import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from tests.conftest import SECRET, suite_settings
from tests.unit.test_session import ListTransport

from hubbub.auth import mint_connection_token
from hubbub.clock import FakeClock
from hubbub.node import Node
from hubbub.protocol.codes import DisconnectCode, ErrorCode
from hubbub.session import Session

CHANNELS = st.sampled_from(
    ["news", "chat:a", "small:x", "locked:x", "$locked:x", "#alice", "#bob", "nope:x", "",
     "x" * 300, "dialog:#alice,bob", "bin:raw", "chat:\x00"]
)  # fmt: skip
JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=10),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner),
    max_leaves=6,
)
REQUESTS = st.one_of(
    st.builds(lambda c, t: {"subscribe": {"channel": c, **t}}, CHANNELS,
              st.sampled_from([{}, {"recover": True, "offset": 3, "epoch": "x"}, {"token": "t"}])),
    st.builds(lambda c: {"unsubscribe": {"channel": c}}, CHANNELS),
    st.builds(lambda c, d: {"publish": {"channel": c, "data": d}}, CHANNELS, JSON),
    st.builds(lambda c: {"presence": {"channel": c}}, CHANNELS),
    st.builds(lambda c: {"presence_stats": {"channel": c}}, CHANNELS),
    st.builds(lambda c, n, r: {"history": {"channel": c, "limit": n, "reverse": r}},
              CHANNELS, st.integers(-2, 500), st.booleans()),
    st.builds(lambda m, d: {"rpc": {"method": m, "data": d}}, st.text(max_size=5), JSON),
    st.builds(lambda t: {"refresh": {"token": t}}, st.sampled_from(["", "garbage"])),
    st.builds(lambda c: {"sub_refresh": {"channel": c, "token": "x"}}, CHANNELS),
    st.just({"connect": {}}),
    st.just({"ping": {}}),
    st.just({}),
    JSON,
)  # fmt: skip
COMMANDS = st.builds(
    lambda i, r: {**r, "id": i} if isinstance(r, dict) else r, st.integers(0, 5), REQUESTS
)

ALLOWED_ERRORS = {int(c) for c in ErrorCode}
ALLOWED_CLOSES = {int(c) for c in DisconnectCode}


@pytest.mark.slow
@settings(max_examples=300, deadline=None)
@given(st.lists(st.lists(COMMANDS, min_size=1, max_size=4), min_size=1, max_size=6))
def test_any_command_sequence(frames: list[list[Any]]) -> None:
    async def run() -> None:
        clock = FakeClock()
        node = Node(suite_settings(client={"pong_timeout": 0}), clock=clock)
        session = Session(node, ListTransport())
        token = mint_connection_token(SECRET, "alice", now=clock.time())
        await session.handle_frame(msgspec.json.encode({"id": 1, "connect": {"token": token}}))
        for frame in frames:
            data = b"\n".join(msgspec.json.encode(c) for c in frame)
            await session.handle_frame(data)  # must never raise
        transport = session.transport
        assert isinstance(transport, ListTransport)
        for message in transport.sent:
            if "error" in message:
                assert message["error"]["code"] in ALLOWED_ERRORS, message
        if transport.close_code is not None:
            assert transport.close_code in ALLOWED_CLOSES
        await session.closed()

    asyncio.run(run())
