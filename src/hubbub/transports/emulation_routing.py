"""Where the commands of an emulation request go: to a stream of this node, or through the
engine's control channel to the node that holds it.

An ``/emulation`` request names a node (its uid, from the connect result) and a stream session
(:attr:`~hubbub.transports.streaming.HTTPStream.id`). The :class:`EmulationRouter` of the node
that received it hands the commands to the stream when the node is itself; sends them to the
named node when it is a live peer (a :class:`~hubbub.control.Emulation` control message), and
waits for that node's :class:`~hubbub.control.EmulationDone` answer, up to
``emulation.timeout``; and answers "unknown node" otherwise. No sticky sessions are needed.

Decoding the request (:func:`decode_request`) and its ``data`` (:func:`command_frame`) is here
too: pure functions.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import enum
import itertools
import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING

import msgspec

from hubbub import control
from hubbub.protocol.codec import Codec
from hubbub.protocol.codes import DisconnectCode, ProtocolError, disconnect
from hubbub.protocol.protobuf import decode_varint
from hubbub.transports.streaming import HTTPStream

if TYPE_CHECKING:
    from hubbub.node import Node

log = logging.getLogger("hubbub.transport")

MAX_PENDING_FRAMES = 64
"""Command frames a stream may have waiting for its session; one more closes it (3013)."""


class Delivery(enum.IntEnum):
    """What became of an emulation request's commands (the values travel between nodes)."""

    OK = 0
    """Handed to the session (which answers on its stream)."""
    BAD_DATA = 1
    """``data`` was not readable for the session's format: dropped, the session untouched."""
    NO_SESSION = 2
    """No stream of that session on the node (never was, or closed)."""


class Routed(enum.Enum):
    """The outcome an ``/emulation`` response reports."""

    DELIVERED = 204
    UNKNOWN_NODE = 404
    FAILED = 500


@dataclass(frozen=True, slots=True)
class EmulationRequest:
    """A decoded ``/emulation`` request body.

    Attributes:
        node: the uid of the node holding the stream.
        session: the stream's session id.
        data: the JSON text of the ``data`` field when ``json_body``, else its bytes.
        json_body: the body was JSON (else Protobuf).
    """

    node: str
    session: str
    data: bytes
    json_body: bool


class _JsonRequest(msgspec.Struct):
    node: str = ""
    session: str = ""
    data: msgspec.Raw = msgspec.Raw(b"")


_json_request = msgspec.json.Decoder(_JsonRequest)
_json_str = msgspec.json.Decoder(str)


def decode_request(body: bytes, protobuf: bool) -> EmulationRequest:
    """Decode an ``/emulation`` body: a Protobuf ``EmulationRequest`` (``protobuf``, the
    request's Content-Type was exactly ``application/octet-stream``) or its JSON form.

    Raises:
        ValueError: the body is not an emulation request.
    """
    if not protobuf:
        try:
            req = _json_request.decode(body)
        except (msgspec.DecodeError, RecursionError, UnicodeDecodeError) as exc:
            raise ValueError(str(exc)) from None
        return EmulationRequest(req.node, req.session, bytes(req.data), json_body=True)
    fields: dict[int, bytes] = {}
    pos = 0
    while pos < len(body):
        key, pos = decode_varint(body, pos)
        number, wire = key >> 3, key & 7
        if wire == 0:
            _, pos = decode_varint(body, pos)
        elif wire == 1:
            pos += 8
        elif wire == 5:
            pos += 4
        elif wire == 2:
            size, pos = decode_varint(body, pos)
            if pos + size > len(body):
                raise ValueError("truncated field")
            fields[number] = body[pos : pos + size]
            pos += size
        else:
            raise ValueError(f"unsupported wire type {wire}")
        if pos > len(body):
            raise ValueError("truncated field")
    try:
        node = fields.get(1, b"").decode()
        session = fields.get(2, b"").decode()
    except UnicodeDecodeError:
        raise ValueError("node and session must be UTF-8") from None
    return EmulationRequest(node, session, fields.get(3, b""), json_body=False)


def command_frame(data: bytes, json_body: bool, codec: Codec) -> bytes | None:
    """The frame of commands ``data`` holds for a session speaking ``codec``, or None when it
    cannot be read: a JSON body's ``data`` is a JSON string (the commands' text for a JSON
    session, their bytes in base64 for a Protobuf one); a Protobuf body's is the frame."""
    if not json_body:
        return data
    try:
        text = _json_str.decode(data)
    except (msgspec.DecodeError, RecursionError, UnicodeDecodeError):
        return None
    if not codec.binary:
        return text.encode()
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        return None


class EmulationRouter:
    """One node's routing of emulation requests (installed on its cluster).

    Args:
        node: the node; its cluster's addressed control messages come here.
    """

    def __init__(self, node: Node) -> None:
        self.node = node
        self._requests = itertools.count(1)
        self._waiting: dict[int, asyncio.Future[int]] = {}
        node.cluster.on_addressed = self._on_addressed

    async def route(self, req: EmulationRequest) -> Routed:
        """Deliver ``req``'s commands to its stream, here or on its node."""
        node = self.node
        if req.node == node.uid:
            self.deliver(req.session, req.data, req.json_body)
            return Routed.DELIVERED
        if not any(peer.uid == req.node for peer in node.cluster.peers()):
            return Routed.UNKNOWN_NODE
        request = next(self._requests)
        answer: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        self._waiting[request] = answer
        message = control.Emulation(
            node.uid, req.node, request, req.session, req.data, req.json_body
        )
        try:
            await node.broker.publish_control(control.encode(message))
            # The other node answers once it handed the commands over: bounded, so that a
            # node that died since its last announcement costs one timeout, not a hang.
            await asyncio.wait_for(answer, node.settings.emulation.timeout)
        except (ProtocolError, TimeoutError) as exc:
            log.warning("emulation request for node %s failed: %r", req.node, exc)
            node.counters["emulation.route_failed"] += 1
            return Routed.FAILED
        finally:
            self._waiting.pop(request, None)
        node.counters["emulation.routed"] += 1
        return Routed.DELIVERED

    def deliver(self, session_id: str, data: bytes, json_body: bool) -> Delivery:
        """Hand commands to the stream ``session_id`` of this node. Never awaits."""
        session = self.node.index.streams.get(session_id)
        stream = session.transport if session is not None else None
        if session is None or not isinstance(stream, HTTPStream):
            return Delivery.NO_SESSION
        frame = command_frame(data, json_body, session.codec)
        if frame is None:
            self.node.metrics_bad_input(DisconnectCode.BAD_REQUEST)
            session.log.info("dropped emulation data that is not a %s frame", session.codec.name)
            return Delivery.BAD_DATA
        if stream.fed_pending >= MAX_PENDING_FRAMES:
            # Commands arrive faster than the session takes them (each request is answered
            # at once): a client that floods is closed, as one over its command rate.
            self.node.metrics_bad_input(DisconnectCode.TOO_MANY_REQUESTS)
            session.close(disconnect(DisconnectCode.TOO_MANY_REQUESTS))
            return Delivery.OK
        stream.feed(frame)
        return Delivery.OK

    def _on_addressed(self, message: control.Addressed) -> None:
        """A control message for this node (the cluster's handler: never awaits)."""
        if isinstance(message, control.EmulationDone):
            waiter = self._waiting.get(message.request)
            if waiter is not None and not waiter.done():
                waiter.set_result(message.result)
            return
        result = self.deliver(message.session, message.data, message.json_body)
        done = control.EmulationDone(self.node.uid, message.origin, message.request, int(result))
        self.node.spawn(self._answer(done))

    async def _answer(self, done: control.EmulationDone) -> None:
        # The engine is down: the sender times out and answers 500.
        with contextlib.suppress(ProtocolError):
            await self.node.broker.publish_control(control.encode(done))
