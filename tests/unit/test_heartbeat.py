"""Pings and pong deadlines, driven by the fake clock alone (no node, no session)."""

from __future__ import annotations

from collections.abc import Callable

from hubbub.clock import Timer
from hubbub.heartbeat import RESOLUTION, Heartbeat, wheel_for
from hubbub.testing import FakeClock


class Peer:
    """Counts the pings a heartbeat sends and whether it closed for want of a pong."""

    def __init__(self) -> None:
        self.pings = 0
        self.closed = False
        self.writable = True

    def send_ping(self) -> bool:
        if not self.writable:
            return False
        self.pings += 1
        return True

    def pong_missed(self) -> None:
        self.closed = True


def started(interval: float = 25, pong_timeout: float = 8) -> tuple[FakeClock, Peer, Heartbeat]:
    clock, peer = FakeClock(), Peer()
    heartbeat = Heartbeat(clock, interval=interval, pong_timeout=pong_timeout, peer=peer)
    heartbeat.start()
    return clock, peer, heartbeat


def until_ping(clock: FakeClock, peer: Peer, limit: float) -> float:
    """Advance in 0.1 s steps until the next ping; the time it took."""
    # Steps are counted as integers: adding 0.1 two hundred times drifts past 25.1.
    pings, steps = peer.pings, 0
    while peer.pings == pings:
        assert steps / 10 < limit, f"no ping within {limit} s"
        clock.advance(0.1)
        steps += 1
    return steps / 10


def test_first_ping_within_the_interval_then_every_interval() -> None:
    clock, peer, heartbeat = started()
    assert 12.4 <= until_ping(clock, peer, 25) <= 25.1
    heartbeat.pong()
    assert 24.8 <= until_ping(clock, peer, 26) <= 25.1
    assert not peer.closed


def test_no_pong_closes_after_the_timeout() -> None:
    clock, peer, heartbeat = started()
    until_ping(clock, peer, 25)
    assert heartbeat.awaiting_pong
    clock.advance(7.8)
    assert not peer.closed
    clock.advance(0.3)
    assert peer.closed


def test_a_pong_in_time_keeps_the_connection() -> None:
    clock, peer, heartbeat = started()
    until_ping(clock, peer, 25)
    clock.advance(7)
    heartbeat.pong()
    assert not heartbeat.awaiting_pong
    clock.advance(10)
    assert not peer.closed


def test_a_stray_pong_is_tolerated() -> None:
    clock, peer, heartbeat = started()
    heartbeat.pong()  # before any ping
    until_ping(clock, peer, 25)
    heartbeat.pong()
    heartbeat.pong()  # one more than pings
    clock.advance(20)
    assert not peer.closed


def test_without_pong_timeout_only_pings() -> None:
    clock, peer, heartbeat = started(pong_timeout=0)
    until_ping(clock, peer, 25)
    assert not heartbeat.awaiting_pong
    clock.advance(100)
    assert peer.pings >= 4 and not peer.closed


def test_a_late_timer_looks_again_once() -> None:
    clock, peer, heartbeat = started()
    until_ping(clock, peer, 25)
    # The loop stalls past the deadline by more than a quarter of the timeout: the pong may
    # be unread, so the heartbeat looks again a second later.
    clock.stall(12)
    clock.advance(0)
    assert not peer.closed
    heartbeat.pong()
    clock.advance(1.5)
    assert not peer.closed
    # A silent client still closes, one second after the late look.
    until_ping(clock, peer, 25)
    clock.stall(12)
    clock.advance(0)
    assert not peer.closed
    clock.advance(0.9)
    assert not peer.closed
    clock.advance(0.2)
    assert peer.closed


def test_a_loop_that_stays_late_does_not_postpone_twice() -> None:
    clock, peer, _ = started()
    until_ping(clock, peer, 25)
    clock.stall(12)
    clock.advance(0)
    assert not peer.closed
    clock.stall(5)
    clock.advance(0)
    assert peer.closed


def test_slightly_late_timer_closes() -> None:
    clock, peer, _ = started()
    until_ping(clock, peer, 25)
    clock.stall(9)  # one second late: within a quarter of the 8 s timeout
    clock.advance(0)
    assert peer.closed


def test_stops_when_the_connection_takes_no_more_pings() -> None:
    clock, peer, _ = started()
    until_ping(clock, peer, 25)
    peer.writable = False
    clock.advance(8.1)  # the outstanding ping still needs its pong
    assert peer.closed
    clock.advance(100)
    assert peer.pings == 1
    assert clock.pending == 0  # the refused ping scheduled no other


def test_stop_cancels_every_timer() -> None:
    clock, peer, heartbeat = started()
    until_ping(clock, peer, 25)
    heartbeat.stop()
    heartbeat.stop()  # idempotent
    clock.advance(100)
    assert peer.pings == 1 and not peer.closed
    assert clock.pending == 0


def test_heartbeats_of_one_clock_share_a_timer_per_slot() -> None:
    clock = FakeClock()
    peers = [Peer() for _ in range(200)]
    beats = [Heartbeat(clock, interval=1.0, pong_timeout=0, peer=p) for p in peers]
    for beat in beats:
        beat.start()
    # 200 first pings spread over half a second: at most one timer per 0.1 s slot.
    assert clock.pending <= 0.5 / RESOLUTION + 1
    clock.advance(1.0 + RESOLUTION)
    assert all(p.pings == 1 for p in peers)
    clock.advance(1.0)
    assert all(p.pings == 2 for p in peers)
    for beat in beats:
        beat.stop()
    assert clock.pending == 0


class Stopper(Peer):
    """A peer whose ping stops another heartbeat (as a close in one callback may)."""

    def __init__(self) -> None:
        super().__init__()
        self.other: Heartbeat | None = None

    def send_ping(self) -> bool:
        if self.other is not None:
            self.other.stop()
        return super().send_ping()


def test_a_heartbeat_stopped_by_an_earlier_ping_of_its_slot_sends_nothing() -> None:
    clock = FakeClock()
    second, stopper = Peer(), Stopper()
    later = Heartbeat(clock, interval=1.0, pong_timeout=0, peer=second)
    first = Heartbeat(clock, interval=1.0, pong_timeout=0, peer=stopper)
    stopper.other = later
    # Both in one slot, the first one first.
    first._ping_slot = wheel_for(clock).add(clock, 0.5, first)
    later._ping_slot = wheel_for(clock).add(clock, 0.5, later)
    clock.advance(0.6)
    assert stopper.pings == 1
    assert second.pings == 0
    first.stop()
    assert clock.pending == 0


class SlottedClock:
    """A clock that cannot be weakly referenced: its heartbeats get wheels of their own."""

    __slots__ = ("inner",)

    def __init__(self) -> None:
        self.inner = FakeClock()

    def time(self) -> float:
        return self.inner.time()

    def monotonic(self) -> float:
        return self.inner.monotonic()

    def call_later(self, delay: float, callback: Callable[[], None]) -> Timer:
        return self.inner.call_later(delay, callback)


def test_a_clock_without_weak_references_still_pings() -> None:
    clock, peer = SlottedClock(), Peer()
    heartbeat = Heartbeat(clock, interval=1.0, pong_timeout=0, peer=peer)
    heartbeat.start()
    clock.inner.advance(1.0 + RESOLUTION)
    assert peer.pings == 1
    heartbeat.stop()
    assert clock.inner.pending == 0
