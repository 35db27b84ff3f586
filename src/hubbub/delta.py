"""Delta compression of publications for subscribers that negotiated ``delta: "fossil"``.

PROTOCOL-EXTENSIONS.md §4. A subscription negotiates delta when its request asks for
``"fossil"`` and the namespace lists it in ``allowed_delta_types``. From then on, in JSON, its
every publication carries ``data`` as a JSON *string* holding the payload text (the full
payload) or the Fossil delta against the previous publication (``delta: true``); in Protobuf
``data`` is the raw payload or the raw delta.

A subscriber gets a delta only when it holds the base: it was sent the publication just before
in the same stream (offset - 1, same epoch), and the publication was flagged for delta by its
publisher (``delta`` of the API, or the namespace's ``delta_publish``). Anything else (the
first publication after subscribing without recovery, a stream without history, a delta not
smaller than the payload, a JSON delta that is not valid UTF-8) goes out as a full payload.

Encode once: the index keeps, per channel with delta subscribers, a :class:`DeltaChannel`
holding the last payload the stream carried; each publication becomes one :class:`DeltaPush`
that computes the delta and encodes each frame once per wire format, lazily, for all the
subscribers in step. Channels without delta subscribers hold nothing and pay nothing.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Protocol

import msgspec

from hubbub.engines.base import HistoryResult
from hubbub.protocol import fossil
from hubbub.protocol.codes import DisconnectCode, disconnect
from hubbub.protocol.messages import Publication, Push

if TYPE_CHECKING:
    from hubbub.protocol.codec import Codec
    from hubbub.subscription import Subscription

FOSSIL = "fossil"
"""The one delta type the protocol knows."""


def negotiate(requested: str, allowed: Sequence[str]) -> bool:
    """Whether a subscription that asked for delta type ``requested`` ("" = none) gets it.

    Raises:
        Disconnect: 3501 for a type that does not exist (anything but ``"fossil"``).
    """
    if not requested:
        return False
    if requested != FOSSIL:
        raise disconnect(DisconnectCode.BAD_REQUEST, "bad request: unknown delta type")
    return requested in allowed


_json_string = msgspec.json.Encoder().encode


def _as_string(data: bytes) -> msgspec.Raw | None:
    """``data`` as the JSON string the JSON wire form carries, None if not valid UTF-8."""
    try:
        return msgspec.Raw(_json_string(data.decode()))
    except UnicodeDecodeError:
        return None


def _full(pub: Publication, payload: bytes, binary: bool) -> Publication:
    """``pub`` as a full payload in the delta wire form of a binary or JSON format."""
    if binary:
        return msgspec.structs.replace(pub, delta=False)
    data = _as_string(payload)
    if data is None:  # JSON payloads are valid UTF-8; anything else keeps its characters
        data = msgspec.Raw(_json_string(payload.decode(errors="replace")))
    return msgspec.structs.replace(pub, data=data, delta=False)


def _delta(pub: Publication, delta: bytes, binary: bool) -> Publication | None:
    """``pub`` carrying ``delta``, or None when the JSON form cannot carry it (4.4's note:
    the client reads the string back as UTF-8, so split characters would not survive)."""
    data = msgspec.Raw(delta) if binary else _as_string(delta)
    if data is None:
        return None
    return msgspec.structs.replace(pub, data=data, delta=True)


def _smaller_delta(base: bytes, payload: bytes) -> bytes | None:
    delta = fossil.create(base, payload)
    return delta if len(delta) < len(payload) else None


def without_delta_flags(result: HistoryResult) -> HistoryResult:
    """``result`` without the publishers' delta flags, which stay with the publications in
    the stream (history and recovery never send a publication as it was flagged)."""
    if not any(pub.delta for pub in result.publications):
        return result
    pubs = [msgspec.structs.replace(pub, delta=False) for pub in result.publications]
    return HistoryResult(pubs, result.position)


def recovered(pubs: list[Publication], binary: bool) -> list[Publication]:
    """Recovered publications for a delta subscriber: the first full, each next one a delta
    against the one before it when that is smaller."""
    out: list[Publication] = []
    base: bytes | None = None
    for pub in pubs:
        payload = bytes(pub.data)
        delta = _smaller_delta(base, payload) if base is not None else None
        item = _delta(pub, delta, binary) if delta is not None else None
        out.append(item or _full(pub, payload, binary))
        base = payload
    return out


class DeltaSubscriber(Protocol):
    """A subscriber that negotiated delta: sessions."""

    client_id: str

    def deliver_delta(self, channel: str, pub: Publication, push: DeltaPush, epoch: str) -> None:
        """Send ``push`` (full or delta, as this subscriber's position allows)."""
        ...


class DeltaPush:
    """One publication of a channel, as its delta subscribers receive it.

    Frames are made on first use and shared: the delta is computed once, and each frame
    encoded once per wire format and kind (full or delta).

    Args:
        channel: the channel.
        pub: the publication (its ``delta`` flag cleared).
        epoch: its stream's epoch.
        base: the payload of the publication just before it in the stream when that is known
            and the publication is flagged for delta; None otherwise (full only).
    """

    __slots__ = ("_delta", "_deltas", "_fulls", "base", "channel", "epoch", "pub")

    def __init__(self, channel: str, pub: Publication, epoch: str, base: bytes | None) -> None:
        self.channel = channel
        self.pub = pub
        self.epoch = epoch
        self.base = base
        self._delta: bytes | None = None
        self._fulls: dict[Codec, bytes] = {}
        # None: no delta worth sending in that format.
        self._deltas: dict[Codec, bytes | None] = {}

    def frame(self, codec: Codec, delta: bool) -> bytes:
        """The push for ``codec``: the delta when ``delta`` (the subscriber holds the base)
        and one is worth sending, else the full payload."""
        if delta and self.base is not None:
            deltas = self._deltas
            if codec not in deltas:
                deltas[codec] = self._encode_delta(codec, self.base)
            data = deltas[codec]
            if data is not None:
                return data
        full = self._fulls.get(codec)
        if full is None:
            pub = _full(self.pub, bytes(self.pub.data), codec.binary)
            full = self._fulls[codec] = codec.encode_push(Push(channel=self.channel, pub=pub))
        return full

    def _encode_delta(self, codec: Codec, base: bytes) -> bytes | None:
        if self._delta is None:  # once for every format: b"" when not worth it
            self._delta = _smaller_delta(base, bytes(self.pub.data)) or b""
        if not self._delta:
            return None
        pub = _delta(self.pub, self._delta, codec.binary)
        return None if pub is None else codec.encode_push(Push(channel=self.channel, pub=pub))

    def frame_for(self, sub: Subscription, codec: Codec) -> bytes:
        """The frame for ``sub`` (a delta if it holds the base), moving its position on."""
        offset = self.pub.offset
        in_step = sub.delta_ready and offset == sub.offset + 1 and self.epoch == sub.epoch
        data = self.frame(codec, in_step)
        sub.offset, sub.epoch, sub.delta_ready = offset, self.epoch, True
        return data


class DeltaChannel:
    """A channel's local delta subscribers, and the last payload its stream carried (the
    base of the next publication's delta), kept only while there are such subscribers."""

    __slots__ = ("epoch", "offset", "payload", "subscribers")

    def __init__(self) -> None:
        self.subscribers: dict[str, DeltaSubscriber] = {}
        self.offset = 0
        self.epoch = ""
        self.payload: bytes | None = None

    def seed(self, offset: int, epoch: str, payload: bytes) -> None:
        """A subscriber recovered up to the publication at ``offset``/``epoch`` (``payload``):
        the base of the next delta, unless the stream already went further here."""
        if self.payload is None or (epoch == self.epoch and offset > self.offset):
            self.offset, self.epoch, self.payload = offset, epoch, payload

    def prepare(self, channel: str, pub: Publication, epoch: str, flagged: bool) -> DeltaPush:
        """The :class:`DeltaPush` of ``pub`` (offset ``pub.offset`` in ``epoch``; ``flagged``
        for delta by its publisher), and ``pub`` becomes the next one's base."""
        offset = pub.offset
        base = None
        if flagged and offset and offset == self.offset + 1 and epoch == self.epoch:
            base = self.payload
        if offset:
            self.offset, self.epoch, self.payload = offset, epoch, bytes(pub.data)
        else:  # a stream without positions: no base can be trusted
            self.payload = None
        return DeltaPush(channel, pub, epoch, base)
