"""The uni transports' pure parts: bare pushes, the connect-failure mapping, the request."""

from __future__ import annotations

import pytest

from hubbub.protocol.codes import Disconnect, DisconnectCode, ErrorCode, error
from hubbub.protocol.messages import ConnectResult, Push, Reply
from hubbub.transports import uni


def test_pushes_are_bare_and_the_connect_result_is_a_push() -> None:
    codec = uni.UNI_JSON
    assert codec.encode_push(Push(channel="a", message=None)) == b'{"channel":"a"}'
    reply = Reply(connect=ConnectResult(client="c", version="v", session="s"))
    assert codec.encode_reply(reply) == b'{"connect":{"client":"c","version":"v","session":"s"}}'
    with pytest.raises(Disconnect):
        codec.split_frame(b"{}")


@pytest.mark.parametrize(
    ("code", "expected"),
    [
        (ErrorCode.TOKEN_EXPIRED, 3005),
        (ErrorCode.EXPIRED, 3005),
        (ErrorCode.TOO_MANY_REQUESTS, 3013),
        (ErrorCode.PERMISSION_DENIED, 3507),
        (ErrorCode.UNKNOWN_CHANNEL, 3004),
    ],
)
def test_connect_errors_map_to_disconnects(code: ErrorCode, expected: int) -> None:
    assert uni.connect_failure(error(code)).code == expected


def test_a_disconnect_is_kept_and_3000_pushes_nothing() -> None:
    kept = Disconnect(int(DisconnectCode.INVALID_TOKEN), "invalid token")
    assert uni.connect_failure(kept) is kept
    assert uni.disconnect_push(3000, "connection closed") is None
    assert (
        uni.disconnect_push(3001, "shutdown") == b'{"disconnect":{"code":3001,"reason":"shutdown"}}'
    )


@pytest.mark.parametrize("bad", [b"", b"{", b"[]", b'{"token": 1}', '{"subs": 3}'])
def test_bad_connect_requests(bad: bytes | str) -> None:
    with pytest.raises(uni.BadConnectRequest):
        uni.decode_connect_request(bad)
