"""The transport seam: how a session hands bytes to a connection.

A transport owns one client connection. The session writes encoded messages to it and asks it
to close; the transport batches queued messages into frames and does the I/O. ``write`` and
``close`` never block and never await a peer, so fan-out can call them for thousands of
connections in one loop.
"""

from __future__ import annotations

from typing import Protocol


class Transport(Protocol):
    """One client connection, as a session sees it."""

    @property
    def closing(self) -> bool:
        """True once ``close`` was called (or the peer went away): writes are dropped."""
        ...

    def write(self, data: bytes) -> None:
        """Queue one encoded message. Messages queued together may share one frame.

        When the queued bytes exceed the connection's limit, the queue is dropped and the
        connection closed with 3008 (slow); other connections are not affected.
        """
        ...

    def close(self, code: int, reason: str) -> None:
        """Send what is queued, then close with ``code`` and ``reason``. Idempotent."""
        ...
