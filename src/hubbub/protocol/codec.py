"""JSON codec of the client protocol: pure functions from bytes to messages and back (no I/O).

A text frame holds one or more commands separated by a single ``\\n``; at most one trailing
``\\n`` is tolerated. The server writes one or more replies per frame, joined the same way.
"""

from __future__ import annotations

from collections.abc import Iterable

import msgspec

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
        except msgspec.DecodeError as exc:
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
    except msgspec.DecodeError as exc:
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
