"""The Redis broker: publications, joins and leaves between every node on one Redis server.

Live messages travel on PUB/SUB (one connection held by a reader task); the history is a Redis
stream per channel, appended to by the same script that publishes (:mod:`.redis_scripts`).
When the PUB/SUB connection drops, the reader reconnects with backoff, resubscribes every
channel and tells the node, which then reads the streams for what it missed.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
from typing import TYPE_CHECKING, Any

import msgspec

from hubbub.engines.base import (
    BrokerEventHandler,
    HistoryFilter,
    HistoryResult,
    PublishOptions,
    PublishResult,
    StreamPosition,
    engine_unavailable,
)
from hubbub.engines.redis_batch import Batcher

# Raises MissingExtra, naming the redis extra, when the redis package is absent.
from hubbub.engines.redis_client import (
    POOL_SIZE,
    POOL_TIMEOUT,
    REDIS_ERRORS,
    Connector,
    guard,
    log,
    one_server,
    pooled_client,
)
from hubbub.engines.redis_codec import pack_info, pack_publication, unpack_info, unpack_publication
from hubbub.engines.redis_scripts import HISTORY, PUBLISH, RENEW_EPOCH, ms, new_epoch
from hubbub.protocol.codes import ErrorCode, error
from hubbub.protocol.messages import ClientInfo, Publication

if TYPE_CHECKING:
    import redis.asyncio as aioredis
    from redis.asyncio.client import PubSub


class RedisBroker:
    """A :class:`~hubbub.engines.base.Broker` over one Redis server.

    Args:
        url: the Redis URL, e.g. ``redis://127.0.0.1:6379/0``, or the
            :data:`~.redis_client.Connector` of a master found through Sentinel.
        prefix: prefix of every key and PUB/SUB channel, to share a Redis between deployments.
        pool_size: most connections to Redis, the PUB/SUB one included (at least 2).
        pool_timeout: seconds a call waits for a free connection before it fails.
    """

    def __init__(
        self,
        url: str | Connector = "redis://127.0.0.1:6379/0",
        *,
        prefix: str = "hubbub",
        pool_size: int = POOL_SIZE,
        pool_timeout: float = POOL_TIMEOUT,
    ) -> None:
        if pool_size < 2:
            raise ValueError("pool_size must be at least 2: PUB/SUB holds one connection")
        self._url = url
        self._pool = (pool_size, pool_timeout)
        self._prefix = prefix
        self._handler: BrokerEventHandler | None = None
        self._redis: aioredis.Redis | None = None
        self._pubsub: PubSub | None = None
        self._reader: asyncio.Task[None] | None = None
        self._confirming: dict[str, asyncio.Future[None]] = {}
        self._channels: set[str] = set()
        self._healthy = False
        self._publish: Any = None
        self._history: Any = None
        self._renew_epoch: Any = None
        self._batch: Batcher | None = None

    @property
    def healthy(self) -> bool:
        return self._healthy

    def set_event_handler(self, handler: BrokerEventHandler) -> None:
        self._handler = handler

    @property
    def redis(self) -> aioredis.Redis:
        if self._redis is None:
            raise RuntimeError("the Redis broker is not started")
        return self._redis

    def _key(self, kind: str, channel: str) -> str:
        return f"{self._prefix}:{kind}:{{{channel}}}"

    def _pubsub_channel(self, channel: str) -> str:
        return f"{self._prefix}:ch:{channel}"

    @property
    def _control(self) -> str:
        return f"{self._prefix}:control"

    async def start(self) -> None:
        self._redis = pooled_client(self._url, *self._pool)
        self._publish = self._redis.register_script(PUBLISH)
        self._history = self._redis.register_script(HISTORY)
        self._renew_epoch = self._redis.register_script(RENEW_EPOCH)
        await guard(self._redis.ping)
        if one_server(self._redis):
            # One server (or Sentinel's master): publications of one loop turn share a
            # pipeline. A Redis Cluster's pipelines split by slot; it keeps a call each.
            self._batch = Batcher(self._redis)
        self._pubsub = self._redis.pubsub()
        # Subscribing to the control channel opens the PUB/SUB connection before any channel.
        await self._pubsub.subscribe(self._control)
        self._healthy = True
        self._reader = asyncio.create_task(self._read_forever())

    async def close(self) -> None:
        self._healthy = False
        if self._batch is not None:
            await self._batch.close()
            self._batch = None
        if self._reader is not None:
            self._reader.cancel()
            await asyncio.gather(self._reader, return_exceptions=True)
            self._reader = None
        if self._pubsub is not None:
            with contextlib.suppress(*REDIS_ERRORS):
                await self._pubsub.aclose()  # type: ignore[no-untyped-call]
            self._pubsub = None
        if self._redis is not None:
            await self._redis.aclose()
            self._redis = None

    async def _read_forever(self) -> None:
        while True:
            pubsub = self._pubsub
            assert pubsub is not None
            try:
                message = await pubsub.get_message(timeout=1.0)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.warning("Redis PUB/SUB connection lost (%s); reconnecting", exc)
                await self._reconnect()
                continue
            if message is not None:
                self._on_message(message)

    def _on_message(self, message: dict[str, Any]) -> None:
        prefix = f"{self._prefix}:ch:".encode()
        kind = message["type"]
        name: bytes = message["channel"]
        if kind == "subscribe":
            channel = name.decode()[len(prefix) :] if name.startswith(prefix) else ""
            waiter = self._confirming.pop(channel, None)
            if waiter is not None and not waiter.done():
                waiter.set_result(None)
        elif kind == "message":
            if name.startswith(prefix):
                self._dispatch(name[len(prefix) :].decode(), message["data"])
            elif self._handler is not None and name.decode() == self._control:
                self._handler.handle_control(message["data"])

    async def _reconnect(self) -> None:
        """Reconnect PUB/SUB with exponential backoff and jitter, resubscribe every channel,
        then tell the node, which checks the streams for what was missed meanwhile."""
        self._healthy = False
        delay = 0.1
        while True:
            await asyncio.sleep(random.uniform(delay / 2, delay))
            delay = min(delay * 2, 5.0)
            old, self._pubsub = self._pubsub, None
            if old is not None:
                with contextlib.suppress(Exception):
                    await old.aclose()  # type: ignore[no-untyped-call]
            assert self._redis is not None
            pubsub = self._redis.pubsub()
            channels = sorted(self._channels)
            try:
                await pubsub.subscribe(self._control, *map(self._pubsub_channel, channels))
                confirmed = 0
                while confirmed < len(channels) + 1:
                    message = await pubsub.get_message(timeout=2.0)
                    if message is None:
                        raise TimeoutError("no subscribe confirmation")
                    if message["type"] == "subscribe":
                        confirmed += 1
                    else:
                        self._on_message(message)
            except Exception as exc:
                log.info("Redis still unreachable (%s); next try within %.1f s", exc, delay)
                self._pubsub = pubsub
                continue
            self._pubsub = pubsub
            # Pooled connections idle since before the outage may be dead (a restarted Redis
            # closed them): drop them, so the node's check of the streams starts on new ones.
            with contextlib.suppress(Exception):
                await self._redis.connection_pool.disconnect(inuse_connections=False)
            self._healthy = True
            log.warning("Redis PUB/SUB reconnected; %d channels resubscribed", len(channels))
            if self._handler is not None:
                self._handler.handle_reconnect(channels)
            return

    def _dispatch(self, channel: str, data: bytes) -> None:
        handler = self._handler
        if handler is None or not data or channel not in self._channels:
            # Not (or no longer) subscribed: Redis may still deliver what it sent before it
            # processed our UNSUBSCRIBE.
            return
        try:
            tag, body = data[:1], data[1:]
            if tag == b"p":
                # "<offset>:<epoch>:<packed publication>"; epochs are letters only.
                offset_text, epoch_text, packed = body.split(b":", 2)
                offset, epoch = int(offset_text), epoch_text.decode()
                pub = unpack_publication(packed, offset)
                handler.handle_publication(channel, pub, StreamPosition(offset, epoch))
            elif tag == b"j":
                handler.handle_join(channel, unpack_info(body))
            elif tag == b"l":
                handler.handle_leave(channel, unpack_info(body))
        except (msgspec.DecodeError, ValueError):
            log.warning("dropped an undecodable message on %s", channel)

    async def subscribe(self, channel: str) -> None:
        if not self._healthy or self._pubsub is None:
            raise engine_unavailable()
        # Remembered first, so a reconnect that happens meanwhile resubscribes it too.
        self._channels.add(channel)
        waiter = asyncio.get_running_loop().create_future()
        self._confirming[channel] = waiter
        try:
            await guard(lambda: self._pubsub.subscribe(self._pubsub_channel(channel)))  # type: ignore[union-attr]
            # Return once Redis confirmed: from then on no publication of the channel is missed.
            await asyncio.wait_for(waiter, 5.0)
        except BaseException as exc:
            # The node drops the channel from its index on failure: so do we, or a reconnect
            # would resubscribe a channel nobody here wants.
            self._channels.discard(channel)
            if isinstance(exc, TimeoutError):
                raise engine_unavailable() from None
            raise
        finally:
            self._confirming.pop(channel, None)

    async def unsubscribe(self, channel: str) -> None:
        self._channels.discard(channel)
        if self._pubsub is not None and self._healthy:
            with contextlib.suppress(*REDIS_ERRORS):
                await self._pubsub.unsubscribe(self._pubsub_channel(channel))

    async def publish_control(self, data: bytes) -> None:
        if not self._healthy:
            raise engine_unavailable()
        await guard(lambda: self.redis.publish(self._control, data))

    async def publish(self, channel: str, pub: Publication, opts: PublishOptions) -> PublishResult:
        if not self._healthy:
            raise engine_unavailable()  # fail fast: no socket timeout per publish
        keys, args = self._publish_args(channel, pub, opts)
        if self._batch is not None:
            reply = await self._batch.script(self._publish.sha, self._publish.script, keys, args)
        else:
            reply = await guard(lambda: self._publish(keys=keys, args=args))
        return publish_result(reply)

    def publish_soon(
        self, channel: str, pub: Publication, opts: PublishOptions
    ) -> asyncio.Future[Any] | None:
        """:class:`~hubbub.engines.base.QueuedPublisher`: the publication queued for this
        loop turn's pipeline; None on a Redis Cluster (its calls are awaited one by one)."""
        if self._batch is None:
            return None
        if not self._healthy:
            raise engine_unavailable()
        keys, args = self._publish_args(channel, pub, opts)
        return self._batch.script(self._publish.sha, self._publish.script, keys, args)

    def _publish_args(
        self, channel: str, pub: Publication, opts: PublishOptions
    ) -> tuple[list[str], list[Any]]:
        """The keys and arguments of the publish script (:mod:`.redis_scripts`)."""
        keys = [self._key("meta", channel), self._key("stream", channel)]
        if opts.idempotency_key:
            keys.append(self._key(f"idem:{opts.idempotency_key}", channel))
        args = [
            pack_publication(pub),
            opts.history_size,
            ms(opts.history_ttl),
            ms(opts.history_meta_ttl),
            self._pubsub_channel(channel),
            new_epoch(),
            ms(opts.idempotent_result_ttl),
            "1" if opts.use_history else "0",
        ]
        return keys, args

    async def _publish_info(self, tag: bytes, channel: str, info: ClientInfo) -> None:
        if not self._healthy:
            raise engine_unavailable()
        data = tag + pack_info(info)
        if self._batch is not None:
            await self._batch.command("PUBLISH", self._pubsub_channel(channel), data)
        else:
            await guard(lambda: self.redis.publish(self._pubsub_channel(channel), data))

    async def publish_join(self, channel: str, info: ClientInfo) -> None:
        await self._publish_info(b"j", channel, info)

    async def publish_leave(self, channel: str, info: ClientInfo) -> None:
        await self._publish_info(b"l", channel, info)

    async def history(
        self, channel: str, flt: HistoryFilter, opts: PublishOptions
    ) -> HistoryResult:
        if not opts.use_history:
            return HistoryResult(publications=[], position=StreamPosition(0, ""))
        since = flt.since
        if flt.reverse:
            start = "-"
            end = f"({since.offset}-0" if since is not None and since.offset else "+"
        else:
            start = f"({since.offset}-0" if since is not None and since.offset else "-"
            end = "+"
        keys = [self._key("meta", channel), self._key("stream", channel)]
        args = [
            new_epoch(),
            # A stream created by a read (every subscribe reads the position) needs to outlive
            # the history TTL only, until something is published to it.
            ms(min(opts.history_ttl, opts.history_meta_ttl)),
            ms(opts.history_ttl),
            start,
            end,
            flt.limit,
            "1" if flt.reverse else "0",
            "1" if flt.limit != 0 else "0",
        ]
        if self._batch is not None:
            # Behind the publications queued before it, in the same pipeline order: a client
            # that publishes and then reads history (in one frame, before the publish is
            # answered) finds its publication, as it would on the memory engine.
            reply = await self._batch.script(self._history.sha, self._history.script, keys, args)
        else:
            reply = await guard(lambda: self._history(keys=keys, args=args))
        epoch, top, entries = reply
        position = StreamPosition(int(top), epoch.decode())
        if since is not None and since.epoch and since.epoch != position.epoch:
            raise error(ErrorCode.UNRECOVERABLE_POSITION)
        pubs = [
            unpack_publication(entries[i + 1], int(entries[i].split(b"-")[0]))
            for i in range(0, len(entries), 2)
        ]
        return HistoryResult(publications=pubs, position=position)

    async def remove_history(self, channel: str) -> None:
        await guard(lambda: self.redis.delete(self._key("stream", channel)))

    async def renew_epoch(self, channel: str, epoch: str) -> None:
        renewed = await guard(
            lambda: self._renew_epoch(keys=[self._key("meta", channel)], args=[epoch, new_epoch()])
        )
        if renewed:
            log.warning("the stream of %s went back within epoch %s: new epoch", channel, epoch)


def publish_result(reply: Any) -> PublishResult:
    """The publish script's reply (status, ``offset:epoch``) as a result."""
    status, result = reply
    offset, _, epoch = result.decode().partition(":")
    return PublishResult(StreamPosition(int(offset), epoch), suppressed=status == b"dup")
