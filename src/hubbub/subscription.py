"""The state a session keeps for one channel subscription, and the pure decisions about it:
which guarantees a subscription gets, whether a recovery is complete, and whether a stream
position continues it. Nothing here awaits or needs a node."""

from __future__ import annotations

import enum
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, NamedTuple

from hubbub.clock import Timer
from hubbub.config import ChannelOptions
from hubbub.protocol.messages import ClientInfo, Publication

if TYPE_CHECKING:
    from hubbub.delta import DeltaPush


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
        pending: while the subscribe reply is not yet written, live publications (with their
            epochs) wait here (``None`` once live); they are merged with recovered ones by
            offset. Encoded pushes, or for delta subscriptions the :class:`DeltaPush`.
        expire_at: wall time the subscription expires (subscription token), or None.
        expire_timer: the timer that enforces ``expire_at``.
        stale: the stream stopped continuing ``offset``/``epoch``; nothing more is sent on this
            subscription, the client is being told to recover.
        reconnects: the engine reconnects the node had counted when the subscription started;
            one more by the time it goes live means its position may predate an outage.
        delta: delta compression was negotiated (:mod:`hubbub.delta`); ``offset`` and
            ``epoch`` then track what was sent even without history.
        delta_ready: the client holds the payload at ``offset``/``epoch`` as its delta base
            (it was sent in this subscription, or the subscription recovered).
    """

    channel: str
    options: ChannelOptions
    info: ClientInfo
    server_side: bool = False
    recoverable: bool = False
    push_join_leave: bool = False
    offset: int = 0
    epoch: str = ""
    pending: list[tuple[Publication, bytes | DeltaPush, str]] | None = field(default_factory=list)
    expire_at: float | None = None
    expire_timer: Timer | None = None
    stale: bool = False
    reconnects: int = 0
    delta: bool = False
    delta_ready: bool = False


class Flags(NamedTuple):
    """What a new subscription is promised (see :func:`subscription_flags`)."""

    recoverable: bool
    """The client may recover missed publications from history (``recoverable`` in the
    reply)."""
    positioned: bool
    """The stream position is tracked: gaps are detected and the reply carries a position."""
    push_join_leave: bool
    """Join and leave pushes are sent to this subscriber."""


def subscription_flags(
    opts: ChannelOptions,
    *,
    server_side: bool,
    wants_recovery: bool,
    wants_positioning: bool,
    wants_join_leave: bool,
) -> Flags:
    """The guarantees a subscription to a channel with ``opts`` gets.

    Args:
        opts: the channel's options (after token overrides).
        server_side: made by the server (always recoverable when the channel keeps history).
        wants_recovery: the client asked for a recoverable subscription, or to recover.
        wants_positioning: the client asked for a positioned subscription.
        wants_join_leave: the client asked for join and leave pushes.

    Without history nothing is recoverable or positioned; the namespace may force either, or
    allow what the client asks for. Join/leave pushes need ``join_leave`` and either forcing
    or a request on a channel with presence.
    """
    recoverable = opts.use_history and (
        opts.force_recovery or (wants_recovery and opts.allow_recovery) or server_side
    )
    positioned = opts.use_history and (
        recoverable or opts.force_positioning or (wants_positioning and opts.allow_positioning)
    )
    push_join_leave = opts.join_leave and (
        opts.force_push_join_leave or (wants_join_leave and opts.presence)
    )
    return Flags(recoverable, positioned, push_join_leave)


def recovery_complete(
    offset: int, epoch: str, top_offset: int, top_epoch: str, pubs: Sequence[Publication]
) -> bool:
    """Whether ``pubs`` (history after ``offset``, read with the stream top at
    ``top_epoch``/``top_offset``) are exactly what a client at ``epoch``/``offset`` missed.

    An empty ``epoch`` (a client that never saw one) matches any. Recovered means: the same
    stream, and the publications run without a gap from ``offset + 1`` to the top (none at
    all when the client is at the top already).
    """
    if epoch not in ("", top_epoch):
        return False
    if not pubs:
        return top_offset == offset
    return pubs[0].offset == offset + 1 and pubs[-1].offset == top_offset


class Verdict(enum.Enum):
    """How a stream position relates to a subscriber's position."""

    CONTINUES = "continues"
    """The next publication (or, for a stream top, nothing new): deliver it."""
    SEEN = "seen"
    """Already sent with the subscribe reply: skip it."""
    MISSED = "missed"
    """Publications in between never reached the subscriber; history may have them."""
    BEHIND = "behind"
    """Same epoch but not after the subscriber's offset: the stream lost publications (a Redis
    restarted from an older snapshot, or a replica that was behind took over)."""
    NEW_EPOCH = "new_epoch"
    """Another stream (a Redis restarted empty): the offsets are not comparable."""

    @property
    def lost(self) -> bool:
        """The subscriber cannot go on live: it must recover or be told it cannot."""
        return self in (Verdict.MISSED, Verdict.BEHIND, Verdict.NEW_EPOCH)


def judge_publication(
    epoch: str, offset: int, pub_epoch: str, pub_offset: int, *, merging: bool
) -> Verdict:
    """Whether a publication at ``pub_epoch``/``pub_offset`` continues a subscriber that was
    sent everything up to ``epoch``/``offset``.

    ``merging`` is true for the publications that arrived while the subscribe reply was
    prepared: the reply's position (or its recovered publications) may already cover them.
    Once live, a channel's publications arrive once each and in offset order, so an offset that
    does not move forward means the stream went back, never "already seen".
    A publication without a position (offset 0) always continues.

    :meth:`hubbub.session.Session.deliver` inlines the common case (the next offset of the
    same epoch) and asks this function about anything else.
    """
    if pub_offset == 0:
        return Verdict.CONTINUES
    if epoch and pub_epoch and pub_epoch != epoch:
        return Verdict.NEW_EPOCH
    if pub_offset == offset + 1:
        return Verdict.CONTINUES
    if pub_offset <= offset:
        return Verdict.SEEN if merging else Verdict.BEHIND
    return Verdict.MISSED


def judge_top(epoch: str, offset: int, top_epoch: str, top_offset: int) -> Verdict:
    """Whether a stream whose top is ``top_epoch``/``top_offset`` still continues a subscriber
    that was sent everything up to ``epoch``/``offset`` (checked after an engine outage):
    CONTINUES when nothing was published meanwhile."""
    if epoch and top_epoch != epoch:
        return Verdict.NEW_EPOCH
    if top_offset == offset:
        return Verdict.CONTINUES
    return Verdict.MISSED if top_offset > offset else Verdict.BEHIND
