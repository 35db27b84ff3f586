"""The native transport's opening handshake: parsing uvicorn's request head, the checks of
RFC 6455 4.2.1, and the responses."""

from __future__ import annotations

import pytest

from hubbub.transports.handshake import (
    HandshakeError,
    accept_key,
    check_upgrade,
    offered_subprotocols,
    parse_head,
    refusal,
    switching,
)

KEY = "dGhlIHNhbXBsZSBub25jZQ=="  # RFC 6455's example


def head(*headers: str, line: str = "GET /connection/websocket?format=json HTTP/1.1") -> bytes:
    base = ["host: 127.0.0.1:8000", "connection: Upgrade", "upgrade: websocket"]
    return ("\r\n".join([line, *base, *headers]) + "\r\n\r\n").encode("latin-1")


def test_the_accept_key_of_the_rfc_example() -> None:
    assert accept_key(KEY) == "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="


def test_a_valid_request() -> None:
    request = parse_head(
        head(
            f"sec-websocket-key: {KEY}",
            "sec-websocket-version: 13",
            "sec-websocket-protocol: centrifuge-json, centrifuge-protobuf",
            "sec-websocket-protocol: other",
            "x-forwarded-for: 10.0.0.1",
            "x-forwarded-for: 10.0.0.2",
        )
    )
    assert (request.method, request.path, request.query) == (
        "GET",
        "/connection/websocket",
        "format=json",
    )
    assert request.header("x-forwarded-for") == "10.0.0.1, 10.0.0.2"
    assert request.header("missing") == ""
    assert check_upgrade(request) == accept_key(KEY)
    assert offered_subprotocols(request) == ["centrifuge-json", "centrifuge-protobuf", "other"]


@pytest.mark.parametrize(
    ("headers", "line", "status", "words"),
    [
        (("sec-websocket-version: 13",), None, 400, "Sec-WebSocket-Key"),
        ((f"sec-websocket-key: {KEY}", f"sec-websocket-key: {KEY}"), None, 400, "exactly one"),
        (("sec-websocket-key: not base64!", "sec-websocket-version: 13"), None, 400, "16 bytes"),
        (("sec-websocket-key: c2hvcnQ=", "sec-websocket-version: 13"), None, 400, "16 bytes"),
        ((f"sec-websocket-key: {KEY}",), None, 400, "Sec-WebSocket-Version"),
        ((f"sec-websocket-key: {KEY}", "sec-websocket-version: 8"), None, 426, "only 13"),
        (
            (f"sec-websocket-key: {KEY}", "sec-websocket-version: 13"),
            "POST /connection/websocket HTTP/1.1",
            400,
            "POST",
        ),
    ],
)
def test_invalid_requests(
    headers: tuple[str, ...], line: str | None, status: int, words: str
) -> None:
    request = parse_head(head(*headers, line=line or "GET / HTTP/1.1"))
    with pytest.raises(HandshakeError) as refused:
        check_upgrade(request)
    assert refused.value.status == status
    assert words in refused.value.reason
    response = refused.value.response()
    assert response.startswith(f"HTTP/1.1 {status} ".encode())
    if status == 426:
        assert b"\r\nSec-WebSocket-Version: 13\r\n" in response


@pytest.mark.parametrize(
    "bad",
    [b"GET /\r\n\r\n", b"GET / HTTP/1.0\r\nhost: x\r\n\r\n", b"GET / HTTP/1.1\r\nno colon\r\n\r\n"],
)
def test_heads_that_are_not_http_1_1_requests(bad: bytes) -> None:
    with pytest.raises(HandshakeError) as refused:
        parse_head(bad)
    assert refused.value.status == 400


def test_responses() -> None:
    assert switching("abc=", None) == (
        b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        b"Sec-WebSocket-Accept: abc=\r\n\r\n"
    )
    assert b"\r\nSec-WebSocket-Protocol: centrifuge-protobuf\r\n\r\n" in switching(
        "abc=", "centrifuge-protobuf"
    )
    response = refusal(503, "shutting down")
    head_part, body = response.split(b"\r\n\r\n")
    assert head_part.startswith(b"HTTP/1.1 503 Service Unavailable\r\n")
    assert b"Content-Length: 14" in head_part and body == b"shutting down\n"
