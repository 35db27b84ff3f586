"""Protobuf codec of the client protocol: pure functions from bytes to messages and back.

A binary frame holds one or more messages, each prefixed by its length as a varint. The server
pings with the empty message (the single byte ``0x00``) and the client pongs the same way.

The Protobuf classes (``client_pb2``, generated from ``client.proto``) are only a wire layer:
messages are converted to and from the same msgspec structs the JSON codec produces, so the
session and the node never know which format a connection speaks.
"""

from __future__ import annotations

from typing import Any, TypeVar

import msgspec
from google.protobuf.descriptor import FieldDescriptor
from google.protobuf.message import DecodeError, Message

from hubbub.protocol import client_pb2 as pb
from hubbub.protocol.codes import DisconnectCode, disconnect
from hubbub.protocol.messages import EMPTY, Command, Push, Reply

S = TypeVar("S", bound=msgspec.Struct)

PING = b"\x00"
"""The server ping and the client pong: a zero-length message."""

_MAX_VARINT_BYTES = 10


def encode_varint(value: int) -> bytes:
    """Unsigned LEB128, as Protobuf length prefixes are written."""
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        if value:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def decode_varint(data: bytes, pos: int) -> tuple[int, int]:
    """Read a varint at ``pos``; the value and the position after it.

    Raises:
        ValueError: the varint is truncated or longer than 10 bytes.
    """
    value = 0
    shift = 0
    for i in range(_MAX_VARINT_BYTES):
        if pos + i >= len(data):
            raise ValueError("truncated length prefix")
        byte = data[pos + i]
        value |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return value, pos + i + 1
        shift += 7
    raise ValueError("length prefix longer than 10 bytes")


# ---------------------------------------------------------------------------------------------
# struct <-> protobuf message, by field name (the schema uses the JSON format's names)


def _fill(msg: Message, struct: msgspec.Struct) -> None:
    fields = msg.DESCRIPTOR.fields_by_name
    for name in struct.__struct_fields__:
        value = getattr(struct, name)
        if value is None or value is EMPTY or name not in fields:
            continue
        if isinstance(value, msgspec.Raw):
            setattr(msg, name, bytes(value))
        elif isinstance(value, msgspec.Struct):
            sub = getattr(msg, name)
            sub.SetInParent()  # an empty result ({}) must still be present
            _fill(sub, value)
        elif isinstance(value, list):
            container = getattr(msg, name)
            for item in value:
                _fill(container.add(), item)
        elif isinstance(value, dict):
            container = getattr(msg, name)
            for key, item in value.items():
                if isinstance(item, msgspec.Struct):
                    _fill(container[key], item)  # a message-valued map entry
                else:
                    container[key] = item
        elif value:
            setattr(msg, name, value)


def _to_builtins(msg: Message) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for fd, value in msg.ListFields():
        entry = fd.message_type
        if fd.type == FieldDescriptor.TYPE_MESSAGE and entry is not None:
            if entry.GetOptions().map_entry:
                value_fd = entry.fields_by_name["value"]
                if value_fd.type == FieldDescriptor.TYPE_MESSAGE:
                    out[fd.name] = {k: _to_builtins(v) for k, v in value.items()}
                else:
                    out[fd.name] = dict(value)
            elif fd.is_repeated:
                out[fd.name] = [_to_builtins(v) for v in value]
            else:
                out[fd.name] = _to_builtins(value)
        elif fd.type == FieldDescriptor.TYPE_BYTES:
            # Opaque payloads: kept as they came, whatever they hold.
            out[fd.name] = msgspec.Raw(value)
        else:
            out[fd.name] = value
    return out


def to_message(struct: msgspec.Struct, kind: type[Message]) -> Message:
    """The Protobuf message of type ``kind`` holding ``struct``'s fields."""
    msg = kind()
    _fill(msg, struct)
    return msg


def from_message(msg: Message, kind: type[S]) -> S:
    """The msgspec struct of type ``kind`` holding ``msg``'s fields."""
    return msgspec.convert(_to_builtins(msg), kind)


# ---------------------------------------------------------------------------------------------
# Frames


def split_frame(frame: bytes) -> list[bytes]:
    """The length-prefixed messages of a binary frame, undecoded.

    Raises:
        Disconnect: 3501 when the frame is empty or a length prefix is broken or runs past
            the end of the frame.
    """
    if not frame:
        raise disconnect(DisconnectCode.BAD_REQUEST, "bad request: empty frame")
    parts: list[bytes] = []
    pos = 0
    try:
        while pos < len(frame):
            size, pos = decode_varint(frame, pos)
            end = pos + size
            if end > len(frame):
                raise ValueError("message runs past the end of the frame")
            parts.append(frame[pos:end])
            pos = end
    except ValueError as exc:
        raise disconnect(DisconnectCode.BAD_REQUEST, f"bad request: {exc}") from None
    return parts


def decode_command(data: bytes) -> Command:
    """Decode one Command message; raises :class:`Disconnect` 3501 when it is not one."""
    msg = pb.Command()
    try:
        msg.ParseFromString(data)
        return from_message(msg, Command)
    except (DecodeError, msgspec.ValidationError) as exc:
        raise disconnect(DisconnectCode.BAD_REQUEST, f"bad request: {exc}") from None


def decode_commands(frame: bytes) -> list[Command]:
    """Decode every command of a binary frame, in order (raises 3501 on any bad one)."""
    return [decode_command(part) for part in split_frame(frame)]


def encode_reply(reply: Reply) -> bytes:
    """Encode one reply, length-prefixed."""
    body: bytes = to_message(reply, pb.Reply).SerializeToString()
    return encode_varint(len(body)) + body


def encode_push(push: Push) -> bytes:
    """Encode one push as a length-prefixed reply."""
    return encode_reply(Reply(push=push))
