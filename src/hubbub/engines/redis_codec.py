"""How the Redis engine packs what it stores and sends: publications and client infos.

Both travel as MessagePack arrays; payloads are kept as bytes (JSON text or binary) and come
back as :class:`msgspec.Raw`, so they are relayed without being parsed. This module needs no
Redis client.
"""

from __future__ import annotations

import msgspec

from hubbub.protocol.messages import EMPTY, ClientInfo, Publication


class _Info(msgspec.Struct, array_like=True):
    user: str
    client: str
    conn_info: bytes = b""
    chan_info: bytes = b""


class _Stored(msgspec.Struct, array_like=True):
    """A publication as kept in Redis: payloads as bytes (JSON text or binary)."""

    data: bytes
    info: _Info | None = None
    tags: dict[str, str] | None = None
    time: int = 0
    delta: bool = False  # the publisher allowed a delta (absent in entries of older versions)


_encoder = msgspec.msgpack.Encoder()
_stored_decoder = msgspec.msgpack.Decoder(_Stored)
_info_decoder = msgspec.msgpack.Decoder(_Info)


def _raw(data: bytes) -> msgspec.Raw:
    return msgspec.Raw(data) if data else EMPTY


def _to_info(info: ClientInfo) -> _Info:
    return _Info(info.user, info.client, bytes(info.conn_info), bytes(info.chan_info))


def _from_info(info: _Info) -> ClientInfo:
    return ClientInfo(
        user=info.user,
        client=info.client,
        conn_info=_raw(info.conn_info),
        chan_info=_raw(info.chan_info),
    )


def pack_info(info: ClientInfo) -> bytes:
    """``info`` as stored in a presence hash and sent with a join or leave."""
    return _encoder.encode(_to_info(info))


def unpack_info(data: bytes) -> ClientInfo:
    """The :class:`ClientInfo` packed by :func:`pack_info`.

    Raises:
        msgspec.DecodeError: ``data`` is not a packed client info.
    """
    return _from_info(_info_decoder.decode(data))


def pack_publication(pub: Publication) -> bytes:
    """``pub`` as stored in a stream entry and sent live; its offset travels beside it."""
    info = _to_info(pub.info) if pub.info is not None else None
    return _encoder.encode(_Stored(bytes(pub.data), info, pub.tags, pub.time, pub.delta))


def unpack_publication(data: bytes, offset: int) -> Publication:
    """The publication packed by :func:`pack_publication`, at ``offset`` in its stream.

    Raises:
        msgspec.DecodeError: ``data`` is not a packed publication.
    """
    stored = _stored_decoder.decode(data)
    return Publication(
        data=_raw(stored.data),
        info=_from_info(stored.info) if stored.info is not None else None,
        offset=offset,
        tags=stored.tags,
        time=stored.time,
        delta=stored.delta,
    )
