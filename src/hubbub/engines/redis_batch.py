"""Automatic pipelining: the Redis commands issued during one loop turn travel together.

Redis spends far less per command when many arrive in one read, and a round trip per
publication costs this process a task and a socket write each. :class:`Batcher` queues every
command it is given; one sender sends what is queued in one pipeline (``transaction=False``),
then whatever was queued during that round trip, and so on. One pipeline in flight at a time
keeps commands in the order they were issued, as awaiting each command in turn would.

Scripts run by their digest (``EVALSHA``). A script this Redis is not known to have is loaded
at the head of the pipeline that first runs it, so the pipeline runs in order from its first
command: were a script missing when its command's turn came, Redis would answer that command
``NOSCRIPT`` and run the ones after it, and the rerun would come after them (a publication
after a history read issued behind it). That can still happen when Redis loses its scripts
between two pipelines (``SCRIPT FLUSH``; a restart drops the connection, which fails the
pipeline instead): the missing ones are loaded and rerun then, and every script is loaded
again ahead of its next use.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import TYPE_CHECKING, Any

from hubbub.engines.base import engine_unavailable
from hubbub.engines.redis_client import REDIS_ERRORS, NoScriptError, log

if TYPE_CHECKING:
    import redis.asyncio as aioredis

MAX_BATCH = 1000
"""Most commands in one pipeline: a burst is sent in several, so no reply waits on a huge one."""

_Entry = tuple[tuple[Any, ...], "asyncio.Future[Any]", "str | None"]
"""A queued command: its arguments, its caller's future, the script source for EVALSHA."""


class Batcher:
    """Sends commands to ``redis`` in pipelines, each caller getting its own result.

    A command's future holds its reply, or the error Redis answered to it (that caller's
    only), or the engine's temporary error (:func:`~.base.engine_unavailable`) when Redis
    could not be reached: every command of that pipeline gets it, as each would have alone.
    """

    def __init__(self, redis: aioredis.Redis, max_batch: int = MAX_BATCH) -> None:
        self._redis = redis
        self._max = max_batch
        self._queue: list[_Entry] = []
        self._sender: asyncio.Task[None] | None = None
        # The digests of the scripts this Redis has, as far as this batcher knows.
        self._loaded: set[str] = set()

    def command(self, *args: Any) -> asyncio.Future[Any]:
        """Queue one command (``"PUBLISH", channel, data``); its future holds the reply."""
        return self._add(args, None)

    def script(
        self, sha: str, source: str, keys: list[Any], args: list[Any]
    ) -> asyncio.Future[Any]:
        """Queue a script run by its ``sha``; a Redis that lost the script (a restart) is sent
        ``source`` once, then the run again."""
        return self._add(("EVALSHA", sha, len(keys), *keys, *args), source)

    def _add(self, args: tuple[Any, ...], source: str | None) -> asyncio.Future[Any]:
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Any] = loop.create_future()
        self._queue.append((args, future, source))
        if self._sender is None:
            # Its first step runs after the callbacks already due this turn: the data read
            # from every socket in this turn is queued by then.
            self._sender = loop.create_task(self._send_all())
        return future

    async def close(self) -> None:
        """Stop sending; every queued or in-flight command fails with the temporary error."""
        if self._sender is not None:
            self._sender.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._sender
        self._fail(self._queue)
        self._queue = []

    async def _send_all(self) -> None:
        batch: list[_Entry] = []
        try:
            while self._queue:
                batch, self._queue = self._queue[: self._max], self._queue[self._max :]
                await self._send(batch)
                batch = []
        except asyncio.CancelledError:
            self._fail(batch)
            raise
        finally:
            self._sender = None

    async def _send(self, batch: list[_Entry]) -> None:
        # Scripts not known to be loaded: loaded first, in the same pipeline.
        loads = {
            args[1]: source
            for args, _, source in batch
            if source is not None and args[1] not in self._loaded
        }
        try:
            commands = [("SCRIPT", "LOAD", source) for source in loads.values()]
            commands += [entry[0] for entry in batch]
            replies = (await self._pipeline(commands))[len(loads) :]
            self._loaded.update(loads)
            missing = [i for i, reply in enumerate(replies) if isinstance(reply, NoScriptError)]
            if missing:
                # Redis lost its scripts since the last pipeline: load each one, then rerun
                # those commands (after the ones that ran: see the module's docstring).
                self._loaded.clear()
                sources = {batch[i][0][1]: batch[i][2] for i in missing}
                for sha, source in sources.items():
                    if source is not None:
                        await self._redis.script_load(source)
                        self._loaded.add(sha)
                again = await self._pipeline([batch[i][0] for i in missing])
                for i, reply in zip(missing, again, strict=True):
                    replies[i] = reply
        except REDIS_ERRORS as exc:
            log.warning("Redis call failed: %s", exc)
            self._fail(batch)
            return
        for (_, future, _), reply in zip(batch, replies, strict=True):
            if future.done():  # its caller was cancelled
                continue
            if isinstance(reply, Exception):
                future.set_exception(reply)
            else:
                future.set_result(reply)

    async def _pipeline(self, commands: list[tuple[Any, ...]]) -> list[Any]:
        pipe = self._redis.pipeline(transaction=False)
        for args in commands:
            pipe.execute_command(*args)
        return await pipe.execute(raise_on_error=False)

    @staticmethod
    def _fail(batch: list[_Entry]) -> None:
        for _, future, _ in batch:
            if not future.done():
                future.set_exception(engine_unavailable())
