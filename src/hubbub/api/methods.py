"""The server API's methods: decode a request, call the node, shape the result.

Both the HTTP endpoint and in-process callers go through :class:`ServerAPI`, and every method
is a thin layer over the :class:`~hubbub.node.Node` method of the same name, so the HTTP API
and the Python API cannot drift apart.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import dataclasses
import logging
from collections.abc import Awaitable, Callable
from typing import Any

import msgspec

from hubbub.api import requests as rq
from hubbub.engines.base import StreamPosition
from hubbub.node import Node
from hubbub.payload import to_payload
from hubbub.protocol.codes import DisconnectCode, ErrorCode, ProtocolError, error
from hubbub.protocol.messages import EMPTY

log = logging.getLogger("hubbub.api")

Result = dict[str, Any]


def _bad(message: str) -> ProtocolError:
    return error(ErrorCode.BAD_REQUEST, f"bad request: {message}")


def _require(value: str, name: str) -> str:
    if not value:
        raise _bad(f"{name} required")
    return value


def _payload(data: msgspec.Raw, b64: str, name: str, *, required: bool) -> msgspec.Raw:
    """The JSON payload from ``<name>`` or its base64 twin ``b64<name>``."""
    if b64:
        try:
            decoded = base64.b64decode(b64, validate=True)
        except (binascii.Error, ValueError):
            raise _bad(f"b64{name} is not valid base64") from None
        # Taken verbatim here; checked by the node against the channel (JSON unless its
        # namespace publishes binary), with the same to_payload.
        return to_payload(decoded, binary=True)
    if data is EMPTY and required:
        raise _bad(f"{name} required")
    return data


def _position(pos: StreamPosition) -> Result:
    return {"offset": pos.offset, "epoch": pos.epoch} if pos.epoch else {}


Handler = Callable[[Any], Awaitable[Result]]


class InvalidJSON(Exception):
    """The request body is not JSON at all (the HTTP layer answers 400)."""


class ServerAPI:
    """The server API of one node.

    Args:
        node: the node the API controls.
    """

    def __init__(self, node: Node) -> None:
        self.node = node
        self._methods: dict[str, tuple[type[msgspec.Struct], Handler]] = {
            "publish": (rq.PublishRequest, self.publish),
            "broadcast": (rq.BroadcastRequest, self.broadcast),
            "subscribe": (rq.SubscribeRequest, self.subscribe),
            "unsubscribe": (rq.UnsubscribeRequest, self.unsubscribe),
            "disconnect": (rq.DisconnectRequest, self.disconnect),
            "refresh": (rq.RefreshRequest, self.refresh),
            "presence": (rq.ChannelRequest, self.presence),
            "presence_stats": (rq.ChannelRequest, self.presence_stats),
            "history": (rq.HistoryRequest, self.history),
            "history_remove": (rq.ChannelRequest, self.history_remove),
            "channels": (rq.ChannelsRequest, self.channels),
            "info": (rq.InfoRequest, self.info),
        }
        self._decoders = {
            name: msgspec.json.Decoder(kind) for name, (kind, _) in self._methods.items()
        }

    def register(self, name: str, request: type[msgspec.Struct], handler: Handler) -> None:
        """Add method ``name`` (the applications' methods, such as ``notify``): its JSON body
        decodes into ``request`` and ``handler`` answers it, as for the built-in methods."""
        if name in self._methods or name == "batch":
            raise ValueError(f"API method {name!r} is already defined")
        self._methods[name] = (request, handler)
        self._decoders[name] = msgspec.json.Decoder(request)

    @property
    def method_names(self) -> list[str]:
        return [*self._methods, "batch"]

    @property
    def request_types(self) -> dict[str, type[msgspec.Struct]]:
        """Each method's request type, ``batch`` included: what the API's schema is built from."""
        types = {name: kind for name, (kind, _) in self._methods.items()}
        return {**types, "batch": rq.BatchRequest}

    async def call(self, method: str, body: bytes) -> Result:
        """Run ``method`` on a JSON body; the reply object ``{"result": …}`` or ``{"error": …}``.

        ``batch`` answers ``{"replies": [...]}``.

        Raises:
            InvalidJSON: the body is not JSON. Every other bad input is an error reply.
        """
        if method == "batch":
            return await self._batch(body)
        try:
            return {"result": await self._call(method, body)}
        except ProtocolError as exc:
            return {"error": {"code": exc.code, "message": exc.message}}

    async def _call(self, method: str, body: bytes) -> Result:
        entry = self._methods.get(method)
        if entry is None:
            raise error(ErrorCode.METHOD_NOT_FOUND)
        try:
            request = self._decoders[method].decode(body or b"{}")
        except msgspec.ValidationError as exc:
            raise _bad(str(exc)) from None
        except (msgspec.DecodeError, RecursionError, UnicodeDecodeError) as exc:
            raise InvalidJSON(str(exc)) from None
        try:
            return await entry[1](request)
        except ProtocolError:
            raise
        except Exception:
            log.exception("api method %s failed", method)
            raise error(ErrorCode.INTERNAL) from None

    async def _batch(self, body: bytes) -> Result:
        try:
            batch = msgspec.json.decode(body or b"{}", type=rq.BatchRequest)
        except msgspec.ValidationError as exc:
            return {"error": {"code": 107, "message": f"bad request: {exc}"}}
        except (msgspec.DecodeError, RecursionError, UnicodeDecodeError) as exc:
            raise InvalidJSON(str(exc)) from None

        async def one(command: dict[str, msgspec.Raw]) -> Result:
            if len(command) != 1:
                return {"error": {"code": 107, "message": "bad request: one method per command"}}
            ((method, params),) = command.items()
            if method == "batch":
                return {"error": {"code": 107, "message": "bad request: batch in a batch"}}
            try:
                return {method: await self._call(method, bytes(params))}
            except ProtocolError as exc:
                return {"error": {"code": exc.code, "message": exc.message}}

        if batch.parallel:
            replies = list(await asyncio.gather(*(one(c) for c in batch.commands)))
        else:
            replies = [await one(c) for c in batch.commands]
        return {"replies": replies}

    # -----------------------------------------------------------------------------------------
    # Methods

    async def publish(self, req: rq.PublishRequest) -> Result:
        data = _payload(req.data, req.b64data, "data", required=True)
        position = await self.node.publish(
            _require(req.channel, "channel"),
            data,
            tags=req.tags or None,
            skip_history=req.skip_history,
            idempotency_key=req.idempotency_key,
            delta=req.delta,
        )
        return _position(position)

    async def broadcast(self, req: rq.BroadcastRequest) -> Result:
        if not req.channels:
            raise _bad("channels required")
        data = _payload(req.data, req.b64data, "data", required=True)
        responses: list[Result] = []
        for outcome in await self.node.broadcast(
            req.channels,
            data,
            tags=req.tags or None,
            skip_history=req.skip_history,
            idempotency_key=req.idempotency_key,
            delta=req.delta,
        ):
            if isinstance(outcome, ProtocolError):
                responses.append({"error": {"code": outcome.code, "message": outcome.message}})
            else:
                responses.append({"result": _position(outcome)})
        return {"responses": responses}

    async def subscribe(self, req: rq.SubscribeRequest) -> Result:
        since = req.recover_since
        await self.node.subscribe(
            _require(req.user, "user"),
            _require(req.channel, "channel"),
            client=req.client,
            info=_payload(req.info, req.b64info, "info", required=False),
            data=_payload(req.data, req.b64data, "data", required=False),
            recover_since=StreamPosition(since.offset, since.epoch) if since else None,
        )
        return {}

    async def unsubscribe(self, req: rq.UnsubscribeRequest) -> Result:
        await self.node.unsubscribe(
            _require(req.user, "user"), _require(req.channel, "channel"), client=req.client
        )
        return {}

    async def disconnect(self, req: rq.DisconnectRequest) -> Result:
        code, reason = int(DisconnectCode.FORCE_DISCONNECT), ""
        if req.disconnect is not None and req.disconnect.code:
            code, reason = req.disconnect.code, req.disconnect.reason
            if not (3000 <= code <= 4999):
                raise _bad("disconnect.code must be within 3000-4999")
            if len(reason.encode()) > 123:
                raise _bad("disconnect.reason must fit in 123 bytes")
        await self.node.disconnect(
            _require(req.user, "user"),
            code,
            reason,
            client=req.client,
            whitelist=req.whitelist,
        )
        return {}

    async def refresh(self, req: rq.RefreshRequest) -> Result:
        await self.node.refresh(
            _require(req.user, "user"),
            client=req.client,
            expired=req.expired,
            expire_at=float(req.expire_at) if req.expire_at else None,
        )
        return {}

    async def presence(self, req: rq.ChannelRequest) -> Result:
        clients = await self.node.presence(_require(req.channel, "channel"))
        return {"presence": clients}

    async def presence_stats(self, req: rq.ChannelRequest) -> Result:
        stats = await self.node.presence_stats(_require(req.channel, "channel"))
        return {"num_clients": stats.num_clients, "num_users": stats.num_users}

    async def history(self, req: rq.HistoryRequest) -> Result:
        since = StreamPosition(req.since.offset, req.since.epoch) if req.since else None
        result = await self.node.history(
            _require(req.channel, "channel"), limit=req.limit, since=since, reverse=req.reverse
        )
        return {
            "publications": result.publications,
            "offset": result.position.offset,
            "epoch": result.position.epoch,
        }

    async def history_remove(self, req: rq.ChannelRequest) -> Result:
        await self.node.history_remove(_require(req.channel, "channel"))
        return {}

    async def channels(self, req: rq.ChannelsRequest) -> Result:
        found = self.node.channels(req.pattern)
        return {"channels": {name: {"num_clients": n} for name, n in found.items()}}

    async def info(self, req: rq.InfoRequest) -> Result:
        return {"nodes": [dataclasses.asdict(n) for n in self.node.info()]}
