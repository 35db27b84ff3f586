"""A session's identity over time: the ``connect`` and ``refresh`` commands, the connection's
expiry, and its place in the per-user connection count.

Functions of one :class:`~hubbub.session.Session`, which they may change (including its
underscored state); they talk to the session's node only.
"""

from __future__ import annotations

import enum
import logging
import weakref
from dataclasses import replace
from typing import TYPE_CHECKING

import msgspec

from hubbub import session_hooks, session_subscribe
from hubbub.auth import ConnectionClaims, TokenExpired, TokenInvalid
from hubbub.config import ChannelOptions
from hubbub.engines.retry import RetryQueue
from hubbub.heartbeat import Heartbeat
from hubbub.hook_types import ConnectContext
from hubbub.protocol.codes import DisconnectCode, ErrorCode, disconnect, error
from hubbub.protocol.messages import (
    EMPTY,
    ClientInfo,
    ConnectRequest,
    ConnectResult,
    Push,
    RefreshPush,
    RefreshRequest,
    RefreshResult,
    Reply,
    SubscribeResult,
)
from hubbub.session_hooks import CLIENT_GONE, claims_of, payload
from hubbub.subscription import Subscription

if TYPE_CHECKING:
    from hubbub.node import Node
    from hubbub.session import Session


_log = logging.getLogger("hubbub.session")


class State(enum.Enum):
    """Where a session is in its life: ``connect`` moves it from CONNECTING to CONNECTED (and
    back when the connect fails); the end of the connection makes it CLOSED, for good."""

    CONNECTING = "connecting"
    CONNECTED = "connected"
    CLOSED = "closed"


async def connect(session: Session, cmd_id: int, req: ConnectRequest) -> Reply | None:
    """The ``connect`` command: authenticate, count the connection, make the server-side
    subscriptions, reply (written here, before the subscriptions go live) and start pinging.

    A failure leaves the session as it was before (connecting, holding nothing).
    """
    node = session.node
    settings = session._settings
    granted = None
    if req.headers:
        # Kept with the handshake: the proxies forward those listed in emulated_headers.
        session.handshake = replace(session.handshake, emulated=tuple(req.headers.items()))
    if node.connecting_handlers:
        # The application (or the connect proxy) decides first; None leaves it to the token.
        granted = await node.run_connecting(ConnectContext(session, session.handshake, req))
    if granted is not None:
        claims = claims_of(granted)
    elif req.token:
        try:
            claims = node.verifier.verify_connection(req.token)
        except TokenExpired:
            raise error(ErrorCode.TOKEN_EXPIRED) from None
        except TokenInvalid as exc:
            session._close_detail = str(exc)  # logged by close(), in its one line
            raise disconnect(DisconnectCode.INVALID_TOKEN) from None
    elif settings.allow_anonymous_connect_without_token or node.settings.development:
        claims = ConnectionClaims(user="", expire_at=None, info=EMPTY, subs={}, meta=EMPTY)
    else:
        raise disconnect(DisconnectCode.BAD_REQUEST, "bad request: no credentials")
    now = node.clock.time()
    if claims.expire_at is not None and claims.expire_at <= now:
        raise error(ErrorCode.EXPIRED)

    session.user = claims.user
    session.name = req.name[:16]
    session.version = req.version[:64]
    session.info = ClientInfo(user=session.user, client=session.client_id, conn_info=claims.info)
    session.expire_at = claims.expire_at
    session.meta = claims.meta

    # Server-side subscriptions: the token's channels, then the personal channel.
    server_subs: dict[str, tuple[msgspec.Raw, msgspec.Raw, ChannelOptions]] = {}
    for channel, grant in claims.subs.items():
        opts = node.rules.options(channel)
        if grant.override is not None:
            opts = grant.override.apply(opts)
        server_subs[channel] = (grant.info, grant.data, opts)
    if session.user and settings.personal_channel:
        personal = node.rules.personal_channel(session.user)
        if personal not in server_subs:
            server_subs[personal] = (EMPTY, EMPTY, node.rules.options(personal))
    if session.unidirectional and granted is None:
        # A uni client cannot subscribe: the channels its request names are subscribed here,
        # those it could subscribe to itself; the others are ignored without a word.
        for channel in req.subs:
            if channel not in server_subs:
                asked = session_subscribe.requested_channel(session, channel)
                if asked is not None:
                    server_subs[channel] = (EMPTY, EMPTY, asked)
    if len(server_subs) > settings.channel_limit:
        raise disconnect(DisconnectCode.CHANNEL_LIMIT)

    per_user = node.settings.limits.connections_per_user
    if (
        session.user
        and per_user
        and (
            node.user_connections(session.user) >= per_user
            or await node.user_connections_everywhere(session.user) >= per_user
        )
    ):
        raise disconnect(DisconnectCode.CONNECTION_LIMIT)
    if session.state is not State.CONNECTING:
        # The client left while a hook or the engine was asked: register nothing.
        raise CLIENT_GONE
    session.state = State.CONNECTED
    node.register_session(session)
    results: dict[str, SubscribeResult] = {}
    activated: list[Subscription] = []
    try:
        if session.user and per_user:
            # Counted where every node sees it; refreshed with presence, gone on close.
            await node.count_connection(session.info)
        for channel, (chan_info, data, opts) in server_subs.items():
            sub, sub_result = await session_subscribe.add_subscription(
                session,
                channel,
                opts,
                chan_info=chan_info,
                data=data,
                recover=req.subs.get(channel),
                server_side=True,
                join_leave_requested=False,
            )
            results[channel] = sub_result
            activated.append(sub)
    except BaseException:
        # Leave the connection as it was before connect: a failed connect holds nothing.
        for sub in activated:
            await session_subscribe.remove_subscription(session, sub.channel)
        session.state = State.CONNECTING
        node.unregister_session(session)
        if session.user and per_user:
            # Even after a failed add: Redis may have applied it before the reply was lost.
            await uncount(session)
        raise

    result = ConnectResult(client=session.client_id, version=node.version, subs=results)
    if granted is not None and granted.data is not None:
        result.data = payload(granted.data)
    if session.stream_session:
        # HTTP streams: the client names its session, and for emulation its node, in every
        # command it sends through /emulation.
        result.session = session.stream_session
        if not session.unidirectional:
            result.node = node.uid
    if session.expire_at is not None:
        if not node.refresh_handlers:
            # The client refreshes with a new token; with on_refresh hooks the server does.
            result.expires = True
            result.ttl = max(int(session.expire_at - now), 1)
        arm_expiry(session)
    # A uni client has no way to answer pings: they only show it the stream is alive.
    pong_timeout = 0.0 if session.unidirectional else settings.pong_timeout
    if session._app_pings:
        result.ping = int(settings.ping_interval)
        result.pong = pong_timeout > 0
        session._heartbeat = Heartbeat(
            node.clock,
            interval=settings.ping_interval,
            pong_timeout=pong_timeout,
            peer=session,
        )
        session._heartbeat.start()
    # Connected for good: only now is the connection no longer stale. A failed connect
    # keeps the timer, so an unusable connection cannot be held open forever.
    if session._stale_timer is not None:
        session._stale_timer.cancel()
        session._stale_timer = None
    session._write(Reply(id=cmd_id, connect=result))
    for sub in activated:
        await session_subscribe.activate(session, sub)
    # Only the headers the proxies forward (or the application asked for) stay with the
    # connection: every idle connection would otherwise hold its whole opening request.
    session.handshake = session.handshake.keep(node.kept_headers, node.kept_emulated)
    if _log.isEnabledFor(logging.DEBUG):
        session.log.debug("connected as user %r", session.user)
    for handler in node.connect_handlers:
        node.spawn(handler(session))
    return None


async def refresh(session: Session, cmd_id: int, req: RefreshRequest) -> Reply:
    """The ``refresh`` command: a new connection token of the same user moves the expiry."""
    if not req.token:
        raise disconnect(DisconnectCode.BAD_REQUEST, "bad request: empty token")
    node = session.node
    try:
        claims = node.verifier.verify_connection(req.token)
    except TokenExpired:
        raise disconnect(DisconnectCode.EXPIRED) from None
    except TokenInvalid:
        raise disconnect(DisconnectCode.INVALID_TOKEN) from None
    if claims.user != session.user:
        raise disconnect(DisconnectCode.INVALID_TOKEN, "invalid token: other user")
    now = node.clock.time()
    if claims.expire_at is not None and claims.expire_at <= now:
        raise disconnect(DisconnectCode.EXPIRED)
    session.expire_at = claims.expire_at
    result = RefreshResult(client=session.client_id, version=node.version)
    if session.expire_at is not None:
        result.expires = True
        result.ttl = max(int(session.expire_at - now), 1)
    arm_expiry(session)
    return Reply(id=cmd_id, refresh=result)


def push_refresh(session: Session) -> None:
    """Tell a uni client its connection's new expiry (``refresh`` push): it cannot ask."""
    push = RefreshPush()
    if session.expire_at is not None:
        push.expires = True
        push.ttl = max(int(session.expire_at - session.node.clock.time()), 1)
    session.transport.write(session.codec.encode_push(Push(refresh=push)))


def arm_expiry(session: Session) -> None:
    """(Re)start the timer that closes the connection (3005) once ``session.expire_at`` has
    passed by ``expired_close_delay`` (the client's time to refresh); none without expiry.
    With ``on_refresh`` hooks the timer asks them at ``expire_at`` instead
    (:func:`hubbub.session_hooks.server_refresh`)."""
    if session._expire_timer is not None:
        session._expire_timer.cancel()
        session._expire_timer = None
    if session.expire_at is None:
        return
    clock = session.node.clock
    on_server = bool(session.node.refresh_handlers)
    grace = 0.0 if on_server else session._settings.expired_close_delay
    delay = session.expire_at - clock.time() + grace
    session._expire_timer = clock.call_later(delay, lambda: _on_expired(session, on_server))


def _on_expired(session: Session, on_server: bool) -> None:
    session._expire_timer = None
    if on_server:
        # Armed for this very expiry (a new one re-arms): ask even if the timer fired a
        # hair early.
        session.node.spawn(session_hooks.server_refresh(session))
    elif session.expire_at is not None and session.expire_at <= session.node.clock.time():
        session.close(disconnect(DisconnectCode.EXPIRED))


async def uncount(session: Session) -> None:
    """Remove the session's connection from its user's count in the engine.

    A removal the engine fails (unreachable, or no pooled connection in time) is handed to
    the node's background retries: a count left behind would refuse the user (3504) until
    it expired. Returns once removed or handed over; re-raises a cancellation after
    handing over.
    """
    node, client_id, user = session.node, session.client_id, session.user

    async def remove() -> None:
        await node.uncount_connection(user, client_id)

    try:
        await remove()
    except BaseException as exc:
        _uncounts(node).submit(client_id, remove)
        if not isinstance(exc, Exception):
            raise


# One queue per node of the connection counts still to remove (see uncount); weak, so that a
# node dropped by its application takes its queue along.
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
