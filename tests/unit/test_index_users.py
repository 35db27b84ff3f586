"""Connections by user: a user's only connection is held without a dict of its own."""

from __future__ import annotations

from collections import Counter
from typing import Any

from tests.unit.test_index import FakeSession

from hubbub.clock import FakeClock
from hubbub.engines.memory import MemoryBroker
from hubbub.index import LocalIndex


def fresh() -> LocalIndex:
    return LocalIndex(MemoryBroker(clock=FakeClock()), Counter())


def test_connections_of_one_user_come_and_go_in_any_order() -> None:
    index = fresh()
    a, b, c = (FakeSession(f"c{i}", "ann") for i in range(3))
    sessions: list[Any] = [a, b, c]
    index.register(a)
    assert index.user_connections("ann") == 1 and index.targets("ann") == [a]
    assert index.users["ann"] is a  # no dict for a single connection
    index.register(a)  # registered again: still one
    assert index.user_connections("ann") == 1
    index.register(b)
    index.register(c)
    assert index.user_connections("ann") == 3
    assert index.targets("ann") == sessions
    assert index.targets("ann", "c1") == [b]
    index.unregister(b)
    assert index.targets("ann") == [a, c]
    index.unregister(a)
    assert index.users["ann"] is c and index.targets("ann") == [c]
    index.unregister(a)  # gone already: nothing changes
    assert index.user_connections("ann") == 1
    index.unregister(c)
    assert "ann" not in index.users
    assert index.user_connections("ann") == 0 and index.targets("ann") == []


def test_another_users_connection_is_not_removed() -> None:
    index = fresh()
    ann, bo = FakeSession("c1", "ann"), FakeSession("c2", "bo")
    index.register(ann)
    index.register(bo)
    index.unregister(FakeSession("c1", "bo"))  # type: ignore[arg-type]
    assert index.targets("bo") == [bo] and index.targets("ann") == [ann]
