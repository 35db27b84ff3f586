"""The pure subscription decisions: the guarantees a subscription gets, whether a recovery is
complete, and whether a stream position continues a subscriber's position."""

from __future__ import annotations

from typing import Any

import pytest

from hubbub.config import ChannelOptions
from hubbub.protocol.messages import EMPTY, Publication
from hubbub.subscription import (
    Flags,
    Verdict,
    judge_publication,
    judge_top,
    recovery_complete,
    subscription_flags,
)

V = Verdict


@pytest.mark.parametrize(
    ("pub_epoch", "pub_offset", "merging", "verdict"),
    [
        ("abc", 11, False, V.CONTINUES),
        ("abc", 11, True, V.CONTINUES),
        ("abc", 0, False, V.CONTINUES),  # no position: a publication without history
        ("abc", 13, False, V.MISSED),
        ("abc", 13, True, V.MISSED),
        # Once live, an offset that does not move forward is a stream that went back
        # (Redis restarted from an older snapshot, a replica behind took over) ...
        ("abc", 10, False, V.BEHIND),
        ("abc", 3, False, V.BEHIND),
        # ... but while merging with the subscribe reply, it was sent with the reply.
        ("abc", 10, True, V.SEEN),
        ("abc", 3, True, V.SEEN),
        # Another epoch is another stream, whatever its offsets (Redis restarted empty).
        ("xyz", 1, False, V.NEW_EPOCH),
        ("xyz", 11, False, V.NEW_EPOCH),
        ("xyz", 11, True, V.NEW_EPOCH),
        ("xyz", 50, False, V.NEW_EPOCH),
    ],
)
def test_judge_publication(pub_epoch: str, pub_offset: int, merging: bool, verdict: V) -> None:
    assert judge_publication("abc", 10, pub_epoch, pub_offset, merging=merging) is verdict


def test_a_subscriber_without_epoch_compares_offsets_only() -> None:
    assert judge_publication("", 0, "abc", 1, merging=False) is V.CONTINUES
    assert judge_publication("", 5, "abc", 5, merging=False) is V.BEHIND


@pytest.mark.parametrize(
    ("top_epoch", "top_offset", "verdict"),
    [
        ("abc", 10, V.CONTINUES),
        ("abc", 12, V.MISSED),
        ("abc", 9, V.BEHIND),
        ("abc", 0, V.BEHIND),
        ("xyz", 10, V.NEW_EPOCH),
        ("xyz", 0, V.NEW_EPOCH),
    ],
)
def test_judge_top(top_epoch: str, top_offset: int, verdict: V) -> None:
    assert judge_top("abc", 10, top_epoch, top_offset) is verdict


def test_only_continuing_and_seen_publications_keep_a_subscriber_live() -> None:
    assert {v for v in V if not v.lost} == {V.CONTINUES, V.SEEN}


# ---------------------------------------------------------------------------------------------
# subscription_flags

HISTORY: dict[str, Any] = {"history_size": 10, "history_ttl": 60}


def flags(opts: dict[str, Any], **asked: bool) -> Flags:
    wants = {
        "server_side": False,
        "wants_recovery": False,
        "wants_positioning": False,
        "wants_join_leave": False,
    }
    wants.update(asked)
    return subscription_flags(ChannelOptions(**opts), **wants)


def test_no_history_no_position_whatever_is_asked() -> None:
    asked = {"wants_recovery": True, "wants_positioning": True, "server_side": True}
    assert flags({"force_positioning": True}, **asked) == Flags(False, False, False)


def test_recovery_when_allowed_and_asked_forced_or_server_side() -> None:
    assert flags({**HISTORY, "allow_recovery": True}, wants_recovery=True) == (True, True, False)
    assert flags({**HISTORY, "allow_recovery": True}) == (False, False, False)
    assert flags({**HISTORY}, wants_recovery=True) == (False, False, False)
    assert flags({**HISTORY, "force_recovery": True}) == (True, True, False)
    assert flags({**HISTORY}, server_side=True) == (True, True, False)


def test_positioning_when_allowed_and_asked_or_forced() -> None:
    allowed = {**HISTORY, "allow_positioning": True}
    assert flags(allowed, wants_positioning=True) == (False, True, False)
    assert flags(allowed) == (False, False, False)
    assert flags({**HISTORY}, wants_positioning=True) == (False, False, False)
    assert flags({**HISTORY, "force_positioning": True}) == (False, True, False)


def test_join_leave_pushes_when_forced_or_asked_with_presence() -> None:
    assert flags({"join_leave": True, "force_push_join_leave": True}).push_join_leave
    assert flags({"join_leave": True, "presence": True}, wants_join_leave=True).push_join_leave
    assert not flags({"join_leave": True}, wants_join_leave=True).push_join_leave
    assert not flags({"join_leave": True, "presence": True}).push_join_leave
    assert not flags({"force_push_join_leave": True, "presence": True}).push_join_leave


# ---------------------------------------------------------------------------------------------
# recovery_complete


def pubs(*offsets: int) -> list[Publication]:
    return [Publication(data=EMPTY, offset=offset) for offset in offsets]


@pytest.mark.parametrize(
    ("offset", "epoch", "history", "recovered"),
    [
        (10, "abc", pubs(11, 12), True),  # exactly what was missed
        (10, "", pubs(11, 12), True),  # a client without epoch matches any
        (12, "abc", pubs(), True),  # at the top already
        (10, "abc", pubs(), False),  # history expired or was removed
        (10, "abc", pubs(12), False),  # a gap at the start: 11 is gone
        (10, "abc", pubs(11), False),  # the limit cut it short of the top
        (10, "xyz", pubs(11, 12), False),  # another stream
        (12, "xyz", pubs(), False),
    ],
)
def test_recovery_complete(
    offset: int, epoch: str, history: list[Publication], recovered: bool
) -> None:
    assert recovery_complete(offset, epoch, 12, "abc", history) is recovered
