"""The state a session keeps for one channel subscription."""

from __future__ import annotations

from dataclasses import dataclass, field

from hubbub.clock import Timer
from hubbub.config import ChannelOptions
from hubbub.protocol.messages import ClientInfo, Publication


@dataclass(slots=True)
class Subscription:
    """One channel of one connection.

    Attributes:
        channel: the channel name.
        options: the channel's options after token overrides.
        info: who subscribed (with the subscription token's ``info`` as ``chan_info``).
        server_side: established by the server (connect claims, personal channel, API).
        recoverable: the stream position is tracked, so gaps can be detected.
        push_join_leave: join and leave pushes are sent to this subscriber.
        offset: offset of the last publication sent to the client (with history).
        epoch: the stream epoch that offset belongs to.
        pending: while the subscribe reply is not yet written, live publications wait here
            (``None`` once live); they are merged with recovered ones by offset.
        expire_at: wall time the subscription expires (subscription token), or None.
        expire_timer: the timer that enforces ``expire_at``.
    """

    channel: str
    options: ChannelOptions
    info: ClientInfo
    server_side: bool = False
    recoverable: bool = False
    push_join_leave: bool = False
    offset: int = 0
    epoch: str = ""
    pending: list[tuple[Publication, bytes]] | None = field(default_factory=list)
    expire_at: float | None = None
    expire_timer: Timer | None = None
