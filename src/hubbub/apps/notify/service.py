"""The notification service: send to users, keep inboxes, count and mark unread.

A notification is stored in each recipient's inbox first, then published on the recipient's
personal channel (``#alice``), which every connection of that user is subscribed to by the
server, on every node. A user who is offline finds it in the inbox on the next visit.

Publications on a personal channel that come from here are JSON objects with a ``type``:

* ``{"type": "notification", "notification": {...}, "unread": n}``: a new one
  (see :func:`notification_view`);
* ``{"type": "read", "ids": [...], "unread": n}``: the user marked these read (on any tab),
  so every other open tab can update its badge.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from typing import Any
from urllib.parse import urlsplit

import msgspec

from hubbub.apps.errors import UnknownUsers, bad_request, check_text
from hubbub.apps.users import UserRecorder
from hubbub.config_apps import NotificationSettings
from hubbub.node import Node
from hubbub.protocol.codes import ErrorCode, ProtocolError, error
from hubbub.store import Notification, Store, StoreError

log = logging.getLogger("hubbub.notify")

_PUSH_CONCURRENCY = 100  # personal-channel publishes in flight for one notify call


def notification_view(note: Notification) -> dict[str, Any]:
    """The JSON form of a notification, as pushed and as listed."""
    view: dict[str, Any] = {
        "id": note.id,
        "title": note.title,
        "body": note.body,
        "ts": note.created_at,
        "read": note.read_at is not None,
    }
    if note.data:
        view["data"] = msgspec.Raw(note.data.encode())
    if note.link:
        view["link"] = note.link
    return view


def unavailable(exc: StoreError) -> ProtocolError:
    log.warning("store failed: %s", exc)
    return error(ErrorCode.INTERNAL, "internal server error: notification store unavailable")


def check_link(link: str) -> str:
    """A link may be an http(s) URL or a path on this site; anything else (``javascript:``,
    ``data:``, protocol-relative ``//host``) could run code or leave the site unseen."""
    if not link:
        return ""
    if len(link) > 2000:
        raise bad_request("link is longer than 2000 characters")
    if link.startswith("/") and not link.startswith("//"):
        return link
    parts = urlsplit(link)
    if parts.scheme in ("http", "https") and parts.netloc:
        return link
    raise bad_request("link must be an http(s) URL or a path starting with '/'")


class NotificationService:
    """Notification inboxes of one node.

    Args:
        node: the node whose personal channels carry the live pushes.
        store: the inboxes.
        settings: the notification options.
        users: records who connects; notifications wait for the users it has noted, so a
            user who has just connected is known.
    """

    def __init__(
        self,
        node: Node,
        store: Store,
        settings: NotificationSettings,
        *,
        users: UserRecorder | None = None,
    ) -> None:
        self.node = node
        self.store = store
        self.settings = settings
        self.users = users

    async def notify(
        self,
        users: Sequence[str] | None,
        *,
        body: str,
        title: str = "",
        data: object = None,
        link: str = "",
    ) -> list[Notification]:
        """Store a notification in each user's inbox, then push it to their connections.

        Args:
            users: the recipients; None = every known user (anyone who ever connected).
            body: the text (required).
            title: a short headline.
            data: any JSON value for the application (at most ``max_data_size`` bytes).
            link: an http(s) URL or a site path to open.

        Returns:
            The stored notifications, one per recipient.

        Raises:
            UnknownUsers: some users are unknown (a :class:`ProtocolError` 404 listing them;
                nothing is sent to anyone).
            ProtocolError: 107 bad field (the message names it); 100 (temporary) the store is
                down.
        """
        body = check_text(
            body, name="body", max_length=self.settings.max_body_length, required=True
        )
        title = check_text(
            title, name="title", max_length=self.settings.max_title_length, required=False
        )
        link = check_link(link)
        encoded = b"" if data is None else msgspec.json.encode(data)
        if len(encoded) > self.settings.max_data_size:
            raise bad_request(f"data is larger than {self.settings.max_data_size} bytes")
        try:
            if self.users is not None:
                await self.users.settled()
            if users is None:
                recipients = await self.store.all_users()
            else:
                recipients = list(dict.fromkeys(users))  # once each, in the order given
                if not recipients:
                    raise bad_request("no recipients: give users, or everyone")
                if len(recipients) > self.settings.max_recipients:
                    raise bad_request(f"more than {self.settings.max_recipients} recipients")
                known = await self.store.known_users(recipients)
                unknown = [u for u in recipients if u not in known]
                if unknown:
                    raise UnknownUsers(unknown)
            if not recipients:
                return []
            notes = await self.store.add_notifications(
                recipients,
                title=title,
                body=body,
                data=encoded.decode(),
                link=link,
                now=self.node.clock.time(),
            )
        except StoreError as exc:
            raise unavailable(exc) from None
        await self._push_all(notes)
        return notes

    async def _push_all(self, notes: list[Notification]) -> None:
        gate = asyncio.Semaphore(_PUSH_CONCURRENCY)

        async def push(note: Notification) -> None:
            async with gate:
                try:
                    unread = await self.store.unread_count(note.user)
                except StoreError:
                    unread = -1  # the tab counts for itself
                message = {
                    "type": "notification",
                    "notification": notification_view(note),
                    "unread": unread,
                }
                await self._push(note.user, message)

        await asyncio.gather(*(push(n) for n in notes))

    async def _push(self, user: str, message: dict[str, Any]) -> None:
        channel = self.node.rules.personal_channel(user)
        try:
            await self.node.publish(channel, message)
        except ProtocolError as exc:
            # Stored: the user sees it on the next inbox load even if the push is lost.
            log.warning("push to %r failed: %s", channel, exc)

    async def inbox(
        self,
        user: str,
        *,
        limit: int | None = None,
        before: int | None = None,
        unread_only: bool = False,
    ) -> tuple[list[Notification], int]:
        """The newest ``limit`` notifications of ``user`` below id ``before`` (newest first),
        and the user's unread count."""
        limit = self.settings.max_page if limit is None else limit
        if not 1 <= limit <= self.settings.max_page:
            raise bad_request(f"limit must be 1-{self.settings.max_page}")
        if before is not None and before < 1:
            raise bad_request("before must be a notification id (1 or more)")
        try:
            notes = await self.store.notifications(
                user, limit=limit, before=before, unread_only=unread_only
            )
            return notes, await self.store.unread_count(user)
        except StoreError as exc:
            raise unavailable(exc) from None

    async def unread(self, user: str) -> int:
        """How many notifications of ``user`` are unread."""
        try:
            return await self.store.unread_count(user)
        except StoreError as exc:
            raise unavailable(exc) from None

    async def mark_read(self, user: str, ids: Sequence[int] | None) -> tuple[list[int], int]:
        """Mark ``ids`` (all unread when None) of ``user`` read; tell the user's other tabs.
        Returns the ids that changed and the new unread count."""
        if ids is not None and len(ids) > 1000:
            raise bad_request("at most 1000 ids at once")
        try:
            changed = await self.store.mark_read(user, ids, self.node.clock.time())
            unread = await self.store.unread_count(user)
        except StoreError as exc:
            raise unavailable(exc) from None
        if changed:
            await self._push(user, {"type": "read", "ids": changed, "unread": unread})
        return changed, unread
