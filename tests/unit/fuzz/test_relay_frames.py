"""The relay against arbitrary byte streams from containerd's side and from a daemon's.

It passes frames on unchanged and must never be the one that breaks: whatever one
peer sends, nothing reaches the event loop's exception handler, nothing logs a
traceback, what goes back is well-formed frames, and a well-behaved containerd
connection is still served afterwards.
"""

from __future__ import annotations

import asyncio
import contextlib
import struct
from pathlib import Path

from hypothesis import given

from api.containerd.task.v2 import shim_pb2
from tests.unit.fuzz.frames import framed, requests, responses, streams
from tests.unit.fuzz.settings import fuzz, no_tracebacks_logged, run
from tests.unit.fuzz.test_ttrpc_frames import BOUND, well_formed, write_all_then_eof
from tests.unit.relay.test_relay import SERVICE, FakeDaemon, relay_on, serve_daemon, state
from tests.unit.shim.sinks import socket_dir
from ttrpc import Client
from ttrpc.framing import MAX_MESSAGE_LENGTH, REQUEST, RESPONSE, encode_frame
from ttrpc.proto.ttrpc_pb2 import Request
from ttrpc.responses import encode_ok_response

STATE = shim_pb2.StateResponse(id="c1", pid=1234)
METHODS = ["State", "Kill", "Wait", "Create", "Delete", "Connect"]


async def from_containerd(run_dir: Path, chunks: list[bytes]) -> None:
    impl = FakeDaemon(exit_status=0)
    impl.release.set()
    daemon = await serve_daemon(run_dir, impl)
    try:
        async with relay_on(run_dir) as relay:
            address = (await relay.listen("default")).removeprefix("unix://")
            reader, writer = await asyncio.open_unix_connection(address)
            await write_all_then_eof(writer, chunks)
            try:
                answer = await asyncio.wait_for(reader.read(), BOUND)
            except ConnectionError:
                answer = b""
            writer.close()
            well_formed(answer, {2, 3})
            async with await Client.connect_unix(address) as good:
                assert (await asyncio.wait_for(state(good, "c1"), BOUND)).pid == 1234
    finally:
        await daemon.close(timeout=1)


@fuzz
@given(streams(requests([SERVICE, "containerd.task.v3.Task", "contrast.node.v1.Relay"], METHODS)))
def test_the_relay_survives_any_stream_from_containerd(chunks: list[bytes]) -> None:
    with socket_dir() as run_dir, no_tracebacks_logged():
        run(lambda: from_containerd(run_dir, chunks))


async def from_daemon(run_dir: Path, chunks: list[bytes]) -> None:
    """A daemon whose first connection sends ``chunks`` before the true answer;
    containerd must get that answer (the relay may drop the daemon and replay the call
    on a new connection), and every frame before it well-formed."""
    answer = encode_frame(1, RESPONSE, 0, encode_ok_response(STATE.SerializeToString()))
    handlers: list[asyncio.Task[None]] = []

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        handlers.append(task)
        first = len(handlers) == 1
        with contextlib.suppress(asyncio.IncompleteReadError, ConnectionError):
            while True:
                length, stream_id, _, _ = struct.unpack(">IIBB", await reader.readexactly(10))
                await reader.readexactly(length)
                if first:
                    for chunk in chunks:
                        writer.write(chunk)
                writer.write(encode_frame(stream_id, RESPONSE, 0, answer[10:]))
                await writer.drain()
        writer.close()

    (run_dir / "daemon-ns").mkdir(exist_ok=True)
    daemon = await asyncio.start_unix_server(handle, str(run_dir / "daemon-ns" / "default.sock"))
    try:
        async with relay_on(run_dir) as relay:
            address = (await relay.listen("default")).removeprefix("unix://")
            reader, writer = await asyncio.open_unix_connection(address)
            body = Request(service=SERVICE, method="State", payload=b"").SerializeToString()
            writer.write(encode_frame(1, REQUEST, 0, body))
            await writer.drain()
            while True:
                header = await asyncio.wait_for(reader.readexactly(10), BOUND)
                length, stream_id, message_type, _ = struct.unpack(">IIBB", header)
                assert length <= MAX_MESSAGE_LENGTH
                data = await asyncio.wait_for(reader.readexactly(length), BOUND)
                if (stream_id, message_type) == (1, RESPONSE):
                    break
            # The first answer for our stream: the daemon's garbage one or the true one.
            assert data == answer[10:] or first_frame_for_stream_1(chunks) is not None
            writer.close()
    finally:
        daemon.close()
        await daemon.wait_closed()
        # The relay is closed: each handler ends at its connection's EOF.
        await asyncio.wait_for(asyncio.gather(*handlers), BOUND)


def first_frame_for_stream_1(chunks: list[bytes]) -> bytes | None:
    """The data of the first well-framed response for stream 1 in the daemon's bytes."""
    data = b"".join(chunks)
    offset = 0
    while len(data) - offset >= 10:
        length, stream_id, message_type, _ = struct.unpack_from(">IIBB", data, offset)
        if length > MAX_MESSAGE_LENGTH or len(data) - offset - 10 < length:
            return None
        if (stream_id, message_type) == (1, RESPONSE):
            return data[offset + 10 : offset + 10 + length]
        offset += 10 + length
    return None


@fuzz
@given(framed(responses()))
def test_the_relay_survives_any_frames_from_the_daemon(chunks: list[bytes]) -> None:
    with socket_dir() as run_dir, no_tracebacks_logged():
        run(lambda: from_daemon(run_dir, chunks))
