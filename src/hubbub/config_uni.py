"""Settings of the unidirectional transports (``[uni_websocket]``, ``[uni_sse]``,
``[uni_http_stream]``), under Centrifugo v6's section and option names.

Kept apart from :mod:`hubbub.config`, which holds them as sections of ``Settings``; every
option is documented in ``docs/configuration.md``.

``enabled`` is off in Centrifugo. Here it is three-valued: unset means on in development mode
(``hubbub serve --dev``, where ``curl -N`` is the quickest way to watch a channel) and off
otherwise, so a production server opens no endpoint nobody asked for.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field, model_validator

_LIMIT = 65536
"""Centrifugo's default body (or first message) limit of these endpoints."""


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    enabled: bool | None = None
    """None (unset): on in development mode only."""
    path: str = ""

    def serves(self, development: bool) -> bool:
        """Whether the endpoint is mounted (``enabled``, or else whether in development
        mode)."""
        return development if self.enabled is None else self.enabled

    @model_validator(mode="after")
    def _path(self) -> _Section:
        if not self.path.startswith("/"):
            raise ValueError(f"path {self.path!r} must start with /")
        return self


class UniWebSocketSettings(_Section):
    """``/connection/uni_websocket``: a plain WebSocket that sends one connect request (the
    ``cf_connect`` query parameter or its first text message) and then only receives pushes."""

    path: str = "/connection/uni_websocket"
    message_size_limit: int = Field(default=_LIMIT, ge=256)
    """Bytes the connect request may take (the first message)."""


class UniSSESettings(_Section):
    """``/connection/uni_sse``: pushes as Server-Sent Events, for a browser ``EventSource``
    (connect request in ``cf_connect``, or as a POST body)."""

    path: str = "/connection/uni_sse"
    max_request_body_size: int = Field(default=_LIMIT, ge=256)


class UniHTTPStreamSettings(_Section):
    """``/connection/uni_http_stream``: pushes as JSON lines of one streaming response to a
    POST of the connect request (``curl -N``, ``fetch``)."""

    path: str = "/connection/uni_http_stream"
    max_request_body_size: int = Field(default=_LIMIT, ge=256)
