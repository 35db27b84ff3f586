"""Delta compression over real WebSockets (PROTOCOL-EXTENSIONS.md §4): what a subscriber that
negotiated ``delta: "fossil"`` receives, and what the others keep receiving."""

from __future__ import annotations

import asyncio
import json
import random
import shutil
from pathlib import Path
from typing import Any

import httpx
import pytest
import websockets
from websockets.asyncio.client import ClientConnection
from websockets.exceptions import ConnectionClosed

from hubbub.auth import mint_connection_token
from hubbub.config import Settings
from hubbub.protocol import fossil
from hubbub.protocol.codes import DisconnectCode
from tests.conftest import API_KEY, SECRET, UNIT, RunningServer, suite_settings

WAIT = 5 * UNIT
JS = Path(__file__).resolve().parents[1] / "js"

# What a client sees over the wire: on both WebSocket transports (tests/conftest.py::transport).
pytestmark = pytest.mark.usefixtures("transport")

_STREAM = {
    "allow_subscribe_for_client": True,
    "history_size": 100,
    "history_ttl": 300,
    "force_recovery": True,
}


def delta_settings() -> Settings:
    """``ticker``: delta allowed and every publication flagged; ``flagged``: allowed, flagged
    per publication; ``plain``: delta not allowed; ``nohist``: allowed, no history."""
    return suite_settings(
        channel={
            "namespaces": [
                {
                    "name": "ticker",
                    **_STREAM,
                    "allowed_delta_types": ["fossil"],
                    "delta_publish": True,
                },
                {"name": "flagged", **_STREAM, "allowed_delta_types": ["fossil"]},
                {"name": "plain", **_STREAM, "delta_publish": True},
                {
                    "name": "nohist",
                    "allow_subscribe_for_client": True,
                    "allowed_delta_types": ["fossil"],
                    "delta_publish": True,
                },
            ]
        }
    )


@pytest.fixture
async def server(start_server: Any) -> RunningServer:
    result: RunningServer = await start_server(delta_settings())
    return result


def ticker(n: int, rnd: random.Random) -> dict[str, Any]:
    """A large object in which a few numbers change from one publication to the next."""
    return {
        "seq": n,
        "quotes": [
            {
                "sym": f"SYM{i:03d}",
                "name": f"Company {i} holdings",
                "px": 100 + i + (n if i % 17 == 0 else 0),
                "ccy": "EUR",
            }
            for i in range(40)
        ],
        "note": rnd.choice(["open", "open", "open", "halt"]),
    }


async def connect(server: RunningServer, user: str = "alice", **connect: Any) -> ClientConnection:
    ws = await websockets.connect(server.url, max_size=None, open_timeout=WAIT)
    token = mint_connection_token(SECRET, user)
    await ws.send(json.dumps({"id": 1, "connect": {"token": token, **connect}}))
    (reply,) = await messages(ws, 1)
    assert "connect" in reply, reply
    return ws


async def messages(ws: ClientConnection, n: int) -> list[dict[str, Any]]:
    """The next ``n`` server messages (frames may hold several, newline-joined)."""
    out: list[dict[str, Any]] = []
    while len(out) < n:
        frame = await asyncio.wait_for(ws.recv(), WAIT)
        text = frame.decode() if isinstance(frame, bytes) else frame
        out.extend(json.loads(line) for line in text.split("\n") if line != "{}")
    return out


async def subscribe(ws: ClientConnection, channel: str, **req: Any) -> dict[str, Any]:
    await ws.send(json.dumps({"id": 2, "subscribe": {"channel": channel, **req}}))
    (reply,) = await messages(ws, 1)
    result: dict[str, Any] = reply["subscribe"]
    return result


class Decoder:
    """What centrifuge-js does with the publications of a delta subscription."""

    def __init__(self) -> None:
        self.base = b""
        self.kinds: list[str] = []

    def decode(self, pub: dict[str, Any]) -> Any:
        data = pub["data"]
        assert isinstance(data, str), f"a delta subscription's data is a JSON string: {pub}"
        raw = data.encode()
        if pub.get("delta"):
            self.base = fossil.apply(self.base, raw)
            self.kinds.append("delta")
        else:
            self.base = raw
            self.kinds.append("full")
        return json.loads(self.base)


async def test_delta_subscriber_gets_small_deltas_and_others_plain_json(
    server: RunningServer,
) -> None:
    rnd = random.Random(1)
    wanted = [ticker(n, rnd) for n in range(20)]
    delta_ws = await connect(server)
    plain_ws = await connect(server, "bob")
    reply = await subscribe(delta_ws, "ticker:eur", delta="fossil")
    assert reply["delta"] is True
    assert "delta" not in await subscribe(plain_ws, "ticker:eur")
    raw_sizes: dict[str, list[int]] = {"full": [], "delta": []}
    for obj in wanted:
        await server.node.publish("ticker:eur", obj)
    decoder = Decoder()
    got = []
    for msg in await messages(delta_ws, len(wanted)):
        pub = msg["push"]["pub"]
        got.append(decoder.decode(pub))
        raw_sizes["delta" if pub.get("delta") else "full"].append(len(pub["data"]))
    assert got == wanted
    assert decoder.kinds[0] == "full"
    assert decoder.kinds.count("delta") == len(wanted) - 1
    assert max(raw_sizes["delta"]) * 10 < min(raw_sizes["full"])
    plain = [msg["push"]["pub"] for msg in await messages(plain_ws, len(wanted))]
    assert [pub["data"] for pub in plain] == wanted
    assert not any("delta" in pub for pub in plain)
    await delta_ws.close()
    await plain_ws.close()


async def test_namespace_without_delta_types_answers_false_and_sends_full_payloads(
    server: RunningServer,
) -> None:
    ws = await connect(server)
    assert "delta" not in await subscribe(ws, "plain:x", delta="fossil")
    for n in range(3):
        await server.node.publish("plain:x", {"n": n, "pad": "x" * 200})
    pubs = [msg["push"]["pub"] for msg in await messages(ws, 3)]
    assert [pub["data"] for pub in pubs] == [{"n": n, "pad": "x" * 200} for n in range(3)]
    assert not any("delta" in pub for pub in pubs)
    await ws.close()


async def test_unknown_delta_type_disconnects_with_3501(server: RunningServer) -> None:
    ws = await connect(server)
    await ws.send(json.dumps({"id": 2, "subscribe": {"channel": "ticker:x", "delta": "xdelta"}}))
    with pytest.raises(ConnectionClosed) as closed:
        while True:
            await asyncio.wait_for(ws.recv(), WAIT)
    assert closed.value.rcvd is not None and closed.value.rcvd.code == 3501
    assert server.node.counters["bad_input.3501"] == 1


async def test_only_publications_flagged_by_the_api_are_deltas(server: RunningServer) -> None:
    ws = await connect(server)
    assert (await subscribe(ws, "flagged:x", delta="fossil"))["delta"] is True
    body = {"k": "v" * 300}
    async with httpx.AsyncClient(base_url=server.http, headers={"X-API-Key": API_KEY}) as http:
        for n, flag in enumerate([True, True, False, True]):
            resp = await http.post(
                "/api/publish",
                json={"channel": "flagged:x", "data": {**body, "n": n}, "delta": flag},
            )
            assert resp.status_code == 200 and "error" not in resp.json(), resp.text
        broadcast = await http.post(
            "/api/broadcast",
            json={"channels": ["flagged:x"], "data": {**body, "n": 4}, "delta": True},
        )
        assert broadcast.status_code == 200, broadcast.text
    decoder = Decoder()
    got = [decoder.decode(msg["push"]["pub"]) for msg in await messages(ws, 5)]
    assert got == [{**body, "n": n} for n in range(5)]
    # The first has no base; the third was not flagged; the fourth follows a full one.
    assert decoder.kinds == ["full", "delta", "full", "delta", "delta"]
    await ws.close()


async def test_recovered_publications_are_full_then_deltas_and_live_deltas_follow(
    server: RunningServer,
) -> None:
    rnd = random.Random(2)
    wanted = [ticker(n, rnd) for n in range(6)]
    for obj in wanted[:5]:
        await server.node.publish("ticker:rec", obj)
    ws = await connect(server)
    reply = await subscribe(ws, "ticker:rec", delta="fossil", recover=True, offset=0, epoch="")
    assert reply["recovered"] is True and reply["delta"] is True
    decoder = Decoder()
    got = [decoder.decode(pub) for pub in reply["publications"]]
    assert decoder.kinds == ["full"] + ["delta"] * 4
    await server.node.publish("ticker:rec", wanted[5])
    (live,) = await messages(ws, 1)
    got.append(decoder.decode(live["push"]["pub"]))
    assert got == wanted
    assert decoder.kinds[-1] == "delta"
    # History is never delta-encoded, and keeps plain payloads.
    history = await server.node.history("ticker:rec", limit=-1)
    assert not any(pub.delta for pub in history.publications)
    await ws.close()


async def test_first_publication_after_subscribing_without_recovery_is_full(
    server: RunningServer,
) -> None:
    for n in range(3):
        await server.node.publish("ticker:late", {"n": n, "pad": "y" * 300})
    ws = await connect(server)
    await subscribe(ws, "ticker:late", delta="fossil")
    for n in range(3, 5):
        await server.node.publish("ticker:late", {"n": n, "pad": "y" * 300})
    decoder = Decoder()
    got = [decoder.decode(msg["push"]["pub"]) for msg in await messages(ws, 2)]
    assert got == [{"n": 3, "pad": "y" * 300}, {"n": 4, "pad": "y" * 300}]
    assert decoder.kinds == ["full", "delta"]
    await ws.close()


async def test_without_history_every_payload_is_full_in_string_form(
    server: RunningServer,
) -> None:
    ws = await connect(server)
    assert (await subscribe(ws, "nohist:x", delta="fossil"))["delta"] is True
    for n in range(3):
        await server.node.publish("nohist:x", {"n": n, "pad": "z" * 300})
    decoder = Decoder()
    got = [decoder.decode(msg["push"]["pub"]) for msg in await messages(ws, 3)]
    assert got == [{"n": n, "pad": "z" * 300} for n in range(3)]
    assert decoder.kinds == ["full"] * 3
    await ws.close()


async def test_non_ascii_payloads_survive_as_deltas_or_full(server: RunningServer) -> None:
    # A delta whose literals split a UTF-8 character cannot travel in a JSON string: the
    # server sends the full payload then (PROTOCOL-EXTENSIONS.md §4.4's note).
    wanted = [{"a": "x" * 40 + ch + "y" * 40} for ch in "éèêëé✓"]
    ws = await connect(server)
    await subscribe(ws, "ticker:utf8", delta="fossil")
    for obj in wanted:
        await server.node.publish("ticker:utf8", obj)
    decoder = Decoder()
    got = [decoder.decode(msg["push"]["pub"]) for msg in await messages(ws, len(wanted))]
    assert got == wanted
    await ws.close()


async def test_server_side_subscription_negotiates_delta_in_connect(
    server: RunningServer,
) -> None:
    ws = await websockets.connect(server.url, max_size=None, open_timeout=WAIT)
    token = mint_connection_token(SECRET, "carol", channels=["ticker:srv"])
    await ws.send(
        json.dumps(
            {"id": 1, "connect": {"token": token, "subs": {"ticker:srv": {"delta": "fossil"}}}}
        )
    )
    (reply,) = await messages(ws, 1)
    assert reply["connect"]["subs"]["ticker:srv"]["delta"] is True
    for n in range(3):
        await server.node.publish("ticker:srv", {"n": n, "pad": "w" * 300})
    decoder = Decoder()
    got = [decoder.decode(m["push"]["pub"]) for m in await messages(ws, 3)]
    assert got == [{"n": n, "pad": "w" * 300} for n in range(3)]
    assert decoder.kinds == ["full", "delta", "delta"]
    await ws.close()


# ---------------------------------------------------------------------------------------------
# The npm centrifuge client


def _require_node() -> str:
    node = shutil.which("node")
    assert node, "Node.js is required (make test installs it)"
    assert (JS / "node_modules" / "centrifuge").is_dir(), "run `make test-deps`"
    return node


class Driver:
    """``tests/js/delta.mjs`` running, its events read as they come."""

    def __init__(self, proc: asyncio.subprocess.Process) -> None:
        self.proc = proc
        self.events: list[dict[str, Any]] = []

    async def until(self, kind: str, count: int = 1) -> list[dict[str, Any]]:
        """Read events until ``count`` of ``kind`` have come; all of that kind so far."""
        assert self.proc.stdout is not None
        while sum(e["event"] == kind for e in self.events) < count:
            line = await asyncio.wait_for(self.proc.stdout.readline(), 10 * WAIT)
            if not line:
                assert self.proc.stderr is not None
                err = await asyncio.wait_for(self.proc.stderr.read(), WAIT)
                kinds = [(e["event"], e.get("offset")) for e in self.events]
                raise AssertionError(f"driver ended early: {kinds}\n{err.decode()}")
            event = json.loads(line)
            assert event["event"] not in ("timeout", "error"), event
            self.events.append(event)
        return [e for e in self.events if e["event"] == kind]


@pytest.mark.js
@pytest.mark.parametrize("wire_format", ["json", "protobuf"])
async def test_node_client_decodes_every_publication_across_a_reconnect_with_recovery(
    server: RunningServer, wire_format: str
) -> None:
    rnd = random.Random(5)
    wanted = [ticker(n, rnd) for n in range(40)]
    token = mint_connection_token(SECRET, "nodeuser")
    proc = await asyncio.create_subprocess_exec(
        _require_node(),
        str(JS / "delta.mjs"),
        server.url,
        token,
        "ticker:js",
        str(len(wanted)),
        wire_format,
        cwd=JS,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    driver = Driver(proc)
    try:
        await driver.until("subscribed")
        for obj in wanted[:15]:
            await server.node.publish("ticker:js", obj)
        await driver.until("publication", 15)
        # Gone for a moment: what is published meanwhile comes back through recovery.
        await server.node.disconnect("nodeuser", DisconnectCode.FORCE_RECONNECT)
        await driver.until("connecting", 2)
        for obj in wanted[15:25]:
            await server.node.publish("ticker:js", obj)
        (_, again) = await driver.until("subscribed", 2)
        assert again["wasRecovering"] is True and again["recovered"] is True
        for obj in wanted[25:]:
            await server.node.publish("ticker:js", obj)
        (done,) = await driver.until("done")
    finally:
        if proc.returncode is None:
            proc.kill()
        await proc.wait()
    pubs = [e for e in driver.events if e["event"] == "publication"]
    assert [p["data"] for p in pubs] == wanted
    assert [p["offset"] for p in pubs] == list(range(1, len(wanted) + 1))
    stats = done["stats"]
    assert stats["numPublications"] == len(wanted)
    # Full: the first one, and the first recovered one; every other could be a delta.
    assert stats["numFullPayloads"] <= 3
    assert stats["numDeltaPayloads"] >= len(wanted) - 3
    assert stats["bytesReceived"] * 5 < stats["bytesDecoded"]
