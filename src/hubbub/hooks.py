"""Hooks: the application's handlers that sessions call (``rpc``, ``send``, connect, and the
check of client-side subscriptions), registered with decorators on the node.

Example::

    @node.rpc("echo")
    async def echo(session: Session, data: msgspec.Raw) -> msgspec.Raw:
        return data
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Coroutine
from typing import TYPE_CHECKING, Any

import msgspec

if TYPE_CHECKING:
    from hubbub.session import Session

RPCHandler = Callable[["Session", msgspec.Raw], Awaitable[msgspec.Raw]]
"""Answers an ``rpc`` command: gets the session and the request data, returns the reply data
(use :func:`hubbub.protocol.messages.raw` to embed a Python value). Raising
:class:`~hubbub.protocol.codes.ProtocolError` answers with that error."""

SendHandler = Callable[["Session", msgspec.Raw], Awaitable[None]]
"""Receives a ``send`` command (an asynchronous message without a reply)."""

ConnectHandler = Callable[["Session"], Coroutine[Any, Any, None]]
"""Told about every connection that completed ``connect`` (run in the background: it cannot
delay or refuse the connection, and its failure is logged, not sent to the client)."""

SubscribeCheck = Callable[["Session", str], Awaitable[None]]
"""Asked before a client-side subscription to a channel is made; raising
:class:`~hubbub.protocol.codes.ProtocolError` refuses it with that error."""


class Hooks:
    """The application's handlers (a part of :class:`~hubbub.node.Node`).

    Attributes:
        rpc_handlers: ``rpc`` handlers by method name.
        send_handler: the handler of ``send`` commands, if any.
        connect_handlers: told about every completed connect, in order of registration.
        subscribe_checks: checks of client-side subscriptions by namespace.
    """

    def __init__(self) -> None:
        self.rpc_handlers: dict[str, RPCHandler] = {}
        self.send_handler: SendHandler | None = None
        self.connect_handlers: list[ConnectHandler] = []
        self.subscribe_checks: dict[str, SubscribeCheck] = {}

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
        channels ("" = channels without a namespace); one check per namespace."""

        def register(check: SubscribeCheck) -> SubscribeCheck:
            self.subscribe_checks[namespace] = check
            return check

        return register
