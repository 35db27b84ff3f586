"""The transport seam: how a session hands bytes to a connection.

A transport owns one client connection. The session writes encoded messages to it and asks it
to close; the transport batches queued messages into frames and does the I/O. ``write`` and
``close`` never block and never await a peer, so fan-out can call them for thousands of
connections in one loop.
"""

from __future__ import annotations

from typing import Protocol


class Group(Protocol):
    """Connections of one channel and one wire format that take its publications as they
    come: each publication is framed once, and at the next flush every member gets all of the
    group's new publications in one write of the same bytes, with no work per member when it
    is sent. Order per connection is kept: a member's own messages (replies, other pushes)
    leave after the group's publications sent before them, and before those sent after.
    """

    def __len__(self) -> int:
        """How many members."""
        ...

    def send(self, data: bytes) -> None:
        """Queue one encoded publication for every member."""
        ...

    def add(self, key: str, member: Transport) -> None:
        """Make ``member`` (a transport of the kind that made the group) a member under
        ``key``; it gets what is sent from now on."""
        ...

    def discard(self, key: str) -> bool:
        """Remove the member under ``key``, who still gets what was sent before; False if
        there is none."""
        ...


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

    def new_group(self) -> Group | None:
        """A new, empty group that connections of this kind can join, or None when this
        transport writes every message on its own."""
        ...
