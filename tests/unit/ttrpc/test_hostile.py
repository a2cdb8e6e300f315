"""Malformed and malicious frames against our server (and our client).

The server answers as containerd/ttrpc's Go server does (see ttrpc/connection.py) and
keeps serving: the offending connection where Go keeps it, every other one always.
"""

from __future__ import annotations

import asyncio
import logging
import struct
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

import ttrpc
from tests.unit.ttrpc.echo_service import (
    SERVICE,
    BytesValue,
    DoubleValue,
    EchoImpl,
    Empty,
    Int64Value,
    StringValue,
    until,
)
from tests.unit.ttrpc.rawpeer import RawPeer
from ttrpc.errors import Code
from ttrpc.framing import MAX_MESSAGE_LENGTH
from ttrpc.server import ServerConnection


@pytest.fixture
async def raw(socket_path: Path) -> AsyncIterator[RawPeer]:
    peer = await RawPeer.connect(socket_path)
    yield peer
    await peer.close()


async def assert_server_serves(socket_path: Path) -> None:
    """A fresh, well-behaved client still gets answers."""
    async with await ttrpc.Client.connect_unix(socket_path) as client:
        reply = await client.call(SERVICE, "Echo", StringValue(value="alive"), StringValue)
        assert reply.value == "alive"


async def assert_echo_on(raw: RawPeer, stream_id: int, text: str = "same connection") -> None:
    await raw.send_request(stream_id, "Echo", StringValue(value=text))
    got_id, response = await raw.read_response()
    assert got_id == stream_id
    assert response.status.code == Code.OK
    assert StringValue.FromString(response.payload).value == text


async def test_well_formed_call_matches_go_encoding(raw: RawPeer) -> None:
    await raw.send_request(1, "Echo", StringValue(value="x"))
    stream_id, message_type, flags, data = await raw.read_frame()
    assert (stream_id, message_type, flags) == (1, 2, 0)
    # Like Go: an OK response carries no status field, only the payload.
    assert data == b"\x12\x03\x0a\x01x"


async def test_oversized_frame_gets_resource_exhausted_and_the_connection_survives(
    raw: RawPeer, socket_path: Path
) -> None:
    length = MAX_MESSAGE_LENGTH + 1
    await raw.send_frame(1, 1, 0, b"", length=length)
    stream_id, response = await raw.read_response()
    assert stream_id == 1
    assert response.status.code == Code.RESOURCE_EXHAUSTED
    assert str(length) in response.status.message
    # The server skips the declared bytes (they are not parsed as frames)...
    await raw.send_raw(b"\x00" * (length // 2))
    await raw.send_raw(b"\x01" * (length - length // 2))
    # ...and the very same connection then serves a valid call.
    await assert_echo_on(raw, 3)
    await assert_server_serves(socket_path)


async def test_even_stream_id_is_invalid_argument(raw: RawPeer, socket_path: Path) -> None:
    await raw.send_request(2, "Echo", StringValue(value="even"))
    stream_id, response = await raw.read_response()
    assert stream_id == 2
    assert response.status.code == Code.INVALID_ARGUMENT
    assert response.status.message == "StreamID must be odd for client initiated streams"
    await assert_echo_on(raw, 1)
    await assert_server_serves(socket_path)


async def test_reused_in_flight_stream_id_is_invalid_argument(
    raw: RawPeer, impl: EchoImpl, socket_path: Path
) -> None:
    impl.gates["first"] = asyncio.Event()
    await raw.send_request(5, "Echo", StringValue(value="first"))
    await asyncio.sleep(0.05)
    await raw.send_request(5, "Echo", StringValue(value="second"))
    stream_id, response = await raw.read_response()
    assert stream_id == 5
    assert response.status.code == Code.INVALID_ARGUMENT
    assert response.status.message == "StreamID cannot be re-used and must increment"
    # A lower id than one already used is refused the same way.
    await raw.send_request(3, "Echo", StringValue(value="lower"))
    stream_id, response = await raw.read_response()
    assert (stream_id, response.status.code) == (3, Code.INVALID_ARGUMENT)
    # The original call on stream 5 still completes, with its own answer.
    impl.gates["first"].set()
    stream_id, response = await raw.read_response()
    assert stream_id == 5
    assert response.status.code == Code.OK
    assert StringValue.FromString(response.payload).value == "first"
    assert impl.completed == ["first"]
    await assert_echo_on(raw, 7)
    await assert_server_serves(socket_path)


async def test_truncated_header_then_close(
    raw: RawPeer, server: ttrpc.Server, socket_path: Path
) -> None:
    await raw.send_raw(b"\x00\x00\x00")
    await raw.close()
    await assert_server_serves(socket_path)
    await until(lambda: len(server.connections) == 0, "the server to drop the connection")


@pytest.mark.parametrize(
    "garbage",
    [b"\xff\xff\xff\xff", b"\x0a\x05ab", b"\x08"],
    ids=["bad-varint", "truncated-field", "missing-value"],
)
async def test_garbage_request_is_invalid_argument(
    raw: RawPeer, socket_path: Path, garbage: bytes
) -> None:
    await raw.send_frame(1, 1, 0, garbage)
    stream_id, response = await raw.read_response()
    assert stream_id == 1
    assert response.status.code == Code.INVALID_ARGUMENT
    assert response.status.message.startswith("unmarshal request error")
    await assert_echo_on(raw, 3)
    await assert_server_serves(socket_path)


async def test_garbage_payload_is_invalid_argument(raw: RawPeer) -> None:
    await raw.send_request(1, "Echo", b"\x0a\x10short")
    stream_id, response = await raw.read_response()
    assert stream_id == 1
    assert response.status.code == Code.INVALID_ARGUMENT
    assert "google.protobuf.StringValue" in response.status.message
    await assert_echo_on(raw, 3)


async def test_peer_disconnecting_mid_frame(
    raw: RawPeer, server: ttrpc.Server, socket_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    frame_header = struct.pack(">IIBB", 100, 1, 1, 0)
    with caplog.at_level(logging.DEBUG, logger="ttrpc"):
        await raw.send_raw(frame_header + b"\x0a" * 50)
        await asyncio.sleep(0.05)
        await raw.close()
        await assert_server_serves(socket_path)
        await until(lambda: not server.connections, "the server to drop the connection")
    assert any("in the middle of a frame (60 bytes)" in r.getMessage() for r in caplog.records)
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]


async def test_peer_disconnecting_with_a_call_running(
    raw: RawPeer, impl: EchoImpl, socket_path: Path
) -> None:
    impl.gates["orphan"] = asyncio.Event()
    await raw.send_request(1, "Echo", StringValue(value="orphan"))
    await until(lambda: impl.entered == ["orphan"], "the call to reach the server")
    await raw.close()
    await asyncio.sleep(0.05)
    impl.gates["orphan"].set()  # its answer has nowhere to go and is dropped
    await until(lambda: impl.completed == ["orphan"], "the orphaned call to finish")
    await assert_server_serves(socket_path)


async def test_data_frame_for_unknown_stream(raw: RawPeer) -> None:
    await raw.send_frame(9, 3, 1, b"")
    stream_id, response = await raw.read_response()
    assert (stream_id, response.status.code) == (9, Code.INVALID_ARGUMENT)
    assert response.status.message == "StreamID is no longer active"
    await assert_echo_on(raw, 11)


async def test_data_frame_on_a_running_unary_call(raw: RawPeer, impl: EchoImpl) -> None:
    await raw.send_request(1, "Sleep", DoubleValue(value=30))
    await until(lambda: impl.started == [30], "the call to reach the server")
    await raw.send_frame(1, 3, 0, b"\x0a\x00")
    stream_id, response = await raw.read_response()
    assert (stream_id, response.status.code) == (1, Code.INVALID_ARGUMENT)
    await until(lambda: impl.cancelled == 1, "the running call to be cancelled")
    # Exactly one answer for stream 1: the next frame belongs to the next call.
    await assert_echo_on(raw, 3)


async def test_unknown_message_type_is_ignored(raw: RawPeer) -> None:
    await raw.send_frame(1, 0x7F, 0, b"future extension")
    await raw.send_frame(3, 2, 0, b"")  # a response sent to a server
    await raw.expect_silence()
    await assert_echo_on(raw, 5)


async def test_streaming_request_flags_are_refused(raw: RawPeer) -> None:
    await raw.send_request(1, "Echo", StringValue(value="x"), flags=0x2)
    stream_id, response = await raw.read_response()
    assert (stream_id, response.status.code) == (1, Code.INVALID_ARGUMENT)
    await raw.send_request(3, "Watch", Empty(), flags=0x1)
    stream_id, response = await raw.read_response()
    assert (stream_id, response.status.code) == (3, Code.UNIMPLEMENTED)
    await assert_echo_on(raw, 5)


async def test_server_side_deadline_answers_deadline_exceeded(raw: RawPeer, impl: EchoImpl) -> None:
    await raw.send_request(1, "Sleep", DoubleValue(value=30), timeout_nano=50_000_000)
    stream_id, response = await raw.read_response(timeout=5)
    assert stream_id == 1
    assert response.status.code == Code.DEADLINE_EXCEEDED
    assert impl.cancelled == 1
    assert impl.finished == 0


async def test_pipelined_requests_in_one_write(raw: RawPeer) -> None:
    frames = b""
    for i in range(50):
        body = StringValue(value=str(i)).SerializeToString()
        from ttrpc.proto.ttrpc_pb2 import Request

        request = Request(service=SERVICE, method="Echo", payload=body).SerializeToString()
        frames += struct.pack(">IIBB", len(request), 2 * i + 1, 1, 0) + request
    await raw.send_raw(frames)
    seen = {}
    for _ in range(50):
        stream_id, response = await raw.read_response()
        seen[stream_id] = StringValue.FromString(response.payload).value
    assert seen == {2 * i + 1: str(i) for i in range(50)}


# -- hostile servers against our client ---------------------------------------------


async def fake_server(tmp_path: Path, script: object) -> asyncio.Server:
    return await asyncio.start_unix_server(script, str(tmp_path / "fake.sock"))  # type: ignore[arg-type]


async def test_client_survives_a_server_that_disconnects_mid_frame(tmp_path: Path) -> None:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readexactly(10)
        writer.write(struct.pack(">IIBB", 100, 1, 2, 0) + b"\x12" * 30)
        await writer.drain()
        writer.close()

    fake = await fake_server(tmp_path, handler)
    client = await ttrpc.Client.connect_unix(tmp_path / "fake.sock")
    with pytest.raises(ttrpc.Unavailable, match="middle of a frame"):
        await client.call(SERVICE, "Echo", StringValue(value="x"), StringValue)
    with pytest.raises(ttrpc.Unavailable):
        await client.call(SERVICE, "Echo", StringValue(value="x"), StringValue)
    await client.close()
    fake.close()


async def test_client_ignores_answers_for_unknown_streams_and_rejects_garbage(
    tmp_path: Path,
) -> None:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        header = await reader.readexactly(10)
        length, stream_id, _, _ = struct.unpack(">IIBB", header)
        await reader.readexactly(length)
        # First an answer nobody asked for, then garbage for the real stream.
        writer.write(struct.pack(">IIBB", 3, 99, 2, 0) + b"abc")
        writer.write(struct.pack(">IIBB", 3, stream_id, 2, 0) + b"\xff\xff\xff")
        # Then an oversized answer for the second call.
        header = await reader.readexactly(10)
        length, stream_id, _, _ = struct.unpack(">IIBB", header)
        await reader.readexactly(length)
        writer.write(struct.pack(">IIBB", MAX_MESSAGE_LENGTH + 1, stream_id, 2, 0))
        writer.write(b"\0" * (MAX_MESSAGE_LENGTH + 1))
        await writer.drain()
        await reader.read()

    fake = await fake_server(tmp_path, handler)
    async with await ttrpc.Client.connect_unix(tmp_path / "fake.sock") as client:
        with pytest.raises(ttrpc.Internal, match="cannot decode the response"):
            await client.call(SERVICE, "Echo", StringValue(value="x"), StringValue)
        with pytest.raises(ttrpc.ResourceExhausted):
            await client.call(SERVICE, "Echo", StringValue(value="y"), StringValue)
    fake.close()


async def test_client_timeout_against_a_silent_server(tmp_path: Path) -> None:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read()

    fake = await fake_server(tmp_path, handler)
    async with await ttrpc.Client.connect_unix(tmp_path / "fake.sock") as client:
        with pytest.raises(ttrpc.DeadlineExceeded, match=r"no response within 0\.1s"):
            await client.call(SERVICE, "Echo", StringValue(value="x"), StringValue, timeout=0.1)
        assert not client.closed
    fake.close()


async def test_peer_that_does_not_read_its_answers(
    raw: RawPeer, socket_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # 24 MiB of answers cannot sit in a socket buffer: the server must wait for the
    # peer (flow control) without losing anything, and keep serving others.
    pauses: list[ServerConnection] = []
    real_pause = ServerConnection.pause_writing

    def pause_writing(self: ServerConnection) -> None:
        pauses.append(self)
        real_pause(self)

    monkeypatch.setattr(ServerConnection, "pause_writing", pause_writing)
    count = 24
    for i in range(count):
        await raw.send_request(2 * i + 1, "Big", Int64Value(value=1 << 20))
    await asyncio.sleep(0.3)
    assert pauses, "the transport never asked the server to stop writing"
    await assert_server_serves(socket_path)
    seen = set()
    for _ in range(count):
        stream_id, response = await raw.read_response()
        assert response.status.code == Code.OK
        assert len(BytesValue.FromString(response.payload).value) == 1 << 20
        seen.add(stream_id)
    assert seen == {2 * i + 1 for i in range(count)}
    await assert_echo_on(raw, 2 * count + 1)
