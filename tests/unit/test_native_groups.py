"""The native transport's channel groups, flush by flush: what each member's socket is
written, with the flusher driven by hand."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

from tests.conftest import suite_settings
from websockets.frames import Opcode

from hubbub.app import create_app
from hubbub.node import Node
from hubbub.transports.flush import FrameGroup, frame
from hubbub.transports.native import NativeWebSocketProtocol

TEXT = Opcode.TEXT.value


class Socket:
    """Stands in for the event loop's transport: records every write."""

    def __init__(self) -> None:
        self.writes: list[bytes] = []
        self.buffered = 0
        self.closed = False

    def write(self, data: bytes) -> None:
        self.writes.append(data)

    def is_closing(self) -> bool:
        return self.closed

    def get_write_buffer_size(self) -> int:
        return self.buffered

    def get_extra_info(self, name: str) -> Any:
        return ("127.0.0.1", 5000) if name == "peername" else None

    def close(self) -> None:
        self.closed = True


def connection(node: Node) -> tuple[NativeWebSocketProtocol, Socket]:
    config = SimpleNamespace(loaded_app=create_app(node=node))
    conn = NativeWebSocketProtocol(config, SimpleNamespace(connections=set()))
    socket = Socket()
    conn.connection_made(socket)  # type: ignore[arg-type]
    return conn, socket


def flush(conn: NativeWebSocketProtocol) -> None:
    """Run the flusher now (as the loop would at its turn)."""
    conn._flusher._run()
    assert not conn._flusher._groups and not conn._flusher._dirty


def f(data: bytes) -> bytes:
    return frame(TEXT, data)


def setup(members: int) -> tuple[FrameGroup, list[NativeWebSocketProtocol], list[Socket]]:
    node = Node(suite_settings())
    made = [connection(node) for _ in range(members)]
    conns = [conn for conn, _ in made]
    group = conns[0].new_group()
    for n, conn in enumerate(conns):
        group.add(str(n), conn)
    flush(conns[0])
    return group, conns, [socket for _, socket in made]


async def test_members_get_one_write_of_the_same_bytes_per_flush() -> None:
    group, conns, sockets = setup(3)
    for n in range(3):
        group.send(b"p%d" % n)
    flush(conns[0])
    assert [s.writes for s in sockets] == [[f(b"p0") + f(b"p1") + f(b"p2")]] * 3
    assert sockets[0].writes[0] is sockets[1].writes[0] is sockets[2].writes[0]
    flush(conns[0])  # nothing new: nothing written
    assert [len(s.writes) for s in sockets] == [1, 1, 1]
    assert group.frames == []


async def test_own_messages_keep_their_place() -> None:
    group, conns, sockets = setup(2)
    group.send(b"p1")
    conns[0].write(b"mine")
    group.send(b"p2")
    conns[0].write(b"mine again")
    group.send(b"p3")
    flush(conns[0])
    expected = f(b"p1") + f(b"mine") + f(b"p2") + f(b"mine again") + f(b"p3")
    assert sockets[0].writes == [expected]
    assert sockets[1].writes == [f(b"p1") + f(b"p2") + f(b"p3")]


async def test_a_message_before_any_publication_goes_first() -> None:
    group, conns, sockets = setup(2)
    conns[1].write(b"reply")
    group.send(b"p1")
    flush(conns[0])
    assert sockets[1].writes == [f(b"reply") + f(b"p1")]
    assert sockets[0].writes == [f(b"p1")]


async def test_joining_between_flushes_skips_what_was_sent_before() -> None:
    group, conns, sockets = setup(1)
    node = conns[0].node
    late, late_socket = connection(node)
    group.send(b"p1")
    late.write(b"subscribe reply")
    group.add("late", late)
    group.send(b"p2")
    flush(late)
    assert late_socket.writes == [f(b"subscribe reply") + f(b"p2")]
    assert sockets[0].writes == [f(b"p1") + f(b"p2")]
    group.send(b"p3")
    flush(late)
    assert late_socket.writes[-1] == f(b"p3") and sockets[0].writes[-1] == f(b"p3")


async def test_leaving_between_flushes_keeps_what_was_sent_before() -> None:
    group, conns, sockets = setup(2)
    group.send(b"p1")
    assert group.discard("0")
    assert not group.discard("0")
    conns[0].write(b"unsubscribe reply")
    group.send(b"p2")
    flush(conns[0])
    assert sockets[0].writes == [f(b"p1") + f(b"unsubscribe reply")]
    assert sockets[1].writes == [f(b"p1") + f(b"p2")]
    assert len(group) == 1 and conns[0]._groups == ()


async def test_members_of_two_groups_get_both() -> None:
    group, conns, sockets = setup(2)
    other = conns[0].new_group()
    other.add("0", conns[0])
    group.send(b"a1")
    other.send(b"b1")
    conns[0].write(b"own")
    group.send(b"a2")
    other.send(b"b2")
    flush(conns[0])
    # Per group in order, and around its own message in order.
    assert sockets[0].writes == [f(b"a1") + f(b"b1") + f(b"own") + f(b"a2") + f(b"b2")]
    assert sockets[1].writes == [f(b"a1") + f(b"a2")]


async def test_nothing_follows_a_close() -> None:
    group, conns, sockets = setup(2)
    group.send(b"p1")
    conns[0].close(3000, "bye")  # no WebSocket yet here: the socket just stops getting data
    group.send(b"p2")
    flush(conns[0])
    assert sockets[0].writes == [f(b"p1")]
    assert sockets[1].writes == [f(b"p1") + f(b"p2")]


async def test_a_member_that_cannot_keep_up_is_closed_alone() -> None:
    group, conns, sockets = setup(3)
    sockets[1].buffered = 10 * conns[1]._max_bytes  # its peer stopped reading
    group.send(b"p1")
    flush(conns[0])
    assert conns[1].closing and not conns[0].closing and not conns[2].closing
    group.send(b"p2")
    flush(conns[0])
    assert sockets[1].writes == [f(b"p1")]
    assert sockets[0].writes == sockets[2].writes == [f(b"p1"), f(b"p2")]
