"""Limits: token buckets, command rate per connection, connections per user."""

from __future__ import annotations

from tests.conftest import SECRET, suite_settings
from tests.unit.test_session import ListTransport, send, transport

from hubbub.auth import mint_connection_token
from hubbub.clock import FakeClock
from hubbub.limits import TokenBucket
from hubbub.node import Node
from hubbub.session import Session


def test_token_bucket() -> None:
    clock = FakeClock()
    bucket = TokenBucket(rate=10, burst=3, clock=clock)
    assert [bucket.take() for _ in range(4)] == [True, True, True, False]
    clock.advance(0.1)  # one token back
    assert bucket.take() and not bucket.take()
    clock.advance(10)  # never more than the burst
    assert [bucket.take() for _ in range(4)] == [True, True, True, False]
    assert TokenBucket(rate=0, burst=1, clock=clock).take(1000)


async def connected(node: Node, user: str) -> Session:
    session = Session(node, ListTransport())
    token = mint_connection_token(SECRET, user, now=node.clock.time())
    await send(session, {"id": 1, "connect": {"token": token}})
    return session


async def test_command_flood_gets_111_then_3013() -> None:
    limits = {"command_rate": 10, "command_burst": 5, "rejections_before_disconnect": 4}
    clock = FakeClock()
    node = Node(suite_settings(limits=limits, client={"pong_timeout": 0}), clock=clock)
    session = await connected(node, "flood")  # the connect took one token
    transport(session).take()
    stats = {"presence_stats": {"channel": "chat:x"}}
    await send(session, *({"id": 10 + i, **stats} for i in range(6)))
    replies = transport(session).take()
    assert ["presence_stats" in r for r in replies] == [True] * 4 + [False, False]
    assert replies[-1]["error"] == {
        "code": 111,
        "message": "too many requests",
        "temporary": True,
    }
    clock.advance(1.0)  # the bucket refills: allowed again, and the strikes are forgiven
    await send(session, {"id": 30, **stats})
    assert "presence_stats" in transport(session).take()[0]
    await send(session, *({"id": 40 + i, **stats} for i in range(20)))
    assert transport(session).close_code == 3013


async def test_connections_per_user() -> None:
    node = Node(suite_settings(limits={"connections_per_user": 2}), clock=FakeClock())
    first, second = await connected(node, "dup"), await connected(node, "dup")
    third = await connected(node, "dup")
    assert transport(first).close_code is None and transport(second).close_code is None
    assert transport(third).close_code == 3504
    other = await connected(node, "someone-else")
    assert transport(other).close_code is None
    assert "connect" in transport(other).sent[0]


def test_client_address_trusts_only_configured_proxies() -> None:
    from hubbub.limits import client_address

    trusted = ["10.0.0.0/8", "127.0.0.1"]
    # No trusted proxies configured: the header is ignored.
    assert client_address("127.0.0.1", "1.2.3.4", []) == "127.0.0.1"
    # From a trusted proxy: the rightmost untrusted hop.
    assert client_address("127.0.0.1", "6.6.6.6, 1.2.3.4, 10.1.1.1", trusted) == "1.2.3.4"
    # A client talking directly cannot pretend to be someone else.
    assert client_address("5.5.5.5", "1.2.3.4", trusted) == "5.5.5.5"
    # Garbage in the header is an untrusted hop, counted as such.
    assert client_address("127.0.0.1", "not-an-ip", trusted) == "not-an-ip"
    assert client_address("127.0.0.1", "", trusted) == "127.0.0.1"


def test_trusted_proxies_are_validated() -> None:
    import pytest

    from hubbub.config import ConfigError, load_settings

    with pytest.raises(ConfigError, match="trusted_proxies"):
        load_settings(limits={"trusted_proxies": ["nonsense"]})
