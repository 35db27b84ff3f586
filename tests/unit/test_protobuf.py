"""The Protobuf codec: exact frames, round trips, and arbitrary bytes (property tests)."""

from __future__ import annotations

import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hubbub.protocol import client_pb2 as pb
from hubbub.protocol.codec import JSON, PROTOBUF
from hubbub.protocol.codes import Disconnect, DisconnectCode
from hubbub.protocol.messages import (
    EMPTY,
    ClientInfo,
    Command,
    ConnectRequest,
    HistoryRequest,
    Publication,
    PublishRequest,
    Push,
    Reply,
    StreamPositionMsg,
    SubscribeRequest,
    SubscribeResult,
    raw,
)
from hubbub.protocol.protobuf import decode_varint, encode_varint, from_message, to_message


@pytest.mark.parametrize("value", [0, 1, 127, 128, 300, 2**32 - 1, 2**63])
def test_varint_round_trip(value: int) -> None:
    encoded = encode_varint(value)
    assert decode_varint(encoded + b"rest", 0) == (value, len(encoded))


def test_ping_is_a_single_zero_byte() -> None:
    assert PROTOBUF.ping == PROTOBUF.encode_reply(Reply()) == b"\x00"
    assert PROTOBUF.decode_command(b"") == Command()


def test_empty_results_are_present() -> None:
    data = PROTOBUF.encode_reply(Reply(id=2, subscribe=SubscribeResult()))
    size, pos = decode_varint(data, 0)
    reply = pb.Reply()
    reply.ParseFromString(data[pos:])
    assert size == len(data) - pos and reply.id == 2 and reply.HasField("subscribe")


def test_publication_push_fields() -> None:
    pub = Publication(
        data=raw({"x": 1}), info=ClientInfo(user="u", client="c"), offset=7, tags={"k": "v"}
    )
    data = PROTOBUF.encode_push(Push(channel="ch", pub=pub))
    _, pos = decode_varint(data, 0)
    reply = pb.Reply()
    reply.ParseFromString(data[pos:])
    assert reply.push.channel == "ch"
    assert reply.push.pub.data == b'{"x":1}' and reply.push.pub.offset == 7
    assert reply.push.pub.info.user == "u" and dict(reply.push.pub.tags) == {"k": "v"}


def test_messages_queued_together_concatenate() -> None:
    a = PROTOBUF.encode_reply(Reply(id=1, subscribe=SubscribeResult()))
    b = PROTOBUF.encode_reply(Reply(id=2, subscribe=SubscribeResult()))
    assert PROTOBUF.split_frame(a + PROTOBUF.separator + b) == [a[1:], b[1:]]


def test_absent_payloads_stay_the_empty_constant() -> None:
    cmd = pb.Command(id=3)
    cmd.publish.channel = "c"
    decoded = PROTOBUF.decode_command(cmd.SerializeToString())
    assert decoded.publish is not None and decoded.publish.data is EMPTY


def test_same_commands_in_both_formats() -> None:
    command = Command(
        id=9,
        connect=ConnectRequest(
            token="t",
            name="js",
            subs={"#u": SubscribeRequest(recover=True, offset=4, epoch="e")},
        ),
    )
    via_protobuf = PROTOBUF.decode_command(to_message(command, pb.Command).SerializeToString())
    via_json = JSON.decode_command(msgspec.json.encode(command))
    assert via_protobuf == via_json == command


commands = st.builds(
    Command,
    id=st.integers(min_value=0, max_value=2**32 - 1),
    publish=st.one_of(
        st.none(),
        st.builds(
            PublishRequest,
            channel=st.text(max_size=20),
            data=st.binary(min_size=1, max_size=50).map(msgspec.Raw),
        ),
    ),
    history=st.one_of(
        st.none(),
        st.builds(
            HistoryRequest,
            channel=st.text(max_size=20),
            limit=st.integers(min_value=-1, max_value=2**31 - 1),
            since=st.one_of(
                st.none(),
                st.builds(
                    StreamPositionMsg,
                    offset=st.integers(min_value=0, max_value=2**63 - 1),
                    epoch=st.text(max_size=8),
                ),
            ),
            reverse=st.booleans(),
        ),
    ),
)


def _same(a: Command, b: Command) -> bool:
    return msgspec.to_builtins(a, enc_hook=bytes) == msgspec.to_builtins(b, enc_hook=bytes)


@pytest.mark.slow
@settings(max_examples=300, deadline=None)
@given(commands)
def test_round_trip(command: Command) -> None:
    data = to_message(command, pb.Command).SerializeToString()
    assert _same(PROTOBUF.decode_command(data), command)
    assert _same(from_message(pb.Command.FromString(data), Command), command)


@settings(max_examples=2000, deadline=None)
@given(st.binary(max_size=200))
def test_arbitrary_bytes_give_commands_or_3501(frame: bytes) -> None:
    try:
        for part in PROTOBUF.split_frame(frame):
            PROTOBUF.decode_command(part)
    except Disconnect as exc:
        assert exc.code == DisconnectCode.BAD_REQUEST
        assert exc.reason.startswith("bad request")


@settings(max_examples=1000, deadline=None)
@given(st.lists(st.binary(max_size=60), min_size=1, max_size=4))
def test_arbitrary_messages_in_valid_framing(bodies: list[bytes]) -> None:
    frame = b"".join(encode_varint(len(b)) + b for b in bodies)
    assert PROTOBUF.split_frame(frame) == bodies
    for body in bodies:
        try:
            PROTOBUF.decode_command(body)
        except Disconnect as exc:
            assert exc.code == DisconnectCode.BAD_REQUEST


@settings(max_examples=1000, deadline=None)
@given(st.binary(max_size=200))
def test_arbitrary_bytes_in_json_frames(frame: bytes) -> None:
    try:
        for part in JSON.split_frame(frame):
            JSON.decode_command(part)
    except Disconnect as exc:
        assert exc.code == DisconnectCode.BAD_REQUEST


def test_generated_code_matches_the_schema(tmp_path: pytest.TempPathFactory) -> None:
    """client_pb2.py is what `make proto` makes of client.proto today (no stale schema)."""
    from pathlib import Path

    from grpc_tools import protoc

    src = Path(__file__).resolve().parents[2] / "src"
    out = Path(str(tmp_path))
    status = protoc.main(
        ["protoc", f"-I{src}", f"--python_out={out}", str(src / "hubbub/protocol/client.proto")]
    )
    assert status == 0
    fresh = (out / "hubbub/protocol/client_pb2.py").read_text()
    assert fresh == (src / "hubbub/protocol/client_pb2.py").read_text(), "run `make proto`"
