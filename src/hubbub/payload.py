"""Payloads: application data as the bytes a publication, an info or a reply carries.

One place decides what counts as valid application data, for the node's Python API, the
sessions and the HTTP API alike.
"""

from __future__ import annotations

import msgspec

from hubbub.protocol.codes import ErrorCode, error
from hubbub.protocol.messages import EMPTY, raw_from_json


def to_payload(data: object, *, binary: bool = False) -> msgspec.Raw:
    """Turn application data into a payload.

    ``bytes``, ``bytearray`` and ``msgspec.Raw`` are taken as JSON text (validated, raw
    newlines dropped), or verbatim when ``binary`` (channels whose namespace publishes binary
    data); anything else is encoded as JSON.

    Raises:
        ProtocolError: 107 when bytes are not valid JSON or the value cannot be encoded.
    """
    if isinstance(data, bytes | bytearray | msgspec.Raw):
        if not len(data):
            return EMPTY
        if binary:
            return msgspec.Raw(bytes(data))
    if isinstance(data, msgspec.Raw):
        data = bytes(data)
    if isinstance(data, bytes | bytearray):
        try:
            msgspec.json.decode(data)
        except (msgspec.DecodeError, RecursionError, UnicodeDecodeError):
            raise error(ErrorCode.BAD_REQUEST, "bad request: data is not valid JSON") from None
        return raw_from_json(bytes(data))
    try:
        return msgspec.Raw(msgspec.json.encode(data))
    except (TypeError, msgspec.EncodeError) as exc:
        raise error(ErrorCode.BAD_REQUEST, f"bad request: data is not JSON: {exc}") from None
