"""Settings of the NATS engine: ``engine = "nats"`` and its ``[nats]`` section.

NATS carries the live traffic between nodes (publications, joins and leaves, the control
channel); history and presence are kept where ``history`` and ``presence`` say. Kept apart
from :mod:`hubbub.config`, which holds the section and calls :func:`check_engine`; every
option is documented in ``docs/configuration.md`` and the guarantees of each choice in
``docs/scaling.md``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Literal

from pydantic import BaseModel, ConfigDict, Field

if TYPE_CHECKING:
    from hubbub.config import Settings


class NatsSettings(BaseModel):
    """The NATS engine (``engine = "nats"``).

    Attributes:
        url: the NATS server, or several separated by commas (the client picks one and fails
            over to the others).
        prefix: first token of every subject, to share a NATS between deployments.
        history: where channel streams live: ``redis`` (the ``[redis]`` servers; recovery
            works across nodes), ``memory`` (each node keeps its own streams; recovery works
            only on the node the client was on) or ``none`` (no namespace may keep history).
        presence: where presence lives: ``redis`` (across nodes) or ``memory`` (each node
            knows only its own clients: presence, user connection counts and limits are per
            node).
        reorder_window: seconds a publication that arrives ahead of an earlier offset waits
            for it (``history = "redis"``: offsets come from Redis, delivery from NATS, so two
            publishers can be delivered in the other order). Past it the node takes the
            earlier one as missed, and its subscribers recover it from history.
        connect_timeout: seconds to reach a NATS server, at start-up and on each reconnect.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    url: str = "nats://127.0.0.1:4222"
    prefix: str = Field(default="hubbub", pattern=r"^[-A-Za-z0-9_]+$")
    history: Literal["none", "memory", "redis"] = "redis"
    presence: Literal["memory", "redis"] = "redis"
    reorder_window: float = Field(default=0.5, gt=0, le=10)
    connect_timeout: float = Field(default=2.0, gt=0, le=60)

    @property
    def servers(self) -> list[str]:
        """The NATS servers ``url`` names."""
        return [u.strip() for u in self.url.split(",") if u.strip()]

    @property
    def uses_redis(self) -> bool:
        """Whether history or presence lives in the ``[redis]`` servers."""
        return "redis" in (self.history, self.presence)


def check_engine(settings: Settings) -> None:
    """Refuse, at start-up, a NATS engine without history under namespaces that keep one.

    Raises:
        ValueError: ``engine = "nats"`` with ``history = "none"`` and a namespace (the chat
            application's included) with ``history_size``.
    """
    if settings.engine != "nats" or settings.nats.history != "none":
        return
    spaces = [("channels without a namespace", settings.channel.without_namespace)]
    spaces += [(f"namespace {ns.name!r}", ns) for ns in settings.channel.namespaces]
    for what, options in spaces:
        if options.use_history:
            raise ValueError(
                f'engine "nats" with nats.history = "none": {what} keeps history; set '
                'nats.history to "redis" or "memory", or remove history_size and history_ttl'
                " there (the chat application's namespace keeps history: chat.enabled = false)"
            )
