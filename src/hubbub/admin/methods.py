"""Server API methods the console needs beyond Centrifugo's (API key, like the others):

* ``user_connections`` ``{"user"}`` → ``{"connections": [{"client", "user", "node",
  "transport", "protocol", "name", "version", "channels"}]}``: the user's connections on
  every node (from the connection counts every node shares; ``limits.connections_per_user``
  must not be 0, else 108). Those of the answering node carry their details; the others
  ``node: ""`` and only their ids.
* ``notifications_recent`` ``{"seconds"?: 3600, "limit"?: 100}`` → ``{"notifications":
  [{"id", "user", "title", "body", "link", "created_at", "read"}]}``, newest first (needs the
  notification application, else 108).
"""

from __future__ import annotations

from typing import Any

import msgspec

from hubbub.api.methods import ServerAPI
from hubbub.index import user_presence_key
from hubbub.protocol.codes import ErrorCode, error
from hubbub.store import Store, StoreError

MAX_RECENT = 1000


class UserConnectionsRequest(msgspec.Struct, forbid_unknown_fields=True):
    user: str


class RecentNotificationsRequest(msgspec.Struct, forbid_unknown_fields=True):
    seconds: float = 3600.0
    limit: int = 100


def register_admin_methods(api: ServerAPI, store: Store | None, notifications: bool) -> None:
    """Add ``user_connections`` and ``notifications_recent`` to ``api``."""
    node = api.node

    async def user_connections(req: UserConnectionsRequest) -> dict[str, Any]:
        if not req.user:
            raise error(ErrorCode.BAD_REQUEST, "bad request: user required")
        if not node.settings.limits.connections_per_user:
            raise error(
                ErrorCode.NOT_AVAILABLE,
                "not available: connections are counted only with limits.connections_per_user",
            )
        entries = await node.presence_manager.presence(user_presence_key(req.user))
        connections: list[dict[str, Any]] = []
        for client_id in sorted(entries):
            session = node.session(client_id)
            if session is None:
                connections.append({"client": client_id, "user": req.user, "node": ""})
                continue
            connections.append(
                {
                    "client": client_id,
                    "user": req.user,
                    "node": node.name,
                    "transport": session.handshake.transport,
                    "protocol": session.handshake.protocol,
                    "name": session.name,
                    "version": session.version,
                    "channels": sorted(session.subscriptions),
                }
            )
        return {"connections": connections}

    async def notifications_recent(req: RecentNotificationsRequest) -> dict[str, Any]:
        if store is None or not notifications:
            raise error(ErrorCode.NOT_AVAILABLE, "not available: notifications are off")
        if req.seconds <= 0 or not 1 <= req.limit <= MAX_RECENT:
            raise error(
                ErrorCode.BAD_REQUEST,
                f"bad request: seconds > 0 and limit within 1-{MAX_RECENT}",
            )
        since = node.clock.time() - req.seconds
        try:
            notes = await store.recent_notifications(since=since, limit=req.limit)
        except StoreError as exc:
            raise error(ErrorCode.INTERNAL, f"internal server error: store: {exc}") from None
        return {
            "notifications": [
                {
                    "id": n.id,
                    "user": n.user,
                    "title": n.title,
                    "body": n.body,
                    "link": n.link,
                    "created_at": n.created_at,
                    "read": n.read_at is not None,
                }
                for n in notes
            ]
        }

    api.register("user_connections", UserConnectionsRequest, user_connections)
    api.register("notifications_recent", RecentNotificationsRequest, notifications_recent)
