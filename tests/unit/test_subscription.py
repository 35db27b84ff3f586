"""The verdict on whether a stream position continues a subscriber's position."""

from __future__ import annotations

import pytest

from hubbub.subscription import Verdict, judge_publication, judge_top

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
