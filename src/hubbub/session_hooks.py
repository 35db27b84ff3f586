"""A session's side of the hooks (:mod:`hubbub.hooks`): what their answers become, and the
refreshes the server makes at expiry.

Functions of one :class:`~hubbub.session.Session`, which they may change (including its
underscored state); they talk to the session's node only.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import msgspec

from hubbub.auth import ConnectionClaims, ServerSub
from hubbub.hook_types import Credentials
from hubbub.payload import to_payload
from hubbub.protocol.codes import Disconnect, DisconnectCode, UnsubscribeCode, disconnect
from hubbub.protocol.messages import EMPTY, ClientInfo

if TYPE_CHECKING:
    from hubbub.session import Session
    from hubbub.subscription import Subscription

CLIENT_GONE = Disconnect(3000, "connection closed")
"""Raised when the client left while a hook was asked: nothing more is made for it."""

RETRY_DELAY = 60.0
"""Seconds a connection or subscription is kept when its refresh hook failed, before the
hook is asked again (Centrifugo's proxies do the same)."""


def payload(value: object) -> msgspec.Raw:
    """A hook's payload field (any JSON value, JSON text as bytes, or None) as a payload."""
    return EMPTY if value is None else to_payload(value)


def claims_of(granted: Credentials) -> ConnectionClaims:
    """What ``on_connecting``'s credentials grant, as a token's claims would.

    Raises:
        ProtocolError: 107 when a payload is not JSON.
    """
    subs = {channel: ServerSub() for channel in granted.channels}
    for channel, opts in granted.subs.items():
        subs[channel] = ServerSub(
            info=payload(opts.info), data=payload(opts.data), override=opts.override
        )
    return ConnectionClaims(
        user=granted.user,
        expire_at=granted.expire_at,
        info=payload(granted.info),
        subs=subs,
        meta=payload(granted.meta),
    )


async def server_refresh(session: Session) -> None:
    """The connection reached its expiry and ``on_refresh`` hooks exist: ask them.

    Expired (or no answer) closes with 3005; a new ``expire_at`` re-arms the timer (one not
    in the future expires); ``info`` replaces the connection info. A hook's ``Disconnect``
    closes with it; any other failure is logged and the hooks are asked again in
    :data:`RETRY_DELAY` seconds.
    """
    from hubbub.session_connect import State, arm_expiry

    node = session.node
    if session.state is not State.CONNECTED or session.transport.closing:
        return
    now = node.clock.time()
    try:
        decision = await node.run_refresh(session)
        info = None if decision is None else decision.info
        conn_info = None if info is None else payload(info)
    except Disconnect as reason:
        session.close(reason)
        return
    except Exception:
        session.log.exception("on_refresh hook failed; retrying in %.0f s", RETRY_DELAY)
        session.expire_at = now + RETRY_DELAY
        arm_expiry(session)
        return
    if session.state is not State.CONNECTED:
        return
    if decision is None or decision.expired:
        session.close(disconnect(DisconnectCode.EXPIRED))
        return
    if decision.expire_at is not None and decision.expire_at <= node.clock.time():
        session.close(disconnect(DisconnectCode.EXPIRED))
        return
    if conn_info is not None:
        session.info = ClientInfo(user=session.user, client=session.client_id, conn_info=conn_info)
    session.expire_at = decision.expire_at
    arm_expiry(session)


def arm_sub_expiry(session: Session, sub: Subscription, *, on_server: bool) -> None:
    """(Re)start the timer of ``sub``'s expiry: ``on_server``, the ``on_sub_refresh`` hooks
    are asked at ``expire_at`` (:func:`server_sub_refresh`); otherwise the subscription ends
    ``expired_close_delay`` after it unless the client refreshed it with a token."""
    if sub.expire_timer is not None:
        sub.expire_timer.cancel()
        sub.expire_timer = None
    if sub.expire_at is None:
        return
    node = session.node
    grace = 0.0 if on_server else session._settings.expired_close_delay
    delay = sub.expire_at - node.clock.time() + grace

    def expired() -> None:
        sub.expire_timer = None
        if on_server:
            node.spawn(server_sub_refresh(session, sub))
        else:
            node.spawn(end_expired(session, sub))

    sub.expire_timer = node.clock.call_later(delay, expired)


async def end_expired(session: Session, sub: Subscription, *, now: bool = False) -> None:
    """End ``sub`` if it is still the session's and its expiry has passed (or ``now``):
    unsubscribe push 2501 (the client subscribes again), or close 3006 for a server-side
    subscription."""
    if session.subscriptions.get(sub.channel) is not sub or sub.expire_at is None:
        return
    if not now and sub.expire_at > session.node.clock.time():
        return
    if sub.server_side:
        session.close(disconnect(DisconnectCode.SUBSCRIPTION_EXPIRED))
    else:
        await session.server_unsubscribe(sub.channel, UnsubscribeCode.EXPIRED)


async def server_sub_refresh(session: Session, sub: Subscription) -> None:
    """``sub`` reached its expiry and is refreshed on the server: ask the ``on_sub_refresh``
    hooks (the rules of :func:`server_refresh`, ending the subscription as
    :func:`end_expired` does)."""
    node = session.node
    if session.subscriptions.get(sub.channel) is not sub or session.transport.closing:
        return
    now = node.clock.time()
    try:
        decision = await node.run_sub_refresh(session, sub.channel)
        info = None if decision is None else decision.info
        chan_info = None if info is None else payload(info)
    except Disconnect as reason:
        session.close(reason)
        return
    except Exception:
        session.log.exception("on_sub_refresh hook failed; retrying in %.0f s", RETRY_DELAY)
        sub.expire_at = now + RETRY_DELAY
        arm_sub_expiry(session, sub, on_server=True)
        return
    if session.subscriptions.get(sub.channel) is not sub:
        return
    expired = decision is None or decision.expired
    if decision is not None and decision.expire_at is not None:
        expired = expired or decision.expire_at <= node.clock.time()
    if expired:
        await end_expired(session, sub, now=True)
        return
    assert decision is not None
    if chan_info is not None:
        sub.info = msgspec.structs.replace(sub.info, chan_info=chan_info)
    sub.expire_at = decision.expire_at
    arm_sub_expiry(session, sub, on_server=True)
