"""A session's channels: the ``subscribe``, ``unsubscribe`` and ``sub_refresh`` commands,
server-side subscriptions, recovery from history, going live, subscription expiry, leaving.

A subscription is registered before its reply is prepared, so no publication is lost
meanwhile: those wait in ``sub.pending`` until :func:`activate` (after the reply is written)
merges them by offset. The decisions themselves (flags, recovery verdict, offset checks) are
the pure functions of :mod:`hubbub.subscription`.

Functions of one :class:`~hubbub.session.Session`, which they may change (including its
underscored state); they talk to the session's node only.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import msgspec

from hubbub.auth import SubscriptionClaims, TokenExpired, TokenInvalid
from hubbub.config import ChannelOptions
from hubbub.delta import DeltaPush, negotiate, recovered
from hubbub.engines.base import StreamPosition
from hubbub.hook_types import SubscribeContext, SubscribeOptions
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
    EmptyResult,
    Push,
    Reply,
    SubRefreshRequest,
    SubRefreshResult,
    SubscribePush,
    SubscribeRequest,
    SubscribeResult,
    UnsubscribePush,
)
from hubbub.session_hooks import CLIENT_GONE, arm_sub_expiry, payload
from hubbub.subscription import Subscription, recovery_complete, subscription_flags

if TYPE_CHECKING:
    from hubbub.session import Session


def check_readable(session: Session, opts: ChannelOptions) -> None:
    """Raise 107 when the channel carries binary data the session's format cannot hold."""
    if opts.binary and not session.codec.binary:
        raise error(
            ErrorCode.BAD_REQUEST,
            "bad request: this channel carries binary data; connect with the Protobuf format",
        )


SHARED_POLL = 4
"""The subscribe request's ``type`` of a shared-poll subscription."""
MAP_TYPES = frozenset({1, 2, 3})
"""The ``type`` values of map subscriptions: map, map_clients, map_users."""


def check_subscription_type(session: Session, req: SubscribeRequest) -> None:
    """Refuse subscription types other than streams, as Centrifugo does for a channel whose
    namespace is a stream (hubbub serves streams only).

    Raises:
        ProtocolError: 108 for shared-poll (before any other check); for a map type, 107 for
            a bad channel name, 102 for an unknown namespace, then 103. Other values go on as
            a stream subscription.
    """
    if req.type == SHARED_POLL:
        raise error(ErrorCode.NOT_AVAILABLE)
    if req.type in MAP_TYPES:
        rules = session.node.rules
        rules.validate(req.channel)
        rules.options(req.channel)
        raise error(ErrorCode.PERMISSION_DENIED)


async def subscribe(session: Session, cmd_id: int, req: SubscribeRequest) -> Reply | None:
    """The ``subscribe`` command: check, subscribe, reply (written here), go live."""
    node = session.node
    channel = req.channel
    if not channel:
        raise disconnect(DisconnectCode.BAD_REQUEST, "bad request: empty channel")
    if req.type:
        check_subscription_type(session, req)
    node.rules.validate(channel)
    if channel in session.subscriptions:
        raise error(ErrorCode.ALREADY_SUBSCRIBED)
    if len(session.subscriptions) >= session._settings.channel_limit:
        raise error(ErrorCode.LIMIT_EXCEEDED)
    claims: SubscriptionClaims | None = None
    granted: SubscribeOptions | None = None
    if req.token:
        claims = _verify_token(session, channel, req.token)
    elif node.subscribe_handlers and not node.rules.is_private(channel):
        # The application (or the subscribe proxy) decides first; a token decides alone.
        granted = await node.run_subscribe(SubscribeContext(session, channel, req.data))
        if session.transport.closing or channel in session.subscriptions:
            # The client left, or subscribed meanwhile: make nothing.
            raise CLIENT_GONE if session.transport.closing else error(ErrorCode.ALREADY_SUBSCRIBED)
    if granted is not None:
        opts = node.rules.options(channel)
        expire_at, override = granted.expire_at, granted.override
        chan_info, data = payload(granted.info), payload(granted.data)
    else:
        opts = node.rules.check_subscribe(
            channel,
            session.user,
            has_valid_token=claims is not None,
            insecure=session._insecure,
        )
        expire_at = claims.expire_at if claims else None
        override = claims.override if claims else None
        chan_info = claims.info if claims else EMPTY
        data = claims.data if claims else EMPTY
    if override is not None:
        opts = override.apply(opts)
    check = node.subscribe_checks.get(node.rules.namespace_of(channel))
    if check is not None:
        await check(session, channel)
    now = node.clock.time()
    if expire_at is not None and expire_at <= now:
        raise error(ErrorCode.EXPIRED)
    sub, result = await add_subscription(
        session,
        channel,
        opts,
        chan_info=chan_info,
        data=data,
        recover=req,
        server_side=False,
        join_leave_requested=req.join_leave,
    )
    if expire_at is not None:
        sub.expire_at = expire_at
        on_server = granted is not None and granted.refresh_on_server
        if not on_server:
            result.expires = True
            result.ttl = max(int(expire_at - now), 1)
        arm_sub_expiry(session, sub, on_server=on_server)
    if req.flag & 2 and result.was_recovering and not result.recovered and sub.recoverable:
        await remove_subscription(session, channel)
        raise error(ErrorCode.UNRECOVERABLE_POSITION)
    session._write(Reply(id=cmd_id, subscribe=result))
    await activate(session, sub)
    return None


def requested_channel(session: Session, channel: str) -> ChannelOptions | None:
    """The options of ``channel`` if a uni client that names it in its connect request may
    be subscribed to it: only where it could subscribe itself (valid name, not private, no
    subscribe check of the application nor subscribe proxy in the namespace, the namespace's
    permissions); None otherwise.

    Raises:
        Disconnect: 3501 for a channel of an unknown namespace.
    """
    rules = session.node.rules
    try:
        rules.validate(channel)
    except (ProtocolError, Disconnect):
        return None
    try:
        opts = rules.options(channel)
    except ProtocolError:
        raise disconnect(DisconnectCode.BAD_REQUEST, "bad request: unknown channel") from None
    checked = rules.namespace_of(channel) in session.node.subscribe_checks
    if checked or opts.subscribe_proxy_enabled:
        return None
    try:
        return rules.check_subscribe(
            channel, session.user, has_valid_token=False, insecure=session._insecure
        )
    except ProtocolError:
        return None


def _verify_token(session: Session, channel: str, token: str) -> SubscriptionClaims:
    try:
        claims = session.node.verifier.verify_subscription(token)
    except TokenExpired:
        raise error(ErrorCode.TOKEN_EXPIRED) from None
    except TokenInvalid:
        raise error(ErrorCode.PERMISSION_DENIED) from None
    if claims.channel != channel or claims.user != session.user:
        raise disconnect(DisconnectCode.INVALID_TOKEN, "invalid token: channel or user")
    if claims.client and claims.client != session.client_id:
        raise disconnect(DisconnectCode.INVALID_TOKEN, "invalid token: client")
    return claims


async def server_subscribe(
    session: Session,
    channel: str,
    *,
    chan_info: msgspec.Raw,
    data: msgspec.Raw,
    recover_since: StreamPosition | None,
) -> None:
    """Subscribe a connected session on the server's initiative (subscribe push); see
    :meth:`hubbub.session.Session.server_subscribe`."""
    if channel in session.subscriptions:
        raise error(ErrorCode.ALREADY_SUBSCRIBED)
    node = session.node
    node.rules.validate(channel)
    opts = node.rules.options(channel)
    recover = None
    if recover_since is not None:
        recover = SubscribeRequest(
            channel=channel,
            recover=True,
            offset=recover_since.offset,
            epoch=recover_since.epoch,
        )
    sub, result = await add_subscription(
        session,
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
    codec, transport = session.codec, session.transport
    transport.write(codec.encode_push(Push(channel=channel, subscribe=push)))
    # Recovered publications of a server-side subscription made at runtime go out as pushes.
    for pub in result.publications:
        transport.write(codec.encode_push(Push(channel=channel, pub=pub)))
    await activate(session, sub)


async def add_subscription(
    session: Session,
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
    in ``sub.pending`` until :func:`activate` (after the reply is written).

    On any failure the subscription is removed again (without a leave message) and the
    error propagates.
    """
    node = session.node
    check_readable(session, opts)
    delta = negotiate(recover.delta if recover is not None else "", opts.allowed_delta_types)
    flags = subscription_flags(
        opts,
        server_side=server_side,
        wants_recovery=recover is not None and (recover.recoverable or recover.recover),
        wants_positioning=recover is not None and recover.positioned,
        wants_join_leave=join_leave_requested,
    )
    info = ClientInfo(
        user=session.user,
        client=session.client_id,
        conn_info=session.info.conn_info,
        chan_info=chan_info,
    )
    sub = Subscription(
        channel=channel,
        options=opts,
        info=info,
        server_side=server_side,
        recoverable=flags.positioned,
        push_join_leave=flags.push_join_leave,
        reconnects=node.engine_reconnects,
        delta=delta,
    )
    session.subscriptions[channel] = sub
    result = SubscribeResult(data=data, delta=delta)
    try:
        await node.add_subscriber(channel, session, delta=delta)
        if flags.positioned:
            result.recoverable = flags.recoverable
            result.positioned = True
            if recover is not None and recover.recover:
                result.was_recovering = True
                await _recover(session, sub, recover, result)
                if delta and result.recovered:
                    # The client keeps its base across resubscribes: deltas may go on.
                    sub.delta_ready = True
                    if result.publications:
                        node.seed_delta_base(channel, result.publications[-1], result.epoch)
                    result.publications = recovered(result.publications, session.codec.binary)
            else:
                top = await node.gaps.reads.top(channel, opts)
                result.epoch, result.offset = top.epoch, top.offset
            sub.offset = result.offset
            sub.epoch = result.epoch
            if result.publications:
                sub.offset = result.publications[-1].offset
        elif recover is not None and recover.recover:
            result.was_recovering = True
        if opts.presence:
            await node.add_presence(channel, info)
    except BaseException:
        await remove_subscription(session, channel, announce=False)
        raise
    return sub, result


async def _recover(
    session: Session, sub: Subscription, req: SubscribeRequest, result: SubscribeResult
) -> None:
    """Fill ``result`` with the publications the client missed since ``req``'s position, or
    with the stream top when they cannot all be given (not recovered)."""
    node = session.node
    limit = session._settings.recovery_max_publication_limit
    # Coalesced with the other subscribers recovering the channel meanwhile (a reconnect storm).
    hist = await node.gaps.reads.since(sub.channel, sub.options, req.offset, limit)
    top = hist.position
    pubs = hist.publications
    recovered = recovery_complete(req.offset, req.epoch, top.offset, top.epoch, pubs)
    result.epoch = top.epoch
    if recovered:
        result.recovered = True
        result.offset = req.offset
        result.publications = pubs
    else:
        result.offset = top.offset
    node.metrics_recovery(recovered)


async def activate(session: Session, sub: Subscription) -> None:
    """The subscribe reply is written: send what arrived meanwhile, then go live."""
    node = session.node
    pending, sub.pending = sub.pending, None
    if pending:
        for pub, data, epoch in pending:
            if sub.stale or session.subscriptions.get(sub.channel) is not sub:
                break
            if sub.recoverable and pub.offset:
                session._judge(sub, pub, data, epoch, merging=True)
            else:
                if isinstance(data, DeltaPush):
                    data = data.frame_for(sub, session.codec)
                session.transport.write(data)
    live = session.subscriptions.get(sub.channel) is sub and not sub.stale
    if live and sub.recoverable and sub.reconnects != node.engine_reconnects:
        # The engine reconnected while this subscription was set up: its position may
        # predate the outage, and the check after the reconnect skipped it.
        node.check_stream(sub.channel)
    if live and not sub.delta:
        # Nothing to check per publication (no position, or the one the channel's other
        # positioned subscribers share): the transport may take them for the whole channel
        # at once.
        node.group_subscriber(sub.channel, session.client_id, session.codec, session.transport)
    if sub.options.join_leave:
        await node.publish_join(sub.channel, sub.info)


async def unsubscribe(session: Session, cmd_id: int, req: ChannelRequest) -> Reply:
    """The ``unsubscribe`` command (a channel not subscribed is fine)."""
    if req.channel in session.subscriptions:
        await remove_subscription(session, req.channel)
    return Reply(id=cmd_id, unsubscribe=EmptyResult())


async def remove_subscription(session: Session, channel: str, *, announce: bool = True) -> None:
    """Forget ``channel``'s subscription here and in the node; leave its presence and, with
    ``announce``, publish the leave. An unreachable engine is logged, not raised."""
    sub = session.subscriptions.pop(channel, None)
    if sub is None:
        return
    if sub.expire_timer is not None:
        sub.expire_timer.cancel()
    node = session.node
    if announce and node.unsubscribe_handlers:
        node.notify_unsubscribe(session, channel)
    try:
        await node.remove_subscriber(channel, session)
        if sub.options.presence:
            await node.remove_presence(channel, session.client_id, session.user)
        if announce and sub.options.join_leave and sub.pending is None:
            await node.publish_leave(channel, sub.info)
    except ProtocolError as exc:
        # The engine is unreachable: the local state is gone regardless, and the presence
        # entry expires by itself within presence_ttl.
        session.log.info("leaving %s while the engine is down: %s", channel, exc.message)


async def server_unsubscribe(session: Session, channel: str, code: UnsubscribeCode) -> None:
    """Drop a subscription on the server's initiative and tell the client why."""
    if channel not in session.subscriptions:
        return
    await remove_subscription(session, channel)
    push = Push(
        channel=channel,
        unsubscribe=UnsubscribePush(code=int(code), reason=UNSUBSCRIBE_REASONS[code]),
    )
    session.transport.write(session.codec.encode_push(push))


async def sub_refresh(session: Session, cmd_id: int, req: SubRefreshRequest) -> Reply:
    """The ``sub_refresh`` command: a new subscription token moves the subscription's
    expiry."""
    sub = session.subscriptions.get(req.channel)
    if sub is None:
        raise error(ErrorCode.PERMISSION_DENIED)
    if not req.token:
        raise error(ErrorCode.BAD_REQUEST)
    node = session.node
    try:
        claims = node.verifier.verify_subscription(req.token)
    except TokenExpired:
        raise error(ErrorCode.TOKEN_EXPIRED) from None
    except TokenInvalid:
        raise disconnect(DisconnectCode.INVALID_TOKEN) from None
    if claims.channel != req.channel or claims.user != session.user:
        raise disconnect(DisconnectCode.INVALID_TOKEN, "invalid token: channel or user")
    if claims.client and claims.client != session.client_id:
        raise disconnect(DisconnectCode.INVALID_TOKEN, "invalid token: client")
    now = node.clock.time()
    result = SubRefreshResult()
    sub.expire_at = claims.expire_at
    if claims.expire_at is not None:
        if claims.expire_at <= now:
            raise error(ErrorCode.EXPIRED)
        result.expires = True
        result.ttl = max(int(claims.expire_at - now), 1)
    arm_sub_expiry(session, sub, on_server=False)
    return Reply(id=cmd_id, sub_refresh=result)
