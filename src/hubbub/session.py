"""The per-connection protocol state machine.

A :class:`Session` takes decoded commands, talks to its :class:`~hubbub.node.Node`, and writes
replies and pushes to its :class:`~hubbub.transports.base.Transport`. It never touches a socket,
so tests drive it with a list-backed transport and a :class:`~hubbub.clock.FakeClock`.

Lifecycle: ``start()`` arms the stale timer; ``handle_frame(bytes)`` processes the commands of
one frame in order; ``close(disconnect)`` asks the transport to close; ``closed()`` (called by
the transport once the peer is gone) releases subscriptions and presence.

This module holds the session's state, its input (frames, the command table) and its output
(fan-out from the node). The commands are handled by functions of the session, by concern:
:mod:`hubbub.session_connect` (connect, refresh, expiry, the per-user count),
:mod:`hubbub.session_subscribe` (channels, recovery, going live) and
:mod:`hubbub.session_requests` (publish, presence, history, rpc, send). Pings and pongs are a
:class:`~hubbub.heartbeat.Heartbeat`.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Generic, TypeVar

import msgspec

from hubbub import session_connect, session_requests, session_subscribe
from hubbub.clock import Timer
from hubbub.delta import DeltaPush
from hubbub.engines.base import StreamPosition
from hubbub.heartbeat import Heartbeat
from hubbub.hook_types import Handshake
from hubbub.limits import TokenBucket
from hubbub.protocol.codec import JSON, Codec
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
    Command,
    Error,
    Publication,
    Reply,
)
from hubbub.session_connect import State
from hubbub.subscription import Subscription, Verdict, judge_publication
from hubbub.transports.base import Transport

if TYPE_CHECKING:
    from hubbub.node import Node
    from hubbub.transports.admission import Knock

__all__ = ["Session", "State"]

log = logging.getLogger("hubbub.session")

_CLIENT_GONE = Disconnect(3000, "connection closed")
"""What ``on_disconnect`` hooks are told when the client ended the connection."""


class Session:
    """One client connection's protocol state.

    Args:
        node: the node this connection belongs to.
        transport: where replies and pushes go.
        codec: the connection's wire format (JSON or Protobuf).
        app_pings: send protocol pings (False when the transport uses WebSocket ping frames).
        remote: the peer address, for logs.
        unidirectional: a uni_* transport's session: the client sends nothing after its
            connect request, so pings expect no pong, the connect result is a push and the
            channels the request names are subscribed on the server side
            (:mod:`hubbub.transports.uni`).
        stream_session: the id an HTTP stream's client names in its ``/emulation`` requests
            ("" for a WebSocket): sent in the connect result (with this node's uid for
            bidirectional streams), and the key the node finds the session under while it is
            connected (:mod:`hubbub.transports.emulation`).
        knock: what the transport saw of the opening request: the hooks and the proxies see
            its headers and transport name as :attr:`handshake`.

    Attributes:
        handshake: the opening request (:class:`~hubbub.hook_types.Handshake`); once
            connected, only the headers the configured proxies forward are kept.
        meta: the connection's server-side data (from the token's ``meta`` claim or the
            credentials of ``on_connecting``).
    """

    # Slots: one session per connection, tens of thousands at once.
    __slots__ = (
        "_app_pings",
        "_bucket",
        "_close_detail",
        "_close_reason",
        "_connect_failed",
        "_expire_timer",
        "_heartbeat",
        "_insecure",
        "_rejected",
        "_settings",
        "_stale_timer",
        "client_id",
        "codec",
        "expire_at",
        "handshake",
        "info",
        "meta",
        "name",
        "node",
        "remote",
        "state",
        "stream_session",
        "subscriptions",
        "transport",
        "unidirectional",
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
        unidirectional: bool = False,
        stream_session: str = "",
        knock: Knock | None = None,
    ) -> None:
        self.node = node
        self.stream_session = stream_session
        self.unidirectional = unidirectional
        self.transport = transport
        self.codec = codec
        self.client_id = str(uuid.uuid4())
        self.remote = remote
        self.user = ""
        self.state = State.CONNECTING
        self.info = ClientInfo(user="", client=self.client_id)
        self.subscriptions: dict[str, Subscription] = {}
        self.name = ""
        self.version = ""
        self.expire_at: float | None = None
        self.meta: msgspec.Raw = EMPTY
        self.handshake = Handshake(
            transport=knock.transport if knock is not None else "websocket",
            protocol=codec.name,
            remote=remote,
            headers=tuple(knock.headers) if knock is not None else (),
        )
        self._close_reason: Disconnect | None = None
        self._app_pings = app_pings
        self._connect_failed = False
        self._stale_timer: Timer | None = None
        # Made by a successful connect when the session sends protocol pings.
        self._heartbeat: Heartbeat | None = None
        self._expire_timer: Timer | None = None
        self._settings = node.settings.client
        self._insecure = node.settings.development
        limits = node.settings.limits
        # None without a per-connection command rate: nothing to hold for every connection.
        self._bucket = (
            TokenBucket(limits.command_rate, limits.command_burst, node.clock)
            if limits.command_rate > 0
            else None
        )
        self._rejected = 0
        # Why the next close happens, for its log line only (not sent to the client).
        self._close_detail = ""

    @property
    def log(self) -> logging.LoggerAdapter[logging.Logger]:
        """The logger for lines about this connection: each carries its id (a field in JSON
        logs). Made when a line is written, not kept: most connections never log."""
        return logging.LoggerAdapter(log, {"conn": self.client_id})

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
        self._close_reason = reason
        self.transport.close(reason.code, reason.reason)

    def slow(self) -> None:
        """The transport dropped this connection's backlog and closes it with 3008 (slow)."""
        self.log.info("closing (user %r): 3008 slow", self.user)
        self.node.metrics_disconnect(DisconnectCode.SLOW)
        self._close_reason = disconnect(DisconnectCode.SLOW)

    async def closed(self) -> None:
        """The connection is gone: cancel timers, leave every channel, forget the user."""
        if self.state is State.CLOSED:
            return
        was_connected = self.state is State.CONNECTED
        self.state = State.CLOSED
        for timer in (self._stale_timer, self._expire_timer):
            if timer is not None:
                timer.cancel()
        if self._heartbeat is not None:
            self._heartbeat.stop()
            # It holds the session's methods: dropping it frees the session by reference
            # counting, without waiting for the cyclic collector.
            self._heartbeat = None
        for channel in list(self.subscriptions):
            await session_subscribe.remove_subscription(self, channel)
        if was_connected:
            self.node.unregister_session(self)
            if self.node.disconnect_handlers:
                reason = self._close_reason or _CLIENT_GONE
                self.node.notify_disconnect(self, reason.code, reason.reason)
            if self.user and self.node.settings.limits.connections_per_user:
                await session_connect.uncount(self)

    # -----------------------------------------------------------------------------------------
    # Input

    async def handle_frame(self, frame: bytes) -> None:
        """Process every command of one frame in order.

        A protocol violation closes the connection and drops the rest of the frame; a reply
        error answers its command only.
        """
        rest = self.receive(frame)
        if rest is not None:
            await rest

    def receive(self, frame: bytes) -> Coroutine[Any, Any, None] | None:
        """Process the commands of one frame in order, here and now as long as none has to
        wait on anything (pongs; publications on the memory engine without hooks, see
        :func:`~hubbub.session_requests.publish_now`): None when the frame is done, else a
        coroutine that handles the rest, to be awaited before anything received after
        ``frame``. :meth:`handle_frame` is this for transports that await every frame."""
        try:
            parts = self.codec.split_frame(frame)
            for i, part in enumerate(parts):
                if self.transport.closing:
                    return None
                rest = self._command_now(self.codec.decode_command(part))
                if rest is not None:
                    return self._finish_frame(rest, parts, i + 1)
        except Disconnect as reason:
            self.node.metrics_bad_input(reason.code)
            self.close(reason)
        return None

    async def _finish_frame(
        self, first: Coroutine[Any, Any, None], parts: list[bytes], start: int
    ) -> None:
        """The rest of :meth:`receive`: ``first`` (a command that waits), then
        ``parts[start:]``."""
        try:
            await first
            for part in parts[start:]:
                if self.transport.closing:
                    return
                rest = self._command_now(self.codec.decode_command(part))
                if rest is not None:
                    await rest
        except Disconnect as reason:
            self.node.metrics_bad_input(reason.code)
            self.close(reason)

    def _command_now(self, cmd: Command) -> Coroutine[Any, Any, None] | None:
        """Handle ``cmd`` here and now if nothing in it waits (None), else return what
        handles it, to be awaited."""
        req = cmd.publish
        if req is None:
            if cmd.id == 0 and cmd.send is None and _is_empty(cmd):
                self._on_pong()
                return None
            return self._handle_command(cmd)
        if (
            cmd.id == 0
            or self.state is not State.CONNECTED
            or cmd.connect is not None
            or cmd.subscribe is not None
            or cmd.unsubscribe is not None
            or not session_requests.can_publish_now(self)
        ):
            return self._handle_command(cmd)
        if not self._admit(cmd):
            return None
        try:
            if session_requests.publish_now(self, cmd.id, req):
                return None
        except Disconnect:
            raise
        except Exception as exc:
            self._command_failed(cmd, exc)
            return None
        # The namespace publishes deltas: the general path, without taking a token again.
        return self._execute(cmd)

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
                await session_requests.send(self, cmd.send)
                return
            if _is_empty(cmd):
                self._on_pong()
                return
            raise disconnect(DisconnectCode.BAD_REQUEST, "bad request: command without id")
        if self._admit(cmd):
            await self._execute(cmd)

    def _admit(self, cmd: Command) -> bool:
        """The checks of a command with an id before it runs: the session's state, then the
        command buckets. False when it was refused with a reply (too fast)."""
        if self.state is not State.CONNECTED:
            if cmd.connect is None or self._connect_failed:
                raise disconnect(DisconnectCode.BAD_REQUEST, "bad request: connect first")
        elif cmd.connect is not None:
            raise disconnect(DisconnectCode.BAD_REQUEST, "bad request: already connected")
        user_bucket = self.node.user_bucket(self.user)
        bucket = self._bucket
        if (bucket is not None and not bucket.take()) or (
            user_bucket is not None and not user_bucket.take()
        ):
            # Too fast (this connection, or the user over all connections and nodes): a
            # temporary error the client retries later; persistent abuse closes.
            self._rejected += 1
            if self._rejected >= self.node.settings.limits.rejections_before_disconnect:
                raise disconnect(DisconnectCode.TOO_MANY_REQUESTS)
            self.node.metrics_reply_error(ErrorCode.TOO_MANY_REQUESTS)
            err = error(ErrorCode.TOO_MANY_REQUESTS)
            self._write(Reply(id=cmd.id, error=Error(err.code, err.message, err.temporary)))
            return False
        self._rejected = 0
        return True

    async def _execute(self, cmd: Command) -> None:
        """Run an admitted command and write its reply (or its error)."""
        try:
            reply = await self._dispatch(cmd)
        except (Disconnect, asyncio.CancelledError):
            raise
        except Exception as exc:
            self._command_failed(cmd, exc)
            return
        if reply is not None:
            self._write(reply)

    def _command_failed(self, cmd: Command, exc: Exception) -> None:
        """Answer a command that raised: its error, or 100 for a server bug (logged)."""
        if not isinstance(exc, ProtocolError):
            # A server bug must cost one command, not the connection or the process.
            self.log.exception("command %d failed", cmd.id)
            exc = error(ErrorCode.INTERNAL)
        if cmd.connect is not None:
            self._connect_failed = True
        self.node.metrics_reply_error(exc.code)
        self._write(Reply(id=cmd.id, error=Error(exc.code, exc.message, exc.temporary)))

    async def _dispatch(self, cmd: Command) -> Reply | None:
        # The first request field that is set decides, in the order of the protocol schema.
        for find, handle in _ROUTES:
            request = find(cmd)
            if request is not None:
                return await handle(self, cmd.id, request)
        # A bare ping command or a command this protocol version does not know.
        raise disconnect(DisconnectCode.BAD_REQUEST, "bad request: unknown command")

    def _write(self, reply: Reply) -> None:
        self.transport.write(self.codec.encode_reply(reply))

    # -----------------------------------------------------------------------------------------
    # Server-side changes (the node's API)

    def set_expiry(self, expire_at: float | None) -> None:
        """Set the connection's expiry from the server side (``None`` = never)."""
        self.expire_at = expire_at
        session_connect.arm_expiry(self)
        if self.unidirectional and self.state is State.CONNECTED:
            # A uni client cannot ask; it learns the new expiry from a refresh push.
            session_connect.push_refresh(self)

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
        await session_subscribe.server_subscribe(
            self, channel, chan_info=chan_info, data=data, recover_since=recover_since
        )

    async def server_unsubscribe(self, channel: str, code: UnsubscribeCode) -> None:
        """Drop a subscription on the server's initiative and tell the client why."""
        await session_subscribe.server_unsubscribe(self, channel, code)

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
            # The common case of judge_publication, inlined: the next offset of the same epoch.
            if offset != sub.offset + 1 or epoch != sub.epoch:
                self._judge(sub, pub, data, epoch, merging=False)
                return
            sub.offset = offset
        self.transport.write(data)

    def deliver_delta(self, channel: str, pub: Publication, push: DeltaPush, epoch: str) -> None:
        """Send a publication of ``channel`` to a subscription that negotiated delta: the
        delta when the client holds its base, else the full payload (called by the node's
        fan-out, :mod:`hubbub.delta`)."""
        sub = self.subscriptions.get(channel)
        if sub is None or sub.stale:
            return
        if sub.pending is not None:
            sub.pending.append((pub, push, epoch))
            return
        offset = pub.offset
        if sub.recoverable and offset and (offset != sub.offset + 1 or epoch != sub.epoch):
            self._judge(sub, pub, push, epoch, merging=False)
            return
        self.transport.write(push.frame_for(sub, self.codec))

    def _judge(
        self,
        sub: Subscription,
        pub: Publication,
        data: bytes | DeltaPush,
        epoch: str,
        *,
        merging: bool,
    ) -> None:
        """Write a publication that continues ``sub``'s position; skip one the subscribe reply
        already covered; on anything else (a gap, an offset that went back, another epoch)
        stop the subscription and make the client recover or learn it cannot."""
        verdict = judge_publication(sub.epoch, sub.offset, epoch, pub.offset, merging=merging)
        if verdict.lost:
            self.node.stream_lost(self, sub, verdict)
        elif verdict is Verdict.CONTINUES:
            if isinstance(data, DeltaPush):
                data = data.frame_for(sub, self.codec)  # moves the position itself
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
    # Timers and heartbeats

    def _on_stale(self) -> None:
        self._stale_timer = None
        if self.state is State.CONNECTING:
            self.close(disconnect(DisconnectCode.STALE))

    def send_ping(self) -> bool:
        """The heartbeat's ping: False once the connection can no longer take one."""
        if self.state is not State.CONNECTED or self.transport.closing:
            return False
        self.transport.write(self.codec.ping)
        return True

    def pong_missed(self) -> None:
        """The heartbeat's verdict: no pong in time (3012)."""
        self.close(disconnect(DisconnectCode.NO_PONG))

    def _on_pong(self) -> None:
        if self.state is not State.CONNECTED or self._heartbeat is None:
            raise disconnect(DisconnectCode.BAD_REQUEST, "bad request: unexpected pong")
        self._heartbeat.pong()


# ---------------------------------------------------------------------------------------------
# The command table

RequestT = TypeVar("RequestT")


@dataclass(frozen=True, slots=True)
class Route(Generic[RequestT]):
    """One kind of client command: where a command carries its request, and its handler."""

    request: Callable[[Command], RequestT | None]
    handle: Callable[[Session, int, RequestT], Awaitable[Reply | None]]


def _route(
    request: Callable[[Command], RequestT | None],
    handle: Callable[[Session, int, RequestT], Awaitable[Reply | None]],
) -> Route[Any]:
    # Checks that the handler takes the request the command carries, then forgets its type
    # so that routes of every kind fit one table.
    return Route(request, handle)


COMMANDS: dict[str, Route[Any]] = {
    # In the order of the protocol schema: the first request that is set decides.
    "connect": _route(lambda cmd: cmd.connect, session_connect.connect),
    "subscribe": _route(lambda cmd: cmd.subscribe, session_subscribe.subscribe),
    "unsubscribe": _route(lambda cmd: cmd.unsubscribe, session_subscribe.unsubscribe),
    "publish": _route(lambda cmd: cmd.publish, session_requests.publish),
    "presence": _route(lambda cmd: cmd.presence, session_requests.presence),
    "presence_stats": _route(lambda cmd: cmd.presence_stats, session_requests.presence_stats),
    "history": _route(lambda cmd: cmd.history, session_requests.history),
    "send": _route(lambda cmd: cmd.send, session_requests.send_command),
    "rpc": _route(lambda cmd: cmd.rpc, session_requests.rpc),
    "refresh": _route(lambda cmd: cmd.refresh, session_connect.refresh),
    "sub_refresh": _route(lambda cmd: cmd.sub_refresh, session_subscribe.sub_refresh),
}
"""Every client command kind this server handles, by its field name in a command."""

# The same table as plain pairs, for the loop that every command runs (twice as fast as
# attribute lookups on the routes).
_ROUTES: tuple[
    tuple[Callable[[Command], Any], Callable[[Session, int, Any], Awaitable[Reply | None]]], ...
] = tuple((route.request, route.handle) for route in COMMANDS.values())


def _is_empty(cmd: Command) -> bool:
    """A command without any request: the client's pong."""
    return cmd.ping is None and all(find(cmd) is None for find, _ in _ROUTES)
