"""Errors the applications answer with, and their HTTP statuses.

Protocol replies carry the code; the HTTP routes turn the same error into a status code and a
``{"error": {"code", "message"}}`` body, so every path reports a problem the same way.
"""

from __future__ import annotations

from typing import Any, TypeVar

import msgspec

from hubbub.protocol.codes import ErrorCode, ProtocolError, error

T = TypeVar("T")

NOT_FOUND = 404
"""Application error code: the message, notification or user named does not exist."""

_STATUS = {
    int(ErrorCode.INTERNAL): 503,
    int(ErrorCode.UNAUTHORIZED): 401,
    int(ErrorCode.UNKNOWN_CHANNEL): 404,
    int(ErrorCode.PERMISSION_DENIED): 403,
    int(ErrorCode.LIMIT_EXCEEDED): 400,
    int(ErrorCode.BAD_REQUEST): 400,
    int(ErrorCode.NOT_AVAILABLE): 404,
    int(ErrorCode.TOO_MANY_REQUESTS): 429,
    NOT_FOUND: 404,
}


def bad_request(message: str) -> ProtocolError:
    """107 with ``message`` after the standard prefix."""
    return error(ErrorCode.BAD_REQUEST, f"bad request: {message}")


def not_found(message: str) -> ProtocolError:
    """The application's 404: ``message`` names what was not found."""
    return ProtocolError(NOT_FOUND, f"not found: {message}")


class UnknownUsers(ProtocolError):
    """A notification named users who are not known (never connected, never added with
    :meth:`hubbub.Hub.add_users`); nothing was sent to anyone.

    An application catches it to answer its own way (a 404, a form error); the RPC methods
    and HTTP routes answer it as the application error 404.

    Attributes:
        users: the unknown users, in the order given.
    """

    def __init__(self, users: list[str]) -> None:
        shown = ", ".join(repr(u[:64]) for u in users[:10])
        more = f" and {len(users) - 10} more" if len(users) > 10 else ""
        super().__init__(NOT_FOUND, f"not found: unknown users {shown}{more}")
        self.users = users


def http_status(exc: ProtocolError) -> int:
    """The HTTP status of an application error."""
    return _STATUS.get(exc.code, 400 if exc.code < 500 else 500)


def check_text(text: str, *, name: str, max_length: int, required: bool) -> str:
    """Validate user text: stripped, within ``max_length`` characters, valid UTF-8 and free of
    control characters other than newline and tab (they break terminals and databases).

    Raises:
        ProtocolError: 107 naming the field and the rule.
    """
    text = text.strip()
    if required and not text:
        raise bad_request(f"{name} is empty")
    if len(text) > max_length:
        raise bad_request(f"{name} is longer than {max_length} characters")
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        raise bad_request(f"{name} is not valid UTF-8") from None
    if any((ord(c) < 32 and c not in "\n\t") or ord(c) == 127 for c in text):
        raise bad_request(f"{name} contains control characters")
    return text


class NoArgs(msgspec.Struct, forbid_unknown_fields=True):
    """Arguments of a method that takes none (anything but ``{}``/null is a 107)."""


def decode_args(data: bytes, kind: type[T]) -> T:
    """Decode an RPC's or a request's JSON arguments into ``kind``.

    Raises:
        ProtocolError: 107 saying what is wrong (not JSON, a missing or mistyped field).
    """
    if not data or bytes(data).strip() == b"null":
        data = b"{}"  # no arguments: clients send nothing or null
    try:
        return msgspec.json.decode(data, type=kind)
    except msgspec.ValidationError as exc:
        raise bad_request(str(exc)) from None
    except (msgspec.DecodeError, RecursionError, UnicodeDecodeError):
        raise bad_request("arguments are not a JSON object") from None


def error_body(exc: ProtocolError) -> dict[str, Any]:
    """The JSON body of an error."""
    return {"error": {"code": exc.code, "message": exc.message}}
