"""The cluster: what nodes tell each other through the engine's control channel.

Every node announces itself each ``announce_interval`` (so that ``info`` sees the whole
cluster), renews its liveness in the engine, and removes the presence entries of nodes whose
liveness lapsed (``node_lapse``), announcing their clients' leaves. It renews its own presence
entries every ``presence_update_interval``, and at once when it finds that its own liveness
lapsed (peers may have removed them). User operations
(disconnect, unsubscribe, server-side subscribe, refresh, messages) are applied to the user's
connections on this node and sent to the other nodes, which apply them to theirs.

The cluster never imports the node: it asks what it needs of it through :class:`ClusterHost`.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import time
from collections import Counter
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from typing import Any, Protocol

import msgspec

from hubbub import control
from hubbub.config import ChannelOptions, Settings
from hubbub.engines.base import Broker, PresenceManager, StreamPosition
from hubbub.index import USER_PRESENCE_PREFIX, LocalIndex, user_presence_key
from hubbub.payload import to_payload
from hubbub.protocol.codes import (
    Disconnect,
    DisconnectCode,
    ErrorCode,
    ProtocolError,
    UnsubscribeCode,
    disconnect,
)
from hubbub.protocol.messages import EMPTY, MessagePush, Push

log = logging.getLogger("hubbub.node")


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


class ClusterHost(Protocol):
    """What the cluster needs of its node."""

    uid: str
    settings: Settings
    broker: Broker
    presence_manager: PresenceManager
    counters: Counter[str]
    index: LocalIndex

    def spawn(self, coro: Coroutine[Any, Any, Any]) -> None: ...

    def describe(self) -> NodeInfo: ...

    def channel_options(self, channel: str) -> ChannelOptions: ...


class Cluster:
    """This node's side of the conversation between nodes.

    Args:
        node: the node it speaks for; its broker carries the control messages, whose
            :meth:`handle_control` is the engine's ``handle_control`` event.
    """

    def __init__(self, node: ClusterHost) -> None:
        self.node = node
        self._peers: dict[str, tuple[NodeInfo, float]] = {}
        self._was_alive = False
        # Takes the control messages addressed to this node (emulation requests and their
        # answers: hubbub.transports.emulation installs it); None drops them.
        self.on_addressed: Callable[[control.Addressed], None] | None = None

    @property
    def size(self) -> int:
        """How many nodes this one knows of, itself included (lapsed peers may still count
        until :meth:`peers` forgets them)."""
        return len(self._peers) + 1

    def peers(self) -> list[NodeInfo]:
        """The other nodes heard from within ``node_lapse`` (the others are forgotten)."""
        horizon = time.monotonic() - self.node.settings.node_lapse
        for uid in [uid for uid, (_, seen) in self._peers.items() if seen < horizon]:
            del self._peers[uid]
        return [info for info, _ in self._peers.values()]

    # -----------------------------------------------------------------------------------------
    # Liveness and announcements

    async def run(self) -> None:
        """Every ``announce_interval``: renew this node's liveness, tell the peers about it,
        and reap the presence of nodes whose liveness lapsed (``node_lapse``). Runs until
        cancelled."""
        while True:
            await self.keep_alive()
            await self.announce()
            await self.reap_lapsed()
            await asyncio.sleep(self.node.settings.announce_interval)

    async def keep_alive(self) -> None:
        """Renew this node's liveness; when it had lapsed, add its presence entries again."""
        node = self.node
        try:
            renewed = await node.presence_manager.keep_alive(node.settings.node_lapse)
        except ProtocolError:
            return  # the engine is down: peers may take us for dead, checked when it is back
        except Exception:
            log.exception("could not renew this node's liveness")
            return
        if not renewed and self._was_alive:
            # Peers took this node for dead (cut off, or stalled) and may have removed its
            # entries: put them back now rather than at the next periodic refresh.
            log.warning("this node's liveness lapsed; adding its presence entries again")
            node.counters["engine.liveness_lapsed"] += 1
            node.spawn(self.refresh_presence())
        self._was_alive = True

    async def refresh_presence_forever(self) -> None:
        """Every ``presence_update_interval``: :meth:`refresh_presence`. Runs until cancelled."""
        interval = self.node.settings.client.presence_update_interval
        while True:
            await asyncio.sleep(interval)
            await self.refresh_presence()

    async def refresh_presence(self) -> None:
        """Add every local presence entry again (idempotent): renews their TTL, and puts back
        the entries peers reaped while they took this node for dead."""
        node = self.node
        ttl = node.settings.client.presence_ttl
        per_user = node.settings.limits.connections_per_user
        pm = node.presence_manager
        sessions = node.index.sessions
        try:
            for session in list(sessions.values()):
                if session.user and per_user and sessions.get(session.client_id):
                    key = user_presence_key(session.user)
                    await pm.add_presence(key, session.info, ttl)
                    if session.client_id not in sessions:
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

    async def reap_lapsed(self) -> None:
        """Remove the presence of dead nodes and announce their clients' leaves."""
        node = self.node
        try:
            reaped = await node.presence_manager.reap_lapsed()
        except ProtocolError:
            return  # the engine is down: the next round reaps
        except Exception:
            log.exception("could not reap the presence of lapsed nodes")
            return
        if reaped:
            node.counters["engine.presence_reaped"] += len(reaped)
        for entry in reaped:
            if entry.channel.startswith(USER_PRESENCE_PREFIX):
                continue  # a connection count, not a channel: nobody to tell
            try:
                if node.channel_options(entry.channel).join_leave:
                    await node.broker.publish_leave(entry.channel, entry.info)
            except ProtocolError as exc:
                log.warning("could not announce a reaped leave in %s: %s", entry.channel, exc)

    async def announce(self) -> None:
        """Tell the other nodes this node's statistics (see :class:`NodeInfo`)."""
        fields = dataclasses.asdict(self.node.describe())
        message = control.NodeAnnouncement(origin=fields.pop("uid"), **fields)
        # While the engine is down peers drop us, and we them, until it is back.
        with contextlib.suppress(ProtocolError):
            await self.node.broker.publish_control(control.encode(message))

    # -----------------------------------------------------------------------------------------
    # Control messages

    async def _broadcast(self, message: control.Control) -> None:
        """Send a user operation to the other nodes (applied here already)."""
        try:
            await self.node.broker.publish_control(control.encode(message))
        except ProtocolError:
            log.warning("could not reach other nodes for %s: engine unavailable", type(message))
            raise

    def handle_control(self, data: bytes) -> None:
        """A control message from another node (the engine's event): never awaits."""
        node = self.node
        try:
            message = control.decode(data)
        except msgspec.DecodeError:
            log.warning("dropped an undecodable control message")
            return
        if message.origin == node.uid:
            return
        if isinstance(message, control.NodeAnnouncement):
            fields = msgspec.structs.asdict(message)
            info = NodeInfo(uid=fields.pop("origin"), **fields)
            if message.origin not in self._peers:
                # A newcomer: answer at once, so it knows the cluster without waiting a period.
                node.spawn(self.announce())
            self._peers[message.origin] = (info, time.monotonic())
        elif isinstance(message, control.DisconnectUser):
            self._disconnect_local(
                message.user, message.code, message.reason, message.client, message.whitelist
            )
        elif isinstance(message, control.UnsubscribeUser):
            node.spawn(self._unsubscribe_local(message.user, message.channel, message.client))
        elif isinstance(message, control.SubscribeUser):
            since = (
                StreamPosition(message.recover_offset, message.recover_epoch)
                if message.recover
                else None
            )
            node.spawn(
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
        elif (
            isinstance(message, control.Emulation | control.EmulationDone)
            and message.target == node.uid
            and self.on_addressed is not None
        ):
            self.on_addressed(message)

    # -----------------------------------------------------------------------------------------
    # User operations: applied here, then sent to the other nodes. Arguments are validated by
    # the node's public API; ``client`` narrows an operation to one connection of the user.

    async def disconnect(
        self, user: str, code: int, reason: str, client: str, whitelist: list[str]
    ) -> None:
        """Close ``user``'s connections on every node, sparing ``whitelist``."""
        self._disconnect_local(user, code, reason, client, whitelist)
        await self._broadcast(
            control.DisconnectUser(self.node.uid, user, client, code, reason, whitelist)
        )

    def _disconnect_local(
        self, user: str, code: int, reason: str, client: str, whitelist: list[str]
    ) -> None:
        keep = set(whitelist)
        for session in self.node.index.targets(user, client):
            if session.client_id not in keep:
                session.close(Disconnect(code, reason))

    async def unsubscribe(self, user: str, channel: str, client: str) -> None:
        """Unsubscribe ``user``'s connections on every node from ``channel`` (push 2000)."""
        await self._unsubscribe_local(user, channel, client)
        await self._broadcast(control.UnsubscribeUser(self.node.uid, user, channel, client))

    async def _unsubscribe_local(self, user: str, channel: str, client: str) -> None:
        for session in self.node.index.targets(user, client):
            await session.server_unsubscribe(channel, UnsubscribeCode.SERVER)

    async def subscribe(
        self,
        user: str,
        channel: str,
        client: str,
        chan_info: msgspec.Raw,
        data: msgspec.Raw,
        recover_since: StreamPosition | None,
    ) -> None:
        """Subscribe ``user``'s live connections on every node to ``channel``."""
        await self._subscribe_local(user, channel, client, chan_info, data, recover_since)
        await self._broadcast(
            control.SubscribeUser(
                self.node.uid,
                user,
                channel,
                client,
                bytes(chan_info),
                bytes(data),
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
        for session in self.node.index.targets(user, client):
            try:
                await session.server_subscribe(
                    channel, chan_info=chan_info, data=data, recover_since=recover_since
                )
            except ProtocolError as exc:
                # One connection that cannot take the channel (already subscribed, JSON client
                # for a binary channel) must not keep the user's other connections from it.
                if exc.code != ErrorCode.ALREADY_SUBSCRIBED:
                    log.info("subscribe %s to %s: %s", session.client_id, channel, exc.message)

    async def refresh(self, user: str, client: str, expired: bool, expire_at: float | None) -> None:
        """Close (``expired``) or set the expiry of ``user``'s connections on every node."""
        self._refresh_local(user, client, expired, expire_at)
        await self._broadcast(
            control.RefreshUser(self.node.uid, user, client, expired, expire_at or 0.0)
        )

    def _refresh_local(
        self, user: str, client: str, expired: bool, expire_at: float | None
    ) -> None:
        for session in self.node.index.targets(user, client):
            if expired:
                session.close(disconnect(DisconnectCode.EXPIRED))
            elif expire_at is not None:
                session.set_expiry(expire_at)

    async def send_message(self, user: str, client: str, data: msgspec.Raw) -> None:
        """Send a ``message`` push to ``user``'s connections on every node."""
        self._message_local(user, client, data)
        await self._broadcast(control.MessageUser(self.node.uid, user, client, bytes(data)))

    def _message_local(self, user: str, client: str, data: msgspec.Raw) -> None:
        push = Push(message=MessagePush(data=data))
        for session in self.node.index.targets(user, client):
            session.push_message(session.codec.encode_push(push))
