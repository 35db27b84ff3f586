"""The node: this process's index of connections and channels, and hubbub's public Python API.

The node keeps channel -> local subscribers and user -> local connections, receives the
engine's events and fans them out: each publication is encoded once and the same bytes are
queued on every subscriber's transport, without awaiting any peer. Applications (and the HTTP
API) publish, subscribe users, disconnect them and read presence and history through it.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import fnmatch
import logging
import random
import time
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine, Iterable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol, TypeVar

import msgspec

from hubbub import __version__, control
from hubbub.auth import TokenVerifier
from hubbub.channels import ChannelRules
from hubbub.clock import Clock, SystemClock, running_loop
from hubbub.config import ChannelOptions, Settings
from hubbub.engines.base import (
    Broker,
    HistoryFilter,
    HistoryResult,
    PresenceManager,
    PresenceStats,
    PublishOptions,
    StreamPosition,
)
from hubbub.engines.memory import MemoryBroker, MemoryPresenceManager
from hubbub.limits import TokenBucket
from hubbub.payload import to_payload
from hubbub.protocol.codec import Codec
from hubbub.protocol.codes import (
    Disconnect,
    DisconnectCode,
    ErrorCode,
    ProtocolError,
    UnsubscribeCode,
    disconnect,
    error,
)
from hubbub.protocol.messages import (
    EMPTY,
    ClientInfo,
    JoinLeave,
    MessagePush,
    Publication,
    Push,
)
from hubbub.subscription import Verdict, judge_top

if TYPE_CHECKING:
    from hubbub.session import Session
    from hubbub.subscription import Subscription
    from hubbub.transports.base import Group, Transport

log = logging.getLogger("hubbub.node")

T = TypeVar("T")

RPCHandler = Callable[["Session", msgspec.Raw], Awaitable[msgspec.Raw]]
"""Answers an ``rpc`` command: gets the session and the request data, returns the reply data
(use :func:`hubbub.protocol.messages.raw` to embed a Python value). Raising
:class:`~hubbub.protocol.codes.ProtocolError` answers with that error."""

SendHandler = Callable[["Session", msgspec.Raw], Awaitable[None]]
"""Receives a ``send`` command (an asynchronous message without a reply)."""

ConnectHandler = Callable[["Session"], Coroutine[Any, Any, None]]
"""Told about every connection that completed ``connect`` (run in the background: it cannot
delay or refuse the connection, and its failure is logged, not sent to the client)."""

SubscribeCheck = Callable[["Session", str], Awaitable[None]]
"""Asked before a client-side subscription to a channel is made; raising
:class:`~hubbub.protocol.codes.ProtocolError` refuses it with that error."""


USER_PRESENCE_PREFIX = "\x01connections#"


def user_presence_key(user: str) -> str:
    """Where a user's connections are counted in the presence manager: a name no channel can
    have (channel names are printable ASCII), so it never mixes with a channel's presence."""
    return USER_PRESENCE_PREFIX + user


class Subscriber(Protocol):
    """What the node's channel index holds: a connection's side of fan-out. Sessions are the
    usual ones; plain-text endpoints (the tutorial chat) are others."""

    client_id: str
    codec: Codec
    subscriptions: dict[str, Subscription]

    def deliver(self, channel: str, pub: Publication, data: bytes, epoch: str) -> None: ...

    def deliver_join_leave(self, channel: str, data: bytes) -> None: ...

    async def recover_gap(self, sub: Subscription) -> None: ...


@dataclass(frozen=True, slots=True)
class NodeInfo:
    """What ``info`` reports about one node."""

    uid: str
    name: str
    version: str
    num_clients: int
    num_users: int
    num_channels: int
    num_subs: int
    uptime: int


class Node:
    """A hubbub server node.

    Args:
        settings: validated settings (see :func:`hubbub.config.load_settings`).
        broker: the engine's broker; memory by default.
        presence_manager: the engine's presence manager; memory by default.
        clock: time source; the system clock by default.
    """

    def __init__(
        self,
        settings: Settings | None = None,
        *,
        broker: Broker | None = None,
        presence_manager: PresenceManager | None = None,
        clock: Clock | None = None,
    ) -> None:
        self.settings = settings or Settings()
        self.clock: Clock = clock or SystemClock()
        if broker is None or presence_manager is None:
            default_broker, default_presence = self._engine()
            broker = broker or default_broker
            presence_manager = presence_manager or default_presence
        self.broker: Broker = broker
        self.presence_manager: PresenceManager = presence_manager
        self.broker.set_event_handler(self)
        self.uid = str(uuid.uuid4())
        self.presence_manager.set_owner(self.uid)
        self.name = self.settings.name or f"hubbub-{self.uid[:8]}"
        self.version = __version__
        self.rules = ChannelRules(self.settings)
        self.verifier = TokenVerifier(self.settings.token, self.clock)
        self.rpc_handlers: dict[str, RPCHandler] = {}
        self.send_handler: SendHandler | None = None
        self.connect_handlers: list[ConnectHandler] = []
        self.subscribe_checks: dict[str, SubscribeCheck] = {}
        self.counters: Counter[str] = Counter()
        # Every local subscriber of a channel; of those, the ones delivered to one by one
        # (positions tracked, reply not yet written, ASGI connections) are also in _direct,
        # the others in a transport group per wire format (_groups), written to together.
        self._channels: dict[str, dict[str, Subscriber]] = {}
        self._direct: dict[str, dict[str, Subscriber]] = {}
        self._groups: dict[str, dict[Codec, Group]] = {}
        self._users: dict[str, dict[str, Session]] = {}
        self._sessions: dict[str, Session] = {}
        self._user_buckets: dict[str, TokenBucket] = {}
        self._subscribing: dict[str, asyncio.Future[None]] = {}
        # Channels to check against their streams -> the latest request for it.
        self._unchecked: dict[str, int] = {}
        self._check_requests = 0
        self._reconnects = 0
        self._gap_check: asyncio.Task[None] | None = None
        self._renewing: dict[tuple[str, str], asyncio.Task[None]] = {}
        self._lost_logged: set[tuple[str, str, Verdict]] = set()
        self._tasks: set[asyncio.Task[Any]] = set()
        self._started_at = time.monotonic()
        self._presence_task: asyncio.Task[None] | None = None
        self._announce_task: asyncio.Task[None] | None = None
        self._peers: dict[str, tuple[NodeInfo, float]] = {}
        self._was_alive = False
        self._running = False
        self.draining = False
        self.open_sockets = 0
        self.sockets_by_ip: Counter[str] = Counter()

    def _engine(self) -> tuple[Broker, PresenceManager]:
        """The engine named by the settings."""
        if self.settings.engine == "redis":
            from hubbub.engines.redis import RedisBroker, RedisPresenceManager
            from hubbub.engines.sharded import ShardedBroker, ShardedPresenceManager

            cfg = self.settings.redis
            # Each shard's broker and presence manager get a pool of their own.
            pool: dict[str, Any] = {
                "prefix": cfg.prefix,
                "pool_size": cfg.pool_size,
                "pool_timeout": cfg.pool_timeout,
            }
            if len(cfg.shards) == 1:
                url = cfg.shards[0]
                return RedisBroker(url, **pool), RedisPresenceManager(url, **pool)
            return (
                ShardedBroker([RedisBroker(u, **pool) for u in cfg.shards]),
                ShardedPresenceManager([RedisPresenceManager(u, **pool) for u in cfg.shards]),
            )
        return MemoryBroker(clock=self.clock), MemoryPresenceManager(clock=self.clock)

    # -----------------------------------------------------------------------------------------
    # Lifecycle

    async def start(self) -> None:
        """Start the engine and the periodic presence refresh. Idempotent."""
        if self._running:
            return
        self._running = True
        self._started_at = time.monotonic()
        await self.broker.start()
        self._presence_task = asyncio.create_task(self._refresh_presence_forever())
        self._announce_task = asyncio.create_task(self._announce_forever())

    async def close(self, reason: Disconnect | None = None) -> None:
        """Close every connection (3001 shutdown by default) and stop the engine."""
        reason = reason or disconnect(DisconnectCode.SHUTDOWN)
        for session in list(self._sessions.values()):
            session.close(reason)
        for periodic in (self._presence_task, self._announce_task):
            if periodic is not None:
                periodic.cancel()
        self._presence_task = self._announce_task = None
        for task in list(self._tasks):
            task.cancel()
        await self.broker.close()
        close_presence = getattr(self.presence_manager, "close", None)
        if close_presence is not None:
            await close_presence()
        self._running = False

    @asynccontextmanager
    async def lifespan(self, app: object = None) -> AsyncIterator[None]:
        """An ASGI lifespan: ``FastAPI(lifespan=node.lifespan)`` starts and stops the node."""
        await self.start()
        try:
            yield
        finally:
            await self.close()

    def spawn(self, coro: Coroutine[Any, Any, Any]) -> None:
        """Run ``coro`` in the background, keeping a reference and logging its failure."""
        self.spawn_task(coro)

    def spawn_task(self, coro: Coroutine[Any, Any, T]) -> asyncio.Task[T]:
        """Like :meth:`spawn`, returning the task for callers that await it later."""
        task = running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._task_done)
        return task

    def _task_done(self, task: asyncio.Task[Any]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("background task failed", exc_info=task.exception())

    async def _refresh_presence_forever(self) -> None:
        interval = self.settings.client.presence_update_interval
        while True:
            await asyncio.sleep(interval)
            await self._refresh_presence()

    async def _refresh_presence(self) -> None:
        """Add every local presence entry again (idempotent): renews their TTL, and puts back
        the entries peers reaped while they took this node for dead."""
        ttl = self.settings.client.presence_ttl
        per_user = self.settings.limits.connections_per_user
        pm = self.presence_manager
        try:
            for session in list(self._sessions.values()):
                if session.user and per_user and self._sessions.get(session.client_id):
                    key = user_presence_key(session.user)
                    await pm.add_presence(key, session.info, ttl)
                    if session.client_id not in self._sessions:
                        # It closed while the add was on its way, after its own removal: the
                        # entry just added would count a connection that no longer exists.
                        await pm.remove_presence(key, session.client_id, session.user)
                for sub in list(session.subscriptions.values()):
                    if sub.options.presence and sub.pending is None:
                        await pm.add_presence(sub.channel, sub.info, ttl)
                        if session.subscriptions.get(sub.channel) is not sub:
                            await pm.remove_presence(sub.channel, session.client_id, session.user)
        except ProtocolError as exc:
            # The engine is down: the next refresh (or the return of liveness) adds them.
            log.warning("presence refresh stopped: %s", exc.message)
        except Exception:
            log.exception("presence refresh failed")

    @property
    def ready(self) -> bool:
        """Started, not draining, and its engine reachable."""
        return self._running and not self.draining and self.broker.healthy

    async def drain(self, period: float) -> None:
        """Prepare to stop: report not ready, refuse new connections, and close the existing
        ones with 3001 (shutdown: clients reconnect elsewhere and recover) in batches spread
        over ``period`` seconds, so that they do not all reconnect at the same instant."""
        self.draining = True
        sessions = list(self._sessions.values())
        batches = max(1, min(10, len(sessions)))
        size = -(-len(sessions) // batches)
        reason = disconnect(DisconnectCode.SHUTDOWN)
        for i in range(batches):
            for session in sessions[i * size : (i + 1) * size]:
                session.close(reason)
            if i < batches - 1:
                await asyncio.sleep(period / batches)
        # Bounded: give the close frames a moment to leave.
        for _ in range(20):
            if not self._sessions:
                break
            await asyncio.sleep(0.05)

    async def _announce_forever(self) -> None:
        """Every ``announce_interval``: renew this node's liveness, tell the peers about it,
        and reap the presence of nodes whose liveness lapsed (``node_lapse``)."""
        while True:
            await self._keep_alive()
            await self._announce()
            await self._reap_lapsed()
            await asyncio.sleep(self.settings.announce_interval)

    async def _keep_alive(self) -> None:
        try:
            renewed = await self.presence_manager.keep_alive(self.settings.node_lapse)
        except ProtocolError:
            return  # the engine is down: peers may take us for dead, checked when it is back
        except Exception:
            log.exception("could not renew this node's liveness")
            return
        if not renewed and self._was_alive:
            # Peers took this node for dead (cut off, or stalled) and may have removed its
            # entries: put them back now rather than at the next periodic refresh.
            log.warning("this node's liveness lapsed; adding its presence entries again")
            self.counters["engine.liveness_lapsed"] += 1
            self.spawn(self._refresh_presence())
        self._was_alive = True

    async def _reap_lapsed(self) -> None:
        """Remove the presence of dead nodes and announce their clients' leaves."""
        try:
            reaped = await self.presence_manager.reap_lapsed()
        except ProtocolError:
            return  # the engine is down: the next round reaps
        except Exception:
            log.exception("could not reap the presence of lapsed nodes")
            return
        if reaped:
            self.counters["engine.presence_reaped"] += len(reaped)
        for entry in reaped:
            if entry.channel.startswith(USER_PRESENCE_PREFIX):
                continue  # a connection count, not a channel: nobody to tell
            try:
                if self._options(entry.channel).join_leave:
                    await self.broker.publish_leave(entry.channel, entry.info)
            except ProtocolError as exc:
                log.warning("could not announce a reaped leave in %s: %s", entry.channel, exc)

    async def _announce(self) -> None:
        fields = dataclasses.asdict(self.info()[0])
        message = control.NodeAnnouncement(origin=fields.pop("uid"), **fields)
        # While the engine is down peers drop us, and we them, until it is back.
        with contextlib.suppress(ProtocolError):
            await self.broker.publish_control(control.encode(message))

    # -----------------------------------------------------------------------------------------
    # Control messages between nodes

    async def _broadcast_control(self, message: control.Control) -> None:
        """Send a user operation to the other nodes (applied here already)."""
        try:
            await self.broker.publish_control(control.encode(message))
        except ProtocolError:
            log.warning("could not reach other nodes for %s: engine unavailable", type(message))
            raise

    def handle_control(self, data: bytes) -> None:
        try:
            message = control.decode(data)
        except msgspec.DecodeError:
            log.warning("dropped an undecodable control message")
            return
        if message.origin == self.uid:
            return
        if isinstance(message, control.NodeAnnouncement):
            fields = msgspec.structs.asdict(message)
            info = NodeInfo(uid=fields.pop("origin"), **fields)
            if message.origin not in self._peers:
                # A newcomer: answer at once, so it knows the cluster without waiting a period.
                self.spawn(self._announce())
            self._peers[message.origin] = (info, time.monotonic())
        elif isinstance(message, control.DisconnectUser):
            self._disconnect_local(
                message.user, message.code, message.reason, message.client, message.whitelist
            )
        elif isinstance(message, control.UnsubscribeUser):
            self.spawn(self._unsubscribe_local(message.user, message.channel, message.client))
        elif isinstance(message, control.SubscribeUser):
            since = (
                StreamPosition(message.recover_offset, message.recover_epoch)
                if message.recover
                else None
            )
            self.spawn(
                self._subscribe_local(
                    message.user,
                    message.channel,
                    message.client,
                    to_payload(message.info) if message.info else EMPTY,
                    msgspec.Raw(message.data) if message.data else EMPTY,
                    since,
                )
            )
        elif isinstance(message, control.RefreshUser):
            self._refresh_local(
                message.user, message.client, message.expired, message.expire_at or None
            )
        elif isinstance(message, control.MessageUser):
            self._message_local(message.user, message.client, msgspec.Raw(message.data))

    GAP_CHECK_BACKOFF = (0.05, 5.0)
    """First and longest pause (seconds, jittered) between tries of the check after a reconnect."""

    @property
    def engine_reconnects(self) -> int:
        """How many times the engine reconnected since the node started."""
        return self._reconnects

    def handle_reconnect(self, channels: list[str]) -> None:
        self.counters["engine.reconnects"] += 1
        self._reconnects += 1
        for channel in channels:
            self.check_stream(channel)

    def check_stream(self, channel: str) -> None:
        """Compare ``channel``'s positioned subscribers with its stream in the background
        (see :meth:`_check_gaps`)."""
        self._check_requests += 1
        self._unchecked[channel] = self._check_requests
        if self._gap_check is None or self._gap_check.done():
            self._gap_check = self.spawn_task(self._check_gaps())

    async def _check_gaps(self) -> None:
        """After an engine outage: compare every positioned subscriber with its stream's top.

        Tries again, with backoff, until every channel was checked: right after a Redis
        restart the first calls may fail (connections that died with the old server), and
        giving up would leave subscribers silently behind. A reconnect while checking adds its
        channels to the same loop.
        """
        first, longest = self.GAP_CHECK_BACKOFF
        delay = first
        while self._unchecked:
            channel, asked = next(iter(self._unchecked.items()))
            try:
                await self._check_channel(channel)
            except ProtocolError as exc:
                self.counters["engine.gap_check_retries"] += 1
                log.info("stream check of %s failed (%s); retrying", channel, exc.message)
                await asyncio.sleep(random.uniform(delay / 2, delay))
                delay = min(delay * 2, longest)
                continue
            delay = first
            if self._unchecked.get(channel) == asked:
                del self._unchecked[channel]

    async def _check_channel(self, channel: str) -> None:
        """Stop every positioned subscriber of ``channel`` whose stream does not continue its
        position any more (see :func:`~hubbub.subscription.judge_top`)."""
        subs = self._channels.get(channel)
        if not subs:
            return
        # Positions as before the read: live publications may move them on meanwhile.
        tracked = [
            (session, sub, sub.epoch, sub.offset)
            for session in list(subs.values())
            if (sub := session.subscriptions.get(channel)) is not None
            and sub.recoverable
            and sub.pending is None
            and not sub.stale
        ]
        if not tracked:
            return
        top = await self.stream_top(channel, tracked[0][1].options)
        for session, sub, epoch, offset in tracked:
            verdict = judge_top(epoch, offset, top.epoch, top.offset)
            if verdict is Verdict.MISSED and sub.offset >= top.offset:
                continue  # what was published meanwhile reached it live, in order
            if verdict.lost:
                self.stream_lost(session, sub, verdict)

    def stream_lost(self, session: Subscriber, sub: Subscription, verdict: Verdict) -> None:
        """The stream stopped continuing ``sub``'s position (``verdict``): send nothing more on
        it, and make the client recover, or learn that it cannot. Never awaits."""
        if sub.stale or session.subscriptions.get(sub.channel) is not sub:
            return
        sub.stale = True
        self.counters[f"engine.stream_{verdict.value}"] += 1
        seen = (sub.channel, sub.epoch, verdict)
        if seen not in self._lost_logged:
            # Once per channel, epoch and kind, not once per subscriber.
            if len(self._lost_logged) > 1000:
                self._lost_logged.clear()
            self._lost_logged.add(seen)
            log.warning(
                "stream of %s does not continue epoch %s (%s): subscribers recover",
                sub.channel,
                sub.epoch,
                verdict.value,
            )
        self.spawn(self._tell_lost(session, sub, verdict))

    async def _tell_lost(self, session: Subscriber, sub: Subscription, verdict: Verdict) -> None:
        if verdict is Verdict.BEHIND:
            # The stream lost publications yet keeps its epoch: the client's position could
            # later be taken for a valid one (and "recovered" past the lost ones) once offsets
            # climb again. A new epoch first, so that its recovery reports the loss.
            try:
                await self._renew_epoch(sub.channel, sub.epoch)
            except Exception:
                # Telling the client matters more than the epoch: a stopped subscription that
                # is never told would stall silently.
                log.exception("renewing the epoch of %s failed", sub.channel)
        await session.recover_gap(sub)

    async def _renew_epoch(self, channel: str, epoch: str) -> None:
        """Renew ``channel``'s epoch once for all the subscribers that found it went back."""
        key = (channel, epoch)
        task = self._renewing.get(key)
        if task is None:
            task = self._renewing[key] = self.spawn_task(self._renew_epoch_retrying(channel, epoch))
            task.add_done_callback(lambda _: self._renewing.pop(key, None))
        await asyncio.shield(task)

    async def _renew_epoch_retrying(self, channel: str, epoch: str) -> None:
        first, longest = self.GAP_CHECK_BACKOFF
        delay = first
        for _ in range(10):
            try:
                await self.broker.renew_epoch(channel, epoch)
            except ProtocolError as exc:
                log.info("renewing the epoch of %s failed (%s); retrying", channel, exc.message)
                await asyncio.sleep(random.uniform(delay / 2, delay))
                delay = min(delay * 2, longest)
                continue
            self.counters["engine.epoch_renewed"] += 1
            return
        log.error("could not renew the epoch of %s; its subscribers are told anyway", channel)

    # -----------------------------------------------------------------------------------------
    # Application hooks

    def rpc(self, method: str) -> Callable[[RPCHandler], RPCHandler]:
        """Decorator: register the handler of ``rpc`` commands named ``method``."""

        def register(handler: RPCHandler) -> RPCHandler:
            self.rpc_handlers[method] = handler
            return handler

        return register

    def on_send(self, handler: SendHandler) -> SendHandler:
        """Decorator: register the handler of ``send`` commands."""
        self.send_handler = handler
        return handler

    def on_connect(self, handler: ConnectHandler) -> ConnectHandler:
        """Decorator: add a handler told about every completed connect."""
        self.connect_handlers.append(handler)
        return handler

    def check_subscribe(self, namespace: str) -> Callable[[SubscribeCheck], SubscribeCheck]:
        """Decorator: register the check of client-side subscriptions to ``namespace``'s
        channels ("" = channels without a namespace); one check per namespace."""

        def register(check: SubscribeCheck) -> SubscribeCheck:
            self.subscribe_checks[namespace] = check
            return check

        return register

    # -----------------------------------------------------------------------------------------
    # Local index (used by sessions)

    def user_connections(self, user: str) -> int:
        """How many connections ``user`` has on this node."""
        return len(self._users.get(user, ()))

    async def user_connections_everywhere(self, user: str) -> int:
        """How many connections ``user`` has on every node (from the engine's presence; a
        node that died stops counting after ``presence_ttl``)."""
        stats = await self.presence_manager.presence_stats(user_presence_key(user))
        return stats.num_clients

    def user_bucket(self, user: str) -> TokenBucket | None:
        """The command bucket ``user`` shares across connections, or None when off.

        Each node allows its share of ``user_command_rate`` (the rate divided by the live
        nodes), so the limit holds across nodes without a round trip per command.
        """
        limits = self.settings.limits
        if not user or limits.user_command_rate <= 0:
            return None
        nodes = max(1, len(self._peers) + 1)
        bucket = self._user_buckets.get(user)
        if bucket is None:
            bucket = TokenBucket(
                limits.user_command_rate / nodes, limits.user_command_burst / nodes, self.clock
            )
            self._user_buckets[user] = bucket
        else:
            bucket.rate = limits.user_command_rate / nodes  # nodes come and go
        return bucket

    @property
    def connection_count(self) -> int:
        return len(self._sessions)

    def register_session(self, session: Session) -> None:
        self._sessions[session.client_id] = session
        self._users.setdefault(session.user, {})[session.client_id] = session

    def unregister_session(self, session: Session) -> None:
        self._sessions.pop(session.client_id, None)
        conns = self._users.get(session.user)
        if conns is not None:
            conns.pop(session.client_id, None)
            if not conns:
                del self._users[session.user]
                self._user_buckets.pop(session.user, None)

    async def add_subscriber(self, channel: str, session: Subscriber) -> None:
        """Index ``session`` under ``channel``; the first local subscriber subscribes the node
        to the channel in the engine. Returns once the node receives the channel."""
        subs = self._channels.get(channel)
        if subs is not None:
            subs[session.client_id] = session
            self._direct.setdefault(channel, {})[session.client_id] = session
            pending = self._subscribing.get(channel)
            if pending is not None:
                await asyncio.shield(pending)
            return
        self._channels[channel] = {session.client_id: session}
        self._direct[channel] = {session.client_id: session}
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._subscribing[channel] = done
        try:
            await self.broker.subscribe(channel)
        except BaseException as exc:
            self._channels.pop(channel, None)
            self._direct.pop(channel, None)
            self._groups.pop(channel, None)
            done.set_exception(exc if isinstance(exc, Exception) else RuntimeError("cancelled"))
            done.exception()  # mark retrieved: waiters get it through shield
            raise
        else:
            done.set_result(None)
        finally:
            self._subscribing.pop(channel, None)

    def group_subscriber(
        self, channel: str, client_id: str, codec: Codec, transport: Transport
    ) -> bool:
        """Deliver ``channel`` to this subscriber through its transport's group for the
        channel and wire format (created on first use) instead of one by one. For live
        subscribers whose publications need no per-connection check (no tracked position).
        False when the transport has no groups or the subscriber is not (or no longer) here.
        """
        direct = self._direct.get(channel)
        if direct is None or client_id not in direct or transport.closing:
            return False
        groups = self._groups.get(channel)
        group = groups.get(codec) if groups is not None else None
        if group is None:
            group = transport.new_group()
            if group is None:
                return False
            self._groups.setdefault(channel, {})[codec] = group
        del direct[client_id]
        if not direct:
            del self._direct[channel]
        group.add(client_id, transport)
        return True

    async def remove_subscriber(self, channel: str, session: Subscriber) -> None:
        """Drop ``session`` from ``channel``; the last one unsubscribes the node."""
        subs = self._channels.get(channel)
        if subs is None or subs.pop(session.client_id, None) is None:
            return
        self._unindex(channel, session.client_id)
        if not subs:
            del self._channels[channel]
            await self.broker.unsubscribe(channel)

    def _unindex(self, channel: str, client_id: str) -> None:
        direct = self._direct.get(channel)
        if direct is not None and direct.pop(client_id, None) is not None:
            if not direct:
                del self._direct[channel]
            return
        groups = self._groups.get(channel)
        if groups is None:
            return
        for codec, group in list(groups.items()):
            if group.discard(client_id):
                if not len(group):
                    del groups[codec]
                break
        if not groups:
            del self._groups[channel]

    # -----------------------------------------------------------------------------------------
    # Engine events (BrokerEventHandler): fan-out, never awaits.

    def handle_publication(self, channel: str, pub: Publication, position: StreamPosition) -> None:
        subs = self._channels.get(channel)
        if not subs:
            return
        push = Push(channel=channel, pub=pub)
        # Encoded once per wire format present among the subscribers, not per subscriber.
        encoded: dict[Codec, bytes] = {}
        groups = self._groups.get(channel)
        if groups is not None:
            for fmt, group in groups.items():
                data = encoded[fmt] = fmt.encode_push(push)
                group.send(data)
        direct = self._direct.get(channel)
        if direct is not None:
            for session in list(direct.values()):
                fmt = session.codec
                data = encoded.get(fmt) or encoded.setdefault(fmt, fmt.encode_push(push))
                session.deliver(channel, pub, data, position.epoch)
        self.counters["deliveries"] += len(subs)

    def handle_join(self, channel: str, info: ClientInfo) -> None:
        self._fan_out_join_leave(channel, Push(channel=channel, join=JoinLeave(info=info)))

    def handle_leave(self, channel: str, info: ClientInfo) -> None:
        self._fan_out_join_leave(channel, Push(channel=channel, leave=JoinLeave(info=info)))

    def _fan_out_join_leave(self, channel: str, push: Push) -> None:
        subs = self._channels.get(channel)
        if not subs:
            return
        encoded: dict[Codec, bytes] = {}
        for session in list(subs.values()):
            fmt = session.codec
            data = encoded.get(fmt) or encoded.setdefault(fmt, fmt.encode_push(push))
            session.deliver_join_leave(channel, data)

    # -----------------------------------------------------------------------------------------
    # Streams

    @staticmethod
    def publish_options(opts: ChannelOptions, *, skip_history: bool = False) -> PublishOptions:
        if skip_history or not opts.use_history:
            return PublishOptions()
        return PublishOptions(
            history_size=opts.history_size,
            history_ttl=opts.history_ttl,
            history_meta_ttl=opts.history_meta_ttl,
        )

    async def stream_top(self, channel: str, opts: ChannelOptions) -> StreamPosition:
        """The current top position of ``channel``'s stream (creating its epoch if new)."""
        result = await self.read_history(channel, HistoryFilter(limit=0), opts)
        return result.position

    async def read_history(
        self, channel: str, flt: HistoryFilter, opts: ChannelOptions
    ) -> HistoryResult:
        return await self.broker.history(channel, flt, self.publish_options(opts))

    async def publish_with_options(
        self,
        channel: str,
        data: msgspec.Raw,
        opts: ChannelOptions,
        *,
        info: ClientInfo | None = None,
        tags: dict[str, str] | None = None,
        skip_history: bool = False,
        idempotency_key: str = "",
    ) -> StreamPosition:
        """Publish a validated payload with known channel options (used by sessions and API)."""
        pub = Publication(data=data, info=info, tags=tags or None)
        popts = self.publish_options(opts, skip_history=skip_history)
        if idempotency_key:
            popts = PublishOptions(
                history_size=popts.history_size,
                history_ttl=popts.history_ttl,
                history_meta_ttl=popts.history_meta_ttl,
                idempotency_key=idempotency_key,
                idempotent_result_ttl=self.settings.http_api.idempotent_result_ttl,
            )
        result = await self.broker.publish(channel, pub, popts)
        self.counters["publications"] += 1
        return result.position

    # -----------------------------------------------------------------------------------------
    # Public API

    def _options(self, channel: str) -> ChannelOptions:
        if not channel:
            raise error(ErrorCode.BAD_REQUEST, "bad request: empty channel")
        self.rules.validate(channel)
        return self.rules.options(channel)

    async def publish(
        self,
        channel: str,
        data: object,
        *,
        tags: dict[str, str] | None = None,
        skip_history: bool = False,
        idempotency_key: str = "",
    ) -> StreamPosition:
        """Publish ``data`` (any JSON value, or JSON text as bytes/``msgspec.Raw``) to ``channel``.

        Returns:
            The publication's stream position: offset and epoch, or ``(0, "")`` when the
            channel keeps no history (or ``skip_history``).

        Raises:
            ProtocolError: 102 unknown namespace, 107 bad channel or data.
        """
        opts = self._options(channel)
        payload = to_payload(data, binary=opts.binary)
        if payload is EMPTY:
            raise error(ErrorCode.BAD_REQUEST, "bad request: empty data")
        return await self.publish_with_options(
            channel,
            payload,
            opts,
            tags=tags,
            skip_history=skip_history,
            idempotency_key=idempotency_key,
        )

    async def broadcast(
        self,
        channels: Iterable[str],
        data: object,
        *,
        tags: dict[str, str] | None = None,
        skip_history: bool = False,
        idempotency_key: str = "",
    ) -> list[StreamPosition | ProtocolError]:
        """Publish the same data to several channels; one result or error per channel, in order."""
        payload = to_payload(data)
        results: list[StreamPosition | ProtocolError] = []
        for channel in channels:
            try:
                results.append(
                    await self.publish(
                        channel,
                        payload,
                        tags=tags,
                        skip_history=skip_history,
                        idempotency_key=idempotency_key,
                    )
                )
            except ProtocolError as exc:
                results.append(exc)
        return results

    def _targets(self, user: str, client: str = "") -> list[Session]:
        if client:
            session = self._sessions.get(client)
            return [session] if session is not None and session.user == user else []
        return list(self._users.get(user, {}).values())

    async def disconnect(
        self,
        user: str,
        code: int = DisconnectCode.FORCE_DISCONNECT,
        reason: str = "",
        *,
        client: str = "",
        whitelist: Iterable[str] = (),
    ) -> None:
        """Close the connections of ``user`` (or only ``client``) on every node, sparing
        ``whitelist``."""
        if not reason:
            try:
                reason = disconnect(DisconnectCode(code)).reason
            except ValueError:
                reason = "disconnect"
        keep = list(whitelist)
        self._disconnect_local(user, int(code), reason, client, keep)
        await self._broadcast_control(
            control.DisconnectUser(self.uid, user, client, int(code), reason, keep)
        )

    def _disconnect_local(
        self, user: str, code: int, reason: str, client: str, whitelist: list[str]
    ) -> None:
        keep = set(whitelist)
        for session in self._targets(user, client):
            if session.client_id not in keep:
                session.close(Disconnect(code, reason))

    async def unsubscribe(self, user: str, channel: str, *, client: str = "") -> None:
        """Unsubscribe ``user``'s connections on every node from ``channel`` (push 2000)."""
        self._options(channel)
        await self._unsubscribe_local(user, channel, client)
        await self._broadcast_control(control.UnsubscribeUser(self.uid, user, channel, client))

    async def _unsubscribe_local(self, user: str, channel: str, client: str) -> None:
        for session in self._targets(user, client):
            await session.server_unsubscribe(channel, UnsubscribeCode.SERVER)

    async def subscribe(
        self,
        user: str,
        channel: str,
        *,
        client: str = "",
        info: object = None,
        data: object = None,
        recover_since: StreamPosition | None = None,
    ) -> None:
        """Subscribe ``user``'s live connections on every node to ``channel`` (subscribe push)."""
        opts = self._options(channel)
        chan_info = EMPTY if info is None else to_payload(info)
        payload = EMPTY if data is None else to_payload(data, binary=opts.binary)
        await self._subscribe_local(user, channel, client, chan_info, payload, recover_since)
        await self._broadcast_control(
            control.SubscribeUser(
                self.uid,
                user,
                channel,
                client,
                bytes(chan_info),
                bytes(payload),
                recover_since.offset if recover_since else 0,
                recover_since.epoch if recover_since else "",
                recover_since is not None,
            )
        )

    async def _subscribe_local(
        self,
        user: str,
        channel: str,
        client: str,
        chan_info: msgspec.Raw,
        data: msgspec.Raw,
        recover_since: StreamPosition | None,
    ) -> None:
        for session in self._targets(user, client):
            try:
                await session.server_subscribe(
                    channel, chan_info=chan_info, data=data, recover_since=recover_since
                )
            except ProtocolError as exc:
                # One connection that cannot take the channel (already subscribed, JSON client
                # for a binary channel) must not keep the user's other connections from it.
                if exc.code != ErrorCode.ALREADY_SUBSCRIBED:
                    log.info("subscribe %s to %s: %s", session.client_id, channel, exc.message)

    async def refresh(
        self,
        user: str,
        *,
        client: str = "",
        expired: bool = False,
        expire_at: float | None = None,
    ) -> None:
        """Change the expiry of ``user``'s connections on every node: ``expired`` closes them
        now (3005); ``expire_at`` (unix seconds) sets a new expiry, after which they must
        refresh."""
        self._refresh_local(user, client, expired, expire_at)
        await self._broadcast_control(
            control.RefreshUser(self.uid, user, client, expired, expire_at or 0.0)
        )

    def _refresh_local(
        self, user: str, client: str, expired: bool, expire_at: float | None
    ) -> None:
        for session in self._targets(user, client):
            if expired:
                session.close(disconnect(DisconnectCode.EXPIRED))
            elif expire_at is not None:
                session.set_expiry(expire_at)

    async def send_message(self, user: str, data: object, *, client: str = "") -> None:
        """Send an asynchronous ``message`` push to ``user``'s connections on every node."""
        payload = to_payload(data)
        self._message_local(user, client, payload)
        await self._broadcast_control(control.MessageUser(self.uid, user, client, bytes(payload)))

    def _message_local(self, user: str, client: str, data: msgspec.Raw) -> None:
        push = Push(message=MessagePush(data=data))
        for session in self._targets(user, client):
            session.push_message(session.codec.encode_push(push))

    # -----------------------------------------------------------------------------------------
    # What sessions ask of the engine (sessions never reach the engine themselves)

    async def add_presence(self, channel: str, info: ClientInfo) -> None:
        """Record ``info`` in ``channel``'s presence for ``client.presence_ttl`` seconds (the
        node renews it while the client stays). Raises 100 when the engine is unavailable."""
        await self.presence_manager.add_presence(channel, info, self.settings.client.presence_ttl)

    async def remove_presence(self, channel: str, client_id: str, user: str) -> None:
        """Remove a client from ``channel``'s presence. Raises 100 when the engine is
        unavailable."""
        await self.presence_manager.remove_presence(channel, client_id, user)

    async def publish_join(self, channel: str, info: ClientInfo) -> None:
        """Tell every node's subscribers of ``channel`` that ``info`` joined."""
        await self.broker.publish_join(channel, info)

    async def publish_leave(self, channel: str, info: ClientInfo) -> None:
        """Tell every node's subscribers of ``channel`` that ``info`` left."""
        await self.broker.publish_leave(channel, info)

    async def count_connection(self, info: ClientInfo) -> None:
        """Count a connection of ``info.user`` towards ``limits.connections_per_user`` on every
        node (see :meth:`user_connections_everywhere`)."""
        await self.add_presence(user_presence_key(info.user), info)

    async def uncount_connection(self, user: str, client_id: str) -> None:
        """Stop counting a connection of ``user`` (the reverse of :meth:`count_connection`)."""
        await self.remove_presence(user_presence_key(user), client_id, user)

    async def presence(self, channel: str) -> dict[str, ClientInfo]:
        """Who is in ``channel``, by client id. Raises 108 when presence is off there."""
        opts = self._options(channel)
        if not opts.presence:
            raise error(ErrorCode.NOT_AVAILABLE)
        return await self.presence_manager.presence(channel)

    async def presence_stats(self, channel: str) -> PresenceStats:
        """Connection and user counts of ``channel``. Raises 108 when presence is off there."""
        opts = self._options(channel)
        if not opts.presence:
            raise error(ErrorCode.NOT_AVAILABLE)
        return await self.presence_manager.presence_stats(channel)

    async def history(
        self,
        channel: str,
        *,
        limit: int = 0,
        since: StreamPosition | None = None,
        reverse: bool = False,
    ) -> HistoryResult:
        """Read ``channel``'s stream (``limit`` 0 = position only, -1 = all).

        Raises:
            ProtocolError: 108 when the channel keeps no history, 112 when ``since`` names
                another epoch, 107 for a reverse read from offset 0.
        """
        opts = self._options(channel)
        if not opts.use_history:
            raise error(ErrorCode.NOT_AVAILABLE)
        if since is not None and reverse and since.offset == 0:
            raise error(ErrorCode.BAD_REQUEST, "bad request: reverse history needs an offset")
        return await self.read_history(
            channel, HistoryFilter(limit=limit, since=since, reverse=reverse), opts
        )

    async def history_remove(self, channel: str) -> None:
        """Drop ``channel``'s stored publications (its position is kept)."""
        opts = self._options(channel)
        if not opts.use_history:
            raise error(ErrorCode.NOT_AVAILABLE)
        await self.broker.remove_history(channel)

    def channels(self, pattern: str = "") -> dict[str, int]:
        """Channels with local subscribers and their subscriber counts, filtered by a glob."""
        return {
            name: len(subs)
            for name, subs in self._channels.items()
            if not pattern or fnmatch.fnmatchcase(name, pattern)
        }

    def info(self) -> list[NodeInfo]:
        """Every node's statistics: this node first, then the peers heard from lately."""
        horizon = time.monotonic() - self.settings.node_lapse
        for uid in [uid for uid, (_, seen) in self._peers.items() if seen < horizon]:
            del self._peers[uid]
        peers = [info for info, _ in self._peers.values()]
        return [
            NodeInfo(
                uid=self.uid,
                name=self.name,
                version=self.version,
                num_clients=len(self._sessions),
                num_users=len(self._users),
                num_channels=len(self._channels),
                num_subs=sum(len(s) for s in self._channels.values()),
                uptime=int(time.monotonic() - self._started_at),
            ),
            *peers,
        ]

    def session(self, client_id: str) -> Session | None:
        """The local connection with ``client_id``, if any."""
        return self._sessions.get(client_id)

    # -----------------------------------------------------------------------------------------
    # Counters (exported as metrics later)

    def metrics_disconnect(self, code: int) -> None:
        self.counters[f"disconnect.{code}"] += 1

    def metrics_bad_input(self, code: int) -> None:
        self.counters[f"bad_input.{code}"] += 1

    def metrics_reply_error(self, code: int) -> None:
        self.counters[f"reply_error.{code}"] += 1

    def metrics_recovery_forced(self) -> None:
        self.counters["recovery.forced"] += 1

    def metrics_recovery(self, recovered: bool) -> None:
        self.counters["recovery.ok" if recovered else "recovery.failed"] += 1
