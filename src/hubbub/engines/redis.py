"""The Redis engine: broker and presence shared by every node connected to the same Redis.

Layout per channel (the ``{…}`` hash tag keeps a channel's keys in one Redis Cluster slot):

* ``<prefix>:meta:{<channel>}``: hash ``e`` (epoch) and ``s`` (top offset); expires
  ``history_meta_ttl`` after the last publication.
* ``<prefix>:stream:{<channel>}``: a Redis stream whose entry ids are ``<offset>-0``, fields
  ``d`` (the packed publication) and ``t`` (publish time, ms); trimmed to ``history_size``,
  entries older than ``history_ttl`` are skipped on read and the key expires with them.
* ``<prefix>:ch:<channel>``: the PUB/SUB channel that carries live publications, joins and leaves.
* ``<prefix>:presence:{<channel>}`` and ``…:presence:exp:{<channel>}``: client id -> packed
  ClientInfo, and client id -> expiry time (sorted set).

Per node (the ``{nodes}`` hash tag keeps them in one slot):

* ``<prefix>:{nodes}``: node uid -> the time its liveness lapses (sorted set).
* ``<prefix>:{nodes}:owned:<uid>``: the presence entries the node added, as
  ``<client id> NUL <channel>``; expires with the entries.
* ``<prefix>:{nodes}:reap:<uid>``: the lock of the one node that reaps a lapsed node.

Appending to the stream and publishing happen in one Lua script, so every publication seen live
is in the stream and offsets follow delivery order. Time comes from Redis (``TIME``), so nodes
agree on expiry whatever their clocks say.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import string
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import msgspec

from hubbub.extras import missing

try:
    import redis.asyncio as aioredis
    from redis.asyncio.client import PubSub
except ImportError as exc:  # without the redis extra: one line that names it
    raise missing("redis", exc) from None

from hubbub.engines.base import (
    BrokerEventHandler,
    HistoryFilter,
    HistoryResult,
    PresenceStats,
    PublishOptions,
    PublishResult,
    ReapedEntry,
    StreamPosition,
    engine_unavailable,
)
from hubbub.protocol.codes import ErrorCode, error
from hubbub.protocol.messages import EMPTY, ClientInfo, Publication

log = logging.getLogger("hubbub.engines.redis")

T = TypeVar("T")

_REDIS_ERRORS = (aioredis.ConnectionError, aioredis.TimeoutError, OSError)


async def _guard(call: Callable[[], Awaitable[T]]) -> T:
    """Run a Redis call; an unreachable Redis becomes the engine's temporary error (100)."""
    try:
        return await call()
    except _REDIS_ERRORS as exc:
        log.warning("Redis call failed: %s", exc)
        raise engine_unavailable() from None


POOL_SIZE = 100
"""Default most connections one client (a broker's or a presence manager's) opens to Redis."""

POOL_TIMEOUT = 5.0
"""Default seconds a call waits for a free pooled connection before it fails (error 100)."""


def _client(url: str, pool_size: int, pool_timeout: float) -> aioredis.Redis:
    """A client on a pool of at most ``pool_size`` connections to ``url``.

    A call that finds every connection busy waits up to ``pool_timeout`` seconds for one to be
    released (back-pressure on a burst), then fails like an unreachable Redis would. A pool
    that refused at once would turn every burst larger than the pool into errors.
    """
    pool = aioredis.BlockingConnectionPool.from_url(
        url,
        max_connections=pool_size,
        timeout=pool_timeout,
        # Bounded waits: a dead Redis must fail calls in seconds, never hang them.
        socket_connect_timeout=2.0,
        socket_timeout=5.0,
    )
    return aioredis.Redis.from_pool(pool)


class _Info(msgspec.Struct, array_like=True):
    user: str
    client: str
    conn_info: bytes = b""
    chan_info: bytes = b""


class _Stored(msgspec.Struct, array_like=True):
    """A publication as kept in Redis: payloads as bytes (JSON text or binary)."""

    data: bytes
    info: _Info | None = None
    tags: dict[str, str] | None = None
    time: int = 0


_encoder = msgspec.msgpack.Encoder()
_stored_decoder = msgspec.msgpack.Decoder(_Stored)
_info_decoder = msgspec.msgpack.Decoder(_Info)


def _raw(data: bytes) -> msgspec.Raw:
    return msgspec.Raw(data) if data else EMPTY


def _pack_info(info: ClientInfo) -> _Info:
    return _Info(info.user, info.client, bytes(info.conn_info), bytes(info.chan_info))


def _unpack_info(info: _Info) -> ClientInfo:
    return ClientInfo(
        user=info.user,
        client=info.client,
        conn_info=_raw(info.conn_info),
        chan_info=_raw(info.chan_info),
    )


def pack_publication(pub: Publication) -> bytes:
    info = _pack_info(pub.info) if pub.info is not None else None
    return _encoder.encode(_Stored(bytes(pub.data), info, pub.tags, pub.time))


def unpack_publication(data: bytes, offset: int) -> Publication:
    stored = _stored_decoder.decode(data)
    return Publication(
        data=_raw(stored.data),
        info=_unpack_info(stored.info) if stored.info is not None else None,
        offset=offset,
        tags=stored.tags,
        time=stored.time,
    )


def _new_epoch() -> str:
    return "".join(random.choices(string.ascii_letters, k=8))


# KEYS: meta, stream, idempotency key ("" = none)
# ARGV: packed publication, history size, history ttl ms, meta ttl ms, pubsub channel,
#       new epoch, idempotency ttl ms, use history ("1"/"0")
_PUBLISH = """
if KEYS[3] ~= '' then
  local seen = redis.call('GET', KEYS[3])
  if seen then return {'dup', seen} end
end
local offset = 0
local epoch = ''
if ARGV[8] == '1' then
  local t = redis.call('TIME')
  local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
  epoch = redis.call('HGET', KEYS[1], 'e')
  if not epoch then
    epoch = ARGV[6]
    redis.call('HSET', KEYS[1], 'e', epoch)
  end
  offset = redis.call('HINCRBY', KEYS[1], 's', 1)
  redis.call('PEXPIRE', KEYS[1], ARGV[4])
  redis.call('XADD', KEYS[2], 'MAXLEN', ARGV[2], offset .. '-0', 'd', ARGV[1], 't', now)
  redis.call('PEXPIRE', KEYS[2], ARGV[3])
end
redis.call('PUBLISH', ARGV[5], 'p' .. offset .. ':' .. epoch .. ':' .. ARGV[1])
local result = offset .. ':' .. epoch
if KEYS[3] ~= '' then
  redis.call('SET', KEYS[3], result, 'PX', ARGV[7])
end
return {'ok', result}
"""

# KEYS: meta, stream
# ARGV: new epoch, meta ttl ms, history ttl ms, start id, end id, count (-1 = all),
#       reverse ("1"/"0"), want publications ("1"/"0")
_HISTORY = """
local epoch = redis.call('HGET', KEYS[1], 'e')
if not epoch then
  epoch = ARGV[1]
  redis.call('HSET', KEYS[1], 'e', epoch, 's', 0)
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
end
local top = tonumber(redis.call('HGET', KEYS[1], 's') or '0')
local out = {}
if ARGV[8] == '1' then
  local t = redis.call('TIME')
  local oldest = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000) - tonumber(ARGV[3])
  local entries
  if ARGV[7] == '1' then
    entries = redis.call('XREVRANGE', KEYS[2], ARGV[5], ARGV[4])
  else
    entries = redis.call('XRANGE', KEYS[2], ARGV[4], ARGV[5])
  end
  local want = tonumber(ARGV[6])
  for _, entry in ipairs(entries) do
    local fields = entry[2]
    local d, ts
    for i = 1, #fields, 2 do
      if fields[i] == 'd' then d = fields[i + 1] elseif fields[i] == 't' then ts = fields[i + 1] end
    end
    if tonumber(ts) > oldest then
      table.insert(out, entry[1])
      table.insert(out, d)
      if want >= 0 and #out / 2 >= want then break end
    end
  end
end
return {epoch, top, out}
"""

# KEYS: meta.  ARGV: the epoch to replace, the new epoch. 1 when it was replaced.
_RENEW_EPOCH = """
if redis.call('HGET', KEYS[1], 'e') == ARGV[1] then
  redis.call('HSET', KEYS[1], 'e', ARGV[2])
  return 1
end
return 0
"""

# KEYS: presence hash, expiry zset.  ARGV: none. Drops expired entries, returns the rest.
_PRESENCE = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local expired = redis.call('ZRANGEBYSCORE', KEYS[2], '-inf', now)
if #expired > 0 then
  redis.call('HDEL', KEYS[1], unpack(expired))
  redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', now)
end
return redis.call('HGETALL', KEYS[1])
"""

# KEYS: presence hash, expiry zset.  ARGV: client id, packed info, ttl ms
_ADD_PRESENCE = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
redis.call('ZADD', KEYS[2], now + tonumber(ARGV[3]), ARGV[1])
redis.call('PEXPIRE', KEYS[1], ARGV[3])
redis.call('PEXPIRE', KEYS[2], ARGV[3])
"""


# KEYS: owned set.  ARGV: member, ttl ms. Records the entry; the set lives as long as its
# longest-lived entry.
_OWN = """
redis.call('SADD', KEYS[1], ARGV[1])
if redis.call('PTTL', KEYS[1]) < tonumber(ARGV[2]) then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
end
"""

# KEYS: nodes zset.  ARGV: own uid, lapse ms. Renews the liveness; 1 if it had not lapsed.
_KEEP_ALIVE = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local prev = redis.call('ZSCORE', KEYS[1], ARGV[1])
redis.call('ZADD', KEYS[1], now + tonumber(ARGV[2]), ARGV[1])
if prev and tonumber(prev) > now then return 1 end
return 0
"""

# KEYS: nodes zset.  ARGV: own uid. The uids of the other nodes whose liveness lapsed.
_LAPSED = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local out = {}
for _, uid in ipairs(redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', now)) do
  if uid ~= ARGV[1] then table.insert(out, uid) end
end
return out
"""

# KEYS: nodes zset, reap lock.  ARGV: lapsed uid, own uid, lock ms.
# 1 when the node is still lapsed and this caller took the lock.
_CLAIM = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local score = redis.call('ZSCORE', KEYS[1], ARGV[1])
if not score or tonumber(score) > now then return 0 end
if redis.call('SET', KEYS[2], ARGV[2], 'NX', 'PX', ARGV[3]) then return 1 end
return 0
"""

# KEYS: presence hash, expiry zset.  ARGV: client ids. Removes them, returns their infos.
_REAP = """
local out = {}
for i = 1, #ARGV do
  local info = redis.call('HGET', KEYS[1], ARGV[i])
  if info then
    redis.call('HDEL', KEYS[1], ARGV[i])
    redis.call('ZREM', KEYS[2], ARGV[i])
    table.insert(out, info)
  end
end
return out
"""

# KEYS: nodes zset, owned set.  ARGV: reaped uid. Forgets the node unless it came back.
_FORGET = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local score = redis.call('ZSCORE', KEYS[1], ARGV[1])
if score and tonumber(score) > now then return 0 end
redis.call('ZREM', KEYS[1], ARGV[1])
redis.call('DEL', KEYS[2])
return 1
"""

_REAP_LOCK_MS = 30_000
"""How long a reaper holds a lapsed node; should it die meanwhile, another takes over."""


def _ms(seconds: float) -> int:
    return max(int(seconds * 1000), 1)


class RedisBroker:
    """A :class:`~hubbub.engines.base.Broker` over one Redis server.

    Args:
        url: the Redis URL, e.g. ``redis://127.0.0.1:6379/0``.
        prefix: prefix of every key and PUB/SUB channel, to share a Redis between deployments.
        pool_size: most connections to Redis, the PUB/SUB one included (at least 2).
        pool_timeout: seconds a call waits for a free connection before it fails.
    """

    def __init__(
        self,
        url: str = "redis://127.0.0.1:6379/0",
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
        self._redis = _client(self._url, *self._pool)
        self._publish = self._redis.register_script(_PUBLISH)
        self._history = self._redis.register_script(_HISTORY)
        self._renew_epoch = self._redis.register_script(_RENEW_EPOCH)
        await _guard(self._redis.ping)
        self._pubsub = self._redis.pubsub()
        # Subscribing to the control channel opens the PUB/SUB connection before any channel.
        await self._pubsub.subscribe(self._control)
        self._healthy = True
        self._reader = asyncio.create_task(self._read_forever())

    async def close(self) -> None:
        self._healthy = False
        if self._reader is not None:
            self._reader.cancel()
            await asyncio.gather(self._reader, return_exceptions=True)
            self._reader = None
        if self._pubsub is not None:
            with contextlib.suppress(*_REDIS_ERRORS):
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
                handler.handle_join(channel, _unpack_info(_info_decoder.decode(body)))
            elif tag == b"l":
                handler.handle_leave(channel, _unpack_info(_info_decoder.decode(body)))
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
            await _guard(lambda: self._pubsub.subscribe(self._pubsub_channel(channel)))  # type: ignore[union-attr]
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
            with contextlib.suppress(*_REDIS_ERRORS):
                await self._pubsub.unsubscribe(self._pubsub_channel(channel))

    async def publish_control(self, data: bytes) -> None:
        if not self._healthy:
            raise engine_unavailable()
        await _guard(lambda: self.redis.publish(self._control, data))

    async def publish(self, channel: str, pub: Publication, opts: PublishOptions) -> PublishResult:
        if not self._healthy:
            raise engine_unavailable()  # fail fast: no socket timeout per publish
        idem = self._key(f"idem:{opts.idempotency_key}", channel) if opts.idempotency_key else ""
        status, result = await _guard(
            lambda: self._publish(
                keys=[self._key("meta", channel), self._key("stream", channel), idem],
                args=[
                    pack_publication(pub),
                    opts.history_size,
                    _ms(opts.history_ttl),
                    _ms(opts.history_meta_ttl),
                    self._pubsub_channel(channel),
                    _new_epoch(),
                    _ms(opts.idempotent_result_ttl),
                    "1" if opts.use_history else "0",
                ],
            )
        )
        offset, _, epoch = result.decode().partition(":")
        return PublishResult(StreamPosition(int(offset), epoch), suppressed=status == b"dup")

    async def _publish_info(self, tag: bytes, channel: str, info: ClientInfo) -> None:
        if not self._healthy:
            raise engine_unavailable()
        data = tag + _encoder.encode(_pack_info(info))
        await _guard(lambda: self.redis.publish(self._pubsub_channel(channel), data))

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
        epoch, top, entries = await _guard(
            lambda: self._history(
                keys=[self._key("meta", channel), self._key("stream", channel)],
                args=[
                    _new_epoch(),
                    # A stream created by a read (every subscribe reads the position) needs
                    # to outlive the history TTL only, until something is published to it.
                    _ms(min(opts.history_ttl, opts.history_meta_ttl)),
                    _ms(opts.history_ttl),
                    start,
                    end,
                    flt.limit,
                    "1" if flt.reverse else "0",
                    "1" if flt.limit != 0 else "0",
                ],
            )
        )
        position = StreamPosition(int(top), epoch.decode())
        if since is not None and since.epoch and since.epoch != position.epoch:
            raise error(ErrorCode.UNRECOVERABLE_POSITION)
        pubs = [
            unpack_publication(entries[i + 1], int(entries[i].split(b"-")[0]))
            for i in range(0, len(entries), 2)
        ]
        return HistoryResult(publications=pubs, position=position)

    async def remove_history(self, channel: str) -> None:
        await _guard(lambda: self.redis.delete(self._key("stream", channel)))

    async def renew_epoch(self, channel: str, epoch: str) -> None:
        renewed = await _guard(
            lambda: self._renew_epoch(keys=[self._key("meta", channel)], args=[epoch, _new_epoch()])
        )
        if renewed:
            log.warning("the stream of %s went back within epoch %s: new epoch", channel, epoch)


class RedisPresenceManager:
    """A :class:`~hubbub.engines.base.PresenceManager` over one Redis server.

    Args:
        url: the Redis URL, e.g. ``redis://127.0.0.1:6379/0``.
        prefix: prefix of every key, to share a Redis between deployments.
        pool_size: most connections to Redis.
        pool_timeout: seconds a call waits for a free connection before it fails.
    """

    def __init__(
        self,
        url: str = "redis://127.0.0.1:6379/0",
        *,
        prefix: str = "hubbub",
        pool_size: int = POOL_SIZE,
        pool_timeout: float = POOL_TIMEOUT,
    ) -> None:
        self._redis = _client(url, pool_size, pool_timeout)
        self._prefix = prefix
        self._owner = ""
        self._presence = self._redis.register_script(_PRESENCE)
        self._add = self._redis.register_script(_ADD_PRESENCE)
        self._own = self._redis.register_script(_OWN)
        # Liveness is renewed on a connection of its own: behind a burst that fills the pool a
        # live node would otherwise wait its turn past ``node_lapse`` and be taken for dead.
        self._liveness = _client(url, 1, pool_timeout)
        self._keep_alive = self._liveness.register_script(_KEEP_ALIVE)
        self._lapsed = self._redis.register_script(_LAPSED)
        self._claim = self._redis.register_script(_CLAIM)
        self._reap = self._redis.register_script(_REAP)
        self._forget = self._redis.register_script(_FORGET)

    def _keys(self, channel: str) -> list[str]:
        return [
            f"{self._prefix}:presence:{{{channel}}}",
            f"{self._prefix}:presence:exp:{{{channel}}}",
        ]

    @property
    def _nodes(self) -> str:
        return f"{self._prefix}:{{nodes}}"

    def _owned(self, node: str) -> str:
        return f"{self._prefix}:{{nodes}}:owned:{node}"

    async def close(self) -> None:
        await self._redis.aclose()
        await self._liveness.aclose()

    def set_owner(self, node: str) -> None:
        self._owner = node

    async def keep_alive(self, lapse: float) -> bool:
        renewed = await _guard(
            lambda: self._keep_alive(keys=[self._nodes], args=[self._owner, _ms(lapse)])
        )
        return bool(renewed)

    async def add_presence(self, channel: str, info: ClientInfo, ttl: float) -> None:
        packed = _encoder.encode(_pack_info(info))
        if not self._owner:
            await _guard(
                lambda: self._add(keys=self._keys(channel), args=[info.client, packed, _ms(ttl)])
            )
            return
        owned = self._owned(self._owner)

        async def add() -> None:
            # One round trip: the entry, and its owner's record of it (which lives as long as
            # the longest-lived entry it lists).
            async with self._redis.pipeline(transaction=False) as pipe:
                await self._add(
                    keys=self._keys(channel), args=[info.client, packed, _ms(ttl)], client=pipe
                )
                await self._own(
                    keys=[owned], args=[f"{info.client}\0{channel}", _ms(ttl)], client=pipe
                )
                await pipe.execute()

        await _guard(add)

    async def remove_presence(self, channel: str, client_id: str, user: str) -> None:
        data, expiry = self._keys(channel)

        async def remove() -> None:
            async with self._redis.pipeline(transaction=False) as pipe:
                pipe.hdel(data, client_id)
                pipe.zrem(expiry, client_id)
                if self._owner:
                    pipe.srem(self._owned(self._owner), f"{client_id}\0{channel}")
                await pipe.execute()

        await _guard(remove)

    async def reap_lapsed(self) -> list[ReapedEntry]:
        lapsed = await _guard(lambda: self._lapsed(keys=[self._nodes], args=[self._owner]))
        reaped: list[ReapedEntry] = []
        for raw_uid in lapsed:
            reaped.extend(await self._reap_node(raw_uid.decode()))
        return reaped

    async def _reap_node(self, node: str) -> list[ReapedEntry]:
        """Remove the entries of the lapsed ``node`` if this caller wins its lock."""
        lock = f"{self._prefix}:{{nodes}}:reap:{node}"
        claimed = await _guard(
            lambda: self._claim(
                keys=[self._nodes, lock], args=[node, self._owner or "-", _REAP_LOCK_MS]
            )
        )
        if not claimed:
            return []
        owned = self._owned(node)
        members = await _guard(lambda: self._redis.smembers(owned))
        by_channel: dict[str, list[str]] = {}
        for member in members:
            text = member.decode() if isinstance(member, bytes) else member
            client, _, channel = text.partition("\0")
            by_channel.setdefault(channel, []).append(client)
        channels = list(by_channel)

        async def remove() -> list[list[bytes]]:
            async with self._redis.pipeline(transaction=False) as pipe:
                for channel in channels:
                    await self._reap(
                        keys=self._keys(channel), args=by_channel[channel], client=pipe
                    )
                return list(await pipe.execute())

        infos = await _guard(remove) if channels else []
        await _guard(lambda: self._forget(keys=[self._nodes, owned], args=[node]))
        if members:
            log.info("node %s lapsed: removed its %d presence entries", node, len(members))
        return [
            ReapedEntry(channel, _unpack_info(_info_decoder.decode(packed)))
            for channel, removed in zip(channels, infos, strict=True)
            for packed in removed
        ]

    async def presence(self, channel: str) -> dict[str, ClientInfo]:
        flat = await _guard(lambda: self._presence(keys=self._keys(channel), args=[]))
        return {
            flat[i].decode(): _unpack_info(_info_decoder.decode(flat[i + 1]))
            for i in range(0, len(flat), 2)
        }

    async def presence_stats(self, channel: str) -> PresenceStats:
        clients = await self.presence(channel)
        return PresenceStats(
            num_clients=len(clients), num_users=len({i.user for i in clients.values()})
        )
