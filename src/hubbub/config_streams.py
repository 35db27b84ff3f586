"""Settings of the HTTP streaming transports: bidirectional emulation (``[http_stream]``,
``[sse]``, ``[emulation]``), under Centrifugo v6's section and option names.

Kept apart from :mod:`hubbub.config`, which holds them as sections of ``Settings``; every
option is documented in ``docs/configuration.md``.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field, model_validator

_BODY_LIMIT = 65536
"""Centrifugo's default ``max_request_body_size`` of these endpoints."""


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def _check_path(path: str) -> None:
    if not path.startswith("/"):
        raise ValueError(f"path {path!r} must start with /")


class HTTPStreamSettings(_Section):
    """``POST /connection/http_stream``: the server's messages as one long streaming response
    (centrifuge-js transport ``http_stream``); the client's commands come through
    ``/emulation``."""

    enabled: bool = True
    path: str = "/connection/http_stream"
    max_request_body_size: int = Field(default=_BODY_LIMIT, ge=256)

    @model_validator(mode="after")
    def _path(self) -> HTTPStreamSettings:
        _check_path(self.path)
        return self


class SSESettings(_Section):
    """``GET /connection/sse`` (EventSource): the server's messages as Server-Sent Events
    (centrifuge-js transport ``sse``); the client's commands come through ``/emulation``."""

    enabled: bool = True
    path: str = "/connection/sse"
    max_request_body_size: int = Field(default=_BODY_LIMIT, ge=256)
    keepalive_interval: float = Field(default=15.0, ge=0)
    """Seconds of silence after which an SSE comment line is written (0 = never): keeps
    proxies whose idle timeout is shorter than ``client.ping_interval`` from cutting the
    stream. Invisible to EventSource."""

    @model_validator(mode="after")
    def _path(self) -> SSESettings:
        _check_path(self.path)
        return self


class EmulationSettings(_Section):
    """``POST /emulation``: the commands of http_stream and sse clients, routed to the node
    that holds the session. Served when either of them is enabled."""

    path: str = "/emulation"
    max_request_body_size: int = Field(default=_BODY_LIMIT, ge=256)
    timeout: float = Field(default=10.0, gt=0, le=60)
    """Seconds to wait for another node to take the commands before answering 500."""

    @model_validator(mode="after")
    def _path(self) -> EmulationSettings:
        _check_path(self.path)
        return self
