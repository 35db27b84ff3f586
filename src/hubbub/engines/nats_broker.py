"""The NATS broker: live traffic between nodes over NATS core PUB/SUB, history elsewhere.

NATS carries publications, joins, leaves and the control channel (subjects in
:mod:`.nats_codec`); it keeps nothing. Where channel streams live is the ``history`` mode:

* ``redis``: a Redis engine broker (single, sharded or through Sentinel) appends and assigns
  offsets; the publication then goes out on NATS. Offsets and delivery come from two systems,
  so :class:`~.nats_order.Reorder` hands each channel on in offset order. Recovery works on
  every node, as with the Redis engine.
* ``memory``: every node receives every channel (one wildcard subscription) and keeps its own
  streams of what it received, numbered in the order it received them; the publishing node
  too, from its own message coming back, so every node of one NATS server keeps the same
  order, and a publish returns once NATS has it (its position in the publisher's stream, and
  any later publish is ordered after it). A client recovers only
  on the node that gave it its position (another node's stream has another epoch: it is told
  ``recovered: false``). After a NATS outage each node renews every epoch, since its streams
  may lack what other nodes published meanwhile.
* ``none``: no streams; publications carry no offset.

When the NATS connection drops, the broker reports unhealthy (publishes fail fast with error
100); the client library reconnects and re-subscribes, and the broker then tells the node,
whose stream checks make subscribers that may have missed publications recover.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import Counter
from typing import TYPE_CHECKING, Any, Literal

from hubbub.extras import missing

try:
    import nats
    import nats.errors
except ImportError as exc:  # without the nats extra: one line that names it
    raise missing("nats", exc) from None

from hubbub.clock import Clock, SystemClock
from hubbub.engines.base import (
    Broker,
    BrokerEventHandler,
    HistoryFilter,
    HistoryResult,
    PublishOptions,
    PublishResult,
    StreamPosition,
    engine_unavailable,
)
from hubbub.engines.memory import MemoryBroker, new_epoch
from hubbub.engines.nats_codec import (
    channel_subject,
    pack_join_leave,
    pack_pub,
    subject_channel,
    unpack,
)
from hubbub.engines.nats_order import Reorder
from hubbub.protocol.codes import ErrorCode, error
from hubbub.protocol.messages import ClientInfo, Publication

if TYPE_CHECKING:
    from nats.aio.client import Client
    from nats.aio.msg import Msg
    from nats.aio.subscription import Subscription

log = logging.getLogger("hubbub.engines.nats")

HistoryMode = Literal["none", "memory", "redis"]

NATS_ERRORS = (nats.errors.Error, OSError, TimeoutError)
"""What an unreachable or closed NATS connection raises."""

RECONNECT_WAIT = 0.5
"""Seconds between two tries to reach a NATS server after the connection dropped."""

ECHO_TIMEOUT = 5.0
"""Seconds a publish with memory streams waits for its message to come back from NATS."""

PENDING_MSGS = 1_000_000
"""Messages one subscription may hold before NATS's client drops more (a slow consumer,
which the broker turns into a stream check of the channel)."""


class NatsBroker:
    """A :class:`~hubbub.engines.base.Broker` on NATS, with streams as ``history`` says.

    Args:
        servers: NATS server URLs.
        prefix: first token of every subject.
        history: ``redis`` (``streams`` keeps them), ``memory`` or ``none`` (see the module).
        streams: the Redis engine broker that keeps the streams (``history = "redis"``).
        clock: the time source of memory streams.
        reorder_window: seconds a publication ahead of a missing offset waits for it.
        connect_timeout: seconds to reach a NATS server.
        name: the connection's name as NATS monitoring shows it.
    """

    def __init__(
        self,
        servers: list[str],
        *,
        prefix: str = "hubbub",
        history: HistoryMode = "none",
        streams: Broker | None = None,
        clock: Clock | None = None,
        reorder_window: float = 0.5,
        connect_timeout: float = 2.0,
        name: str = "hubbub",
    ) -> None:
        if (history == "redis") != (streams is not None):
            raise ValueError('streams is the history of history = "redis", and only of it')
        self._servers = servers
        self._prefix = prefix
        self._mode: HistoryMode = history
        self._streams = streams
        self._memory = MemoryBroker(clock=clock) if history == "memory" else None
        self._connect_timeout = connect_timeout
        self._name = name
        self._origin = new_epoch() + new_epoch()  # tells this broker's own echoes apart
        self._clock: Clock = clock or SystemClock()
        # Memory streams: publishes waiting for their own message to come back, by number.
        self._echoes: dict[str, asyncio.Future[PublishResult]] = {}
        self._sent = 0
        self._idempotency: dict[tuple[str, str], tuple[float, PublishResult]] = {}
        self._handler: BrokerEventHandler | None = None
        self._reorder = Reorder(self._deliver, reorder_window, self._count)
        self._nc: Client | None = None
        self._subs: dict[str, Subscription | None] = {}
        self._healthy = False
        self._closing = False
        self._resumed: asyncio.Task[None] | None = None
        self.counters: Counter[str] = Counter()
        """What happened: ``reorder.held``, ``reorder.gave_up``, ``reorder.late_dropped``,
        ``disconnects``, ``slow_consumer``, ``undecodable``."""

    # -----------------------------------------------------------------------------------------
    # Lifecycle

    def set_event_handler(self, handler: BrokerEventHandler) -> None:
        self._handler = handler
        if self._memory is not None:
            self._memory.set_event_handler(handler)
        if self._streams is not None:
            self._streams.set_event_handler(_StreamEvents(self))

    @property
    def healthy(self) -> bool:
        return self._healthy and (self._streams is None or self._streams.healthy)

    @property
    def channels(self) -> list[str]:
        """The channels this node receives."""
        return sorted(self._subs)

    @property
    def nc(self) -> Client:
        if self._nc is None:
            raise RuntimeError("the NATS broker is not started")
        return self._nc

    async def start(self) -> None:
        # The client's own annotations say int; it waits with asyncio, which takes floats.
        options: dict[str, Any] = {
            "connect_timeout": self._connect_timeout,
            "reconnect_time_wait": RECONNECT_WAIT,
            "max_reconnect_attempts": -1,
            "allow_reconnect": True,
            "name": self._name,
            "disconnected_cb": self._on_disconnected,
            "reconnected_cb": self._on_reconnected,
            "error_cb": self._on_error,
        }
        try:
            # Bounded: the client would retry forever (max_reconnect_attempts -1 also governs
            # the first connection); a node must fail its start in seconds instead.
            bound = self._connect_timeout * len(self._servers) + RECONNECT_WAIT
            self._nc = await asyncio.wait_for(nats.connect(self._servers, **options), bound)
            await self.nc.subscribe(f"{self._prefix}.control", cb=self._on_control)
            if self._memory is not None:
                # Memory streams: this node keeps every channel's stream, so it receives all
                # (channel subjects and subscribe barriers are the 3-token ones), in one queue.
                await self.nc.subscribe(
                    f"{self._prefix}.*.*", cb=self._on_channel, pending_msgs_limit=PENDING_MSGS
                )
            await self.nc.flush(timeout=max(1, round(self._connect_timeout)))
        except NATS_ERRORS as exc:
            log.error("NATS at %s unreachable: %s", ", ".join(self._servers), exc)
            await self.close()
            raise engine_unavailable() from None
        if self._streams is not None:
            await self._streams.start()
        self._healthy = True

    async def close(self) -> None:
        self._healthy = False
        self._closing = True
        if self._resumed is not None:
            self._resumed.cancel()
            await asyncio.gather(self._resumed, return_exceptions=True)
        self._reorder.reset()
        for channel in list(self._subs):
            self._reorder.forget(channel)
        self._subs.clear()
        if self._nc is not None:
            with contextlib.suppress(*NATS_ERRORS):
                await self._nc.close()
            self._nc = None
        if self._streams is not None:
            await self._streams.close()

    # -----------------------------------------------------------------------------------------
    # Connection events (called by the NATS client)

    async def _on_disconnected(self) -> None:
        if self._closing:
            return
        self.counters["disconnects"] += 1
        if self._healthy:
            log.warning("NATS connection lost; reconnecting (publishes fail until it is back)")
        self._healthy = False
        # Publishes and subscribes waiting for their message to come back fail now, not after
        # a timeout (the message may or may not have reached other nodes).
        for waiter in self._echoes.values():
            if not waiter.done():
                waiter.set_exception(engine_unavailable())
        self._echoes.clear()

    async def _on_reconnected(self) -> None:
        if self._resumed is None or self._resumed.done():
            self._resumed = asyncio.get_running_loop().create_task(self._resume())

    async def _resume(self) -> None:
        """Back on NATS: once the server has every subscription again, tell the node."""
        while not self._closing:
            try:
                # The client re-sent every subscription; a round trip makes sure the server
                # has them before the node reads the streams for what it missed.
                await self.nc.flush(timeout=max(1, round(self._connect_timeout)))
                break
            except NATS_ERRORS:
                await asyncio.sleep(RECONNECT_WAIT)
        self._reorder.reset()
        channels = self.channels
        if self._memory is not None:
            # What other nodes published meanwhile never reached this node's streams: new
            # epochs, so that no client takes them for complete.
            renewed = self._memory.renew_epochs()
            log.warning("NATS reconnected; %d memory streams get a new epoch", len(renewed))
        else:
            log.warning("NATS reconnected; %d channels re-subscribed", len(channels))
        self._healthy = True
        if self._handler is not None:
            self._handler.handle_reconnect(channels)

    async def _on_error(self, exc: Exception) -> None:
        if isinstance(exc, nats.errors.SlowConsumerError):
            # The client dropped a message of this subscription: treat the channel as after
            # an outage (once per burst: the check runs in the background).
            self.counters["slow_consumer"] += 1
            channel = subject_channel(self._prefix, exc.subject)
            if channel is not None and channel in self._subs:
                if self._memory is not None:
                    self._memory.renew_epochs([channel])
                if self._handler is not None:
                    self._handler.handle_reconnect([channel])
            return
        if not self._closing:
            log.info("NATS: %s", exc)

    # -----------------------------------------------------------------------------------------
    # Receiving

    def _count(self, what: str) -> None:
        self.counters[f"reorder.{what}"] += 1

    def _deliver(self, channel: str, pub: Publication, position: StreamPosition) -> None:
        if self._handler is not None and channel in self._subs:
            self._handler.handle_publication(channel, pub, position)

    async def _on_control(self, msg: Msg) -> None:
        if self._handler is not None:
            self._handler.handle_control(msg.data)

    async def _on_channel(self, msg: Msg) -> None:
        channel = subject_channel(self._prefix, msg.subject)
        if channel is None:
            barrier = self._echoes.pop(msg.subject, None)
            if barrier is not None and not barrier.done():
                barrier.set_result(PublishResult(StreamPosition(0, "")))
            return
        try:
            got = unpack(msg.data)
        except ValueError:
            self.counters["undecodable"] += 1
            log.warning("dropped an undecodable message on %s", msg.subject)
            return
        if self._memory is not None:
            # Kept in this node's stream, numbered in the order received here.
            if got.pub is not None:
                result = await self._memory.publish(channel, got.pub, got.opts)
                origin, _, number = got.origin.partition("/")
                echo = self._echoes.pop(number, None) if origin == self._origin else None
                if echo is not None and not echo.done():
                    echo.set_result(result)
            elif got.info is not None:
                memory = self._memory
                await (memory.publish_join if got.kind == b"j" else memory.publish_leave)(
                    channel, got.info
                )
            return
        handler = self._handler
        if handler is None or channel not in self._subs:
            return  # no longer subscribed: NATS may still deliver what it sent before
        if got.pub is not None:
            self._reorder.push(channel, got.pub, got.position)
        elif got.info is not None:
            (handler.handle_join if got.kind == b"j" else handler.handle_leave)(channel, got.info)

    # -----------------------------------------------------------------------------------------
    # The Broker protocol

    async def subscribe(self, channel: str) -> None:
        if not self.healthy:
            raise engine_unavailable()
        if channel in self._subs:
            return
        self._subs[channel] = None  # remembered first: a reconnect meanwhile checks it too
        if self._memory is not None:
            await self._subscribe_memory(channel)
            return
        try:
            sub = await self.nc.subscribe(
                channel_subject(self._prefix, channel),
                cb=self._on_channel,
                pending_msgs_limit=PENDING_MSGS,
            )
            if channel not in self._subs:  # unsubscribed meanwhile
                await sub.unsubscribe()
                return
            self._subs[channel] = sub
            # Return once the server has the interest: from then on nothing is missed.
            await self.nc.flush(timeout=max(1, round(self._connect_timeout)))
        except NATS_ERRORS:
            await self.unsubscribe(channel)
            raise engine_unavailable() from None
        except BaseException:
            await self.unsubscribe(channel)
            raise

    async def _subscribe_memory(self, channel: str) -> None:
        """Deliver ``channel`` from the point where a barrier sent now comes back through the
        wildcard subscription: what NATS sent before it is not delivered (it was published
        before this subscribe), what comes after it is."""
        self._sent += 1
        subject = f"{self._prefix}.b.{self._origin}-{self._sent}"
        barrier = self._echoes[subject] = asyncio.get_running_loop().create_future()
        try:
            await self._send(subject, b"")
            await asyncio.wait_for(barrier, ECHO_TIMEOUT)
        except BaseException as exc:
            await self.unsubscribe(channel)
            if isinstance(exc, TimeoutError):
                raise engine_unavailable() from None
            raise
        finally:
            self._echoes.pop(subject, None)
        if channel in self._subs:  # not unsubscribed meanwhile
            assert self._memory is not None
            await self._memory.subscribe(channel)

    async def unsubscribe(self, channel: str) -> None:
        if channel not in self._subs:
            return
        sub = self._subs.pop(channel)
        self._reorder.forget(channel)
        if self._memory is not None:
            await self._memory.unsubscribe(channel)
        if sub is not None:
            with contextlib.suppress(*NATS_ERRORS):
                await sub.unsubscribe()

    async def _send(self, subject: str, data: bytes) -> None:
        if not self._healthy:
            raise engine_unavailable()
        try:
            await self.nc.publish(subject, data)
        except NATS_ERRORS as exc:
            log.warning("NATS publish failed: %s", exc)
            raise engine_unavailable() from None

    async def publish(self, channel: str, pub: Publication, opts: PublishOptions) -> PublishResult:
        if not self.healthy:
            raise engine_unavailable()  # fail fast: nothing appended, nothing sent
        if self._memory is not None:
            return await self._publish_memory(channel, pub, opts)
        if self._streams is not None and (opts.use_history or opts.idempotency_key):
            # Appended in Redis (its script also publishes on Redis PUB/SUB, where nobody of a
            # NATS deployment listens: a cheap no-op that lets the Redis engine be reused).
            result = await self._streams.publish(channel, pub, opts)
        else:
            result = PublishResult(StreamPosition(0, ""))
        if not result.suppressed:
            data = pack_pub(self._origin, pub, result.position, opts)
            await self._send(channel_subject(self._prefix, channel), data)
        return result

    async def _publish_memory(
        self, channel: str, pub: Publication, opts: PublishOptions
    ) -> PublishResult:
        """Send, then wait for the message to come back and be kept here like anywhere."""
        key = (channel, opts.idempotency_key)
        now = self._clock.monotonic()
        if opts.idempotency_key:
            for old in [k for k, (until, _) in self._idempotency.items() if until <= now]:
                del self._idempotency[old]
            seen = self._idempotency.get(key)
            if seen is not None:
                return PublishResult(seen[1].position, suppressed=True)
        self._sent += 1
        number = str(self._sent)
        echo = self._echoes[number] = asyncio.get_running_loop().create_future()
        try:
            data = pack_pub(f"{self._origin}/{number}", pub, StreamPosition(0, ""), opts)
            await self._send(channel_subject(self._prefix, channel), data)
            result: PublishResult = await asyncio.wait_for(echo, ECHO_TIMEOUT)
        except TimeoutError:
            raise engine_unavailable() from None
        finally:
            self._echoes.pop(number, None)
        if opts.idempotency_key:
            self._idempotency[key] = (now + opts.idempotent_result_ttl, result)
        return result

    async def _publish_info(self, kind: bytes, channel: str, info: ClientInfo) -> None:
        await self._send(
            channel_subject(self._prefix, channel), pack_join_leave(kind, self._origin, info)
        )

    async def publish_join(self, channel: str, info: ClientInfo) -> None:
        await self._publish_info(b"j", channel, info)

    async def publish_leave(self, channel: str, info: ClientInfo) -> None:
        await self._publish_info(b"l", channel, info)

    async def publish_control(self, data: bytes) -> None:
        await self._send(f"{self._prefix}.control", data)

    async def history(
        self, channel: str, flt: HistoryFilter, opts: PublishOptions
    ) -> HistoryResult:
        if self._memory is not None:
            return await self._memory.history(channel, flt, opts)
        if self._streams is not None:
            return await self._streams.history(channel, flt, opts)
        if opts.use_history:
            raise error(ErrorCode.NOT_AVAILABLE, 'not available: nats.history is "none"')
        return HistoryResult(publications=[], position=StreamPosition(0, ""))

    async def remove_history(self, channel: str) -> None:
        if self._memory is not None:
            await self._memory.remove_history(channel)
        elif self._streams is not None:
            await self._streams.remove_history(channel)

    async def renew_epoch(self, channel: str, epoch: str) -> None:
        if self._memory is not None:
            await self._memory.renew_epoch(channel, epoch)
        elif self._streams is not None:
            await self._streams.renew_epoch(channel, epoch)


class _StreamEvents:
    """What the Redis broker that keeps the streams tells: only its reconnects matter (it
    subscribes to no channel). Redis came back, maybe empty or behind: the node checks every
    channel this node receives."""

    def __init__(self, broker: NatsBroker) -> None:
        self._broker = broker

    def handle_publication(self, channel: str, pub: Publication, position: StreamPosition) -> None:
        return None

    def handle_join(self, channel: str, info: ClientInfo) -> None:
        return None

    def handle_leave(self, channel: str, info: ClientInfo) -> None:
        return None

    def handle_control(self, data: bytes) -> None:
        return None

    def handle_reconnect(self, channels: list[str]) -> None:
        handler = self._broker._handler
        if handler is not None:
            handler.handle_reconnect(self._broker.channels)
