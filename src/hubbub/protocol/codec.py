"""Codecs of the client protocol: pure functions from bytes to messages and back (no I/O).

JSON: a text frame holds one or more commands separated by a single ``\\n``; at most one
trailing ``\\n`` is tolerated. The server writes one or more replies per frame, joined the
same way. Protobuf: see :mod:`hubbub.protocol.protobuf`. :class:`Codec` is what a session holds.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Protocol

import msgspec

from hubbub.protocol import protobuf
from hubbub.protocol.codes import DisconnectCode, disconnect
from hubbub.protocol.messages import Command, Push, Reply

_command_decoder = msgspec.json.Decoder(Command)
_encoder = msgspec.json.Encoder()

PING = b"{}"
"""The server ping, and the client pong: an empty reply/command."""


def decode_commands(frame: bytes) -> list[Command]:
    """Decode every command of a JSON text frame, in order.

    Raises:
        Disconnect: 3501 ``bad request`` when the frame is empty, holds a blank line or a line
            that is not a valid command object (invalid JSON, wrong field types).
    """
    if frame.endswith(b"\n"):
        frame = frame[:-1]
    if not frame:
        raise disconnect(DisconnectCode.BAD_REQUEST, "bad request: empty frame")
    commands: list[Command] = []
    for line in frame.split(b"\n"):
        try:
            commands.append(_command_decoder.decode(line))
        except (msgspec.DecodeError, RecursionError, UnicodeDecodeError) as exc:
            raise disconnect(DisconnectCode.BAD_REQUEST, f"bad request: {exc}") from None
    return commands


def decode_command_lines(frame: bytes) -> list[bytes]:
    """Split a frame into its command lines without decoding them (see :func:`decode_command`)."""
    if frame.endswith(b"\n"):
        frame = frame[:-1]
    if not frame:
        raise disconnect(DisconnectCode.BAD_REQUEST, "bad request: empty frame")
    return frame.split(b"\n")


def decode_command(line: bytes) -> Command:
    """Decode one command line; raises :class:`Disconnect` 3501 when it is not a command."""
    try:
        return _command_decoder.decode(line)
    except (msgspec.DecodeError, RecursionError, UnicodeDecodeError) as exc:
        # RecursionError: JSON nested deeper than the decoder goes (a hostile payload).
        raise disconnect(DisconnectCode.BAD_REQUEST, f"bad request: {exc}") from None


def encode_reply(reply: Reply) -> bytes:
    """Encode one reply as a compact JSON object (never contains a raw newline)."""
    return _encoder.encode(reply)


def encode_push(push: Push) -> bytes:
    """Encode one push as the reply ``{"push": {...}}``."""
    return _encoder.encode(Reply(push=push))


def join_frames(messages: Iterable[bytes]) -> bytes:
    """Join encoded messages into one text frame."""
    return b"\n".join(messages)


class Codec(Protocol):
    """One wire format of the client protocol, as a session and the fan-out use it."""

    name: str
    binary: bool
    separator: bytes
    ping: bytes

    def split_frame(self, frame: bytes) -> list[bytes]:
        """The undecoded messages of one frame (raises Disconnect 3501 if it has none)."""
        ...

    def decode_command(self, data: bytes) -> Command:
        """One command (raises Disconnect 3501 when it is not a valid command)."""
        ...

    def encode_reply(self, reply: Reply) -> bytes: ...

    def encode_push(self, push: Push) -> bytes: ...


class JsonCodec:
    """JSON: text frames, messages joined by ``\\n``."""

    name = "json"
    binary = False
    separator = b"\n"
    ping = PING

    def split_frame(self, frame: bytes) -> list[bytes]:
        return decode_command_lines(frame)

    def decode_command(self, data: bytes) -> Command:
        return decode_command(data)

    def encode_reply(self, reply: Reply) -> bytes:
        return _encoder.encode(reply)

    def encode_push(self, push: Push) -> bytes:
        return _encoder.encode(Reply(push=push))


class ProtobufCodec:
    """Protobuf: binary frames of length-prefixed messages, concatenated."""

    name = "protobuf"
    binary = True
    separator = b""
    ping = protobuf.PING

    def split_frame(self, frame: bytes) -> list[bytes]:
        return protobuf.split_frame(frame)

    def decode_command(self, data: bytes) -> Command:
        return protobuf.decode_command(data)

    def encode_reply(self, reply: Reply) -> bytes:
        return protobuf.encode_reply(reply)

    def encode_push(self, push: Push) -> bytes:
        return protobuf.encode_push(push)


JSON: Codec = JsonCodec()
PROTOBUF: Codec = ProtobufCodec()
