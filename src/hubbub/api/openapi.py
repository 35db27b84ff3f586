"""The OpenAPI 3.0 description of the server API, served at ``{prefix}/openapi.json``.

OpenAPI 3.0 rather than 3.1: the offline API page (Swagger UI from ``swagger-ui-bundle``) and
many client generators read 3.0 only. So "may be null" is ``nullable``, not a ``null`` type.

Generated from the types: each method's request body is the JSON Schema of the msgspec struct
its handler decodes (the one given to :meth:`ServerAPI.register` for the applications'
methods), so a field added to a request type is documented by that change alone. Results are
described by the typed shapes below, built on the types the methods return where they exist.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import msgspec
import msgspec.inspect as mi

from hubbub import __version__
from hubbub.apps.chat.service import RoomPage, RoomView
from hubbub.node import NodeInfo
from hubbub.protocol.messages import ClientInfo, Publication

Schema = dict[str, Any]
REF = "#/components/schemas/"


# ---------------------------------------------------------------------------------------------
# What the methods answer (inside ``{"result": …}``)


class Position(msgspec.Struct):
    """The publication's place in the channel's stream; empty when it keeps no history."""

    offset: int = 0
    epoch: str = ""


class Empty(msgspec.Struct):
    """Nothing to report: ``{}``."""


class BroadcastResult(msgspec.Struct):
    """One reply per channel, in order: ``{"result": Position}`` or ``{"error": Error}``."""

    responses: list[dict[str, Any]]


class PresenceResult(msgspec.Struct):
    """The channel's clients, by client id."""

    presence: dict[str, ClientInfo]


class PresenceStatsResult(msgspec.Struct):
    num_clients: int
    num_users: int


class HistoryResult(msgspec.Struct):
    """The publications asked for and the stream's current position."""

    publications: list[Publication]
    offset: int
    epoch: str


class ChannelInfo(msgspec.Struct):
    num_clients: int


class ChannelsResult(msgspec.Struct):
    channels: dict[str, ChannelInfo]


class InfoResult(msgspec.Struct):
    """This node first, then the peers heard from lately."""

    nodes: list[NodeInfo]


class NotificationRef(msgspec.Struct):
    id: int
    user: str


class NotifyResult(msgspec.Struct):
    count: int
    notifications: list[NotificationRef]


class RoomResult(msgspec.Struct):
    room: RoomView
    created: bool


class ChatMessage(msgspec.Struct):
    """A chat message; ``edited``, ``deleted``, ``offset`` and ``epoch`` only when set."""

    id: int
    room: str
    user: str
    text: str
    ts: float
    edited: float | msgspec.UnsetType = msgspec.UNSET
    deleted: bool = False
    offset: int = 0
    epoch: str = ""


class MessagesResult(msgspec.Struct):
    messages: list[ChatMessage]


class MessageResult(msgspec.Struct):
    message: ChatMessage


class Error(msgspec.Struct):
    """100 internal, 102 unknown channel, 103 permission denied, 104 method not found, 106
    limit exceeded, 107 bad request, 108 not available, 111 too many requests, 112
    unrecoverable position; 404 not found (applications)."""

    code: int
    message: str


RESULTS: dict[str, type] = {
    "publish": Position,
    "broadcast": BroadcastResult,
    "subscribe": Empty,
    "unsubscribe": Empty,
    "disconnect": Empty,
    "refresh": Empty,
    "presence": PresenceResult,
    "presence_stats": PresenceStatsResult,
    "history": HistoryResult,
    "history_remove": Empty,
    "channels": ChannelsResult,
    "info": InfoResult,
    "notify": NotifyResult,
    "chat_create_room": RoomResult,
    "chat_rooms": RoomPage,
    "chat_history": MessagesResult,
    "chat_send": MessageResult,
}

SUMMARIES: dict[str, str] = {
    "publish": "Publish data to a channel; the position when the channel keeps history.",
    "broadcast": "Publish the same data to several channels.",
    "subscribe": "Subscribe a user's live connections to a channel server-side.",
    "unsubscribe": "Unsubscribe a user's connections from a channel (push code 2000).",
    "disconnect": "Close a user's connections (default code 3503).",
    "refresh": "Expire a user's connections now, or set their expiry.",
    "presence": "Clients in a channel, by client id.",
    "presence_stats": "Connection and user counts of a channel.",
    "history": "Read a channel's stream (limit 0: position only; -1: all).",
    "history_remove": "Drop a channel's stored publications (its position is kept).",
    "channels": "Active channels matching a glob pattern, with subscriber counts.",
    "info": "Statistics of every node.",
    "batch": "Several commands in one request; one reply each, in order.",
    "notify": "Store a notification in users' inboxes and push it to their connections. Give "
    "exactly one of user, users or everyone (every user who ever connected).",
    "chat_create_room": "Create a chat room unless it exists.",
    "chat_rooms": "A page of the chat rooms (by name) with message counts and online users; "
    "pass next as after for the following page.",
    "chat_history": "A page of a room's archive, oldest first; before = a message id to page "
    "backwards.",
    "chat_send": "Send a message to a room as a user: stored, then published to the room.",
}

# Fields the built-in methods check themselves: their types give them defaults so that a
# missing one is answered "107 bad request: <field> required". Marked required here; the
# document refuses to build if one of them is not a field of the method's type.
CHECKED_REQUIRED: dict[str, tuple[str, ...]] = {
    "publish": ("channel",),
    "broadcast": ("channels",),
    "subscribe": ("user", "channel"),
    "unsubscribe": ("user", "channel"),
    "disconnect": ("user",),
    "refresh": ("user",),
    "presence": ("channel",),
    "presence_stats": ("channel",),
    "history": ("channel",),
    "history_remove": ("channel",),
}

_PAYLOAD_NOTE = "any JSON value, kept verbatim"


# ---------------------------------------------------------------------------------------------
# JSON Schema from msgspec's view of a type


class _Schemas:
    """JSON Schemas of types, with structs and dataclasses as named components."""

    def __init__(self) -> None:
        self.components: dict[str, Schema] = {}
        self._names: dict[type, str] = {}

    def ref(self, kind: type) -> Schema:
        """A schema for ``kind``; a struct or dataclass becomes a component and a ``$ref``."""
        return self._schema(mi.type_info(kind))

    def _name(self, cls: type) -> str:
        if cls in self._names:
            return self._names[cls]
        name = cls.__name__
        if name in self.components or name in self._names.values():
            # Two types of one name (HistoryRequest of the API and of the chat): the second
            # is told apart by its module.
            name = f"{cls.__module__.removeprefix('hubbub.')}.{name}"
        self._names[cls] = name
        return name

    def _component(self, cls: type, fields: tuple[mi.Field, ...]) -> Schema:
        name = self._name(cls)
        if name not in self.components:
            self.components[name] = {}  # reserved first: a type may refer to itself
            props: dict[str, Schema] = {}
            required: list[str] = []
            for f in fields:
                prop = self._schema(f.type)
                default = _json_default(f)
                if default is not None:
                    prop = {**prop, "default": default}
                props[f.encode_name] = prop
                if f.required:
                    required.append(f.encode_name)
            out: Schema = {"type": "object", "title": cls.__name__, "properties": props}
            if required:
                out["required"] = required
            doc = (cls.__doc__ or "").strip()
            if doc and not doc.startswith(cls.__name__ + "("):  # not a generated signature
                out["description"] = " ".join(doc.split())
            self.components[name] = out
        return {"$ref": REF + name}

    def _schema(self, t: mi.Type) -> Schema:
        if isinstance(t, mi.StructType | mi.DataclassType):
            return self._component(t.cls, t.fields)
        if isinstance(t, mi.StrType):
            return _bounded(
                {"type": "string"},
                minLength=t.min_length,
                maxLength=t.max_length,
                pattern=t.pattern,
            )
        if isinstance(t, mi.BoolType):
            return {"type": "boolean"}
        if isinstance(t, mi.IntType | mi.FloatType):
            kind = "integer" if isinstance(t, mi.IntType) else "number"
            return _bounded(
                {"type": kind},
                minimum=t.ge,
                maximum=t.le,
                **_exclusive(t.gt, t.lt),
            )
        if isinstance(t, mi.NoneType):
            return {"nullable": True}
        if isinstance(t, mi.ListType | mi.SetType | mi.FrozenSetType | mi.VarTupleType):
            return {"type": "array", "items": self._schema(t.item_type)}
        if isinstance(t, mi.DictType):
            return {"type": "object", "additionalProperties": self._schema(t.value_type)}
        if isinstance(t, mi.UnionType):
            members = [self._schema(m) for m in t.types if not isinstance(m, mi.NoneType)]
            nullable = len(members) < len(t.types)
            if len(members) == 1 and not (nullable and "$ref" in members[0]):
                union = members[0]
            elif len(members) == 1:
                union = {"allOf": members}  # 3.0 ignores what is beside a $ref
            else:
                union = {"anyOf": members}
            return {**union, "nullable": True} if nullable else union
        if isinstance(t, mi.LiteralType):
            return {"enum": list(t.values)}
        if isinstance(t, mi.RawType):
            return {"description": _PAYLOAD_NOTE}
        return {}  # any value


def _exclusive(gt: float | None, lt: float | None) -> dict[str, object]:
    """OpenAPI 3.0's exclusive bounds: a minimum/maximum and a flag."""
    out: dict[str, object] = {}
    if gt is not None:
        out.update(minimum=gt, exclusiveMinimum=True)
    if lt is not None:
        out.update(maximum=lt, exclusiveMaximum=True)
    return out


def _bounded(schema: Schema, **bounds: object) -> Schema:
    return {**schema, **{key: value for key, value in bounds.items() if value is not None}}


def _json_default(f: mi.Field) -> object:
    """The field's default as JSON, or None when it has none worth showing."""
    if f.default_factory is not msgspec.NODEFAULT:
        value = f.default_factory()
    elif f.default is not msgspec.NODEFAULT:
        value = f.default
    else:
        return None
    return value if isinstance(value, str | bool | int | float | list | dict) else None


def _describe(schemas: _Schemas, kind: type) -> Schema:
    """The component schema behind ``kind`` (to edit its ``required``)."""
    ref = schemas.ref(kind)["$ref"]
    return schemas.components[ref.removeprefix(REF)]


# ---------------------------------------------------------------------------------------------
# The document


def _responses(result: Schema) -> Schema:
    return {
        "200": {
            "description": "the result, or an error object",
            "content": {
                "application/json": {
                    "schema": {
                        "oneOf": [
                            {
                                "type": "object",
                                "required": ["result"],
                                "properties": {"result": result},
                            },
                            {
                                "type": "object",
                                "required": ["error"],
                                "properties": {"error": {"$ref": REF + "Error"}},
                            },
                        ]
                    }
                }
            },
        },
        "400": {"description": "the body is not JSON"},
        "401": {"description": "missing or wrong API key (empty body)"},
        "413": {"description": "the body is larger than http_api.max_body_size"},
        "415": {
            "description": "not sent as Content-Type: application/json from a program "
            "or an allowed origin"
        },
    }


def openapi_document(prefix: str, requests: Mapping[str, type]) -> dict[str, Any]:
    """The OpenAPI document of an API served under ``prefix``.

    Args:
        prefix: the URL prefix of the methods (``/api``).
        requests: every method served and the type its request body decodes into
            (:attr:`ServerAPI.request_types`), ``batch`` included.

    Raises:
        ValueError: a field named in :data:`CHECKED_REQUIRED` is not a field of its method's
            request type (the document would have drifted from the code).
    """
    schemas = _Schemas()
    schemas.ref(Error)
    paths: dict[str, Any] = {}
    for name, request in requests.items():
        body = schemas.ref(request)
        if name in CHECKED_REQUIRED:
            component = _describe(schemas, request)
            missing = [f for f in CHECKED_REQUIRED[name] if f not in component["properties"]]
            if missing:
                raise ValueError(f"{name}: {missing} are not fields of {request.__name__}")
            # A struct shared by several methods: each method's body gets its own copy.
            body = {**component, "required": list(CHECKED_REQUIRED[name])}
        if name == "batch":
            result: Schema = {"type": "array", "items": {"type": "object"}}
            responses = _responses({})
            responses["200"] = {
                "description": "one reply per command: {<method>: result} or {error}",
                "content": {
                    "application/json": {
                        "schema": {
                            "type": "object",
                            "required": ["replies"],
                            "properties": {"replies": result},
                        }
                    }
                },
            }
        else:
            kind = RESULTS.get(name)
            responses = _responses(schemas.ref(kind) if kind else {"type": "object"})
        paths[f"{prefix}/{name}"] = {
            "post": {
                "operationId": name,
                "summary": SUMMARIES.get(name, name),
                "requestBody": {
                    "required": True,
                    "content": {"application/json": {"schema": body}},
                },
                "responses": responses,
            }
        }
    return {
        "openapi": "3.0.3",
        "info": {"title": "hubbub server API", "version": __version__},
        "components": {
            "schemas": dict(sorted(schemas.components.items())),
            "securitySchemes": {"apiKey": {"type": "apiKey", "in": "header", "name": "X-API-Key"}},
        },
        "security": [{"apiKey": []}],
        "paths": paths,
    }
