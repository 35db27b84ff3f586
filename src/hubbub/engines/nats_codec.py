"""How the NATS engine names its subjects and packs what it sends. Needs no NATS client.

Subjects (``<prefix>`` is ``[nats] prefix``):

* ``<prefix>.control``: the control channel between nodes;
* ``<prefix>.c.<channel>``: a channel whose name is a valid single NATS token (printable ASCII
  without space, ``.``, ``*`` or ``>``), as is;
* ``<prefix>.x.h<hex>``: any other channel, as the hex of its UTF-8 bytes.

A message is one tag byte and a MessagePack array: ``p`` a publication (origin node, offset,
epoch, the publication packed as the Redis engine packs it, and the history options the
receiver needs to keep it in a memory stream), ``j``/``l`` a join or leave (origin node, the
packed client info).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import msgspec

from hubbub.engines.base import PublishOptions, StreamPosition
from hubbub.engines.redis_codec import (
    pack_info,
    pack_publication,
    unpack_info,
    unpack_publication,
)
from hubbub.protocol.messages import ClientInfo, Publication

_TOKEN = re.compile(r"^[!-~]+$")


def channel_subject(prefix: str, channel: str) -> str:
    """The subject that carries ``channel``'s publications, joins and leaves."""
    if channel and _TOKEN.match(channel) and not any(c in channel for c in ".*>"):
        return f"{prefix}.c.{channel}"
    return f"{prefix}.x.h{channel.encode().hex()}"  # "h": never an empty token


def subject_channel(prefix: str, subject: str) -> str | None:
    """The channel of a subject made by :func:`channel_subject`; None for any other."""
    head = f"{prefix}."
    if not subject.startswith(head):
        return None
    kind, _, name = subject[len(head) :].partition(".")
    if kind == "c" and name:
        return name
    if kind == "x" and name.startswith("h"):
        try:
            return bytes.fromhex(name[1:]).decode()
        except ValueError:  # also UnicodeDecodeError
            return None
    return None


class _Pub(msgspec.Struct, array_like=True):
    origin: str
    offset: int
    epoch: str
    packed: bytes
    history_size: int = 0
    history_ttl: float = 0.0
    history_meta_ttl: float = 0.0


class _Info(msgspec.Struct, array_like=True):
    origin: str
    packed: bytes


_DEFAULTS = PublishOptions()
_NO_POSITION = StreamPosition(0, "")
_encoder = msgspec.msgpack.Encoder()
_pub_decoder = msgspec.msgpack.Decoder(_Pub)
_info_decoder = msgspec.msgpack.Decoder(_Info)


def pack_pub(
    origin: str, pub: Publication, position: StreamPosition, opts: PublishOptions
) -> bytes:
    """A publication at ``position`` as sent on its channel's subject."""
    body = _Pub(
        origin,
        position.offset,
        position.epoch,
        pack_publication(pub),
        opts.history_size,
        opts.history_ttl,
        opts.history_meta_ttl,
    )
    return b"p" + _encoder.encode(body)


def pack_join_leave(kind: bytes, origin: str, info: ClientInfo) -> bytes:
    """A join (``kind`` ``b"j"``) or leave (``b"l"``) as sent on its channel's subject."""
    return kind + _encoder.encode(_Info(origin, pack_info(info)))


@dataclass(frozen=True, slots=True)
class Received:
    """A decoded message of a channel subject.

    Attributes:
        kind: ``b"p"``, ``b"j"`` or ``b"l"``.
        origin: the node that sent it.
        pub: the publication (``kind`` ``p``), its offset set.
        position: its stream position (``kind`` ``p``).
        opts: the history options it was published with (``kind`` ``p``).
        info: the client that joined or left (``kind`` ``j``/``l``).
    """

    kind: bytes
    origin: str
    pub: Publication | None = None
    position: StreamPosition = _NO_POSITION
    opts: PublishOptions = _DEFAULTS
    info: ClientInfo | None = None


def unpack(data: bytes) -> Received:
    """Decode a message made by :func:`pack_pub` or :func:`pack_join_leave`.

    Raises:
        ValueError: not such a message (``msgspec.DecodeError`` is a ``ValueError``).
    """
    kind, body = data[:1], data[1:]
    if kind == b"p":
        p = _pub_decoder.decode(body)
        opts = PublishOptions(
            history_size=p.history_size,
            history_ttl=p.history_ttl,
            history_meta_ttl=p.history_meta_ttl or _DEFAULTS.history_meta_ttl,
        )
        pub = unpack_publication(p.packed, p.offset)
        return Received(kind, p.origin, pub, StreamPosition(p.offset, p.epoch), opts)
    if kind in (b"j", b"l"):
        i = _info_decoder.decode(body)
        return Received(kind, i.origin, info=unpack_info(i.packed))
    raise ValueError(f"unknown message kind {kind!r}")
