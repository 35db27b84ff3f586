"""A bounded per-connection queue of encoded messages, drained by one writer coroutine.

Messages that queue up while the previous frame is being written leave together, newline-joined,
in one frame: a busy connection costs one socket write per batch, not per message.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

from hubbub.protocol.codes import DisconnectCode, disconnect

SendFrame = Callable[[bytes], Awaitable[None]]
"""Writes one frame to the socket."""

SendClose = Callable[[int, str], Awaitable[None]]
"""Writes the close frame."""


class BoundedQueue:
    """The queue half of a transport that writes through one coroutine of its own: encoded
    messages wait in a list capped at ``max_bytes``; ``close`` records why the connection
    ends and wakes the writer. Implements ``write``, ``close`` and ``closing`` of
    :class:`~hubbub.transports.base.Transport`; subclasses add the writer.

    Args:
        max_bytes: queued bytes above this drop the queue and close with 3008 (slow).
        overhead: bytes the writer adds to each message (a separator, framing), counted
            against ``max_bytes``.

    Attributes:
        on_overflow: called after an overflow closed the connection (the session logs and
            counts it).
    """

    __slots__ = (
        "_close_reason",
        "_overhead",
        "_queue",
        "_size",
        "_wake",
        "max_bytes",
        "on_overflow",
    )

    def __init__(self, max_bytes: int, overhead: int) -> None:
        self.max_bytes = max_bytes
        self._overhead = overhead
        self._queue: list[bytes] = []
        self._size = 0
        self._wake = asyncio.Event()
        self._close_reason: tuple[int, str] | None = None
        self.on_overflow: Callable[[], None] | None = None

    @property
    def closing(self) -> bool:
        return self._close_reason is not None

    @property
    def queued_bytes(self) -> int:
        return self._size

    def write(self, data: bytes) -> None:
        if self._close_reason is not None:
            return
        self._size += len(data) + self._overhead
        if self._size > self.max_bytes:
            # The peer reads slower than we publish: drop its backlog rather than grow without
            # bound; the client reconnects and recovers from history.
            self._queue.clear()
            self._size = 0
            slow = disconnect(DisconnectCode.SLOW)
            self.close(slow.code, slow.reason)
            if self.on_overflow is not None:
                self.on_overflow()
            return
        self._queue.append(data)
        if len(self._queue) == 1:
            self._wake.set()

    def close(self, code: int, reason: str) -> None:
        if self._close_reason is None:
            self._close_reason = (code, reason)
            self._wake.set()

    def new_group(self) -> None:
        """None: the writer sends every connection's messages on its own."""
        return None

    def _drop(self, reason: tuple[int, str]) -> None:
        """The peer is gone: forget what is queued and stop the writer with ``reason``."""
        if self._close_reason is None:
            self._close_reason = reason
        self._queue.clear()
        self._size = 0
        self._wake.set()


class Outbox(BoundedQueue):
    """Queue plus writer: implements :class:`~hubbub.transports.base.Transport`.

    Args:
        send_frame: writes one frame; the writer awaits it, so a slow peer only delays itself.
        send_close: writes the close frame.
        max_bytes: queued bytes above this close the connection with 3008 (slow).
        separator: what joins queued messages in one frame: ``b"\\n"`` for JSON, nothing for
            Protobuf (whose messages carry their own length prefixes); ``None`` sends every
            message in a frame of its own (plain-text protocols).
    """

    __slots__ = ("_send_close", "_send_frame", "_separator")

    def __init__(
        self,
        send_frame: SendFrame,
        send_close: SendClose,
        max_bytes: int,
        separator: bytes | None = b"\n",
    ) -> None:
        super().__init__(max_bytes, overhead=1)
        self._send_frame = send_frame
        self._separator = separator
        self._send_close = send_close

    def abort(self) -> None:
        """The peer is gone: drop everything and stop the writer without a close frame."""
        self._drop((0, ""))

    async def run(self) -> None:
        """Write queued frames until closed; then send the close frame (unless aborted)."""
        while True:
            await self._wake.wait()
            self._wake.clear()
            while self._queue:
                queue, self._queue, self._size = self._queue, [], 0
                if len(queue) == 1:
                    await self._send_frame(queue[0])
                elif self._separator is not None:
                    await self._send_frame(self._separator.join(queue))
                else:
                    for message in queue:
                        await self._send_frame(message)
            if self._close_reason is not None:
                code, reason = self._close_reason
                if code:
                    await self._send_close(code, reason)
                return
