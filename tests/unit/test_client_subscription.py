"""The Python client's subscription state, driven without a server: publications pushed right
after a subscribe reply, before the task awaiting the reply applied it, are kept, not lost."""

from __future__ import annotations

import hubbub.client as hc
from hubbub.client.subscription import Subscription, SubState


def queued(sub: Subscription) -> list[int]:
    items = []
    while not sub._queue.empty():
        item = sub._queue.get_nowait()
        assert isinstance(item, hc.Publication), item
        items.append(item.offset)
    return items


def subscribing(client: hc.Client) -> Subscription:
    sub = Subscription(client, "news")
    sub.state = SubState.SUBSCRIBING
    client._subs["news"] = sub
    return sub


async def test_pushes_before_the_reply_is_applied_are_kept() -> None:
    client = hc.Client("ws://127.0.0.1:1/connection/websocket")
    sub = subscribing(client)
    # The reader sees the reply (resolving a future) and then the live pushes, all before the
    # subscribing task runs again.
    for offset in (1, 2):
        client._on_push({"channel": "news", "pub": {"data": {"n": offset}, "offset": offset}})
    sub.on_subscribed({"recoverable": True, "epoch": "e", "offset": 0, "positioned": True})
    assert queued(sub) == [1, 2]


async def test_a_recovery_and_early_pushes_make_one_sequence() -> None:
    client = hc.Client("ws://127.0.0.1:1/connection/websocket")
    sub = subscribing(client)
    sub.recoverable, sub.offset, sub.epoch = True, 3, "e"
    for offset in (5, 6):
        client._on_push({"channel": "news", "pub": {"data": {}, "offset": offset}})
    sub.on_subscribed(
        {
            "recoverable": True,
            "epoch": "e",
            "offset": 4,
            "was_recovering": True,
            "recovered": True,
            "publications": [{"data": {}, "offset": 4}],
        }
    )
    assert queued(sub) == [4, 5, 6]


async def test_early_pushes_of_a_lost_connection_are_dropped() -> None:
    client = hc.Client("ws://127.0.0.1:1/connection/websocket")
    sub = subscribing(client)
    client._on_push({"channel": "news", "pub": {"data": {}, "offset": 9}})
    sub.on_disconnected()  # the reconnect resubscribes with recovery from its own position
    sub.on_subscribed({"recoverable": True, "epoch": "e", "offset": 0, "positioned": True})
    assert queued(sub) == []
