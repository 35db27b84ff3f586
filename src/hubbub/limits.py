"""Rate limiting: token buckets on the node's clock."""

from __future__ import annotations

from hubbub.clock import Clock


class TokenBucket:
    """Allows ``rate`` events per second on average, bursts of up to ``burst``.

    Args:
        rate: tokens added per second; 0 disables the limit.
        burst: the bucket's size (and its content at start).
        clock: time source (its monotonic clock).
    """

    __slots__ = ("_clock", "_tokens", "_updated", "burst", "rate")

    def __init__(self, rate: float, burst: float, clock: Clock) -> None:
        self.rate = rate
        self.burst = burst
        self._clock = clock
        self._tokens = burst
        self._updated = clock.monotonic()

    def take(self, tokens: float = 1.0) -> bool:
        """Take ``tokens`` if the bucket holds them; False (and nothing taken) if not."""
        if self.rate <= 0:
            return True
        now = self._clock.monotonic()
        self._tokens = min(self.burst, self._tokens + (now - self._updated) * self.rate)
        self._updated = now
        if self._tokens >= tokens:
            self._tokens -= tokens
            return True
        return False
