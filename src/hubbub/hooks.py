"""Hooks: the application's say in what its clients do, registered with decorators on the node.

Example::

    @node.on_connecting
    async def authenticate(ctx: ConnectContext) -> Credentials | None:
        user = await users.from_session_cookie(ctx.cookies.get("session"))
        if user is None:
            return None  # the usual path: the connect request's token, if any
        return Credentials(user=str(user.id), info={"name": user.name})

    @node.rpc("echo")
    async def echo(session: Session, data: msgspec.Raw) -> msgspec.Raw:
        return data

Deciding hooks (``on_connecting``, ``on_subscribe``, ``on_publish``, ``on_refresh``,
``on_sub_refresh``) may be registered several times: they run in order of registration (the
HTTP proxies of the configuration first, see :mod:`hubbub.proxy`), and the first that returns
something other than None decides; the later ones are not called. Notices (``on_connect``,
``on_unsubscribe``, ``on_disconnect``) all run, in the background: they can neither delay nor
refuse anything.

What an exception in a hook does:

* :class:`~hubbub.protocol.codes.ProtocolError` answers the client's command with that error
  (the connection stays);
* :class:`~hubbub.protocol.codes.Disconnect` closes the connection with its code and reason;
* any other exception is logged with its traceback and answers 100 (internal error,
  temporary): one command fails, never the connection loop or the node.

In the hooks run by timers (``on_refresh``, ``on_sub_refresh``) a ``Disconnect`` closes too,
and any other exception is logged and retried in 60 seconds. In notices, an exception is
logged, nothing else.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Coroutine
from typing import TYPE_CHECKING, Any, TypeVar

import msgspec

from hubbub.hook_types import (
    ConnectContext,
    Credentials,
    PublishContext,
    PublishDecision,
    RefreshDecision,
    SubRefreshDecision,
    SubscribeContext,
    SubscribeOptions,
)

if TYPE_CHECKING:
    from hubbub.session import Session

log = logging.getLogger("hubbub.hooks")

RPCHandler = Callable[["Session", msgspec.Raw], Awaitable[msgspec.Raw]]
"""Answers an ``rpc`` command: gets the session and the request data, returns the reply data
(use :func:`hubbub.protocol.messages.raw` to embed a Python value). Raising
:class:`~hubbub.protocol.codes.ProtocolError` answers with that error."""

RPCFallback = Callable[["Session", str, msgspec.Raw], Awaitable[msgspec.Raw]]
"""Answers ``rpc`` commands whose method has no handler (the RPC proxy): gets the session, the
method and the data; raises 104 or 108 for methods it does not serve."""

SendHandler = Callable[["Session", msgspec.Raw], Awaitable[None]]
"""Receives a ``send`` command (an asynchronous message without a reply)."""

ConnectHandler = Callable[["Session"], Coroutine[Any, Any, None]]
"""Told about every connection that completed ``connect`` (run in the background: it cannot
delay or refuse the connection, and its failure is logged, not sent to the client)."""

SubscribeCheck = Callable[["Session", str], Awaitable[None]]
"""Asked before a client-side subscription to a channel is made; raising
:class:`~hubbub.protocol.codes.ProtocolError` refuses it with that error."""

ConnectingHandler = Callable[[ConnectContext], Awaitable[Credentials | None]]
"""Decides who a connecting client is, before its token is looked at: credentials, or None
for the usual path (the token; anonymous where allowed); raising refuses."""

SubscribeHandler = Callable[[SubscribeContext], Awaitable[SubscribeOptions | None]]
"""Decides a subscription without a token: options allow it (even where the namespace's
permissions would not), None leaves it to the namespace's permissions; raising refuses."""

PublishHandler = Callable[[PublishContext], Awaitable[PublishDecision | None]]
"""Decides a client's publication: a decision allows it (even where the namespace's
permissions would not), possibly with other data; None leaves it to the namespace's
permissions; raising refuses."""

RefreshHandler = Callable[["Session"], Awaitable[RefreshDecision | None]]
"""Asked when a connection reaches its expiry: extend it, change its info, or expire it."""

SubRefreshHandler = Callable[["Session", str], Awaitable[SubRefreshDecision | None]]
"""Asked when a subscription (session, channel) reaches its expiry."""

UnsubscribeHandler = Callable[["Session", str], Coroutine[Any, Any, None]]
"""Told that a subscription (session, channel) ended, the connection's end included."""

DisconnectHandler = Callable[["Session", int, str], Coroutine[Any, Any, None]]
"""Told that a connected session ended, with the close code and reason (3000 "connection
closed" when the client left)."""

H = TypeVar("H")


class Hooks:
    """The application's handlers (a part of :class:`~hubbub.node.Node`).

    Attributes:
        rpc_handlers: ``rpc`` handlers by method name.
        rpc_fallback: answers the methods without a handler (the RPC proxy), if any.
        send_handler: the handler of ``send`` commands, if any.
        connect_handlers: told about every completed connect, in order of registration.
        subscribe_checks: checks of client-side subscriptions by namespace.
        connecting_handlers, subscribe_handlers, publish_handlers, refresh_handlers,
        sub_refresh_handlers: the deciding hooks, in order.
        unsubscribe_handlers, disconnect_handlers: the notices, in order.
        kept_headers: names (lower case) of the handshake's headers kept once connected, for
            the hooks of later commands (``session.handshake``); the proxies add theirs.
        kept_emulated: likewise for the headers the client emulates in its connect request.
    """

    def __init__(self) -> None:
        self.rpc_handlers: dict[str, RPCHandler] = {}
        self.rpc_fallback: RPCFallback | None = None
        self.send_handler: SendHandler | None = None
        self.connect_handlers: list[ConnectHandler] = []
        self.subscribe_checks: dict[str, SubscribeCheck] = {}
        self.connecting_handlers: list[ConnectingHandler] = []
        self.subscribe_handlers: list[SubscribeHandler] = []
        self.publish_handlers: list[PublishHandler] = []
        self.refresh_handlers: list[RefreshHandler] = []
        self.sub_refresh_handlers: list[SubRefreshHandler] = []
        self.unsubscribe_handlers: list[UnsubscribeHandler] = []
        self.disconnect_handlers: list[DisconnectHandler] = []
        self.kept_headers: set[str] = set()
        self.kept_emulated: set[str] = set()
        self._notices: set[asyncio.Task[None]] = set()

    # -----------------------------------------------------------------------------------------
    # Registration (decorators)

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
        channels ("" = channels without a namespace); one check per namespace. It runs
        after the token, ``on_subscribe`` and the namespace's permissions allowed the
        subscription, and may still refuse it."""

        def register(check: SubscribeCheck) -> SubscribeCheck:
            self.subscribe_checks[namespace] = check
            return check

        return register

    def on_connecting(self, handler: ConnectingHandler) -> ConnectingHandler:
        """Decorator: add a hook deciding who a connecting client is (:data:`ConnectingHandler`)."""
        return _add(self.connecting_handlers, handler)

    def on_subscribe(self, handler: SubscribeHandler) -> SubscribeHandler:
        """Decorator: add a hook deciding subscriptions without a token
        (:data:`SubscribeHandler`)."""
        return _add(self.subscribe_handlers, handler)

    def on_publish(self, handler: PublishHandler) -> PublishHandler:
        """Decorator: add a hook deciding clients' publications (:data:`PublishHandler`)."""
        return _add(self.publish_handlers, handler)

    def on_refresh(self, handler: RefreshHandler) -> RefreshHandler:
        """Decorator: add a hook refreshing connections at their expiry on the server's side
        (:data:`RefreshHandler`). With one registered, clients are not asked to refresh."""
        return _add(self.refresh_handlers, handler)

    def on_sub_refresh(self, handler: SubRefreshHandler) -> SubRefreshHandler:
        """Decorator: add a hook refreshing subscriptions at their expiry
        (:data:`SubRefreshHandler`)."""
        return _add(self.sub_refresh_handlers, handler)

    def on_unsubscribe(self, handler: UnsubscribeHandler) -> UnsubscribeHandler:
        """Decorator: add a notice of ended subscriptions (:data:`UnsubscribeHandler`)."""
        return _add(self.unsubscribe_handlers, handler)

    def on_disconnect(self, handler: DisconnectHandler) -> DisconnectHandler:
        """Decorator: add a notice of ended connections (:data:`DisconnectHandler`)."""
        return _add(self.disconnect_handlers, handler)

    # -----------------------------------------------------------------------------------------
    # Running them (called by sessions)

    async def run_connecting(self, ctx: ConnectContext) -> Credentials | None:
        """The first credentials an ``on_connecting`` hook returns, or None."""
        for handler in self.connecting_handlers:
            result = await handler(ctx)
            if result is not None:
                return result
        return None

    async def run_subscribe(self, ctx: SubscribeContext) -> SubscribeOptions | None:
        """The first options an ``on_subscribe`` hook returns, or None."""
        for handler in self.subscribe_handlers:
            result = await handler(ctx)
            if result is not None:
                return result
        return None

    async def run_publish(self, ctx: PublishContext) -> PublishDecision | None:
        """The first decision an ``on_publish`` hook returns, or None."""
        for handler in self.publish_handlers:
            result = await handler(ctx)
            if result is not None:
                return result
        return None

    async def run_refresh(self, session: Session) -> RefreshDecision | None:
        """The first decision an ``on_refresh`` hook returns, or None."""
        for handler in self.refresh_handlers:
            result = await handler(session)
            if result is not None:
                return result
        return None

    async def run_sub_refresh(self, session: Session, channel: str) -> SubRefreshDecision | None:
        """The first decision an ``on_sub_refresh`` hook returns, or None."""
        for handler in self.sub_refresh_handlers:
            result = await handler(session, channel)
            if result is not None:
                return result
        return None

    def notify_unsubscribe(self, session: Session, channel: str) -> None:
        """Run the ``on_unsubscribe`` notices in the background. Never awaits."""
        for handler in self.unsubscribe_handlers:
            self._notice("on_unsubscribe", handler(session, channel))

    def notify_disconnect(self, session: Session, code: int, reason: str) -> None:
        """Run the ``on_disconnect`` notices in the background. Never awaits."""
        for handler in self.disconnect_handlers:
            self._notice("on_disconnect", handler(session, code, reason))

    def _notice(self, what: str, coro: Coroutine[Any, Any, None]) -> None:
        async def run() -> None:
            try:
                await coro
            except Exception:
                log.exception("%s hook failed", what)

        task = asyncio.get_running_loop().create_task(run())
        # Kept until done: a task nobody references may be collected before it ends.
        self._notices.add(task)
        task.add_done_callback(self._notices.discard)


def _add(handlers: list[H], handler: H) -> H:
    handlers.append(handler)
    return handler
