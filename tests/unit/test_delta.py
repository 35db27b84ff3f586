"""The delta fan-out's decisions (hubbub.delta): negotiation, full vs delta, encode once."""

from __future__ import annotations

import json

import msgspec
import pytest

from hubbub.config import ChannelOptions
from hubbub.delta import DeltaChannel, negotiate, recovered
from hubbub.engines.redis_codec import pack_publication, unpack_publication
from hubbub.protocol import fossil
from hubbub.protocol.codec import JSON, PROTOBUF
from hubbub.protocol.codes import Disconnect
from hubbub.protocol.messages import ClientInfo, Publication
from hubbub.subscription import Subscription

PAD = "p" * 300


def pub(n: int, offset: int) -> Publication:
    return Publication(data=msgspec.Raw(json.dumps({"n": n, "pad": PAD}).encode()), offset=offset)


def sub() -> Subscription:
    return Subscription("ch", ChannelOptions(), ClientInfo(user="u", client="c"), delta=True)


def test_negotiation() -> None:
    assert negotiate("fossil", ["fossil"]) is True
    assert negotiate("fossil", []) is False
    assert negotiate("", ["fossil"]) is False
    with pytest.raises(Disconnect) as exc:
        negotiate("zstd", ["fossil"])
    assert exc.value.code == 3501


def test_one_delta_and_one_frame_per_format_for_every_subscriber_in_step() -> None:
    channel = DeltaChannel()
    a, b = sub(), sub()
    first = channel.prepare("ch", pub(1, 1), "e", True)
    assert first.frame_for(a, JSON) is first.frame_for(b, JSON)  # full, shared
    second = channel.prepare("ch", pub(2, 2), "e", True)
    frame = second.frame_for(a, JSON)
    assert second.frame_for(b, JSON) is frame
    msg = json.loads(frame)["push"]["pub"]
    assert msg["delta"] is True
    base = json.loads(first.frame_for(sub(), JSON))["push"]["pub"]["data"].encode()
    assert json.loads(fossil.apply(base, msg["data"].encode())) == {"n": 2, "pad": PAD}
    binary = msgspec.Raw(second.frame(PROTOBUF, True))
    assert binary and bytes(binary) != frame


def test_full_when_the_subscriber_lacks_the_base_or_the_publisher_did_not_flag_it() -> None:
    channel = DeltaChannel()
    a = sub()
    channel.prepare("ch", pub(1, 1), "e", True).frame_for(a, JSON)
    late = sub()  # joined after offset 1
    second = channel.prepare("ch", pub(2, 2), "e", True)
    assert "delta" not in json.loads(second.frame_for(late, JSON))["push"]["pub"]
    assert json.loads(second.frame_for(a, JSON))["push"]["pub"]["delta"] is True
    unflagged = channel.prepare("ch", pub(3, 3), "e", False)
    assert "delta" not in json.loads(unflagged.frame_for(a, JSON))["push"]["pub"]
    other_epoch = channel.prepare("ch", pub(4, 4), "f", True)
    assert "delta" not in json.loads(other_epoch.frame_for(a, JSON))["push"]["pub"]


def test_full_when_the_delta_is_not_smaller() -> None:
    channel = DeltaChannel()
    a = sub()
    short = [Publication(data=msgspec.Raw(b'"abcdefghijklmnopqrstu"'), offset=1)]
    short.append(Publication(data=msgspec.Raw(b'"zyxwvutsrqponmlkjihgf"'), offset=2))
    channel.prepare("ch", short[0], "e", True).frame_for(a, JSON)
    frame = channel.prepare("ch", short[1], "e", True).frame_for(a, JSON)
    assert json.loads(frame)["push"]["pub"] == {"data": '"zyxwvutsrqponmlkjihgf"', "offset": 2}


def test_recovered_list_is_full_then_deltas() -> None:
    pubs = recovered([pub(n, n) for n in range(1, 4)], binary=False)
    assert [p.delta for p in pubs] == [False, True, True]
    assert isinstance(msgspec.json.decode(pubs[0].data), str)
    raw = recovered([pub(n, n) for n in range(1, 3)], binary=True)
    assert bytes(raw[0].data) == bytes(pub(1, 1).data)
    assert fossil.apply(bytes(raw[0].data), bytes(raw[1].data)) == bytes(pub(2, 2).data)


def test_the_publishers_delta_flag_travels_through_redis_and_old_entries_read_without_it() -> None:
    flagged = pub(1, 0)
    flagged = msgspec.structs.replace(flagged, delta=True)
    assert unpack_publication(pack_publication(flagged), 7).delta is True
    old = msgspec.msgpack.encode([b'{"n":1}', None, None, 0])  # an entry of an older version
    assert unpack_publication(old, 3) == Publication(data=msgspec.Raw(b'{"n":1}'), offset=3)
