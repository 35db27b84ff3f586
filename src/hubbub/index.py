"""The local index: who on this node receives a publication.

The index keeps this node's connections (by client id and by user) and each channel's local
subscribers, and fans the engine's publications, joins and leaves out to them. Each
publication is encoded once per wire format and the same bytes are queued on every
subscriber's transport, without awaiting any of them.

The index never imports the node: it is given the engine's broker (to subscribe the node to a
channel when its first local subscriber comes, and to unsubscribe it when the last one goes)
and the node's counters.
"""

from __future__ import annotations

import asyncio
import fnmatch
from collections import Counter
from collections.abc import Callable
from typing import TYPE_CHECKING, Protocol, cast

import msgspec

from hubbub.clock import Clock
from hubbub.delta import DeltaChannel, DeltaSubscriber
from hubbub.engines.base import Broker, StreamPosition
from hubbub.limits import TokenBucket
from hubbub.protocol.codec import Codec
from hubbub.protocol.messages import ClientInfo, JoinLeave, Publication, Push

if TYPE_CHECKING:
    from hubbub.session import Session
    from hubbub.subscription import Subscription
    from hubbub.transports.base import Group, Transport


USER_PRESENCE_PREFIX = "\x01connections#"


def user_presence_key(user: str) -> str:
    """Where a user's connections are counted in the presence manager: a name no channel can
    have (channel names are printable ASCII), so it never mixes with a channel's presence."""
    return USER_PRESENCE_PREFIX + user


class Subscriber(Protocol):
    """What the channel index holds: a connection's side of fan-out. Sessions are the usual
    ones; plain-text endpoints (the tutorial chat) are others."""

    client_id: str
    codec: Codec
    subscriptions: dict[str, Subscription]

    def deliver(self, channel: str, pub: Publication, data: bytes, epoch: str) -> None: ...

    def deliver_join_leave(self, channel: str, data: bytes) -> None: ...

    async def recover_gap(self, sub: Subscription) -> None: ...


class LocalIndex:
    """This node's connections and channel subscribers, and the fan-out to them.

    Its ``handle_publication``, ``handle_join`` and ``handle_leave`` are the engine's events
    (see :class:`~hubbub.engines.base.BrokerEventHandler`): called on the event loop, they
    never await.

    Args:
        broker: the engine's broker, subscribed to the channels that have local subscribers.
        counters: the node's counters (``deliveries`` is counted here).

    Attributes:
        sessions: every local connection that completed ``connect``, by client id.
        users: the same connections by user: the session itself for a user's only one here
            (a dict of one entry costs 200 bytes per connection), else by client id.
        streams: of those, the HTTP streams' sessions by their stream session id (what
            ``/emulation`` requests name).
        channels: every local subscriber of a channel, by client id.
        direct: of a channel's subscribers, those delivered to one by one (reply not yet
            written, transports without groups, a position of their own).
        groups: live subscribers with nothing to check per publication, in a transport group
            per wire format, written to together.
        positioned: live subscribers whose position in the stream is tracked (recoverable or
            positioned subscriptions) and who are at the same position: a shared position,
            checked once per publication, and a transport group per wire format
            (:class:`PositionedGroups`).
        delta: a channel's subscribers that negotiated delta compression, with the base of
            the next delta (:class:`~hubbub.delta.DeltaChannel`): in neither of the above.

    A user's connections here also share one command bucket (:meth:`user_bucket`), forgotten
    with the user's last connection.
    """

    def __init__(self, broker: Broker, counters: Counter[str]) -> None:
        self.broker = broker
        self.counters = counters
        self.sessions: dict[str, Session] = {}
        self.users: dict[str, Session | dict[str, Session]] = {}
        self.streams: dict[str, Session] = {}
        self.channels: dict[str, dict[str, Subscriber]] = {}
        self.direct: dict[str, dict[str, Subscriber]] = {}
        self.groups: dict[str, dict[Codec, Group]] = {}
        self.positioned: dict[str, PositionedGroups] = {}
        self.delta: dict[str, DeltaChannel] = {}
        # Channels whose engine subscription is on its way -> done when it is made.
        self._subscribing: dict[str, asyncio.Future[None]] = {}
        self._user_buckets: dict[str, TokenBucket] = {}

    # -----------------------------------------------------------------------------------------
    # Connections

    def register(self, session: Session) -> None:
        """Index a connection that completed ``connect``."""
        self.sessions[session.client_id] = session
        other = self.users.get(session.user)
        if other is None or other is session:
            self.users[session.user] = session
        elif isinstance(other, dict):
            other[session.client_id] = session
        else:
            self.users[session.user] = {other.client_id: other, session.client_id: session}
        if session.stream_session:
            self.streams[session.stream_session] = session

    def unregister(self, session: Session) -> None:
        """Forget a connection (and its user's command bucket with its user's last one)."""
        self.sessions.pop(session.client_id, None)
        if session.stream_session:
            self.streams.pop(session.stream_session, None)
        conns = self.users.get(session.user)
        if conns is session:
            del self.users[session.user]
            self._user_buckets.pop(session.user, None)
        elif isinstance(conns, dict):
            conns.pop(session.client_id, None)
            if len(conns) == 1:
                self.users[session.user] = next(iter(conns.values()))
            elif not conns:
                del self.users[session.user]
                self._user_buckets.pop(session.user, None)

    def user_bucket(self, user: str, rate: float, burst: float, clock: Clock) -> TokenBucket:
        """The command bucket ``user``'s connections here share, made on first use; its
        ``rate`` is set again each time (the node's share changes as nodes come and go)."""
        bucket = self._user_buckets.get(user)
        if bucket is None:
            bucket = self._user_buckets[user] = TokenBucket(rate, burst, clock)
        else:
            bucket.rate = rate
        return bucket

    def user_connections(self, user: str) -> int:
        """How many connections ``user`` has on this node."""
        conns = self.users.get(user)
        if conns is None:
            return 0
        return len(conns) if isinstance(conns, dict) else 1

    def targets(self, user: str, client: str = "") -> list[Session]:
        """``user``'s local connections, or only ``client`` when given (if it is ``user``'s)."""
        if client:
            session = self.sessions.get(client)
            return [session] if session is not None and session.user == user else []
        conns = self.users.get(user)
        if conns is None:
            return []
        return list(conns.values()) if isinstance(conns, dict) else [conns]

    # -----------------------------------------------------------------------------------------
    # Channels

    async def add_subscriber(
        self, channel: str, session: Subscriber, *, delta: bool = False
    ) -> None:
        """Index ``session`` under ``channel``; the first local subscriber subscribes the node
        to the channel in the engine. Returns once the node receives the channel.

        ``delta``: the subscription negotiated delta compression; ``session`` then has
        ``deliver_delta`` (:class:`~hubbub.delta.DeltaSubscriber`), as sessions do.

        Raises:
            whatever the engine's ``subscribe`` raised; the channel is then forgotten, with
            every subscriber that was waiting for it.
        """
        subs = self.channels.get(channel)
        if subs is not None:
            subs[session.client_id] = session
            self._index_one(channel, session, delta)
            pending = self._subscribing.get(channel)
            if pending is not None:
                await asyncio.shield(pending)
            return
        self.channels[channel] = {session.client_id: session}
        self._index_one(channel, session, delta)
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._subscribing[channel] = done
        try:
            await self.broker.subscribe(channel)
        except BaseException as exc:
            self._forget(channel)
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
        subscribers whose publications need no per-connection check: those without a tracked
        position, and those of a recoverable or positioned subscription at the position the
        channel's other such members share (:class:`PositionedGroups`; the first one sets it).
        False when the transport has no groups, the subscriber is not (or no longer) here or
        not live, or its position is not the shared one.
        """
        direct = self.direct.get(channel)
        session = direct.get(client_id) if direct is not None else None
        sub = session.subscriptions.get(channel) if session is not None else None
        if direct is None or sub is None or transport.closing:
            return False
        shared: PositionedGroups | None = None
        position: StreamPosition | None = None
        if not sub.recoverable:
            groups = self.groups.get(channel)
        elif sub.stale or sub.pending is not None:
            return False
        else:
            position = StreamPosition(sub.offset, sub.epoch)
            shared = self.positioned.get(channel)
            if shared is not None and (shared.epoch, shared.offset) != (
                position.epoch,
                position.offset,
            ):
                return False  # not where the others are: judged on its own
            groups = shared.groups if shared is not None else None
        group = groups.get(codec) if groups is not None else None
        if group is None:
            group = transport.new_group()
            if group is None:
                return False
            if position is None:
                self.groups.setdefault(channel, {})[codec] = group
            else:
                if shared is None:
                    shared = self.positioned[channel] = PositionedGroups(position)
                shared.groups[codec] = group
        if shared is not None:
            shared.members.add(client_id)
        del direct[client_id]
        if not direct:
            del self.direct[channel]
        group.add(client_id, transport)
        return True

    async def remove_subscriber(self, channel: str, session: Subscriber) -> None:
        """Drop ``session`` from ``channel``; the last one unsubscribes the node."""
        subs = self.channels.get(channel)
        if subs is None or subs.pop(session.client_id, None) is None:
            return
        self._unindex(channel, session.client_id)
        if not subs:
            self._forget(channel)
            await self.broker.unsubscribe(channel)

    def _index_one(self, channel: str, session: Subscriber, delta: bool) -> None:
        """Put a new subscriber among ``channel``'s direct or delta subscribers."""
        if not delta:
            self.direct.setdefault(channel, {})[session.client_id] = session
            return
        deltas = self.delta.get(channel)
        if deltas is None:
            deltas = self.delta[channel] = DeltaChannel()
        deltas.subscribers[session.client_id] = cast(DeltaSubscriber, session)

    def seed_delta_base(self, channel: str, offset: int, epoch: str, payload: bytes) -> None:
        """A delta subscriber of ``channel`` recovered up to ``offset``/``epoch``: its last
        payload may serve as the next delta's base (see :meth:`DeltaChannel.seed`)."""
        deltas = self.delta.get(channel)
        if deltas is not None:
            deltas.seed(offset, epoch, payload)

    def ungroup_positioned(self, channel: str) -> None:
        """Deliver to ``channel``'s positioned members one by one again, each with the shared
        position as its own: when a publication does not continue it (every one of them
        judges it, and recovers), and while the stream is checked after an engine outage."""
        shared = self.positioned.pop(channel, None)
        subs = self.channels.get(channel)
        if shared is None or subs is None:
            return
        direct = self.direct.setdefault(channel, {})
        for client_id in shared.members:
            for group in shared.groups.values():
                if group.discard(client_id):
                    break
            session = subs.get(client_id)
            if session is None:
                continue
            sub = session.subscriptions.get(channel)
            if sub is not None:
                sub.offset, sub.epoch = shared.offset, shared.epoch
            direct[client_id] = session

    def _unindex(self, channel: str, client_id: str) -> None:
        """Take ``client_id`` out of ``channel``'s direct or delta subscribers or its group."""
        direct = self.direct.get(channel)
        if direct is not None and direct.pop(client_id, None) is not None:
            if not direct:
                del self.direct[channel]
            return
        deltas = self.delta.get(channel)
        if deltas is not None and deltas.subscribers.pop(client_id, None) is not None:
            if not deltas.subscribers:  # the channel's base goes with its last one
                del self.delta[channel]
            return
        shared = self.positioned.get(channel)
        if shared is not None and client_id in shared.members:
            shared.members.discard(client_id)
            if not shared.members:
                del self.positioned[channel]
            groups: dict[Codec, Group] | None = shared.groups
        else:
            shared = None
            groups = self.groups.get(channel)
        if groups is None:
            return
        for codec, group in list(groups.items()):
            if group.discard(client_id):
                if not len(group):
                    del groups[codec]
                break
        if not groups and shared is None:
            del self.groups[channel]

    def _forget(self, channel: str) -> None:
        """The empty-channel rule, in one place: a channel without local subscribers (the
        last one left, or the engine refused the first) is in none of the maps. Whether the
        engine is told (it is when the last one left) is up to the caller."""
        self.channels.pop(channel, None)
        self.direct.pop(channel, None)
        self.groups.pop(channel, None)
        self.positioned.pop(channel, None)
        self.delta.pop(channel, None)

    def channel_counts(self, pattern: str = "") -> dict[str, int]:
        """Channels with local subscribers and their subscriber counts, filtered by a glob."""
        return {
            name: len(subs)
            for name, subs in self.channels.items()
            if not pattern or fnmatch.fnmatchcase(name, pattern)
        }

    def subscriptions_count(self) -> int:
        """Local subscriptions over all channels."""
        return sum(len(s) for s in self.channels.values())

    # -----------------------------------------------------------------------------------------
    # Engine events: fan-out, never awaits.

    def handle_publication(self, channel: str, pub: Publication, position: StreamPosition) -> None:
        """Queue ``pub`` on every local subscriber of ``channel``."""
        subs = self.channels.get(channel)
        if not subs:
            return
        flagged = pub.delta
        if flagged:  # the publisher allowed a delta: a flag for the fan-out, not for the wire
            pub = msgspec.structs.replace(pub, delta=False)
        push = Push(channel=channel, pub=pub)
        # Encoded once per wire format present among the subscribers, not per subscriber.
        encoded: dict[Codec, bytes] = {}
        groups = self.groups.get(channel)
        if groups is not None:
            for fmt, group in groups.items():
                data = encoded[fmt] = fmt.encode_push(push)
                group.send(data)
        shared = self.positioned.get(channel)
        if shared is not None:
            offset = pub.offset
            if offset == 0 or (offset == shared.offset + 1 and position.epoch == shared.epoch):
                # It continues the position they share: checked once for all of them.
                if offset:
                    shared.offset = offset
                for fmt, group in shared.groups.items():
                    data = encoded.get(fmt) or encoded.setdefault(fmt, fmt.encode_push(push))
                    group.send(data)
            else:
                # A gap, a step back or another epoch: each of them judges it (below) and
                # recovers, or learns that it cannot.
                self.ungroup_positioned(channel)
        direct = self.direct.get(channel)
        if direct is not None:
            for session in list(direct.values()):
                fmt = session.codec
                data = encoded.get(fmt) or encoded.setdefault(fmt, fmt.encode_push(push))
                session.deliver(channel, pub, data, position.epoch)
        deltas = self.delta.get(channel)
        if deltas is not None:
            # One delta and one frame per format for all of them (see hubbub.delta).
            dpush = deltas.prepare(channel, pub, position.epoch, flagged)
            for subscriber in list(deltas.subscribers.values()):
                subscriber.deliver_delta(channel, pub, dpush, position.epoch)
        self.counters["deliveries"] += len(subs)

    def handle_join(self, channel: str, info: ClientInfo) -> None:
        """Tell ``channel``'s local subscribers that ``info`` joined."""
        self._fan_out_join_leave(channel, Push(channel=channel, join=JoinLeave(info=info)))

    def handle_leave(self, channel: str, info: ClientInfo) -> None:
        """Tell ``channel``'s local subscribers that ``info`` left."""
        self._fan_out_join_leave(channel, Push(channel=channel, leave=JoinLeave(info=info)))

    def _fan_out_join_leave(self, channel: str, push: Push) -> None:
        subs = self.channels.get(channel)
        if not subs:
            return
        encoded: dict[Codec, bytes] = {}
        for session in list(subs.values()):
            fmt = session.codec
            data = encoded.get(fmt) or encoded.setdefault(fmt, fmt.encode_push(push))
            session.deliver_join_leave(channel, data)


class PositionedGroups:
    """A channel's live subscribers that track their position in its stream and are at the
    same one: they share ``epoch``/``offset`` (their subscriptions' own are brought up to date
    when they leave, see :meth:`LocalIndex.ungroup_positioned`), and a transport group per
    wire format. A publication that continues the shared position goes to the groups as is;
    any other ends the sharing."""

    __slots__ = ("epoch", "groups", "members", "offset")

    def __init__(self, position: StreamPosition) -> None:
        self.epoch = position.epoch
        self.offset = position.offset
        self.groups: dict[Codec, Group] = {}
        self.members: set[str] = set()


class EngineEvents:
    """The engine's event handler (:class:`~hubbub.engines.base.BrokerEventHandler`): fan-out
    goes straight to the index (bound methods: no extra call per publication), control
    messages and reconnects to the handlers given.

    Args:
        index: receives publications, joins and leaves.
        on_control: receives control messages from other nodes.
        on_reconnect: told that the engine is back, with the channels subscribed again.
    """

    __slots__ = (
        "handle_control",
        "handle_join",
        "handle_leave",
        "handle_publication",
        "handle_reconnect",
    )

    def __init__(
        self,
        index: LocalIndex,
        on_control: Callable[[bytes], None],
        on_reconnect: Callable[[list[str]], None],
    ) -> None:
        self.handle_publication = index.handle_publication
        self.handle_join = index.handle_join
        self.handle_leave = index.handle_leave
        self.handle_control = on_control
        self.handle_reconnect = on_reconnect
