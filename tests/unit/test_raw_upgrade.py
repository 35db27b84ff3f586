"""Which request heads take the shorter way to the native transport, and which go to httptools."""

from __future__ import annotations

import pytest

from hubbub.transports.raw_upgrade import HELD, PASS, TAKE, address, judge, peer_address

PATH = b"/connection/websocket"

HEAD = (
    b"GET /connection/websocket?cf_protocol=json HTTP/1.1\r\n"
    b"Host: 127.0.0.1:8000\r\n"
    b"Upgrade: websocket\r\n"
    b"Connection: keep-alive, Upgrade\r\n"
    b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
    b"Sec-WebSocket-Version: 13\r\n"
    b"Sec-WebSocket-Protocol: centrifuge-json\r\n"
    b"\r\n"
)


def test_an_upgrade_to_the_path_is_taken_whole_and_held_while_it_arrives() -> None:
    assert judge(HEAD, PATH) == TAKE
    assert judge(HEAD + b"\x81\x85masked", PATH) == TAKE  # a first frame right after the head
    assert judge(HEAD.replace(b"?cf_protocol=json", b""), PATH) == TAKE
    for size in range(len(HEAD)):
        assert judge(HEAD[:size], PATH) == HELD, HEAD[:size]


@pytest.mark.parametrize(
    ("old", "new"),
    [
        (b"GET /connection/websocket?", b"GET /connection/websocketx?"),  # another path
        (b"GET /connection/websocket?", b"GET /other?"),
        (b"GET ", b"POST "),
        (b"HTTP/1.1\r\nHost", b"HTTP/1.0\r\nHost"),
        (b"Upgrade: websocket", b"Upgrade: h2c"),
        (b"Upgrade: websocket", b"Upgrade: websocket "),  # uvicorn compares it as it is
        (b"Connection: keep-alive, Upgrade", b"Connection: keep-alive"),
        (b"Upgrade: websocket\r\n", b""),
        (b"Host: 127", b"Host : 127"),  # space before the colon
        (b"Host: 127.0.0.1:8000\r\n", b"Host: 127.0.0.1\r\n 8000\r\n"),  # obsolete folding
        (b"Host: 127.0.0.1:8000\r\n", b"Host: caf\xe9\r\n"),  # not plain ASCII
        (b"Host: 127.0.0.1:8000\r\n", b"Host: a\x00b\r\n"),
        (b"Host: 127.0.0.1:8000\r\n", b"Content-Length: 0\r\n"),
        (b"Host: 127.0.0.1:8000\r\n", b"Transfer-Encoding: chunked\r\n"),
        (b"Host: 127.0.0.1:8000\r\n", b"Host: 127.0.0.1:8000\n"),  # a bare LF
        (b"Host: 127.0.0.1:8000\r\n", b"no colon\r\n"),
    ],
)
def test_anything_else_is_passed_on(old: bytes, new: bytes) -> None:
    assert judge(HEAD.replace(old, new), PATH) == PASS


def test_a_malformed_line_is_passed_on_as_soon_as_it_is_there() -> None:
    assert judge(b"GET /connection/websocket HTTP/1.1\r\nHost: a\r\nbad line\r\n", PATH) == PASS
    assert judge(b"GET /connection/websocket HTTP/1.1\r\nHost: a\x01", PATH) == PASS
    assert judge(b"GET /connection/websocket\x00", PATH) == PASS
    assert judge(b"GET /conn", PATH) == HELD
    assert judge(b"GET /other", PATH) == PASS
    assert judge(b"\x16\x03\x01", PATH) == PASS


def test_addresses_are_shaped_as_uvicorn_shapes_them() -> None:
    assert address(("127.0.0.1", 8000)) == ("127.0.0.1", 8000)
    assert address(("::1", 8000, 0, 0)) == ("::1", 8000)
    assert address("/run/hubbub.sock") == ("/run/hubbub.sock", None)
    assert address(None) is None
    assert peer_address(("::1", 5, 0, 0)) == ("::1", 5)
    assert peer_address("") is None
    assert peer_address(None) is None
