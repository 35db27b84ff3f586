"""The tutorial's plain-text chat, ``/ws/{client_id}``, served by the hub.

Readers of the classic FastAPI WebSocket tutorial keep their client script: every message is a
text frame; on connect everyone reads "<id> joined the chat"; a message gets "You said: <text>"
back and everyone reads "<id>: <text>"; on leaving everyone reads "<id> left the chat". Unlike
the tutorial's ConnectionManager, the room is a hub channel: a slow reader cannot stall the
others, and with the Redis engine the room spans every process and machine.
"""

from __future__ import annotations

import logging
import uuid

import msgspec

from hubbub.config import ChannelOptions
from hubbub.node import Node
from hubbub.protocol.codec import Codec
from hubbub.protocol.codes import ProtocolError
from hubbub.protocol.messages import Command, Publication, Push, Reply, raw
from hubbub.subscription import Subscription
from hubbub.transports.asgi import Receive, Scope, Send
from hubbub.transports.outbox import Outbox

log = logging.getLogger("hubbub.tutorial")

ROOM = "\x1ftutorial-chat"
"""The hub channel of the room. Its name is not printable, so no protocol client can reach it."""

_NO_HISTORY = ChannelOptions()


class PlainTextCodec:
    """Publications as their JSON string's text, one per frame; nothing else is sent."""

    name = "text"
    binary = False
    separator = b"\n"
    ping = b""

    def split_frame(self, frame: bytes) -> list[bytes]:
        return [frame]

    def decode_command(self, data: bytes) -> Command:
        raise NotImplementedError("the tutorial chat takes plain text, not commands")

    def encode_reply(self, reply: Reply) -> bytes:
        return b""

    def encode_push(self, push: Push) -> bytes:
        if push.pub is None:
            return b""
        text = msgspec.json.decode(push.pub.data)
        return text.encode() if isinstance(text, str) else bytes(push.pub.data)


_TEXT: Codec = PlainTextCodec()


class TutorialConnection:
    """One tutorial client as a subscriber of the room."""

    def __init__(self, name: str, outbox: Outbox) -> None:
        self.client_id = str(uuid.uuid4())
        self.name = name
        self.codec = _TEXT
        self.subscriptions: dict[str, Subscription] = {}
        self.outbox = outbox

    def deliver(self, channel: str, pub: Publication, data: bytes, epoch: str) -> None:
        if data:
            self.outbox.write(data)

    def deliver_join_leave(self, channel: str, data: bytes) -> None:
        return None

    async def recover_gap(self, sub: Subscription) -> None:
        return None  # a plain-text chat keeps no position to recover from


class TutorialEndpoint:
    """ASGI app for ``/ws/{client_id}`` (the path parameter names the speaker)."""

    def __init__(self, node: Node) -> None:
        self.node = node

    async def _say(self, text: str) -> None:
        try:
            await self.node.publish_with_options(ROOM, raw(text), _NO_HISTORY)
        except ProtocolError as exc:
            log.warning("tutorial chat: could not publish: %s", exc.message)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        message = await receive()
        if message["type"] != "websocket.connect":
            return
        name = str(scope.get("path_params", {}).get("client_id", "someone"))[:64]
        await send({"type": "websocket.accept"})

        async def send_text(data: bytes) -> None:
            await send({"type": "websocket.send", "text": data.decode()})

        async def send_close(code: int, reason: str) -> None:
            await send({"type": "websocket.close", "code": code, "reason": reason})

        outbox = Outbox(
            send_text, send_close, self.node.settings.client.queue_max_size, separator=None
        )
        connection = TutorialConnection(name, outbox)
        writer = self.node.spawn_task(outbox.run())
        try:
            await self.node.add_subscriber(ROOM, connection)
            await self._say(f"{name} joined the chat")
            while True:
                message = await receive()
                if message["type"] == "websocket.disconnect":
                    break
                if message["type"] != "websocket.receive":
                    continue
                text = message.get("text")
                if text is None:
                    text = bytes(message.get("bytes") or b"").decode(errors="replace")
                outbox.write(f"You said: {text}".encode())
                await self._say(f"{name}: {text}")
        except ProtocolError as exc:
            log.warning("tutorial chat: %s", exc.message)
            outbox.close(1011, "engine unavailable")
        finally:
            await self.node.remove_subscriber(ROOM, connection)
            await self._say(f"{name} left the chat")
            if not outbox.closing:
                outbox.abort()
            await writer
