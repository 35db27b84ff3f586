"""The OpenAPI 3.1 description of the server API, served at ``{prefix}/openapi.json``."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from hubbub import __version__

_ANY: dict[str, Any] = {"description": "any JSON value"}
_STR = {"type": "string"}
_INT = {"type": "integer"}
_BOOL = {"type": "boolean"}
_POSITION = {
    "type": "object",
    "properties": {"offset": _INT, "epoch": _STR},
}
_CLIENT_INFO = {
    "type": "object",
    "required": ["user", "client"],
    "properties": {"user": _STR, "client": _STR, "conn_info": _ANY, "chan_info": _ANY},
}
_PUBLICATION = {
    "type": "object",
    "required": ["data"],
    "properties": {
        "data": _ANY,
        "info": _CLIENT_INFO,
        "offset": _INT,
        "tags": {"type": "object", "additionalProperties": _STR},
    },
}
_PAYLOAD = {
    "data": _ANY,
    "b64data": {"type": "string", "description": "base64 of JSON text"},
    "skip_history": _BOOL,
    "tags": {"type": "object", "additionalProperties": _STR},
    "idempotency_key": _STR,
}


def _obj(required: list[str], **props: Any) -> dict[str, Any]:
    out: dict[str, Any] = {"type": "object", "properties": props}
    if required:
        out["required"] = required
    return out


# method -> (summary, request schema, result schema)
METHODS: dict[str, tuple[str, dict[str, Any], dict[str, Any]]] = {
    "publish": (
        "Publish data to a channel; the position when the channel keeps history.",
        _obj(["channel"], channel=_STR, **_PAYLOAD),
        _POSITION,
    ),
    "broadcast": (
        "Publish the same data to several channels.",
        _obj(["channels"], channels={"type": "array", "items": _STR}, **_PAYLOAD),
        _obj(["responses"], responses={"type": "array", "items": {"type": "object"}}),
    ),
    "subscribe": (
        "Subscribe a user's live connections to a channel server-side.",
        _obj(
            ["user", "channel"],
            user=_STR,
            channel=_STR,
            client=_STR,
            info=_ANY,
            b64info=_STR,
            data=_ANY,
            b64data=_STR,
            recover_since=_POSITION,
        ),
        _obj([]),
    ),
    "unsubscribe": (
        "Unsubscribe a user's connections from a channel (push code 2000).",
        _obj(["user", "channel"], user=_STR, channel=_STR, client=_STR),
        _obj([]),
    ),
    "disconnect": (
        "Close a user's connections (default code 3503).",
        _obj(
            ["user"],
            user=_STR,
            client=_STR,
            whitelist={"type": "array", "items": _STR},
            disconnect=_obj([], code=_INT, reason=_STR),
        ),
        _obj([]),
    ),
    "refresh": (
        "Expire a user's connections now, or set their expiry.",
        _obj(["user"], user=_STR, client=_STR, expired=_BOOL, expire_at=_INT),
        _obj([]),
    ),
    "presence": (
        "Clients in a channel, by client id.",
        _obj(["channel"], channel=_STR),
        _obj(["presence"], presence={"type": "object", "additionalProperties": _CLIENT_INFO}),
    ),
    "presence_stats": (
        "Connection and user counts of a channel.",
        _obj(["channel"], channel=_STR),
        _obj(["num_clients", "num_users"], num_clients=_INT, num_users=_INT),
    ),
    "history": (
        "Read a channel's stream (limit 0: position only; -1: all).",
        _obj(["channel"], channel=_STR, limit=_INT, since=_POSITION, reverse=_BOOL),
        _obj(
            ["publications", "offset", "epoch"],
            publications={"type": "array", "items": _PUBLICATION},
            offset=_INT,
            epoch=_STR,
        ),
    ),
    "history_remove": (
        "Drop a channel's stored publications (its position is kept).",
        _obj(["channel"], channel=_STR),
        _obj([]),
    ),
    "channels": (
        "Active channels matching a glob pattern, with subscriber counts.",
        _obj([], pattern=_STR),
        _obj(["channels"], channels={"type": "object"}),
    ),
    "info": (
        "Statistics of every node.",
        _obj([]),
        _obj(["nodes"], nodes={"type": "array", "items": {"type": "object"}}),
    ),
}

_MESSAGE = _obj(
    ["id", "room", "user", "text", "ts"],
    id=_INT,
    room=_STR,
    user=_STR,
    text=_STR,
    ts={"type": "number"},
    edited={"type": "number"},
    deleted=_BOOL,
    offset=_INT,
    epoch=_STR,
)
_ROOM = _obj(
    ["name", "channel", "messages", "online"],
    name=_STR,
    channel=_STR,
    messages=_INT,
    online=_INT,
    created_at={"type": "number"},
    last_message_at={"type": ["number", "null"]},
)

# The applications' methods, documented when the application is on.
APP_METHODS: dict[str, tuple[str, dict[str, Any], dict[str, Any]]] = {
    "notify": (
        "Store a notification in users' inboxes and push it to their connections. Give "
        "exactly one of user, users or everyone (every user who ever connected).",
        _obj(
            ["body"],
            user=_STR,
            users={"type": "array", "items": _STR},
            everyone=_BOOL,
            title=_STR,
            body=_STR,
            data=_ANY,
            link={"type": "string", "description": "http(s) URL or a path starting with /"},
        ),
        _obj(
            ["count", "notifications"],
            count=_INT,
            notifications={"type": "array", "items": _obj(["id", "user"], id=_INT, user=_STR)},
        ),
    ),
    "chat_create_room": (
        "Create a chat room unless it exists.",
        _obj(["room"], room=_STR),
        _obj(["room", "created"], room=_ROOM, created=_BOOL),
    ),
    "chat_rooms": (
        "A page of the chat rooms (by name) with message counts and online users; pass next"
        " as after for the following page.",
        _obj([], after=_STR, limit=_INT),
        _obj(
            ["rooms", "next", "total"],
            rooms={"type": "array", "items": _ROOM},
            next={"type": ["string", "null"]},
            total=_INT,
        ),
    ),
    "chat_history": (
        "A page of a room's archive, oldest first; before = a message id to page backwards.",
        _obj(["room"], room=_STR, limit=_INT, before=_INT),
        _obj(["messages"], messages={"type": "array", "items": _MESSAGE}),
    ),
    "chat_send": (
        "Send a message to a room as a user: stored, then published to the room.",
        _obj(["room", "user", "text"], room=_STR, user=_STR, text=_STR),
        _obj(["message"], message=_MESSAGE),
    ),
}

_ERROR = _obj(
    ["code", "message"],
    code={"type": "integer", "description": "100 internal, 102 unknown channel, 104 not "
          "found, 107 bad request, 108 not available, 112 unrecoverable position"},
    message=_STR,
)  # fmt: skip


def openapi_document(prefix: str, served: Iterable[str] = ()) -> dict[str, Any]:
    """The OpenAPI document for an API served under ``prefix``: the built-in methods and the
    applications' methods among ``served``."""
    paths: dict[str, Any] = {}
    methods = dict(METHODS)
    methods.update({name: APP_METHODS[name] for name in served if name in APP_METHODS})
    for name, (summary, request, result) in methods.items():
        paths[f"{prefix}/{name}"] = {
            "post": {
                "operationId": name,
                "summary": summary,
                "requestBody": {
                    "required": True,
                    "content": {"application/json": {"schema": request}},
                },
                "responses": {
                    "200": {
                        "description": "the result, or an error object",
                        "content": {
                            "application/json": {
                                "schema": {
                                    "oneOf": [
                                        _obj(["result"], result=result),
                                        _obj(["error"], error=_ERROR),
                                    ]
                                }
                            }
                        },
                    },
                    "400": {"description": "the body is not JSON"},
                    "401": {"description": "missing or wrong API key (empty body)"},
                    "413": {"description": "the body is larger than http_api.max_body_size"},
                },
            }
        }
    paths[f"{prefix}/batch"] = {
        "post": {
            "operationId": "batch",
            "summary": "Several commands in one request; one reply each, in order.",
            "requestBody": {
                "required": True,
                "content": {
                    "application/json": {
                        "schema": _obj(
                            ["commands"],
                            commands={"type": "array", "items": {"type": "object"}},
                            parallel=_BOOL,
                        )
                    }
                },
            },
            "responses": {
                "200": {
                    "description": "one reply per command: {<method>: result} or {error}",
                    "content": {
                        "application/json": {"schema": _obj(["replies"], replies={"type": "array"})}
                    },
                },
                "401": {"description": "missing or wrong API key (empty body)"},
            },
        }
    }
    return {
        "openapi": "3.1.0",
        "info": {"title": "hubbub server API", "version": __version__},
        "components": {
            "securitySchemes": {"apiKey": {"type": "apiKey", "in": "header", "name": "X-API-Key"}}
        },
        "security": [{"apiKey": []}],
        "paths": paths,
    }
