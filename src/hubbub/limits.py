"""Limits: token buckets on the node's clock, and who a connection really comes from."""

from __future__ import annotations

import ipaddress
from collections.abc import Sequence

from hubbub.clock import Clock


def client_address(peer: str, forwarded_for: str, trusted: Sequence[str]) -> str:
    """The address a connection comes from, for per-address limits and logs.

    ``X-Forwarded-For`` is believed only when the peer is one of the ``trusted`` proxies
    (addresses or networks); then the rightmost address not itself a trusted proxy counts, since
    everything left of it could have been written by the client.
    """
    if not trusted or not forwarded_for:
        return peer
    networks = [ipaddress.ip_network(t, strict=False) for t in trusted]

    def is_trusted(address: str) -> bool:
        try:
            ip = ipaddress.ip_address(address.strip())
        except ValueError:
            return False
        return any(ip in net for net in networks)

    if not is_trusted(peer):
        return peer
    for hop in reversed([h.strip() for h in forwarded_for.split(",") if h.strip()]):
        if not is_trusted(hop):
            return hop
    return peer


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
