"""The NATS engine beyond the conformance suite: subjects, ordering, and several nodes on one
real nats-server (the suite's ``nats_url``) with history in Redis or in each node's memory."""

from __future__ import annotations

import asyncio
import re
import uuid
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest

from hubbub.clock import SystemClock
from hubbub.config import Settings, load_settings
from hubbub.engines.base import HistoryFilter, PublishOptions, StreamPosition
from hubbub.engines.nats import NatsBroker, nats_engine
from hubbub.engines.nats_codec import (
    channel_subject,
    pack_join_leave,
    pack_pub,
    subject_channel,
    unpack,
)
from hubbub.engines.nats_order import Reorder
from hubbub.engines.redis import RedisBroker
from hubbub.protocol.messages import ClientInfo, Publication, raw
from tests.conftest import UNIT
from tests.engines.test_conformance import Recorder

HISTORY = PublishOptions(history_size=100, history_ttl=60)


def pub(value: object) -> Publication:
    return Publication(data=raw(value))


# ---------------------------------------------------------------------------------------------
# Subjects and messages (no server)


@pytest.mark.parametrize(
    "channel", ["news", "chat:room#alice,bob", "a.b", "with space", "*", ">", "", "é$", "x" * 255]
)
def test_every_channel_has_a_valid_subject_and_comes_back(channel: str) -> None:
    subject = channel_subject("hb", channel)
    tokens = subject.split(".")
    assert len(tokens) == 3 and all(tokens) and not any(c in subject for c in " \t*>")
    assert subject_channel("hb", subject) == channel


def test_foreign_subjects_are_not_channels() -> None:
    assert subject_channel("hb", "other.c.news") is None
    assert subject_channel("hb", "hb.x.zz") is None
    assert subject_channel("hb", "hb.control") is None


def test_messages_round_trip() -> None:
    p = Publication(data=raw({"n": 1}), info=ClientInfo(user="u", client="c"), tags={"k": "v"})
    got = unpack(pack_pub("node1", p, StreamPosition(7, "ep"), HISTORY))
    assert (got.kind, got.origin, got.position) == (b"p", "node1", StreamPosition(7, "ep"))
    assert got.pub is not None and got.pub.offset == 7 and got.pub.tags == {"k": "v"}
    assert got.opts.history_size == 100 and got.opts.history_ttl == 60
    info = ClientInfo(user="u", client="c")
    left = unpack(pack_join_leave(b"l", "node2", info))
    assert (left.kind, left.origin, left.info) == (b"l", "node2", info)
    for bad in (b"", b"z123", b"p\x00\x01", b"j"):
        with pytest.raises(ValueError):
            unpack(bad)


# ---------------------------------------------------------------------------------------------
# Ordering (the event loop's timers, no server)


def _reorder(window: float) -> tuple[Reorder, list[int], list[str]]:
    seen: list[int] = []
    counted: list[str] = []
    reorder = Reorder(lambda _c, _p, pos: seen.append(pos.offset), window, counted.append)
    return reorder, seen, counted


def _push(reorder: Reorder, *offsets: int, epoch: str = "e") -> None:
    for offset in offsets:
        reorder.push("ch", pub(offset), StreamPosition(offset, epoch))


async def test_reorder_hands_on_in_offset_order() -> None:
    reorder, seen, counted = _reorder(10.0)
    _push(reorder, 1, 3, 4, 2, 5)
    assert seen == [1, 2, 3, 4, 5] and counted.count("held") == 2
    reorder.forget("ch")


async def test_reorder_gives_up_after_the_window_and_drops_the_late_one() -> None:
    reorder, seen, counted = _reorder(0.05 * UNIT)
    _push(reorder, 1, 3)
    assert seen == [1]
    await asyncio.sleep(0.2 * UNIT)
    assert seen == [1, 3] and "gave_up" in counted  # the node sees the gap: recovery
    _push(reorder, 2)  # late: its subscribers were told of the gap already
    assert seen == [1, 3] and "late_dropped" in counted
    _push(reorder, 4)
    assert seen == [1, 3, 4]


async def test_reorder_hands_on_a_stream_that_went_back() -> None:
    reorder, seen, _ = _reorder(10.0)
    _push(reorder, 100, 101, 20, 21)  # Redis back from an older snapshot, same epoch
    assert seen == [100, 101, 20, 21]  # the node judges 20 and renews the epoch


async def test_reorder_starts_afresh_on_a_new_epoch_and_after_a_reset() -> None:
    reorder, seen, _ = _reorder(10.0)
    _push(reorder, 5, 7)
    _push(reorder, 1, epoch="new")  # hands on what was held, then the new stream
    assert seen == [5, 7, 1]
    _push(reorder, 3, epoch="new")
    reorder.reset()
    assert seen == [5, 7, 1, 3]
    _push(reorder, 9, epoch="new")
    assert seen == [5, 7, 1, 3, 9]
    reorder.forget("ch")


async def test_reorder_drops_earlier_offsets_just_after_the_first() -> None:
    reorder, seen, _ = _reorder(10.0)
    _push(reorder, 10, 9, 11)  # 9 was in flight when this node subscribed: dropped
    assert seen == [10, 11]
    _push(reorder, 0)  # no stream: always handed on
    assert seen == [10, 11, 0]


# ---------------------------------------------------------------------------------------------
# Several nodes on one nats-server


async def wait_until(check: Callable[[], bool], what: str) -> None:
    for _ in range(int(300 * UNIT)):
        if check():
            return
        await asyncio.sleep(0.01)
    raise AssertionError(f"timed out waiting for {what}")


@pytest.fixture
async def nodes(
    request: pytest.FixtureRequest, nats_url: str
) -> AsyncIterator[Callable[..., object]]:
    started: list[NatsBroker] = []
    prefix = f"t{uuid.uuid4().hex[:8]}"

    async def make(history: str, count: int) -> list[tuple[NatsBroker, Recorder]]:
        out = []
        for _ in range(count):
            if history == "redis":
                url: str = request.getfixturevalue("redis_url")
                broker = NatsBroker(
                    [nats_url],
                    prefix=prefix,
                    history="redis",
                    streams=RedisBroker(url, prefix=prefix),
                    reorder_window=0.5 * UNIT,
                )
            else:
                broker = NatsBroker([nats_url], prefix=prefix, history=history)  # type: ignore[arg-type]
            recorder = Recorder()
            broker.set_event_handler(recorder)
            await broker.start()
            started.append(broker)
            out.append((broker, recorder))
        return out

    yield make
    for broker in started:
        await broker.close()


class Controls(Recorder):
    def __init__(self) -> None:
        super().__init__()
        self.controls: list[bytes] = []
        self.reconnects: list[list[str]] = []

    def handle_control(self, data: bytes) -> None:
        self.controls.append(data)

    def handle_reconnect(self, channels: list[str]) -> None:
        self.reconnects.append(channels)


@pytest.mark.redis
async def test_concurrent_publishers_are_delivered_in_offset_order(nodes: Any) -> None:
    """Two nodes publish to one channel at once: offsets come from Redis, delivery from NATS,
    yet each node gets every publication once, in offset order."""
    (a, ra), (b, rb) = await nodes("redis", 2)
    await a.subscribe("room")
    await b.subscribe("room")
    # One first, so that each node knows where the stream is (a node that just subscribed
    # drops offsets below the first it sees, when they arrive after it).
    await a.publish("room", pub(0), HISTORY)
    await wait_until(lambda: len(ra.pubs) == len(rb.pubs) == 1, "the first publication")
    # In pairs, one from each node at once: Redis numbers each pair in the order the two
    # commands reach it, NATS delivers them in the order the two nodes send them on, and the
    # two orders differ for a good share of the pairs (about a quarter to a half here). All at
    # once instead, each node's commands go to Redis in one pipeline and mostly keep apart.
    for i in range(200):
        await asyncio.gather(*(node.publish("room", pub(i), HISTORY) for node in (a, b)))
    for recorder in (ra, rb):
        await wait_until(lambda r=recorder: len(r.pubs) == 401, "401 publications")  # type: ignore[misc]
        assert [pos.offset for _, _, pos in recorder.pubs] == list(range(1, 402))
    assert a.counters["reorder.held"] > 0  # they did arrive out of order
    hist = await b.history("room", HistoryFilter(limit=-1), HISTORY)
    assert len(hist.publications) == 100 and hist.position.offset == 401


async def test_memory_history_each_node_keeps_its_own_stream(nodes: Any) -> None:
    """Memory streams: every node keeps every channel's stream, numbered as it received them;
    a position from one node's stream is another epoch on the other node."""
    (a, ra), (b, rb) = await nodes("memory", 2)
    await b.subscribe("room")
    first = await a.publish("room", pub(1), HISTORY)
    await a.publish("room", pub(2), HISTORY)
    await wait_until(lambda: len(rb.pubs) == 2, "b receives both")
    assert [pos.offset for _, _, pos in rb.pubs] == [1, 2] and ra.pubs == []
    ha = await a.history("room", HistoryFilter(limit=-1), HISTORY)
    hb = await b.history("room", HistoryFilter(limit=-1), HISTORY)
    assert [p.data for p in ha.publications] == [p.data for p in hb.publications]
    assert ha.position.offset == hb.position.offset == 2
    assert ha.position.epoch == first.position.epoch != hb.position.epoch


async def test_control_and_join_leave_between_nodes(nodes: Any) -> None:
    (a, _), (b, _) = await nodes("none", 2)
    ca, cb = Controls(), Controls()
    a.set_event_handler(ca)
    b.set_event_handler(cb)
    await b.subscribe("room")
    await a.publish_control(b"hello")
    info = ClientInfo(user="u", client="c")
    await a.publish_join("room", info)
    await a.publish_leave("room", info)
    result = await a.publish("room", pub(1), PublishOptions())
    await wait_until(lambda: len(cb.pubs) == 1 and cb.leaves != [], "b gets everything")
    assert result.position == StreamPosition(0, "")
    assert b"hello" in cb.controls and cb.joins == [("room", info)]
    with pytest.raises(Exception) as exc_info:
        await a.history("room", HistoryFilter(), HISTORY)
    assert getattr(exc_info.value, "code", None) == 108


async def test_unreachable_nats_fails_start_with_error_100() -> None:
    broker = NatsBroker(["nats://127.0.0.1:1"], connect_timeout=0.5)
    broker.set_event_handler(Recorder())
    with pytest.raises(Exception) as exc_info:
        await broker.start()
    assert getattr(exc_info.value, "code", None) == 100
    assert not broker.healthy
    await broker.close()


def test_the_toml_of_docs_scaling_loads(tmp_path: Path) -> None:
    """The NATS example of docs/scaling.md is a valid configuration of the NATS engine."""
    doc = Path(__file__).resolve().parents[2] / "docs" / "scaling.md"
    blocks = re.findall(r"^```toml\n(.*?)^```", doc.read_text(), re.S | re.M)
    nats = [b for b in blocks if 'engine = "nats"' in b]
    assert nats
    for block in nats:
        path = tmp_path / "hubbub.toml"
        path.write_text(block)
        settings = load_settings(path)
        assert settings.engine == "nats" and settings.nats.history == "redis"
        broker, _ = nats_engine(settings, SystemClock())
        assert isinstance(broker, NatsBroker)


def test_settings_refuse_namespaces_with_history_without_history() -> None:
    with pytest.raises(ValueError, match=r"chat\.enabled = false"):
        Settings(engine="nats", nats={"history": "none", "presence": "memory"})
    settings = Settings(
        engine="nats", nats={"history": "none", "presence": "memory"}, chat={"enabled": False}
    )
    broker, _ = nats_engine(settings, SystemClock())
    assert isinstance(broker, NatsBroker)
