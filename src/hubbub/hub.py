"""The hub: a node with the chat and notification applications and their store.

``Hub(settings)`` is what ``hubbub serve`` runs; applications that embed hubbub can use it the
same way (``FastAPI(lifespan=hub.lifespan)``) or use a bare :class:`~hubbub.node.Node` when
they need neither chat nor notifications. ::

    hub = Hub(load_settings("hubbub.toml"))
    ...
    await hub.notify(["alice"], title="Build finished", body="main is green", link="/builds/7")
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager

from hubbub.apps.chat import rpc as chat_rpc
from hubbub.apps.chat.service import ChatService
from hubbub.apps.errors import bad_request
from hubbub.apps.notify import rpc as notify_rpc
from hubbub.apps.notify.service import NotificationService, unavailable
from hubbub.apps.users import UserRecorder
from hubbub.config import Settings
from hubbub.node import Node
from hubbub.session import Session
from hubbub.store import Notification, Store, StoreError, open_store


class Hub:
    """A node plus the applications the settings enable.

    Args:
        settings: the server's settings; those of ``node`` when omitted.
        node: an existing node to build on (a new one from ``settings`` otherwise).
        store: an existing store (one from ``settings.store.url`` otherwise); it is opened and
            closed with the hub.

    Attributes:
        node: the node.
        store: the store, or None when both applications are disabled.
        chat: the chat service, or None when disabled.
        notifications: the notification service, or None when disabled.
        users: records the users who connect (with the store).
    """

    def __init__(
        self,
        settings: Settings | None = None,
        *,
        node: Node | None = None,
        store: Store | None = None,
    ) -> None:
        self.node = node or Node(settings)
        cfg = self.node.settings
        self.settings = cfg
        self.store: Store | None = None
        self.users: UserRecorder | None = None
        self.chat: ChatService | None = None
        self.notifications: NotificationService | None = None
        if not (cfg.chat.enabled or cfg.notifications.enabled):
            return
        self.store = store or open_store(cfg.store.url)
        self.users = UserRecorder(self.node, self.store)
        if cfg.chat.enabled:
            self.chat = ChatService(self.node, self.store, cfg.chat)
            chat_rpc.install(self.chat)
        if cfg.notifications.enabled:
            self.notifications = NotificationService(
                self.node, self.store, cfg.notifications, users=self.users
            )
            notify_rpc.install(self.notifications)
        self.node.on_connect(self._remember_user)

    async def _remember_user(self, session: Session) -> None:
        # Anyone who connected once can be sent notifications from then on.
        if session.user and self.users is not None:
            self.users.note(session.user)

    async def start(self) -> None:
        """Open the store (creating or migrating its schema), then start the node."""
        if self.store is not None:
            await self.store.open()
        if self.chat is not None:
            await self.chat.start()
        await self.node.start()

    async def close(self) -> None:
        """Stop the node (closing every connection), then close the store."""
        if self.users is not None:
            await self.users.settled()  # the users noted last are recorded, not dropped
        await self.node.close()
        if self.store is not None:
            await self.store.close()

    @asynccontextmanager
    async def lifespan(self, app: object = None) -> AsyncIterator[None]:
        """An ASGI lifespan: ``FastAPI(lifespan=hub.lifespan)`` starts and stops the hub."""
        await self.start()
        try:
            yield
        finally:
            await self.close()

    async def notify(
        self,
        users: Sequence[str] | None,
        *,
        body: str,
        title: str = "",
        data: object = None,
        link: str = "",
    ) -> list[Notification]:
        """Send a notification to ``users`` (None = everyone known); see
        :meth:`hubbub.apps.notify.NotificationService.notify`. A known user who is offline
        finds it in the inbox on the next visit.

        Raises:
            UnknownUsers: some of ``users`` never connected and were never added with
                :meth:`add_users` (``exc.users`` lists them); nothing was sent to anyone.
            ProtocolError: 107 a bad field; 100 (temporary) the store is down.
            RuntimeError: notifications are disabled in the settings.
        """
        if self.notifications is None:
            raise RuntimeError("notifications are disabled ([notifications] enabled = false)")
        return await self.notifications.notify(users, body=body, title=title, data=data, link=link)

    async def add_users(self, users: Sequence[str]) -> None:
        """Make ``users`` known, so they can be sent notifications before their first visit
        (users also become known by connecting once). Adding a known user again is harmless.

        Raises:
            ProtocolError: 107 an empty user name; 100 (temporary) the store is down.
            RuntimeError: the hub has no store (chat and notifications are disabled).
        """
        if self.store is None:
            raise RuntimeError("the hub has no store ([notifications] and [chat] are disabled)")
        if any(not user for user in users):
            raise bad_request("a user name is empty")
        try:
            await self.store.touch_users(dict.fromkeys(users, self.node.clock.time()))
        except StoreError as exc:
            raise unavailable(exc) from None
