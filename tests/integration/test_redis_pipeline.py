"""The Redis engine's pipelines: the commands of one loop turn travel together, each caller
gets its own answer, and a lost script or an unreachable Redis is handled as for one call."""

from __future__ import annotations

import asyncio
import hashlib
import socket
import uuid
from collections.abc import AsyncIterator

import msgspec
import pytest
import redis.asyncio as aioredis

from hubbub.engines.base import HistoryFilter, PublishOptions
from hubbub.engines.redis_batch import Batcher
from hubbub.engines.redis_broker import RedisBroker
from hubbub.protocol.codes import ProtocolError
from hubbub.protocol.messages import Publication

HISTORY = PublishOptions(history_size=100, history_ttl=60, history_meta_ttl=3600)


@pytest.fixture
async def broker(redis_url: str) -> AsyncIterator[RedisBroker]:
    # A prefix of its own: the session's Redis is shared by every test.
    engine = RedisBroker(redis_url, prefix=f"t{uuid.uuid4().hex[:8]}")
    await engine.start()
    yield engine
    await engine.close()


def _pub(n: int) -> Publication:
    return Publication(msgspec.Raw(b'{"n":%d}' % n))


async def test_publications_of_one_turn_share_a_pipeline_in_order(broker: RedisBroker) -> None:
    results = await asyncio.gather(*(broker.publish("room", _pub(n), HISTORY) for n in range(50)))
    assert [r.position.offset for r in results] == list(range(1, 51))
    history = await broker.history("room", HistoryFilter(limit=-1), HISTORY)
    assert [bytes(p.data) for p in history.publications] == [bytes(_pub(n).data) for n in range(50)]


async def test_an_error_reaches_only_its_caller(redis_url: str) -> None:
    client = aioredis.Redis.from_url(redis_url)
    batch = Batcher(client)
    key = f"t{uuid.uuid4().hex}"
    try:
        first = batch.command("SET", key, "text")
        wrong = batch.command("INCR", key)  # not an integer
        last = batch.command("GET", key)
        assert await first in (True, b"OK")
        with pytest.raises(aioredis.ResponseError):
            await wrong
        assert await last == b"text"
    finally:
        await batch.close()
        await client.delete(key)
        await client.aclose()


async def test_a_script_runs_before_the_commands_queued_after_it(redis_url: str) -> None:
    # A script Redis never saw (its source is new), then a read of what it writes, in one
    # turn: the read finds the write, as if each were awaited in turn.
    client = aioredis.Redis.from_url(redis_url)
    batch = Batcher(client)
    key = f"t{uuid.uuid4().hex}"
    source = f"-- {key}\nreturn redis.call('SET', KEYS[1], ARGV[1])"
    sha = hashlib.sha1(source.encode()).hexdigest()
    try:
        for value in ("first", "second"):  # then known to be loaded: EVALSHA alone
            wrote = batch.script(sha, source, [key], [value])
            read = batch.command("GET", key)
            assert await wrote == b"OK"
            assert await read == value.encode()
        await client.script_flush()  # lost between two pipelines: loaded and run again
        assert await batch.script(sha, source, [key], ["third"]) == b"OK"
        assert await client.get(key) == b"third"
    finally:
        await batch.close()
        await client.delete(key)
        await client.aclose()


async def test_a_lost_script_is_loaded_again(broker: RedisBroker) -> None:
    await broker.publish("again", _pub(1), HISTORY)
    await broker.redis.script_flush()  # as after a restart
    results = await asyncio.gather(*(broker.publish("again", _pub(n), HISTORY) for n in (2, 3)))
    assert [r.position.offset for r in results] == [2, 3]


async def test_an_unreachable_redis_fails_every_caller_with_the_temporary_error() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]  # nothing listens there once closed
    client = aioredis.Redis.from_url(f"redis://127.0.0.1:{port}/0", socket_connect_timeout=1)
    batch = Batcher(client)
    try:
        futures = [batch.command("PUBLISH", "x", str(n)) for n in range(3)]
        for future in futures:
            with pytest.raises(ProtocolError) as raised:
                await future
            assert raised.value.code == 100 and raised.value.temporary
    finally:
        await batch.close()
        await client.aclose()
