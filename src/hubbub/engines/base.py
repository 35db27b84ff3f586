"""The engine seam: what a node needs from the machinery that spans processes.

An engine is a :class:`Broker` (live fan-out between nodes plus channel history streams) and a
:class:`PresenceManager` (who is subscribed where, across nodes). The memory engine serves one
process; the Redis engine serves many. One conformance suite (``tests/engines``) holds every
implementation to the contracts written here.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Any, NamedTuple, Protocol

from hubbub.protocol.codes import ErrorCode, ProtocolError, error
from hubbub.protocol.messages import ClientInfo, Publication


def engine_unavailable() -> ProtocolError:
    """The temporary error of every engine call made while the engine is unreachable."""
    return error(ErrorCode.INTERNAL, "internal server error: engine unavailable")


class StreamPosition(NamedTuple):
    """A place in a channel stream: ``offset`` of the last publication (0 = empty) and ``epoch``,
    the identity of the stream (offsets from different epochs are not comparable)."""

    offset: int
    epoch: str


@dataclass(frozen=True, slots=True)
class PublishOptions:
    """How to publish one publication.

    Attributes:
        history_size: keep at most this many publications in the channel stream; 0 = no history.
        history_ttl: seconds a publication stays in the stream; 0 = no history.
        history_meta_ttl: seconds the stream's position (offset and epoch) outlives its last
            publication; after that the stream is forgotten and a new epoch starts.
        idempotency_key: a repeated key within ``idempotent_result_ttl`` publishes nothing
            and returns the first result.
        idempotent_result_ttl: seconds an idempotency key is remembered.
    """

    history_size: int = 0
    history_ttl: float = 0.0
    history_meta_ttl: float = 30 * 24 * 3600.0
    idempotency_key: str = ""
    idempotent_result_ttl: float = 300.0

    @property
    def use_history(self) -> bool:
        return self.history_size > 0 and self.history_ttl > 0


@dataclass(frozen=True, slots=True)
class PublishResult:
    """The outcome of :meth:`Broker.publish`.

    Attributes:
        position: the stream position of the publication (offset 0 and epoch "" without history).
        suppressed: true when an idempotency key matched and nothing was published this time.
    """

    position: StreamPosition
    suppressed: bool = False


@dataclass(frozen=True, slots=True)
class HistoryFilter:
    """What to read from a stream.

    Attributes:
        limit: 0 = only the position, -1 = every publication, N > 0 = at most N.
        since: read publications after this position (before it with ``reverse``); ``None``
            reads from the start (from the end with ``reverse``).
        reverse: newest first.
    """

    limit: int = 0
    since: StreamPosition | None = None
    reverse: bool = False


@dataclass(frozen=True, slots=True)
class HistoryResult:
    """Publications (with offsets set) and the stream's current top position."""

    publications: list[Publication]
    position: StreamPosition


class BrokerEventHandler(Protocol):
    """What a broker calls on its node. Calls are made on the event loop, never concurrently,
    and for one channel always in the order of publication (offsets increase)."""

    def handle_publication(self, channel: str, pub: Publication, position: StreamPosition) -> None:
        """A publication arrived for a channel this node subscribed to."""
        ...

    def handle_join(self, channel: str, info: ClientInfo) -> None:
        """A client joined a channel this node subscribed to."""
        ...

    def handle_leave(self, channel: str, info: ClientInfo) -> None:
        """A client left a channel this node subscribed to."""
        ...

    def handle_control(self, data: bytes) -> None:
        """A control message another node sent with :meth:`Broker.publish_control`."""
        ...

    def handle_reconnect(self, channels: list[str]) -> None:
        """The broker lost its connection and is back, subscribed to ``channels`` again.

        Publications of those channels may have been missed meanwhile: the node compares
        stream positions and makes affected subscribers recover.
        """
        ...


class Broker(Protocol):
    """Live fan-out between nodes and channel history.

    Contract:
        * Delivery is at most once: a node receives each publication of a channel it is
          subscribed to once, or not at all when the engine lost it (a gap the node detects by
          offsets and turns into recovery).
        * Per channel, publications reach the handler in publish order, with increasing offsets.
        * Appending to history and publishing are one atomic step: a publication seen live is in
          the stream, and offsets are assigned in the order publications are delivered.
        * A node receives only channels it subscribed to with :meth:`subscribe`.
    """

    def set_event_handler(self, handler: BrokerEventHandler) -> None:
        """Name the node that receives this broker's events; called once before :meth:`start`."""
        ...

    async def start(self) -> None:
        """Connect and start delivering events."""
        ...

    async def close(self) -> None:
        """Stop delivering events and release connections; idempotent."""
        ...

    async def subscribe(self, channel: str) -> None:
        """Start receiving ``channel`` on this node (idempotent)."""
        ...

    async def unsubscribe(self, channel: str) -> None:
        """Stop receiving ``channel`` on this node (idempotent)."""
        ...

    async def publish(self, channel: str, pub: Publication, opts: PublishOptions) -> PublishResult:
        """Append ``pub`` to the channel stream (when ``opts`` keeps history) and deliver it to
        every subscribed node, this one included. The delivered publication carries its offset."""
        ...

    async def publish_join(self, channel: str, info: ClientInfo) -> None:
        """Deliver a join event to every subscribed node (never stored)."""
        ...

    async def publish_leave(self, channel: str, info: ClientInfo) -> None:
        """Deliver a leave event to every subscribed node (never stored)."""
        ...

    async def history(
        self, channel: str, flt: HistoryFilter, opts: PublishOptions
    ) -> HistoryResult:
        """Read the channel stream. A channel never published to gets a new epoch, offset 0.

        Raises:
            ProtocolError: 112 when ``flt.since`` names an epoch that is not the current one.
        """
        ...

    async def remove_history(self, channel: str) -> None:
        """Drop the stream's publications; its position (offset and epoch) is kept."""
        ...

    async def renew_epoch(self, channel: str, epoch: str) -> None:
        """Give the channel's stream a new epoch, if its epoch is still ``epoch`` (offsets and
        publications are kept). A node calls this when it saw the stream go back within one
        epoch (the engine lost publications it had acknowledged): from then on no position
        taken before the loss can be mistaken for one after it."""
        ...

    async def publish_control(self, data: bytes) -> None:
        """Deliver ``data`` to every *other* node's :meth:`BrokerEventHandler.handle_control`
        (user operations and node announcements). A single-process engine delivers nothing."""
        ...

    @property
    def healthy(self) -> bool:
        """Whether the engine is reachable; while not, publishes fail fast with a temporary
        error and the node reports not ready."""
        ...


class ImmediatePublisher(Protocol):
    """A broker that can also publish without awaiting, because nothing in its publish waits
    (the memory engine: the stream is a dictionary of this process). Sessions use it for
    client publications, so a publish command costs no task and no await
    (:func:`hubbub.session_requests.publish_now`); other brokers are awaited."""

    def publish_now(self, channel: str, pub: Publication, opts: PublishOptions) -> PublishResult:
        """:meth:`Broker.publish`, done when it returns (the handler's ``handle_publication``
        already ran)."""
        ...


class QueuedPublisher(Protocol):
    """A broker that can take a publication without awaiting it, to send it with others (the
    Redis engine: one pipeline per loop turn). Sessions use it for client publications, so
    a publish command costs no task: its reply is written when the future is done
    (:func:`hubbub.session_requests.publish_now`)."""

    def publish_soon(
        self, channel: str, pub: Publication, opts: PublishOptions
    ) -> asyncio.Future[Any] | None:
        """:meth:`Broker.publish`, taken now: a future done when the broker has the
        publication (its exception what :meth:`Broker.publish` would raise), or None when
        this broker cannot take it so (the caller awaits :meth:`Broker.publish`).

        Raises:
            ProtocolError: the engine is unavailable.
        """
        ...


@dataclass(frozen=True, slots=True)
class PresenceStats:
    """Counts of one channel's presence: connections and distinct users."""

    num_clients: int
    num_users: int


@dataclass(frozen=True, slots=True)
class ReapedEntry:
    """A presence entry removed because the node that owned it died."""

    channel: str
    info: ClientInfo


class PresenceManager(Protocol):
    """Who is in which channel, across all nodes.

    Contract: an entry lives ``ttl`` seconds after its last :meth:`add_presence` (nodes refresh
    their clients' entries periodically); :meth:`remove_presence` removes at once.

    A node does not wait for ``ttl`` to clear the entries of a node that died: every entry is
    owned by the node that added it (:meth:`set_owner`), each node renews its liveness with
    :meth:`keep_alive`, and :meth:`reap_lapsed` removes every entry of a node whose liveness
    lapsed, exactly once across all the callers, even callers that started after that node's
    last renewal. A node that was only cut off and comes back adds its entries again on its
    next refresh (:meth:`keep_alive` tells it that it was reaped).
    """

    def set_owner(self, node: str) -> None:
        """Name the node whose entries :meth:`add_presence` adds from now on; called once,
        before the first :meth:`add_presence`."""
        ...

    async def keep_alive(self, lapse: float) -> bool:
        """Renew the owner's liveness for ``lapse`` seconds.

        Returns:
            False when the owner was not alive before this call (its first call, or its
            liveness lapsed and its entries may have been reaped); True otherwise.
        """
        ...

    async def reap_lapsed(self) -> list[ReapedEntry]:
        """Remove every entry owned by a node (other than the owner) whose liveness lapsed,
        and forget that node. Each lapsed node is reaped by one caller only; the others get
        nothing for it. A single-process engine has nothing to reap.

        Returns:
            The removed entries, so the caller can announce the leaves.
        """
        ...

    async def add_presence(self, channel: str, info: ClientInfo, ttl: float) -> None:
        """Add or refresh ``info.client`` in ``channel`` for ``ttl`` seconds, owned by the
        owner named with :meth:`set_owner`."""
        ...

    async def remove_presence(self, channel: str, client_id: str, user: str) -> None:
        """Remove a client from ``channel`` (idempotent)."""
        ...

    async def presence(self, channel: str) -> dict[str, ClientInfo]:
        """Live entries of ``channel`` by client id."""
        ...

    async def presence_stats(self, channel: str) -> PresenceStats:
        """Counts of live entries of ``channel``."""
        ...
