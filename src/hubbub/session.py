"""The per-connection protocol state machine.

A :class:`Session` takes decoded commands, talks to its :class:`~hubbub.node.Node`, and writes
replies and pushes to its :class:`~hubbub.transports.base.Transport`. It never touches a socket,
so tests drive it with a list-backed transport and a :class:`~hubbub.clock.FakeClock`.

Lifecycle: ``start()`` arms the stale timer; ``handle_frame(bytes)`` processes the commands of
one frame in order; ``close(disconnect)`` asks the transport to close; ``closed()`` (called by
the transport once the peer is gone) releases subscriptions and presence.
"""

from __future__ import annotations

import asyncio
import enum
import logging
import random
import uuid
import weakref
from typing import TYPE_CHECKING

import msgspec

from hubbub.auth import ConnectionClaims, SubscriptionClaims, TokenExpired, TokenInvalid
from hubbub.clock import Timer
from hubbub.config import ChannelOptions
from hubbub.engines.base import HistoryFilter, StreamPosition
from hubbub.engines.retry import RetryQueue
from hubbub.limits import TokenBucket
from hubbub.node import user_presence_key
from hubbub.payload import to_payload
from hubbub.protocol.codec import JSON, Codec
from hubbub.protocol.codes import (
    UNSUBSCRIBE_REASONS,
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
    ChannelRequest,
    ClientInfo,
    Command,
    ConnectRequest,
    ConnectResult,
    EmptyResult,
    Error,
    HistoryRequest,
    HistoryResult,
    PresenceResult,
    PresenceStatsResult,
    Publication,
    PublishRequest,
    Push,
    RefreshRequest,
    RefreshResult,
    Reply,
    RPCRequest,
    RPCResult,
    SendRequest,
    SubRefreshRequest,
    SubRefreshResult,
    SubscribePush,
    SubscribeRequest,
    SubscribeResult,
    UnsubscribePush,
)
from hubbub.subscription import Subscription, Verdict, judge_publication
from hubbub.transports.base import Transport

if TYPE_CHECKING:
    from hubbub.node import Node

log = logging.getLogger("hubbub.session")


class State(enum.Enum):
    CONNECTING = "connecting"
    CONNECTED = "connected"
    CLOSED = "closed"


class Session:
    """One client connection's protocol state.

    Args:
        node: the node this connection belongs to.
        transport: where replies and pushes go.
        codec: the connection's wire format (JSON or Protobuf).
        app_pings: send protocol pings (False when the transport uses WebSocket ping frames).
        remote: the peer address, for logs.
    """

    # Slots: one session per connection, tens of thousands at once.
    __slots__ = (
        "_app_pings",
        "_awaiting_pong",
        "_bucket",
        "_close_detail",
        "_connect_failed",
        "_expire_timer",
        "_insecure",
        "_ping_timer",
        "_pong_deadline",
        "_pong_postponed",
        "_pong_timer",
        "_rejected",
        "_settings",
        "_stale_timer",
        "client_id",
        "codec",
        "expire_at",
        "info",
        "log",
        "name",
        "node",
        "remote",
        "state",
        "subscriptions",
        "transport",
        "user",
        "version",
    )

    def __init__(
        self,
        node: Node,
        transport: Transport,
        *,
        codec: Codec = JSON,
        app_pings: bool = True,
        remote: str = "",
    ) -> None:
        self.node = node
        self.transport = transport
        self.codec = codec
        self.client_id = str(uuid.uuid4())
        # Every line about this connection carries its id (a field in JSON logs).
        self.log = logging.LoggerAdapter(log, {"conn": self.client_id})
        self.remote = remote
        self.user = ""
        self.state = State.CONNECTING
        self.info = ClientInfo(user="", client=self.client_id)
        self.subscriptions: dict[str, Subscription] = {}
        self.name = ""
        self.version = ""
        self.expire_at: float | None = None
        self._app_pings = app_pings
        self._connect_failed = False
        self._awaiting_pong = False
        self._stale_timer: Timer | None = None
        self._ping_timer: Timer | None = None
        self._pong_timer: Timer | None = None
        self._pong_deadline = 0.0
        self._pong_postponed = False
        self._expire_timer: Timer | None = None
        self._settings = node.settings.client
        self._insecure = node.settings.development
        limits = node.settings.limits
        self._bucket = TokenBucket(limits.command_rate, limits.command_burst, node.clock)
        self._rejected = 0
        # Why the next close happens, for its log line only (not sent to the client).
        self._close_detail = ""

    # -----------------------------------------------------------------------------------------
    # Lifecycle

    def start(self) -> None:
        """Arm the stale timer: a connection that sends no ``connect`` in time is closed (3502)."""
        self._stale_timer = self.node.clock.call_later(
            self._settings.stale_close_delay, self._on_stale
        )

    def close(self, reason: Disconnect) -> None:
        """Close the connection with ``reason`` after what is already queued. Idempotent."""
        if self.transport.closing:
            return
        if reason.code not in (DisconnectCode.SHUTDOWN, DisconnectCode.FORCE_DISCONNECT):
            # The one line a closed connection costs (with the detail not sent to the client).
            detail = f" ({self._close_detail})" if self._close_detail else ""
            self.log.info(
                "closing (user %r): %s %s%s", self.user, reason.code, reason.reason, detail
            )
        self.node.metrics_disconnect(reason.code)
        self.transport.close(reason.code, reason.reason)

    def slow(self) -> None:
        """The transport dropped this connection's backlog and closes it with 3008 (slow)."""
        self.log.info("closing (user %r): 3008 slow", self.user)
        self.node.metrics_disconnect(DisconnectCode.SLOW)

    async def closed(self) -> None:
        """The connection is gone: cancel timers, leave every channel, forget the user."""
        if self.state is State.CLOSED:
            return
        was_connected = self.state is State.CONNECTED
        self.state = State.CLOSED
        for timer in (self._stale_timer, self._ping_timer, self._pong_timer, self._expire_timer):
            if timer is not None:
                timer.cancel()
        for channel in list(self.subscriptions):
            await self._remove_subscription(channel)
        if was_connected:
            self.node.unregister_session(self)
            if self.user and self.node.settings.limits.connections_per_user:
                await self._uncount()

    async def _uncount(self) -> None:
        """Remove this connection from its user's count in the engine.

        A removal the engine fails (unreachable, or no pooled connection in time) is handed to
        the node's background retries: a count left behind would refuse the user (3504) until
        it expired. Returns once removed or handed over; re-raises a cancellation after
        handing over.
        """
        node, client_id, user = self.node, self.client_id, self.user

        async def remove() -> None:
            await node.presence_manager.remove_presence(user_presence_key(user), client_id, user)

        try:
            await remove()
        except BaseException as exc:
            _uncounts(node).submit(client_id, remove)
            if not isinstance(exc, Exception):
                raise

    # -----------------------------------------------------------------------------------------
    # Input

    async def handle_frame(self, frame: bytes) -> None:
        """Process every command of one frame in order.

        A protocol violation closes the connection and drops the rest of the frame; a reply
        error answers its command only.
        """
        try:
            for part in self.codec.split_frame(frame):
                if self.transport.closing:
                    return
                await self._handle_command(self.codec.decode_command(part))
        except Disconnect as reason:
            self.node.metrics_bad_input(reason.code)
            self.close(reason)

    def take_pong(self, frame: bytes) -> bool:
        """Handle ``frame`` here and now if it is a bare pong; True if it was one.

        For transports that queue frames for :meth:`handle_frame`: call it only when nothing
        is queued before ``frame``. The answer to every ping then costs no task.
        """
        if frame != self.codec.ping:
            return False
        try:
            self._on_pong()
        except Disconnect as reason:
            self.node.metrics_bad_input(reason.code)
            self.close(reason)
        return True

    async def _handle_command(self, cmd: Command) -> None:
        if cmd.id == 0:
            if cmd.send is not None:
                await self._send(cmd.send)
                return
            if _is_empty(cmd):
                self._on_pong()
                return
            raise disconnect(DisconnectCode.BAD_REQUEST, "bad request: command without id")
        if self.state is not State.CONNECTED:
            if cmd.connect is None or self._connect_failed:
                raise disconnect(DisconnectCode.BAD_REQUEST, "bad request: connect first")
        elif cmd.connect is not None:
            raise disconnect(DisconnectCode.BAD_REQUEST, "bad request: already connected")
        user_bucket = self.node.user_bucket(self.user)
        if not self._bucket.take() or (user_bucket is not None and not user_bucket.take()):
            # Too fast (this connection, or the user over all connections and nodes): a
            # temporary error the client retries later; persistent abuse closes.
            self._rejected += 1
            if self._rejected >= self.node.settings.limits.rejections_before_disconnect:
                raise disconnect(DisconnectCode.TOO_MANY_REQUESTS)
            self.node.metrics_reply_error(ErrorCode.TOO_MANY_REQUESTS)
            err = error(ErrorCode.TOO_MANY_REQUESTS)
            self._write(Reply(id=cmd.id, error=Error(err.code, err.message, err.temporary)))
            return
        self._rejected = 0
        try:
            reply = await self._dispatch(cmd)
        except (Disconnect, asyncio.CancelledError):
            raise
        except Exception as exc:
            if not isinstance(exc, ProtocolError):
                # A server bug must cost one command, not the connection or the process.
                self.log.exception("command %d failed", cmd.id)
                exc = error(ErrorCode.INTERNAL)
            if cmd.connect is not None:
                self._connect_failed = True
            self.node.metrics_reply_error(exc.code)
            self._write(Reply(id=cmd.id, error=Error(exc.code, exc.message, exc.temporary)))
            return
        if reply is not None:
            self._write(reply)

    async def _dispatch(self, cmd: Command) -> Reply | None:
        # The first request field that is set decides, in the order of the protocol schema;
        # each has a handler method named after it.
        for name in _REQUESTS:
            request = getattr(cmd, name)
            if request is None:
                continue
            if name == "send":
                await self._send(request)
                return None
            handler = getattr(self, f"_{name}")
            reply: Reply | None = await handler(cmd.id, request)
            return reply
        # A bare ping command or a command this protocol version does not know.
        raise disconnect(DisconnectCode.BAD_REQUEST, "bad request: unknown command")

    def _write(self, reply: Reply) -> None:
        self.transport.write(self.codec.encode_reply(reply))

    # -----------------------------------------------------------------------------------------
    # connect, refresh

    async def _connect(self, cmd_id: int, req: ConnectRequest) -> Reply | None:
        node = self.node
        if req.token:
            try:
                claims = node.verifier.verify_connection(req.token)
            except TokenExpired:
                raise error(ErrorCode.TOKEN_EXPIRED) from None
            except TokenInvalid as exc:
                self._close_detail = str(exc)  # logged by close(), in its one line
                raise disconnect(DisconnectCode.INVALID_TOKEN) from None
        elif self._settings.allow_anonymous_connect_without_token or node.settings.development:
            claims = ConnectionClaims(user="", expire_at=None, info=EMPTY, subs={}, meta=EMPTY)
        else:
            raise disconnect(DisconnectCode.BAD_REQUEST, "bad request: no credentials")
        now = node.clock.time()
        if claims.expire_at is not None and claims.expire_at <= now:
            raise error(ErrorCode.EXPIRED)

        self.user = claims.user
        self.name = req.name[:16]
        self.version = req.version[:64]
        self.info = ClientInfo(user=self.user, client=self.client_id, conn_info=claims.info)
        self.expire_at = claims.expire_at

        # Server-side subscriptions: the token's channels, then the personal channel.
        server_subs: dict[str, tuple[msgspec.Raw, msgspec.Raw, ChannelOptions]] = {}
        for channel, grant in claims.subs.items():
            opts = node.rules.options(channel)
            if grant.override is not None:
                opts = grant.override.apply(opts)
            server_subs[channel] = (grant.info, grant.data, opts)
        if self.user and self._settings.personal_channel:
            personal = node.rules.personal_channel(self.user)
            if personal not in server_subs:
                server_subs[personal] = (EMPTY, EMPTY, node.rules.options(personal))
        if len(server_subs) > self._settings.channel_limit:
            raise disconnect(DisconnectCode.CHANNEL_LIMIT)

        per_user = node.settings.limits.connections_per_user
        if (
            self.user
            and per_user
            and (
                node.user_connections(self.user) >= per_user
                or await node.user_connections_everywhere(self.user) >= per_user
            )
        ):
            raise disconnect(DisconnectCode.CONNECTION_LIMIT)
        self.state = State.CONNECTED
        node.register_session(self)
        results: dict[str, SubscribeResult] = {}
        activated: list[Subscription] = []
        try:
            if self.user and per_user:
                # Counted where every node sees it; refreshed with presence, gone on close.
                await node.presence_manager.add_presence(
                    user_presence_key(self.user), self.info, self._settings.presence_ttl
                )
            for channel, (chan_info, data, opts) in server_subs.items():
                recover = req.subs.get(channel)
                sub, sub_result = await self._add_subscription(
                    channel,
                    opts,
                    chan_info=chan_info,
                    data=data,
                    recover=recover,
                    server_side=True,
                    join_leave_requested=False,
                )
                results[channel] = sub_result
                activated.append(sub)
        except BaseException:
            # Leave the connection as it was before connect: a failed connect holds nothing.
            for sub in activated:
                await self._remove_subscription(sub.channel)
            self.state = State.CONNECTING
            node.unregister_session(self)
            if self.user and per_user:
                # Even after a failed add: Redis may have applied it before the reply was lost.
                await self._uncount()
            raise

        result = ConnectResult(client=self.client_id, version=node.version, subs=results)
        if self.expire_at is not None:
            result.expires = True
            result.ttl = max(int(self.expire_at - now), 1)
            self._arm_expiry()
        if self._app_pings:
            result.ping = int(self._settings.ping_interval)
            result.pong = self._settings.pong_timeout > 0
            first = random.uniform(self._settings.ping_interval / 2, self._settings.ping_interval)
            self._ping_timer = node.clock.call_later(first, self._on_ping_due)
        # Connected for good: only now is the connection no longer stale. A failed connect
        # keeps the timer, so an unusable connection cannot be held open forever.
        if self._stale_timer is not None:
            self._stale_timer.cancel()
            self._stale_timer = None
        self._write(Reply(id=cmd_id, connect=result))
        for sub in activated:
            await self._activate(sub)
        self.log.debug("connected as user %r", self.user)
        for handler in node.connect_handlers:
            node.spawn(handler(self))
        return None

    async def _refresh(self, cmd_id: int, req: RefreshRequest) -> Reply:
        if not req.token:
            raise disconnect(DisconnectCode.BAD_REQUEST, "bad request: empty token")
        try:
            claims = self.node.verifier.verify_connection(req.token)
        except TokenExpired:
            raise disconnect(DisconnectCode.EXPIRED) from None
        except TokenInvalid:
            raise disconnect(DisconnectCode.INVALID_TOKEN) from None
        if claims.user != self.user:
            raise disconnect(DisconnectCode.INVALID_TOKEN, "invalid token: other user")
        now = self.node.clock.time()
        if claims.expire_at is not None and claims.expire_at <= now:
            raise disconnect(DisconnectCode.EXPIRED)
        self.expire_at = claims.expire_at
        result = RefreshResult(client=self.client_id, version=self.node.version)
        if self.expire_at is not None:
            result.expires = True
            result.ttl = max(int(self.expire_at - now), 1)
        self._arm_expiry()
        return Reply(id=cmd_id, refresh=result)

    def set_expiry(self, expire_at: float | None) -> None:
        """Set the connection's expiry from the server side (``None`` = never)."""
        self.expire_at = expire_at
        self._arm_expiry()

    def _arm_expiry(self) -> None:
        if self._expire_timer is not None:
            self._expire_timer.cancel()
            self._expire_timer = None
        if self.expire_at is None:
            return
        delay = self.expire_at - self.node.clock.time() + self._settings.expired_close_delay
        self._expire_timer = self.node.clock.call_later(delay, self._on_expired)

    def _on_expired(self) -> None:
        self._expire_timer = None
        if self.expire_at is not None and self.expire_at <= self.node.clock.time():
            self.close(disconnect(DisconnectCode.EXPIRED))

    # -----------------------------------------------------------------------------------------
    # subscribe, unsubscribe, sub_refresh

    async def _subscribe(self, cmd_id: int, req: SubscribeRequest) -> Reply | None:
        node = self.node
        channel = req.channel
        if not channel:
            raise disconnect(DisconnectCode.BAD_REQUEST, "bad request: empty channel")
        node.rules.validate(channel)
        if channel in self.subscriptions:
            raise error(ErrorCode.ALREADY_SUBSCRIBED)
        if len(self.subscriptions) >= self._settings.channel_limit:
            raise error(ErrorCode.LIMIT_EXCEEDED)
        claims: SubscriptionClaims | None = None
        if req.token:
            claims = self._verify_subscription_token(channel, req.token)
        opts = node.rules.check_subscribe(
            channel,
            self.user,
            has_valid_token=claims is not None,
            insecure=self._insecure,
        )
        if claims is not None and claims.override is not None:
            opts = claims.override.apply(opts)
        check = node.subscribe_checks.get(node.rules.namespace_of(channel))
        if check is not None:
            await check(self, channel)
        now = node.clock.time()
        if claims is not None and claims.expire_at is not None and claims.expire_at <= now:
            raise error(ErrorCode.EXPIRED)
        sub, result = await self._add_subscription(
            channel,
            opts,
            chan_info=claims.info if claims else EMPTY,
            data=claims.data if claims else EMPTY,
            recover=req,
            server_side=False,
            join_leave_requested=req.join_leave,
        )
        if claims is not None and claims.expire_at is not None:
            sub.expire_at = claims.expire_at
            result.expires = True
            result.ttl = max(int(claims.expire_at - now), 1)
            self._arm_sub_expiry(sub)
        if req.flag & 2 and result.was_recovering and not result.recovered and sub.recoverable:
            await self._remove_subscription(channel)
            raise error(ErrorCode.UNRECOVERABLE_POSITION)
        self._write(Reply(id=cmd_id, subscribe=result))
        await self._activate(sub)
        return None

    def _verify_subscription_token(self, channel: str, token: str) -> SubscriptionClaims:
        try:
            claims = self.node.verifier.verify_subscription(token)
        except TokenExpired:
            raise error(ErrorCode.TOKEN_EXPIRED) from None
        except TokenInvalid:
            raise error(ErrorCode.PERMISSION_DENIED) from None
        if claims.channel != channel or claims.user != self.user:
            raise disconnect(DisconnectCode.INVALID_TOKEN, "invalid token: channel or user")
        if claims.client and claims.client != self.client_id:
            raise disconnect(DisconnectCode.INVALID_TOKEN, "invalid token: client")
        return claims

    async def _add_subscription(
        self,
        channel: str,
        opts: ChannelOptions,
        *,
        chan_info: msgspec.Raw,
        data: msgspec.Raw,
        recover: SubscribeRequest | None,
        server_side: bool,
        join_leave_requested: bool,
    ) -> tuple[Subscription, SubscribeResult]:
        """Register a subscription and compute its result; publications arriving meanwhile wait
        in ``sub.pending`` until :meth:`_activate` (after the reply is written)."""
        node = self.node
        self._check_readable(opts)
        wants_recovery = recover is not None and (recover.recoverable or recover.recover)
        recoverable = opts.use_history and (
            opts.force_recovery or (wants_recovery and opts.allow_recovery) or server_side
        )
        positioned = opts.use_history and (
            recoverable
            or opts.force_positioning
            or (recover is not None and recover.positioned and opts.allow_positioning)
        )
        push_join_leave = opts.join_leave and (
            opts.force_push_join_leave or (join_leave_requested and opts.presence)
        )
        info = ClientInfo(
            user=self.user,
            client=self.client_id,
            conn_info=self.info.conn_info,
            chan_info=chan_info,
        )
        sub = Subscription(
            channel=channel,
            options=opts,
            info=info,
            server_side=server_side,
            recoverable=positioned,
            push_join_leave=push_join_leave,
            reconnects=node.engine_reconnects,
        )
        self.subscriptions[channel] = sub
        result = SubscribeResult(data=data)
        try:
            await node.add_subscriber(channel, self)
            if positioned:
                result.recoverable = recoverable
                result.positioned = True
                if recover is not None and recover.recover:
                    result.was_recovering = True
                    await self._recover(sub, recover, result)
                else:
                    top = await node.stream_top(channel, opts)
                    result.epoch, result.offset = top.epoch, top.offset
                sub.offset = result.offset
                sub.epoch = result.epoch
                if result.publications:
                    sub.offset = result.publications[-1].offset
            elif recover is not None and recover.recover:
                result.was_recovering = True
            if opts.presence:
                await node.presence_manager.add_presence(channel, info, self._settings.presence_ttl)
        except BaseException:
            await self._remove_subscription(channel, announce=False)
            raise
        return sub, result

    async def _recover(
        self, sub: Subscription, req: SubscribeRequest, result: SubscribeResult
    ) -> None:
        limit = self._settings.recovery_max_publication_limit
        hist = await self.node.read_history(
            sub.channel,
            HistoryFilter(limit=limit, since=StreamPosition(req.offset, "")),
            sub.options,
        )
        top = hist.position
        pubs = hist.publications
        same_epoch = req.epoch in ("", top.epoch)
        if not pubs:
            recovered = same_epoch and top.offset == req.offset
        else:
            recovered = (
                same_epoch and pubs[0].offset == req.offset + 1 and pubs[-1].offset == top.offset
            )
        result.epoch = top.epoch
        if recovered:
            result.recovered = True
            result.offset = req.offset
            result.publications = pubs
        else:
            result.offset = top.offset
        self.node.metrics_recovery(recovered)

    async def _activate(self, sub: Subscription) -> None:
        """The subscribe reply is written: send what arrived meanwhile, then go live."""
        pending, sub.pending = sub.pending, None
        if pending:
            for pub, data, epoch in pending:
                if sub.stale or self.subscriptions.get(sub.channel) is not sub:
                    break
                if sub.recoverable and pub.offset:
                    self._judge(sub, pub, data, epoch, merging=True)
                else:
                    self.transport.write(data)
        live = self.subscriptions.get(sub.channel) is sub and not sub.stale
        if live and sub.recoverable and sub.reconnects != self.node.engine_reconnects:
            # The engine reconnected while this subscription was set up: its position may
            # predate the outage, and the check after the reconnect skipped it.
            self.node.check_stream(sub.channel)
        if not sub.recoverable and self.subscriptions.get(sub.channel) is sub:
            # Nothing to check per publication: the transport may take them for the whole
            # channel at once.
            self.node.group_subscriber(sub.channel, self.client_id, self.codec, self.transport)
        if sub.options.join_leave:
            await self.node.broker.publish_join(sub.channel, sub.info)

    async def _unsubscribe(self, cmd_id: int, req: ChannelRequest) -> Reply:
        if req.channel in self.subscriptions:
            await self._remove_subscription(req.channel)
        return Reply(id=cmd_id, unsubscribe=EmptyResult())

    async def _remove_subscription(self, channel: str, *, announce: bool = True) -> None:
        sub = self.subscriptions.pop(channel, None)
        if sub is None:
            return
        if sub.expire_timer is not None:
            sub.expire_timer.cancel()
        node = self.node
        try:
            await node.remove_subscriber(channel, self)
            if sub.options.presence:
                await node.presence_manager.remove_presence(channel, self.client_id, self.user)
            if announce and sub.options.join_leave and sub.pending is None:
                await node.broker.publish_leave(channel, sub.info)
        except ProtocolError as exc:
            # The engine is unreachable: the local state is gone regardless, and the presence
            # entry expires by itself within presence_ttl.
            self.log.info("leaving %s while the engine is down: %s", channel, exc.message)

    async def server_unsubscribe(self, channel: str, code: UnsubscribeCode) -> None:
        """Drop a subscription on the server's initiative and tell the client why."""
        if channel not in self.subscriptions:
            return
        await self._remove_subscription(channel)
        push = Push(
            channel=channel,
            unsubscribe=UnsubscribePush(code=int(code), reason=UNSUBSCRIBE_REASONS[code]),
        )
        self.transport.write(self.codec.encode_push(push))

    async def server_subscribe(
        self,
        channel: str,
        *,
        chan_info: msgspec.Raw = EMPTY,
        data: msgspec.Raw = EMPTY,
        recover_since: StreamPosition | None = None,
    ) -> None:
        """Subscribe this connection to ``channel`` on the server's initiative (subscribe push).

        Raises:
            ProtocolError: 102 for an unknown namespace; 105 when already subscribed.
        """
        if self.state is not State.CONNECTED:
            return
        if channel in self.subscriptions:
            raise error(ErrorCode.ALREADY_SUBSCRIBED)
        self.node.rules.validate(channel)
        opts = self.node.rules.options(channel)
        recover = None
        if recover_since is not None:
            recover = SubscribeRequest(
                channel=channel,
                recover=True,
                offset=recover_since.offset,
                epoch=recover_since.epoch,
            )
        sub, result = await self._add_subscription(
            channel,
            opts,
            chan_info=chan_info,
            data=data,
            recover=recover,
            server_side=True,
            join_leave_requested=False,
        )
        push = SubscribePush(
            recoverable=result.recoverable,
            epoch=result.epoch,
            offset=result.offset,
            positioned=result.positioned,
            data=result.data,
        )
        self.transport.write(self.codec.encode_push(Push(channel=channel, subscribe=push)))
        # Recovered publications of a server-side subscription made at runtime go out as pushes.
        for pub in result.publications:
            self.transport.write(self.codec.encode_push(Push(channel=channel, pub=pub)))
        await self._activate(sub)

    async def _sub_refresh(self, cmd_id: int, req: SubRefreshRequest) -> Reply:
        sub = self.subscriptions.get(req.channel)
        if sub is None:
            raise error(ErrorCode.PERMISSION_DENIED)
        if not req.token:
            raise error(ErrorCode.BAD_REQUEST)
        try:
            claims = self.node.verifier.verify_subscription(req.token)
        except TokenExpired:
            raise error(ErrorCode.TOKEN_EXPIRED) from None
        except TokenInvalid:
            raise disconnect(DisconnectCode.INVALID_TOKEN) from None
        if claims.channel != req.channel or claims.user != self.user:
            raise disconnect(DisconnectCode.INVALID_TOKEN, "invalid token: channel or user")
        if claims.client and claims.client != self.client_id:
            raise disconnect(DisconnectCode.INVALID_TOKEN, "invalid token: client")
        now = self.node.clock.time()
        result = SubRefreshResult()
        sub.expire_at = claims.expire_at
        if claims.expire_at is not None:
            if claims.expire_at <= now:
                raise error(ErrorCode.EXPIRED)
            result.expires = True
            result.ttl = max(int(claims.expire_at - now), 1)
        self._arm_sub_expiry(sub)
        return Reply(id=cmd_id, sub_refresh=result)

    def _arm_sub_expiry(self, sub: Subscription) -> None:
        if sub.expire_timer is not None:
            sub.expire_timer.cancel()
            sub.expire_timer = None
        if sub.expire_at is None:
            return
        delay = sub.expire_at - self.node.clock.time() + self._settings.expired_close_delay
        sub.expire_timer = self.node.clock.call_later(
            delay, lambda: self.node.spawn(self._on_sub_expired(sub))
        )

    async def _on_sub_expired(self, sub: Subscription) -> None:
        sub.expire_timer = None
        if self.subscriptions.get(sub.channel) is not sub or sub.expire_at is None:
            return
        if sub.expire_at > self.node.clock.time():
            return
        if sub.server_side:
            self.close(disconnect(DisconnectCode.SUBSCRIPTION_EXPIRED))
        else:
            await self.server_unsubscribe(sub.channel, UnsubscribeCode.EXPIRED)

    # -----------------------------------------------------------------------------------------
    # publish, presence, history, rpc, send

    def _check_readable(self, opts: ChannelOptions) -> None:
        if opts.binary and not self.codec.binary:
            raise error(
                ErrorCode.BAD_REQUEST,
                "bad request: this channel carries binary data; connect with the Protobuf format",
            )

    def _check_channel(self, channel: str) -> None:
        if not channel:
            raise error(ErrorCode.BAD_REQUEST, "bad request: empty channel")

    async def _publish(self, cmd_id: int, req: PublishRequest) -> Reply:
        self._check_channel(req.channel)
        sub = self.subscriptions.get(req.channel)
        opts = self.node.rules.check_publish(
            req.channel, self.user, subscribed=sub is not None, insecure=self._insecure
        )
        if not req.data:
            raise error(ErrorCode.BAD_REQUEST, "bad request: empty data")
        data = req.data
        if self.codec.binary and not opts.binary:
            # JSON clients may read this channel: the bytes must be JSON text (checked, and raw
            # newlines dropped since they would split a JSON frame).
            data = to_payload(bytes(data))
        info = sub.info if sub is not None else self.info
        await self.node.publish_with_options(req.channel, data, opts, info=info)
        return Reply(id=cmd_id, publish=EmptyResult())

    async def _presence(self, cmd_id: int, req: ChannelRequest) -> Reply:
        self._check_channel(req.channel)
        subscribed = req.channel in self.subscriptions
        self.node.rules.check_presence(
            req.channel, self.user, subscribed=subscribed, insecure=self._insecure
        )
        presence = await self.node.presence_manager.presence(req.channel)
        return Reply(id=cmd_id, presence=PresenceResult(presence=presence))

    async def _presence_stats(self, cmd_id: int, req: ChannelRequest) -> Reply:
        self._check_channel(req.channel)
        subscribed = req.channel in self.subscriptions
        self.node.rules.check_presence(
            req.channel, self.user, subscribed=subscribed, insecure=self._insecure
        )
        stats = await self.node.presence_manager.presence_stats(req.channel)
        return Reply(
            id=cmd_id,
            presence_stats=PresenceStatsResult(
                num_clients=stats.num_clients, num_users=stats.num_users
            ),
        )

    async def _history(self, cmd_id: int, req: HistoryRequest) -> Reply:
        self._check_channel(req.channel)
        subscribed = req.channel in self.subscriptions
        opts = self.node.rules.check_history(
            req.channel, self.user, subscribed=subscribed, insecure=self._insecure
        )
        self._check_readable(opts)
        cap = self._settings.history_max_publication_limit
        limit = req.limit
        if limit < 0 or limit > cap:
            limit = cap
        since = None
        if req.since is not None:
            if req.reverse and req.since.offset == 0:
                raise error(ErrorCode.BAD_REQUEST, "bad request: reverse history needs an offset")
            since = StreamPosition(req.since.offset, req.since.epoch)
        hist = await self.node.read_history(
            req.channel, HistoryFilter(limit=limit, since=since, reverse=req.reverse), opts
        )
        return Reply(
            id=cmd_id,
            history=HistoryResult(
                publications=hist.publications,
                epoch=hist.position.epoch,
                offset=hist.position.offset,
            ),
        )

    async def _rpc(self, cmd_id: int, req: RPCRequest) -> Reply:
        handler = self.node.rpc_handlers.get(req.method)
        if handler is None:
            raise error(ErrorCode.METHOD_NOT_FOUND)
        try:
            data = await handler(self, req.data)
        except (ProtocolError, Disconnect):
            raise
        except Exception:
            self.log.exception("rpc handler %r failed", req.method)
            raise error(ErrorCode.INTERNAL) from None
        return Reply(id=cmd_id, rpc=RPCResult(data=data))

    async def _send(self, req: SendRequest) -> None:
        handler = self.node.send_handler
        if handler is None:
            raise disconnect(DisconnectCode.NOT_AVAILABLE)
        if self.state is not State.CONNECTED:
            raise disconnect(DisconnectCode.BAD_REQUEST, "bad request: connect first")
        try:
            await handler(self, req.data)
        except Disconnect:
            raise
        except Exception:
            self.log.exception("send handler failed")

    # -----------------------------------------------------------------------------------------
    # Output from the node (fan-out): never awaits.

    def deliver(self, channel: str, pub: Publication, data: bytes, epoch: str) -> None:
        """Send an encoded publication push of ``channel`` at stream ``epoch`` (called by the
        node's fan-out)."""
        sub = self.subscriptions.get(channel)
        if sub is None or sub.stale:
            return
        pending = sub.pending
        if pending is not None:
            pending.append((pub, data, epoch))
            return
        offset = pub.offset
        if sub.recoverable and offset:
            if offset != sub.offset + 1 or epoch != sub.epoch:
                self._judge(sub, pub, data, epoch, merging=False)
                return
            sub.offset = offset
        self.transport.write(data)

    def _judge(
        self, sub: Subscription, pub: Publication, data: bytes, epoch: str, *, merging: bool
    ) -> None:
        """Write a publication that continues ``sub``'s position; skip one the subscribe reply
        already covered; on anything else (a gap, an offset that went back, another epoch)
        stop the subscription and make the client recover or learn it cannot."""
        verdict = judge_publication(sub.epoch, sub.offset, epoch, pub.offset, merging=merging)
        if verdict.lost:
            self.node.stream_lost(self, sub, verdict)
        elif verdict is Verdict.CONTINUES:
            sub.offset = pub.offset
            self.transport.write(data)
        # Verdict.SEEN: recovered, or the reply's position covered it.

    async def recover_gap(self, sub: Subscription) -> None:
        """Publications of ``sub`` were missed: make the client recover them from history
        (unsubscribe push 2500 for a client-side subscription, disconnect 3010 otherwise)."""
        if self.subscriptions.get(sub.channel) is not sub:
            return
        self.node.metrics_recovery_forced()
        if sub.server_side:
            self.close(disconnect(DisconnectCode.INSUFFICIENT_STATE))
        else:
            await self.server_unsubscribe(sub.channel, UnsubscribeCode.INSUFFICIENT_STATE)

    def deliver_join_leave(self, channel: str, data: bytes) -> None:
        """Send an encoded join or leave push of ``channel`` if this subscriber wants them."""
        sub = self.subscriptions.get(channel)
        if sub is not None and sub.push_join_leave and sub.pending is None:
            self.transport.write(data)

    def push_message(self, data: bytes) -> None:
        """Send an encoded ``message`` push (asynchronous message to this connection)."""
        self.transport.write(data)

    # -----------------------------------------------------------------------------------------
    # Heartbeats and timers

    def _on_stale(self) -> None:
        self._stale_timer = None
        if self.state is State.CONNECTING:
            self.close(disconnect(DisconnectCode.STALE))

    def _on_ping_due(self) -> None:
        self._ping_timer = None
        if self.state is not State.CONNECTED or self.transport.closing:
            return
        self.transport.write(self.codec.ping)
        clock = self.node.clock
        if self._settings.pong_timeout > 0 and not self._awaiting_pong:
            self._awaiting_pong = True
            self._pong_postponed = False
            self._pong_deadline = clock.monotonic() + self._settings.pong_timeout
            self._pong_timer = clock.call_later(self._settings.pong_timeout, self._on_no_pong)
        self._ping_timer = clock.call_later(self._settings.ping_interval, self._on_ping_due)

    def _on_pong(self) -> None:
        if self.state is not State.CONNECTED or not self._app_pings:
            raise disconnect(DisconnectCode.BAD_REQUEST, "bad request: unexpected pong")
        if not self._awaiting_pong:
            # A pong without an outstanding ping: tolerated, since clients may answer a ping
            # that crossed a timeout; only pong *absence* is an error.
            return
        self._awaiting_pong = False
        if self._pong_timer is not None:
            self._pong_timer.cancel()
            self._pong_timer = None

    def _on_no_pong(self) -> None:
        self._pong_timer = None
        if not self._awaiting_pong:
            return
        clock = self.node.clock
        late = clock.monotonic() - self._pong_deadline
        if late > 0.25 * self._settings.pong_timeout and not self._pong_postponed:
            # The event loop was stalled (a long garbage collection, a slow callback): timers
            # run before sockets are read, so the pong may be waiting unread. Look again
            # after the sockets had their turn instead of closing a healthy connection; once
            # per ping, so a loop that stays late cannot keep a silent client forever.
            self._pong_postponed = True
            self._pong_deadline = clock.monotonic() + 1.0
            self._pong_timer = clock.call_later(1.0, self._on_no_pong)
            return
        self.close(disconnect(DisconnectCode.NO_PONG))


_REQUESTS = (
    "connect",
    "subscribe",
    "unsubscribe",
    "publish",
    "presence",
    "presence_stats",
    "history",
    "send",
    "rpc",
    "refresh",
    "sub_refresh",
)


def _is_empty(cmd: Command) -> bool:
    """A command without any request: the client's pong."""
    return cmd.ping is None and all(getattr(cmd, name) is None for name in _REQUESTS)


# One queue per node of the connection counts still to remove (see Session._uncount); weak,
# so that a node dropped by its application takes its queue along.
_UNCOUNTS: weakref.WeakKeyDictionary[Node, RetryQueue] = weakref.WeakKeyDictionary()


def _uncounts(node: Node) -> RetryQueue:
    """The queue of ``node``'s connection counts whose removal failed once, made on first use.

    Counted in ``hubbub_engine_events{event="uncount_deferred"}`` (and ``uncount_dropped``
    beyond the queue's bound, left to expire after ``presence_ttl``).
    """
    queue = _UNCOUNTS.get(node)
    if queue is None:

        def count(event: str) -> None:
            node.counters[f"engine.{event}"] += 1

        queue = RetryQueue("uncount", spawn=node.spawn_task, count=count)
        _UNCOUNTS[node] = queue
    return queue
