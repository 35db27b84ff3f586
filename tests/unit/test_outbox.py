"""The outbox: coalescing, the byte limit, close after flush."""

from __future__ import annotations

import asyncio

from hubbub.transports.outbox import Outbox


class Peer:
    def __init__(self) -> None:
        self.frames: list[bytes] = []
        self.closed: tuple[int, str] | None = None
        self.gate = asyncio.Event()
        self.gate.set()

    async def send_frame(self, data: bytes) -> None:
        await self.gate.wait()
        self.frames.append(data)

    async def send_close(self, code: int, reason: str) -> None:
        self.closed = (code, reason)


async def test_messages_queued_together_share_a_frame() -> None:
    peer = Peer()
    outbox = Outbox(peer.send_frame, peer.send_close, 1 << 20)
    writer = asyncio.create_task(outbox.run())
    outbox.write(b"a")
    await asyncio.sleep(0)
    assert peer.frames == [b"a"]
    peer.gate.clear()  # the peer is busy: the next messages pile up
    outbox.write(b"b")
    await asyncio.sleep(0)
    outbox.write(b"c")
    outbox.write(b"d")
    peer.gate.set()
    await asyncio.sleep(0.01)
    assert peer.frames == [b"a", b"b", b"c\nd"]
    outbox.close(3001, "shutdown")
    await writer
    assert peer.closed == (3001, "shutdown")


async def test_close_flushes_first_and_drops_later_writes() -> None:
    peer = Peer()
    outbox = Outbox(peer.send_frame, peer.send_close, 1 << 20)
    outbox.write(b"x")
    outbox.write(b"y")
    outbox.close(3501, "bad request")
    outbox.write(b"late")
    await outbox.run()
    assert peer.frames == [b"x\ny"] and peer.closed == (3501, "bad request")


async def test_overflow_closes_with_3008_and_drops_backlog() -> None:
    peer = Peer()
    overflowed: list[bool] = []
    outbox = Outbox(peer.send_frame, peer.send_close, 100)
    outbox.on_overflow = lambda: overflowed.append(True)
    for _ in range(20):
        outbox.write(b"0123456789")
    assert outbox.closing and overflowed == [True] and outbox.queued_bytes == 0
    await outbox.run()
    assert peer.frames == [] and peer.closed == (3008, "slow")


async def test_abort_sends_nothing() -> None:
    peer = Peer()
    outbox = Outbox(peer.send_frame, peer.send_close, 100)
    outbox.write(b"x")
    outbox.abort()
    await outbox.run()
    assert peer.frames == [] and peer.closed is None
