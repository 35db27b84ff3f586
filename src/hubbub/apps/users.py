"""Who has connected: users are recorded in the store off the connect path, in batches.

A connect that waited for its own database write would pay a round trip to the store (a
thread hop and a commit for SQLite) before its reply, and thousands of connects would each
commit on their own. Instead the connect notes the user and goes on; one writer records
everything noted since its last write in one statement, so under a burst of connects the
batches grow and the writes stay few.
"""

from __future__ import annotations

import asyncio
import logging

from hubbub.node import Node
from hubbub.store import Store, StoreError

log = logging.getLogger("hubbub.users")


class UserRecorder:
    """Records users seen connecting (``touch_users``), a batch at a time.

    Args:
        node: the node (its clock, and its tasks for the writer).
        store: where users are recorded.
    """

    def __init__(self, node: Node, store: Store) -> None:
        self.node = node
        self.store = store
        self._noted: dict[str, float] = {}
        self._writer: asyncio.Task[None] | None = None

    def note(self, user: str) -> None:
        """``user`` connected now; recorded with the next batch."""
        self._noted[user] = self.node.clock.time()
        if self._writer is None:
            self._writer = self.node.spawn_task(self._write())

    async def settled(self) -> None:
        """Return once every user noted so far is recorded (or failed to be, logged)."""
        while self._writer is not None:
            await asyncio.shield(self._writer)

    async def _write(self) -> None:
        try:
            while self._noted:
                batch, self._noted = self._noted, {}
                try:
                    await self.store.touch_users(batch)
                except StoreError as exc:
                    log.warning("could not record %d users: %s", len(batch), exc)
        finally:
            self._writer = None
