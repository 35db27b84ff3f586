"""What ``hubbub chat`` remembers: the messages it printed and who is in the room.

No input or output here, only the decisions: whether a message is new, which messages of an
archive page are missing from the screen, and when to say that someone joined or left.
"""

from __future__ import annotations

from typing import Any

Message = dict[str, Any]


class Transcript:
    """The messages printed so far, by archive id, with the edit and deletion state printed.

    A message id is printed once: live, from history, or read back after a gap, whichever
    comes first. An edit or deletion is printed once per change.
    """

    def __init__(self) -> None:
        self._shown: dict[int, tuple[Any, bool]] = {}  # id -> (edited, deleted) as printed

    @property
    def oldest(self) -> int:
        """The smallest id printed, 0 before any."""
        return min(self._shown, default=0)

    @property
    def newest(self) -> int:
        """The largest id printed, 0 before any."""
        return max(self._shown, default=0)

    def add(self, msg: Message) -> bool:
        """Remember ``msg``; whether it is new (to be printed)."""
        msg_id = msg.get("id")
        if not isinstance(msg_id, int) or msg_id in self._shown:
            return False
        self._shown[msg_id] = (msg.get("edited"), bool(msg.get("deleted")))
        return True

    def change(self, msg: Message, kind: str) -> bool:
        """An ``"edit"`` or ``"delete"`` of ``msg``: whether it is news to print. Changes of
        messages never printed (older than the screen) are news, but are not remembered."""
        msg_id = msg.get("id")
        state = (msg.get("edited"), bool(msg.get("deleted")) or kind == "delete")
        if not isinstance(msg_id, int) or self._shown.get(msg_id) == state:
            return False
        if msg_id in self._shown:
            self._shown[msg_id] = state
        return True

    def missing(self, archive: list[Message]) -> list[tuple[Message, str]]:
        """Of ``archive`` (messages read back from history), what the screen lacks, in id
        order: ``(message, "")`` for a message never printed, ``(message, "edit"|"delete")``
        for a printed one that changed since. Messages older than the oldest printed are left
        out (they were never on the screen). What is returned counts as printed."""
        oldest = self.oldest
        by_id = {m["id"]: m for m in archive if isinstance(m.get("id"), int)}
        lines: list[tuple[Message, str]] = []
        for msg_id in sorted(by_id):
            msg = by_id[msg_id]
            if msg_id < oldest:
                continue
            if msg_id not in self._shown:
                if self.add(msg):
                    lines.append((msg, ""))
            else:
                kind = "delete" if msg.get("deleted") else "edit"
                if self.change(msg, kind):
                    lines.append((msg, kind))
        return lines


class Roster:
    """Who is in the room, to say ``joined`` when a user's first connection arrives and
    ``left`` when their last one goes.

    Args:
        grace: seconds a user missing after our own reconnect may take to come back before
            they are reported gone (after a server restart everyone reconnects, one by one).
    """

    def __init__(self, grace: float) -> None:
        self.grace = grace
        self.members: dict[str, set[str]] = {}  # user -> client ids
        self.away: dict[str, float] = {}  # user -> when to say they left

    def reset(self, presence: dict[str, Any]) -> None:
        """Take the room's presence (client id -> info with ``user``) as the truth, silently."""
        self.members = users_in(presence)

    def event(self, user: str, client: str, joined: bool) -> str | None:
        """A join or leave of one connection; ``"joined"``/``"left"`` when it is news."""
        if not user:
            return None  # anonymous connections have no name to show
        clients = self.members.get(user, set())
        if joined and client not in clients:
            self.members[user] = clients | {client}
            if not clients and self.away.pop(user, None) is None:
                return "joined"
        elif not joined and client in clients:
            clients.discard(client)
            if not clients:
                del self.members[user]
                return "left"
        return None

    def reconnected(self, presence: dict[str, Any], now: float) -> list[str]:
        """Our connection is back: take ``presence``; the users who joined meanwhile. Users
        missing now get ``grace`` seconds to return (see :meth:`expire`)."""
        fresh = users_in(presence)
        for user in self.members.keys() - fresh.keys():
            self.away.setdefault(user, now + self.grace)
        joined = []
        for user in sorted(fresh.keys() - self.members.keys()):
            if self.away.pop(user, None) is None:
                joined.append(user)
        for user in fresh:
            self.away.pop(user, None)
        self.members = fresh
        return joined

    def expire(self, now: float) -> list[str]:
        """The users whose grace ended without them coming back: they left."""
        gone = sorted(u for u, until in self.away.items() if until <= now)
        for user in gone:
            del self.away[user]
        return [u for u in gone if u not in self.members]


def users_in(presence: dict[str, Any]) -> dict[str, set[str]]:
    """The named users of a presence answer (client id -> info), with their client ids."""
    users: dict[str, set[str]] = {}
    for client, info in presence.items():
        user = info.get("user") if isinstance(info, dict) else None
        if user:
            users.setdefault(str(user), set()).add(client)
    return users
