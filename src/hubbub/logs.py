"""Log output: readable text or one JSON object per line, with the connection id on every line
about a connection (sessions log through an adapter that adds ``conn``)."""

from __future__ import annotations

import json
import logging
import time

_FIELDS = ("conn", "user")


class TextFormatter(logging.Formatter):
    """``time LEVEL logger: message [conn=… user=…]``."""

    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)s %(name)s: %(message)s")

    def format(self, record: logging.LogRecord) -> str:
        line = super().format(record)
        context = " ".join(
            f"{name}={getattr(record, name)}" for name in _FIELDS if hasattr(record, name)
        )
        return f"{line} [{context}]" if context else line


class JSONFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, message, connection fields, exception."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, object] = {
            "time": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        for name in _FIELDS:
            if hasattr(record, name):
                entry[name] = getattr(record, name)
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry, ensure_ascii=False)


# What uvicorn logs at INFO for every WebSocket connection it serves (ASGI transport,
# compression): the handshake's outcome and the connection opening and closing.
_UVICORN_PER_CONNECTION = ("connection open", "connection closed")
# uvicorn logs a traceback at ERROR for a client's invalid UTF-8; the ASGI transport logs that
# connection's one line itself (the disconnect code tells it).
_UVICORN_BAD_UTF8 = "Invalid UTF-8 sequence received from client."


class RoutineFilter(logging.Filter):
    """Drops the lines other libraries write per ordinary event: one per HTTP request
    (uvicorn's access log), per WebSocket opened or closed (uvicorn, ``websockets``), and
    their second line about a connection hubbub already logged (with its id). Ordinary
    traffic is in the metrics; installed at every level but ``debug``."""

    def filter(self, record: logging.LogRecord) -> bool:
        name = record.name
        if name == "uvicorn.error":
            if record.levelno >= logging.WARNING:
                return record.msg != _UVICORN_BAD_UTF8
            msg = str(record.msg)
            return msg not in _UVICORN_PER_CONNECTION and '"WebSocket %s"' not in msg
        if record.levelno >= logging.WARNING:
            return True
        return not (
            name == "uvicorn.access" or name == "websockets" or name.startswith("websockets.")
        )


def configure(level: str, fmt: str) -> None:
    """Send every logger (uvicorn's too) to stderr in ``fmt`` (``text`` or ``json``); below
    ``debug`` without the per-event lines of uvicorn and ``websockets`` (:class:`RoutineFilter`)."""
    handler = logging.StreamHandler()
    handler.setFormatter(JSONFormatter() if fmt == "json" else TextFormatter())
    debug = level.lower() == "debug"
    if not debug:
        handler.addFilter(RoutineFilter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    for name in ("uvicorn", "uvicorn.error", "uvicorn.access"):
        logger = logging.getLogger(name)
        logger.handlers.clear()
        logger.propagate = True
