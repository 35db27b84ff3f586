"""The admission policy, without sockets: who may connect, in which format, and the refusals."""

from __future__ import annotations

import logging
from collections import Counter
from typing import Any

import pytest

from hubbub.config import Settings
from hubbub.protocol.codec import JSON, PROTOBUF
from hubbub.transports.admission import (
    JSON_SUBPROTOCOL,
    PROTOBUF_SUBPROTOCOL,
    Admission,
    Admitted,
    Knock,
    Refusal,
    origin_allowed,
)


def policy(origins: list[str] | None = None, **limits: Any) -> Admission:
    return Admission(
        Settings.model_validate({"limits": limits, "client": {"allowed_origins": origins or []}})
    )


def admitted(answer: Admitted | Refusal) -> Admitted:
    assert isinstance(answer, Admitted), answer
    return answer


def refused(answer: Admitted | Refusal) -> Refusal:
    assert isinstance(answer, Refusal), answer
    return answer


def test_a_plain_request_is_admitted_as_json_and_counted() -> None:
    admission = policy()
    ticket = admitted(admission.admit(Knock(peer="10.0.0.1")))
    assert ticket.codec is JSON and ticket.subprotocol is None and not ticket.frame_pings
    assert ticket.address == "10.0.0.1"
    assert admission.connections == 1 and admission.by_address == {"10.0.0.1": 1}


def test_release_gives_the_place_back_once() -> None:
    admission = policy()
    ticket = admitted(admission.admit(Knock(peer="10.0.0.1")))
    ticket.release()
    ticket.release()
    assert admission.connections == 0 and not admission.by_address


def test_draining_refuses_with_503_before_anything_else() -> None:
    admission = policy(max_connections=1)
    admitted(admission.admit(Knock(peer="10.0.0.1")))
    refusal = refused(admission.admit(Knock(peer="10.0.0.1", origin="https://evil"), draining=True))
    assert (refusal.status, refusal.reason, refusal.counter, refusal.note) == (
        503,
        "shutting down",
        "",
        "",
    )
    assert admission.connections == 1


def test_the_node_cap_refuses_with_503() -> None:
    admission = policy(max_connections=2, connections_per_ip=0)
    for n in range(2):
        admitted(admission.admit(Knock(peer=f"10.0.0.{n}")))
    refusal = refused(admission.admit(Knock(peer="10.0.0.9")))
    assert (refusal.status, refusal.reason, refusal.counter) == (
        503,
        "connection limit",
        "handshake.connection_limit",
    )
    assert admission.connections == 2


def test_the_address_cap_counts_each_address_apart() -> None:
    admission = policy(connections_per_ip=1)
    first = admitted(admission.admit(Knock(peer="10.0.0.1")))
    assert refused(admission.admit(Knock(peer="10.0.0.1"))).status == 503
    admitted(admission.admit(Knock(peer="10.0.0.2")))
    first.release()
    admitted(admission.admit(Knock(peer="10.0.0.1")))


def test_forwarded_for_counts_only_from_a_trusted_proxy() -> None:
    admission = policy(connections_per_ip=1, trusted_proxies=["127.0.0.1"])
    proxied = admitted(admission.admit(Knock(peer="127.0.0.1", forwarded_for="203.0.113.5")))
    assert proxied.address == "203.0.113.5"
    # Another client behind the same proxy has a place of its own.
    admitted(admission.admit(Knock(peer="127.0.0.1", forwarded_for="203.0.113.6")))
    # An untrusted peer's header is not believed.
    spoofed = admitted(admission.admit(Knock(peer="10.0.0.1", forwarded_for="203.0.113.5")))
    assert spoofed.address == "10.0.0.1"


def test_a_foreign_origin_is_refused_with_403_after_the_limits() -> None:
    admission = policy(["https://app.example.com"])
    knock = Knock(peer="10.0.0.1", origin="https://evil.example", host="app.example.com")
    refusal = refused(admission.admit(knock))
    assert (refusal.status, refusal.reason, refusal.counter) == (
        403,
        "origin not allowed",
        "handshake.origin_refused",
    )
    assert refusal.note == "origin 'https://evil.example' not allowed"
    assert admission.connections == 0
    full = policy(["https://app.example.com"], max_connections=1)
    admitted(full.admit(Knock(peer="10.0.0.2")))
    assert refused(full.admit(knock)).status == 503


@pytest.mark.parametrize(
    ("origin", "host", "allowed", "expected"),
    [
        ("", "example.com", [], True),  # not a browser
        ("https://example.com", "example.com", [], True),  # same host
        ("https://other.com", "example.com", [], False),
        ("https://a.example.com", "x", ["https://*.example.com"], True),
        ("https://a.example.org", "x", ["https://*.example.com"], False),
        ("https://anything", "x", ["*"], True),
        ("HTTPS://App.Example.com", "x", ["https://app.example.com"], True),
    ],
)
def test_origin_allowed(origin: str, host: str, allowed: list[str], expected: bool) -> None:
    assert origin_allowed(origin, host, allowed) is expected


@pytest.mark.parametrize(
    ("subprotocols", "query", "codec", "subprotocol"),
    [
        ((JSON_SUBPROTOCOL,), "", JSON, JSON_SUBPROTOCOL),
        ((JSON_SUBPROTOCOL, PROTOBUF_SUBPROTOCOL), "", PROTOBUF, PROTOBUF_SUBPROTOCOL),
        (("other",), "format=protobuf", PROTOBUF, None),
        ((), "cf_protocol=protobuf", PROTOBUF, None),
        ((JSON_SUBPROTOCOL,), "format=protobuf", PROTOBUF, JSON_SUBPROTOCOL),
        ((), "format=json", JSON, None),
    ],
)
def test_the_format_comes_from_the_subprotocol_or_the_query(
    subprotocols: tuple[str, ...], query: str, codec: Any, subprotocol: str | None
) -> None:
    knock = Knock(peer="10.0.0.1", subprotocols=subprotocols, query=query)
    ticket = admitted(policy().admit(knock))
    assert ticket.codec is codec and ticket.subprotocol == subprotocol


def test_frame_pings_are_asked_for_in_the_query() -> None:
    knock = Knock(peer="10.0.0.1", query="cf_ws_frame_ping_pong=true")
    assert admitted(policy().admit(knock)).frame_pings


def test_a_refusal_counts_and_logs_itself(caplog: pytest.LogCaptureFixture) -> None:
    counters: Counter[str] = Counter()
    refusal = refused(policy(["https://ok"]).admit(Knock(peer="10.0.0.1", origin="https://no")))
    with caplog.at_level(logging.WARNING, logger="hubbub.transport"):
        refusal.record(counters, "10.0.0.1:5000")
    assert counters == {"handshake.origin_refused": 1}
    assert [r.getMessage() for r in caplog.records] == [
        "refused WebSocket from 10.0.0.1:5000: origin 'https://no' not allowed"
    ]
    caplog.clear()
    refused(policy().admit(Knock(peer="10.0.0.1"), draining=True)).record(counters, "x")
    assert not caplog.records and sum(counters.values()) == 1
