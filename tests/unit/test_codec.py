"""The JSON codec: frames in, commands out; messages in, exact bytes out."""

from __future__ import annotations

import pytest

from hubbub.protocol import codec
from hubbub.protocol.codes import Disconnect, DisconnectCode, ErrorCode, error, should_reconnect
from hubbub.protocol.messages import (
    EMPTY,
    ClientInfo,
    ConnectResult,
    EmptyResult,
    Error,
    HistoryResult,
    JoinLeave,
    PresenceResult,
    PresenceStatsResult,
    Publication,
    Push,
    Reply,
    SubscribeResult,
    UnsubscribePush,
    raw,
    raw_from_json,
)


def test_several_commands_per_frame_in_order() -> None:
    frame = (
        b'{"connect":{"token":"t","name":"js"},"id":1}\n'
        b'{"subscribe":{"channel":"news","flag":1},"id":2}'
    )
    first, second = codec.decode_commands(frame)
    assert first.id == 1 and first.connect is not None and first.connect.token == "t"
    assert second.id == 2 and second.subscribe is not None
    assert second.subscribe.channel == "news" and second.subscribe.flag == 1


def test_python_client_spacing_and_trailing_newline() -> None:
    (cmd,) = codec.decode_commands(b'{"id": 1, "connect": {"data": {"x": 1}, "name": "python"}}\n')
    assert cmd.connect is not None
    assert bytes(cmd.connect.data) == b'{"x": 1}'


def test_payload_kept_verbatim() -> None:
    (cmd,) = codec.decode_commands(b'{"id":3,"publish":{"channel":"c","data":[1, "a\\nb", {}]}}')
    assert cmd.publish is not None
    assert bytes(cmd.publish.data) == b'[1, "a\\nb", {}]'


def test_absent_payload_is_the_empty_constant() -> None:
    (cmd,) = codec.decode_commands(b'{"id":3,"publish":{"channel":"c"}}')
    assert cmd.publish is not None and cmd.publish.data is EMPTY


@pytest.mark.parametrize(
    "frame",
    [
        b"",
        b"\n",
        b"not json",
        b'{"id":1}\n\n{"id":2}',
        b'{"id":"one"}',
        b'{"id":-1}',
        b'{"id":1,"subscribe":{"channel":5}}',
        b"[1,2]",
        b'{"id":1,"connect":{"token":"t"}',
    ],
)
def test_malformed_frames_are_bad_requests(frame: bytes) -> None:
    with pytest.raises(Disconnect) as exc_info:
        codec.decode_commands(frame)
    assert exc_info.value.code == DisconnectCode.BAD_REQUEST


def test_unknown_fields_are_ignored() -> None:
    (cmd,) = codec.decode_commands(b'{"id":1,"connect":{"future":true},"extra":1}')
    assert cmd.connect is not None


def test_omission_rules() -> None:
    enc = codec.encode_reply
    assert enc(Reply(id=2, subscribe=SubscribeResult())) == b'{"id":2,"subscribe":{}}'
    assert enc(Reply(id=3, publish=EmptyResult())) == b'{"id":3,"publish":{}}'
    assert enc(Reply()) == b"{}"
    assert enc(Reply(id=4, presence=PresenceResult(presence={}))) == (
        b'{"id":4,"presence":{"presence":{}}}'
    )
    assert enc(Reply(id=5, presence_stats=PresenceStatsResult(0, 0))) == (
        b'{"id":5,"presence_stats":{"num_clients":0,"num_users":0}}'
    )
    assert enc(Reply(id=6, history=HistoryResult(publications=[], epoch="", offset=0))) == (
        b'{"id":6,"history":{"publications":[],"epoch":"","offset":0}}'
    )
    info = ClientInfo(user="", client="c1")
    assert enc(Reply(push=Push(channel="a", join=JoinLeave(info=info)))) == (
        b'{"push":{"channel":"a","join":{"info":{"user":"","client":"c1"}}}}'
    )


def test_connect_result_and_error() -> None:
    result = ConnectResult(client="c", version="1", expires=True, ttl=10, ping=25, pong=True)
    assert codec.encode_reply(Reply(id=1, connect=result)) == (
        b'{"id":1,"connect":{"client":"c","version":"1","expires":true,"ttl":10,'
        b'"ping":25,"pong":true}}'
    )
    err = error(ErrorCode.INTERNAL)
    encoded = codec.encode_reply(Reply(id=9, error=Error(err.code, err.message, err.temporary)))
    assert encoded == (
        b'{"id":9,"error":{"code":100,"message":"internal server error","temporary":true}}'
    )


def test_publication_push() -> None:
    pub = Publication(data=raw({"text": "hi"}), offset=16, tags={"k": "v"})
    assert codec.encode_push(Push(channel="chat:lobby", pub=pub)) == (
        b'{"push":{"channel":"chat:lobby","pub":{"data":{"text":"hi"},"offset":16,'
        b'"tags":{"k":"v"}}}}'
    )
    unsub = Push(channel="x", unsubscribe=UnsubscribePush(code=2000, reason="server unsubscribe"))
    assert b'"code":2000,"reason":"server unsubscribe"' in codec.encode_push(unsub)


def test_raw_from_json_drops_raw_newlines() -> None:
    payload = raw_from_json(b'{\n  "a": "x\\ny"\n}')
    assert bytes(payload) == b'{  "a": "x\\ny"}'
    assert raw_from_json(b"") is EMPTY


def test_reconnect_ranges() -> None:
    assert should_reconnect(1006)
    assert should_reconnect(3001) and should_reconnect(3012) and should_reconnect(4000)
    assert not should_reconnect(3500) and not should_reconnect(3501)
    assert not should_reconnect(4500) and should_reconnect(5000)
