"""A raw HTTP client of the emulation transports, for the tests: one stream (http_stream or
SSE, JSON or Protobuf) read with httpx on a loopback port, and ``/emulation`` requests."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import httpx

from hubbub.protocol import protobuf
from hubbub.protocol.messages import Command, Reply
from tests.conftest import UNIT

WAIT = 5 * UNIT


class Stream:
    """The server's side of one stream as the client reads it: decoded messages in order."""

    def __init__(self, response: httpx.Response, kind: str) -> None:
        self.response = response
        self.kind = kind  # "json", "sse" or "protobuf"
        self._chunks = response.aiter_raw()
        self._buffer = b""
        self.raw = b""  # every byte received, for framing checks
        self.ended = False
        self.connect: dict[str, Any] = {}

    async def _more(self) -> None:
        try:
            chunk = await asyncio.wait_for(anext(self._chunks), WAIT)
        except StopAsyncIteration:
            self.ended = True
            raise
        self.raw += chunk
        self._buffer += chunk

    def _take(self) -> Any | None:
        buf = self._buffer
        if self.kind == "json":
            line, sep, rest = buf.partition(b"\n")
            if not sep:
                return None
            self._buffer = rest
            assert line.strip(), "a blank line breaks centrifuge-js"
            return json.loads(line)
        if self.kind == "sse":
            buf = buf.lstrip(b"\r\n")
            event, sep, rest = buf.partition(b"\n\n")
            if not sep:
                return None
            self._buffer = rest
            if event.startswith(b":"):
                return {"_comment": event.decode()}
            assert event.startswith(b"data: "), event
            return json.loads(event[len(b"data: ") :])
        try:
            size, pos = protobuf.decode_varint(buf, 0)
        except ValueError:
            return None
        if len(buf) < pos + size:
            return None
        self._buffer = buf[pos + size :]
        reply = protobuf.from_message(protobuf.pb.Reply.FromString(buf[pos : pos + size]), Reply)
        return reply

    async def next(self) -> Any:
        """The next message (a dict; a ``Reply`` on Protobuf streams)."""
        while True:
            message = self._take()
            if message is not None:
                return message
            await self._more()

    async def next_non_ping(self) -> Any:
        while True:
            message = await self.next()
            if isinstance(message, Reply):
                if message != Reply():
                    return message
            elif message != {} and "_comment" not in message:
                return message

    async def end(self) -> None:
        """Wait for the end of the body (raises if a message comes first)."""
        try:
            while True:
                await self._more()
                leftover = self._take()
                assert leftover is None, f"message before the end: {leftover}"
        except StopAsyncIteration:
            return


class EmulationClient:
    """Streams and emulation requests against one server."""

    def __init__(self, base: str, client: httpx.AsyncClient) -> None:
        self.base = base
        self.http = client

    @asynccontextmanager
    async def open(
        self,
        connect: dict[str, Any] | None = None,
        *,
        kind: str = "json",
        method: str = "",
        headers: dict[str, str] | None = None,
        body: bytes | None = None,
    ) -> AsyncIterator[Stream]:
        """Open a stream with a connect command (``{"connect": connect, "id": 1}``)."""
        command = {"connect": connect or {}, "id": 1}
        all_headers = dict(headers or {})
        if kind == "protobuf":
            data = protobuf.to_message(
                Command(**{"id": 1, "connect": _connect_request(connect or {})}),
                protobuf.pb.Command,
            ).SerializeToString()
            payload = protobuf.encode_varint(len(data)) + data if body is None else body
            all_headers.setdefault("content-type", "application/octet-stream")
        else:
            payload = json.dumps(command).encode() if body is None else body
            all_headers.setdefault("content-type", "application/json")
        if kind == "sse":
            if (method or "GET") == "GET":
                request = self.http.build_request(
                    "GET",
                    self.base + "/connection/sse",
                    params={"cf_connect": payload.decode()},
                    headers=headers,
                )
            else:
                request = self.http.build_request(
                    method, self.base + "/connection/sse", content=payload, headers=all_headers
                )
        else:
            request = self.http.build_request(
                method or "POST",
                self.base + "/connection/http_stream",
                content=payload,
                headers=all_headers,
            )
        response = await self.http.send(request, stream=True)
        try:
            yield Stream(response, kind)
        finally:
            await response.aclose()

    async def connected(self, stream: Stream) -> dict[str, Any]:
        """Read the connect reply; remembered as ``stream.connect``."""
        reply = await stream.next()
        if isinstance(reply, Reply):
            assert reply.connect is not None, reply
            stream.connect = {"session": reply.connect.session, "node": reply.connect.node}
            stream.connect["client"] = reply.connect.client
        else:
            assert "connect" in reply, reply
            stream.connect = reply["connect"]
        return stream.connect

    async def emulate(
        self, stream: Stream, *commands: dict[str, Any] | bytes, raw: Any = None
    ) -> httpx.Response:
        """POST commands (JSON objects, or bytes as the data itself) for ``stream``."""
        if stream.kind == "protobuf":
            data = b"".join(c if isinstance(c, bytes) else _pb_command(c) for c in commands)
            body = _pb_emulation(stream.connect["node"], stream.connect["session"], data)
            return await self.http.post(
                self.base + "/emulation",
                content=body,
                headers={"content-type": "application/octet-stream"},
            )
        if raw is None:
            raw = "\n".join(c.decode() if isinstance(c, bytes) else json.dumps(c) for c in commands)
        request = {
            "session": stream.connect["session"],
            "node": stream.connect["node"],
            "data": raw,
        }
        return await self.http.post(self.base + "/emulation", json=request)


def _connect_request(connect: dict[str, Any]) -> Any:
    from hubbub.protocol.messages import ConnectRequest

    return ConnectRequest(**connect)


def _pb_command(command: dict[str, Any]) -> bytes:
    import msgspec

    cmd = msgspec.convert(command, Command)
    data = protobuf.to_message(cmd, protobuf.pb.Command).SerializeToString()
    return protobuf.encode_varint(len(data)) + data


def _pb_field(number: int, value: bytes) -> bytes:
    return protobuf.encode_varint(number << 3 | 2) + protobuf.encode_varint(len(value)) + value


def _pb_emulation(node: str, session: str, data: bytes) -> bytes:
    """An ``EmulationRequest`` as centrifuge-js encodes it (node 1, session 2, data 3)."""
    return _pb_field(1, node.encode()) + _pb_field(2, session.encode()) + _pb_field(3, data)
