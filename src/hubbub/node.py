"""The node: what an application may call, and what its sessions ask of the engine.

A node is one hubbub server process. It owns the engine (see
:mod:`hubbub.engines.factory`), runs the lifecycle (start, drain, close), holds the
application's hooks and the counters, and offers the public Python API: publish, broadcast,
disconnect, subscribe, unsubscribe, refresh, presence, history, info. The work behind it lives
beside it:

* :mod:`hubbub.index`: who on this node receives a publication (the fan-out);
* :mod:`hubbub.cluster`: what nodes tell each other (announcements, user operations);
* :mod:`hubbub.recovery`: which subscribers may have missed publications after the engine
  reconnected;
* :mod:`hubbub.hooks`: the application's handlers (``@node.rpc``, ``@node.on_connect``...).

Sessions talk to the node only: every method they call is here.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Coroutine, Iterable
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, Any, TypeVar

import msgspec

from hubbub import __version__
from hubbub.auth import TokenVerifier, warn_about_weak_keys
from hubbub.channels import ChannelRules
from hubbub.clock import Clock, SystemClock, running_loop
from hubbub.cluster import Cluster, NodeInfo
from hubbub.config import ChannelOptions, Settings
from hubbub.delta import without_delta_flags
from hubbub.engines.base import (
    Broker,
    HistoryFilter,
    HistoryResult,
    PresenceManager,
    PresenceStats,
    PublishOptions,
    StreamPosition,
)
from hubbub.engines.factory import engine_from_settings
from hubbub.hooks import Hooks
from hubbub.index import EngineEvents, LocalIndex, Subscriber, user_presence_key
from hubbub.limits import TokenBucket
from hubbub.payload import to_payload
from hubbub.protocol.codec import Codec
from hubbub.protocol.codes import (
    Disconnect,
    DisconnectCode,
    ErrorCode,
    ProtocolError,
    disconnect,
    error,
)
from hubbub.protocol.messages import EMPTY, ClientInfo, Publication
from hubbub.proxy import Proxies
from hubbub.recovery import GapChecker
from hubbub.subscription import Verdict
from hubbub.transports.admission import Admission

if TYPE_CHECKING:
    from hubbub.session import Session
    from hubbub.subscription import Subscription
    from hubbub.transports.base import Transport

# Re-exported: their public import path is this module.
__all__ = ["Node", "NodeInfo", "Subscriber", "user_presence_key"]

log = logging.getLogger("hubbub.node")

T = TypeVar("T")


class Node(Hooks):
    """A hubbub server node.

    Args:
        settings: validated settings (see :func:`hubbub.config.load_settings`).
        broker: the engine's broker; by default the one ``settings.engine`` names.
        presence_manager: the engine's presence manager; likewise.
        clock: time source; the system clock by default.

    Attributes:
        index: this node's connections and channel subscribers (:mod:`hubbub.index`).
        cluster: this node's side of the conversation between nodes (:mod:`hubbub.cluster`).
        gaps: the stream checks after engine reconnects (:mod:`hubbub.recovery`).
        events: what the engine calls (:class:`~hubbub.index.EngineEvents`).
    """

    def __init__(
        self,
        settings: Settings | None = None,
        *,
        broker: Broker | None = None,
        presence_manager: PresenceManager | None = None,
        clock: Clock | None = None,
    ) -> None:
        super().__init__()
        self.settings = settings or Settings()
        self.clock: Clock = clock or SystemClock()
        if broker is None or presence_manager is None:
            default_broker, default_presence = engine_from_settings(self.settings, self.clock)
            broker = broker or default_broker
            presence_manager = presence_manager or default_presence
        self.broker: Broker = broker
        self.presence_manager: PresenceManager = presence_manager
        self.uid = str(uuid.uuid4())
        self.presence_manager.set_owner(self.uid)
        self.name = self.settings.name or f"hubbub-{self.uid[:8]}"
        self.version = __version__
        self.rules = ChannelRules(self.settings)
        self.verifier = TokenVerifier(self.settings.token, self.clock)
        self.counters: Counter[str] = Counter()
        self.index = LocalIndex(self.broker, self.counters)
        self.cluster = Cluster(self)
        self.gaps = GapChecker(self)
        # What the engine calls: the index, the cluster and the gap checks, directly.
        self.events = EngineEvents(
            self.index, self.cluster.handle_control, self.gaps.handle_reconnect
        )
        self.broker.set_event_handler(self.events)
        self._tasks: set[asyncio.Task[Any]] = set()
        self._started_at = time.monotonic()
        self._presence_task: asyncio.Task[None] | None = None
        self._announce_task: asyncio.Task[None] | None = None
        self._running = False
        self.draining = False
        # Who may connect, and how many are: asked by every transport before a session exists.
        self.admission = Admission(self.settings)
        # The configured HTTP proxies: hooks registered before the application's own.
        self.proxies = Proxies(self)
        self.proxies.install()

    # -----------------------------------------------------------------------------------------
    # Lifecycle

    async def start(self) -> None:
        """Start the engine, the periodic presence refresh and the announcements. Idempotent."""
        if self._running:
            return
        self._running = True
        self._started_at = time.monotonic()
        warn_about_weak_keys(self.settings.token, development=self.settings.development)
        await self.broker.start()
        self._presence_task = asyncio.create_task(self.cluster.refresh_presence_forever())
        self._announce_task = asyncio.create_task(self.cluster.run())

    async def close(self, reason: Disconnect | None = None) -> None:
        """Close every connection (3001 shutdown by default) and stop the engine."""
        reason = reason or disconnect(DisconnectCode.SHUTDOWN)
        for session in list(self.index.sessions.values()):
            session.close(reason)
        for periodic in (self._presence_task, self._announce_task):
            if periodic is not None:
                periodic.cancel()
        self._presence_task = self._announce_task = None
        for task in list(self._tasks):
            task.cancel()
        await self.proxies.close()
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

    @property
    def ready(self) -> bool:
        """Started, not draining, and its engine reachable."""
        return self._running and not self.draining and self.broker.healthy

    async def drain(self, period: float) -> None:
        """Prepare to stop: report not ready, refuse new connections, and close the existing
        ones with 3001 (shutdown: clients reconnect elsewhere and recover) in batches spread
        over ``period`` seconds, so that they do not all reconnect at the same instant."""
        self.draining = True
        sessions = list(self.index.sessions.values())
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
            if not self.index.sessions:
                break
            await asyncio.sleep(0.05)

    # -----------------------------------------------------------------------------------------
    # Stream checks after engine reconnects (asked by sessions; kept in ``gaps``)

    @property
    def engine_reconnects(self) -> int:
        """How many times the engine reconnected since the node started."""
        return self.gaps.reconnects

    def check_stream(self, channel: str) -> None:
        """Compare ``channel``'s positioned subscribers with its stream in the background."""
        self.gaps.check_stream(channel)

    def stream_lost(self, session: Subscriber, sub: Subscription, verdict: Verdict) -> None:
        """The stream stopped continuing ``sub``'s position (``verdict``): send nothing more on
        it, and make the client recover, or learn that it cannot. Never awaits."""
        self.gaps.stream_lost(session, sub, verdict)

    # -----------------------------------------------------------------------------------------
    # Connections and subscribers (used by sessions; kept in the index)

    def user_connections(self, user: str) -> int:
        """How many connections ``user`` has on this node."""
        return self.index.user_connections(user)

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
        nodes = self.cluster.size
        return self.index.user_bucket(
            user, limits.user_command_rate / nodes, limits.user_command_burst / nodes, self.clock
        )

    @property
    def connection_count(self) -> int:
        return len(self.index.sessions)

    def register_session(self, session: Session) -> None:
        self.index.register(session)

    def unregister_session(self, session: Session) -> None:
        self.index.unregister(session)

    async def add_subscriber(self, channel: str, session: Subscriber, delta: bool = False) -> None:
        """Index ``session`` under ``channel``; the first local subscriber subscribes the node
        to the channel in the engine. Returns once the node receives the channel. ``delta``:
        the subscription negotiated delta compression."""
        await self.index.add_subscriber(channel, session, delta=delta)

    def seed_delta_base(self, channel: str, pub: Publication, epoch: str) -> None:
        """A delta subscriber recovered up to ``pub``: the base of the channel's next delta."""
        self.index.seed_delta_base(channel, pub.offset, epoch, bytes(pub.data))

    def group_subscriber(
        self, channel: str, client_id: str, codec: Codec, transport: Transport
    ) -> bool:
        """Deliver ``channel`` to this subscriber through its transport's group (see
        :meth:`hubbub.index.LocalIndex.group_subscriber`)."""
        return self.index.group_subscriber(channel, client_id, codec, transport)

    async def remove_subscriber(self, channel: str, session: Subscriber) -> None:
        """Drop ``session`` from ``channel``; the last one unsubscribes the node."""
        await self.index.remove_subscriber(channel, session)

    def session(self, client_id: str) -> Session | None:
        """The local connection with ``client_id``, if any."""
        return self.index.sessions.get(client_id)

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
        result = await self.broker.history(channel, flt, self.publish_options(opts))
        return without_delta_flags(result)  # history is never a delta

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
        delta: bool = False,
    ) -> StreamPosition:
        """Publish a validated payload with known channel options (used by sessions and API);
        ``delta``, or the namespace's ``delta_publish``: see :meth:`publish`."""
        pub = Publication(data, info, tags=tags or None, delta=delta or opts.delta_publish)
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

    def channel_options(self, channel: str) -> ChannelOptions:
        """The options of ``channel``'s namespace.

        Raises:
            ProtocolError: the name is empty or invalid, or its namespace unknown.
        """
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
        delta: bool = False,
    ) -> StreamPosition:
        """Publish ``data`` (any JSON value, or JSON text as bytes/``msgspec.Raw``) to ``channel``.

        ``delta``: it may reach delta subscribers as a Fossil delta (:mod:`hubbub.delta`).

        Returns:
            The publication's stream position: offset and epoch, or ``(0, "")`` when the
            channel keeps no history (or ``skip_history``).

        Raises:
            ProtocolError: 102 unknown namespace, 107 bad channel or data.
        """
        opts = self.channel_options(channel)
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
            delta=delta,
        )

    async def broadcast(
        self,
        channels: Iterable[str],
        data: object,
        *,
        tags: dict[str, str] | None = None,
        skip_history: bool = False,
        idempotency_key: str = "",
        delta: bool = False,
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
                        delta=delta,
                    )
                )
            except ProtocolError as exc:
                results.append(exc)
        return results

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
        await self.cluster.disconnect(user, int(code), reason, client, list(whitelist))

    async def unsubscribe(self, user: str, channel: str, *, client: str = "") -> None:
        """Unsubscribe ``user``'s connections on every node from ``channel`` (push 2000)."""
        self.channel_options(channel)
        await self.cluster.unsubscribe(user, channel, client)

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
        opts = self.channel_options(channel)
        chan_info = EMPTY if info is None else to_payload(info)
        payload = EMPTY if data is None else to_payload(data, binary=opts.binary)
        await self.cluster.subscribe(user, channel, client, chan_info, payload, recover_since)

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
        await self.cluster.refresh(user, client, expired, expire_at)

    async def send_message(self, user: str, data: object, *, client: str = "") -> None:
        """Send an asynchronous ``message`` push to ``user``'s connections on every node."""
        await self.cluster.send_message(user, client, to_payload(data))

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
        opts = self.channel_options(channel)
        if not opts.presence:
            raise error(ErrorCode.NOT_AVAILABLE)
        return await self.presence_manager.presence(channel)

    async def presence_stats(self, channel: str) -> PresenceStats:
        """Connection and user counts of ``channel``. Raises 108 when presence is off there."""
        opts = self.channel_options(channel)
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
        opts = self.channel_options(channel)
        if not opts.use_history:
            raise error(ErrorCode.NOT_AVAILABLE)
        if since is not None and reverse and since.offset == 0:
            raise error(ErrorCode.BAD_REQUEST, "bad request: reverse history needs an offset")
        return await self.read_history(
            channel, HistoryFilter(limit=limit, since=since, reverse=reverse), opts
        )

    async def history_remove(self, channel: str) -> None:
        """Drop ``channel``'s stored publications (its position is kept)."""
        opts = self.channel_options(channel)
        if not opts.use_history:
            raise error(ErrorCode.NOT_AVAILABLE)
        await self.broker.remove_history(channel)

    def channels(self, pattern: str = "") -> dict[str, int]:
        """Channels with local subscribers and their subscriber counts, filtered by a glob."""
        return self.index.channel_counts(pattern)

    def info(self) -> list[NodeInfo]:
        """Every node's statistics: this node first, then the peers heard from lately."""
        peers = self.cluster.peers()
        return [self.describe(), *peers]

    def describe(self) -> NodeInfo:
        """This node's statistics, as ``info`` reports and the cluster announces them."""
        index = self.index
        return NodeInfo(
            uid=self.uid,
            name=self.name,
            version=self.version,
            num_clients=len(index.sessions),
            num_users=len(index.users),
            num_channels=len(index.channels),
            num_subs=index.subscriptions_count(),
            uptime=int(time.monotonic() - self._started_at),
        )

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
