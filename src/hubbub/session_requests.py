"""The requests of a connected session that leave it as it was: ``publish``, ``presence``,
``presence_stats``, ``history``, ``rpc`` and ``send``.

Each checks the session's permission in the namespace (the error codes of
:class:`~hubbub.channels.ChannelRules`), then asks the session's node.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, cast

from hubbub.engines.base import (
    HistoryFilter,
    PublishOptions,
    PublishResult,
    StreamPosition,
    engine_unavailable,
)
from hubbub.hook_types import PublishContext, PublishDecision
from hubbub.payload import to_payload
from hubbub.protocol.codes import (
    Disconnect,
    DisconnectCode,
    ErrorCode,
    ProtocolError,
    disconnect,
    error,
)
from hubbub.protocol.messages import (
    ChannelRequest,
    EmptyResult,
    Error,
    HistoryRequest,
    HistoryResult,
    PresenceResult,
    PresenceStatsResult,
    Publication,
    PublishRequest,
    Reply,
    RPCRequest,
    RPCResult,
    SendRequest,
)
from hubbub.session_connect import State
from hubbub.session_subscribe import check_readable

if TYPE_CHECKING:
    from hubbub.session import Session


def _check_channel(channel: str) -> None:
    if not channel:
        raise error(ErrorCode.BAD_REQUEST, "bad request: empty channel")


async def publish(session: Session, cmd_id: int, req: PublishRequest) -> Reply:
    """The ``publish`` command, as the subscription's info when subscribed. The ``on_publish``
    hooks (the publish proxy among them) decide first; without their decision the
    namespace's permissions do."""
    _check_channel(req.channel)
    node = session.node
    sub = session.subscriptions.get(req.channel)
    decision = None
    if node.publish_handlers:
        opts = node.channel_options(req.channel)
        if not req.data:
            raise error(ErrorCode.BAD_REQUEST, "bad request: empty data")
        decision = await node.run_publish(PublishContext(session, req.channel, req.data))
    if decision is None:
        opts = node.rules.check_publish(
            req.channel, session.user, subscribed=sub is not None, insecure=session._insecure
        )
        decision = _AS_SENT
    if not req.data:
        raise error(ErrorCode.BAD_REQUEST, "bad request: empty data")
    data = req.data
    if decision.data is not None:
        data = to_payload(decision.data, binary=opts.binary)
    elif session.codec.binary and not opts.binary:
        # JSON clients may read this channel: the bytes must be JSON text (checked, and raw
        # newlines dropped since they would split a JSON frame).
        data = to_payload(bytes(data))
    info = sub.info if sub is not None else session.info
    await node.publish_with_options(
        req.channel,
        data,
        opts,
        info=info,
        tags=decision.tags,
        skip_history=decision.skip_history,
        idempotency_key=decision.idempotency_key,
        delta=decision.delta,
    )
    return Reply(id=cmd_id, publish=EmptyResult())


_AS_SENT = PublishDecision()
"""A publication the namespace's permissions allowed: the client's data, as sent."""

_PublishNow = Callable[[str, Publication, PublishOptions], PublishResult]


_PublishSoon = Callable[[str, Publication, PublishOptions], "asyncio.Future[Any] | None"]


def can_publish_now(session: Session) -> bool:
    """Whether :func:`publish_now` may take this session's publish commands: no
    ``on_publish`` hook and no publish proxy (they await), and a broker that publishes
    without awaiting (:class:`~hubbub.engines.base.ImmediatePublisher`) or takes a
    publication to send later (:class:`~hubbub.engines.base.QueuedPublisher`)."""
    node = session.node
    return not node.publish_handlers and (
        hasattr(node.broker, "publish_now") or hasattr(node.broker, "publish_soon")
    )


def publish_now(session: Session, cmd_id: int, req: PublishRequest) -> bool:
    """The ``publish`` command with nothing awaited, its reply written: what :func:`publish`
    does when :func:`can_publish_now` holds, in one synchronous call, the reply encoded from
    a template. False, with nothing done, when the namespace publishes deltas
    (``delta_publish``) or the broker cannot take it now: that publication takes the
    general path. A broker that takes it to send later (a
    :class:`~hubbub.engines.base.QueuedPublisher`) has the reply written once it is
    done: the success reply once the broker has the publication, else the error reply.

    Raises:
        ProtocolError: as :func:`publish` (permissions, empty channel or data).
    """
    _check_channel(req.channel)
    node = session.node
    sub = session.subscriptions.get(req.channel)
    opts = node.rules.check_publish(
        req.channel, session.user, subscribed=sub is not None, insecure=session._insecure
    )
    if opts.delta_publish:
        return False
    data = req.data
    if not data:
        raise error(ErrorCode.BAD_REQUEST, "bad request: empty data")
    if session.codec.binary and not opts.binary:
        data = to_payload(bytes(data))  # as in publish: JSON text for JSON readers
    pub = Publication(data, sub.info if sub is not None else session.info)
    soon = getattr(node.broker, "publish_soon", None)
    if soon is not None:
        future = cast(_PublishSoon, soon)(req.channel, pub, node.publish_options(opts))
        if future is None:
            return False
        future.add_done_callback(lambda done: _published(session, cmd_id, done))
        return True
    broker_publish = cast(_PublishNow, node.broker.publish_now)  # type: ignore[attr-defined]
    broker_publish(req.channel, pub, node.publish_options(opts))
    _published(session, cmd_id, None)
    return True


def _published(session: Session, cmd_id: int, done: asyncio.Future[Any] | None) -> None:
    """Count and answer a publish command of :func:`publish_now`: ``done`` is the broker's
    future (None: published already); its exception is answered as the general path would
    (a server bug as the internal error, logged)."""
    exc: BaseException | None = None
    if done is not None:
        # Cancelled: the engine closed under it.
        exc = engine_unavailable() if done.cancelled() else done.exception()
    node = session.node
    if exc is None:
        node.counters["publications"] += 1
    elif not isinstance(exc, ProtocolError):
        session.log.error("command %d failed", cmd_id, exc_info=exc)
        exc = error(ErrorCode.INTERNAL)
    if exc is not None:
        node.metrics_reply_error(exc.code)
    if session.transport.closing:
        return
    codec = session.codec
    if exc is not None:
        err = Error(exc.code, exc.message, exc.temporary)
        session.transport.write(codec.encode_reply(Reply(id=cmd_id, error=err)))
    elif codec.binary:
        session.transport.write(codec.encode_reply(Reply(id=cmd_id, publish=EmptyResult())))
    else:
        session.transport.write(b'{"id":%d,"publish":{}}' % cmd_id)


def _check_presence(session: Session, channel: str) -> None:
    # The rules answer 108 when presence is off, before the node would.
    _check_channel(channel)
    session.node.rules.check_presence(
        channel,
        session.user,
        subscribed=channel in session.subscriptions,
        insecure=session._insecure,
    )


async def presence(session: Session, cmd_id: int, req: ChannelRequest) -> Reply:
    """The ``presence`` command: who is in the channel."""
    _check_presence(session, req.channel)
    clients = await session.node.presence(req.channel)
    return Reply(id=cmd_id, presence=PresenceResult(presence=clients))


async def presence_stats(session: Session, cmd_id: int, req: ChannelRequest) -> Reply:
    """The ``presence_stats`` command: how many clients and users are in the channel."""
    _check_presence(session, req.channel)
    stats = await session.node.presence_stats(req.channel)
    return Reply(
        id=cmd_id,
        presence_stats=PresenceStatsResult(
            num_clients=stats.num_clients, num_users=stats.num_users
        ),
    )


async def history(session: Session, cmd_id: int, req: HistoryRequest) -> Reply:
    """The ``history`` command, its limit capped by ``history_max_publication_limit``."""
    _check_channel(req.channel)
    node = session.node
    opts = node.rules.check_history(
        req.channel,
        session.user,
        subscribed=req.channel in session.subscriptions,
        insecure=session._insecure,
    )
    check_readable(session, opts)
    cap = session._settings.history_max_publication_limit
    limit = req.limit
    if limit < 0 or limit > cap:
        limit = cap
    since = None
    if req.since is not None:
        if req.reverse and req.since.offset == 0:
            raise error(ErrorCode.BAD_REQUEST, "bad request: reverse history needs an offset")
        since = StreamPosition(req.since.offset, req.since.epoch)
    hist = await node.read_history(
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


async def rpc(session: Session, cmd_id: int, req: RPCRequest) -> Reply:
    """The ``rpc`` command: the application's handler of the method answers; a handler's own
    failure is logged and answered 100.

    Without a handler for the method: 108 "not available" when the application registered no
    RPC handler at all (RPC is off, as in Centrifugo's default configuration), 104 "method not
    found" when it registered others.
    """
    node = session.node
    handlers = node.rpc_handlers
    handler = handlers.get(req.method)
    if handler is None and node.rpc_fallback is None:
        raise error(ErrorCode.METHOD_NOT_FOUND if handlers else ErrorCode.NOT_AVAILABLE)
    try:
        if handler is not None:
            data = await handler(session, req.data)
        else:
            # The RPC proxy routes the method by namespace (104 / 108 for those it does not).
            assert node.rpc_fallback is not None
            data = await node.rpc_fallback(session, req.method, req.data)
    except (ProtocolError, Disconnect):
        raise
    except Exception:
        session.log.exception("rpc handler %r failed", req.method)
        raise error(ErrorCode.INTERNAL) from None
    return Reply(id=cmd_id, rpc=RPCResult(data=data))


async def send(session: Session, req: SendRequest) -> None:
    """The ``send`` message (no reply): the application's send handler takes it (3508
    without one); a handler's own failure is logged only."""
    handler = session.node.send_handler
    if handler is None:
        raise disconnect(DisconnectCode.NOT_AVAILABLE)
    if session.state is not State.CONNECTED:
        raise disconnect(DisconnectCode.BAD_REQUEST, "bad request: connect first")
    try:
        await handler(session, req.data)
    except Disconnect:
        raise
    except Exception:
        session.log.exception("send handler failed")


async def send_command(session: Session, cmd_id: int, req: SendRequest) -> None:
    """``send`` with a command id: handled as without one, and never answered."""
    await send(session, req)
