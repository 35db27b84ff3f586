"""The notification RPC methods, for clients connected over the protocol (the user is the
connection's user).

``notifications.list {limit?, before?, unread_only?}`` → ``{"notifications": [...], "unread": n}``;
``notifications.read {ids}`` or ``{all: true}`` → ``{"read": [ids], "unread": n}``;
``notifications.unread`` → ``{"unread": n}``.
"""

from __future__ import annotations

import msgspec

from hubbub.apps.errors import NoArgs, bad_request, decode_args
from hubbub.apps.notify.service import NotificationService, notification_view
from hubbub.protocol.codes import ErrorCode, error
from hubbub.protocol.messages import raw
from hubbub.session import Session


class ListArgs(msgspec.Struct, forbid_unknown_fields=True):
    limit: int | None = None
    before: int | None = None
    unread_only: bool = False


class ReadArgs(msgspec.Struct, forbid_unknown_fields=True):
    ids: list[int] | None = None
    all: bool = False

    def target(self) -> list[int] | None:
        """The ids to mark, None for all. Raises 107 unless exactly one form is given."""
        if self.all == (self.ids is not None):
            raise bad_request("give either ids or all: true")
        return self.ids


def _user(session: Session) -> str:
    if not session.user:
        raise error(ErrorCode.PERMISSION_DENIED, "permission denied: anonymous users have no inbox")
    return session.user


def install(service: NotificationService) -> None:
    """Register the notification RPC methods on ``service.node``."""
    node = service.node

    @node.rpc("notifications.list")
    async def listing(session: Session, data: msgspec.Raw) -> msgspec.Raw:
        args = decode_args(data, ListArgs)
        notes, unread = await service.inbox(
            _user(session), limit=args.limit, before=args.before, unread_only=args.unread_only
        )
        return raw({"notifications": [notification_view(n) for n in notes], "unread": unread})

    @node.rpc("notifications.read")
    async def read(session: Session, data: msgspec.Raw) -> msgspec.Raw:
        args = decode_args(data, ReadArgs)
        changed, unread = await service.mark_read(_user(session), args.target())
        return raw({"read": changed, "unread": unread})

    @node.rpc("notifications.unread")
    async def unread(session: Session, data: msgspec.Raw) -> msgspec.Raw:
        decode_args(data, NoArgs)
        return raw({"unread": await service.unread(_user(session))})
