"""The frame budget of a connection: how many frames and bytes it may send, as two token
buckets (``limits.frame_rate``/``frame_burst`` and ``frame_byte_rate``/``frame_byte_burst``).

Control frames count like any other: a flood of pings, pongs or empty continuation frames
costs the server as much per frame as messages do. The buckets are plain floats the connection
keeps in its own slots (two objects per connection would cost more than the numbers), so this
is a pure function over them, charged once per slice read, not per message.
"""

from __future__ import annotations

from hubbub.config import LimitSettings


def charge(
    limits: LimitSettings,
    frame_tokens: float,
    byte_tokens: float,
    elapsed: float,
    frames: int,
    size: int,
) -> tuple[float, float, str]:
    """Refill both buckets for ``elapsed`` seconds and take ``frames`` frames and ``size`` bytes.

    Args:
        limits: the rates and bursts; a rate of 0 turns its bucket off.
        frame_tokens: the frame bucket before (starts full: ``frame_burst``).
        byte_tokens: the byte bucket before (starts full: ``frame_byte_burst``).
        elapsed: seconds since the last charge.
        frames: frames just parsed.
        size: bytes just read.

    Returns:
        The two buckets after, and the name of the limit overdrawn ("frame_rate" first, then
        "frame_byte_rate"), or "" when the connection is within its budget.
    """
    over = ""
    if limits.frame_rate > 0:
        frame_tokens = min(limits.frame_burst, frame_tokens + elapsed * limits.frame_rate) - frames
        if frame_tokens < 0:
            over = "frame_rate"
    if limits.frame_byte_rate > 0:
        byte_tokens = (
            min(limits.frame_byte_burst, byte_tokens + elapsed * limits.frame_byte_rate) - size
        )
        if byte_tokens < 0:
            over = over or "frame_byte_rate"
    return frame_tokens, byte_tokens, over
