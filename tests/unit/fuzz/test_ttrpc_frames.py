"""Our ttrpc server (and client) against arbitrary byte streams from a hostile peer.

Every outcome is an answer, a status or a closed connection: nothing reaches the
event loop's exception handler, nothing logs a traceback, every frame sent back is
well-formed, and the server goes on serving a well-behaved client.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket

from hypothesis import given

import ttrpc
from tests.unit.fuzz.frames import HEADER, requests, responses, streams
from tests.unit.fuzz.settings import fuzz, no_tracebacks_logged, run
from tests.unit.ttrpc.echo_service import DESCRIPTOR, SERVICE, EchoImpl, StringValue
from ttrpc.framing import MAX_MESSAGE_LENGTH

# Not Sleep, Big (they do what they are asked: sleep for ever, allocate 2**63 bytes)
# nor Fail (a handler raising on purpose is logged with its traceback, by design).
METHODS = ["Echo", "Meta", "Wrong", "Missing", "Watch"]
BOUND = 30.0  # seconds; reached only by a hang


def well_formed(data: bytes, types: set[int]) -> None:
    """``data`` is a sequence of complete frames of ``types`` within the size limit."""
    offset = 0
    while offset < len(data):
        assert len(data) - offset >= HEADER.size, f"a partial header at {offset}: {data!r}"
        length, _, message_type, _ = HEADER.unpack_from(data, offset)
        assert message_type in types, f"frame type {message_type}"
        assert length <= MAX_MESSAGE_LENGTH
        offset += HEADER.size + length
        assert offset <= len(data), "a partial frame"


async def write_all_then_eof(writer: asyncio.StreamWriter, chunks: list[bytes]) -> None:
    # The peer may close on us half-way: that is one of the allowed outcomes.
    with contextlib.suppress(ConnectionError):
        for chunk in chunks:
            writer.write(chunk)
            await writer.drain()
        writer.write_eof()


async def server_example(chunks: list[bytes]) -> None:
    server = ttrpc.Server()
    server.register(DESCRIPTOR, EchoImpl())
    ours, theirs = socket.socketpair()
    await server.serve_fd(theirs.detach())
    reader, writer = await asyncio.open_connection(sock=ours)
    await write_all_then_eof(writer, chunks)
    try:
        answer = await asyncio.wait_for(reader.read(), BOUND)  # until the server closes
    except ConnectionError:
        answer = b""
    writer.close()
    well_formed(answer, {2, 3})
    good_ours, good_theirs = socket.socketpair()
    await server.serve_fd(good_theirs.detach())
    async with await ttrpc.Client.from_fd(good_ours.detach()) as client:
        reply = await client.call(SERVICE, "Echo", StringValue(value="alive"), StringValue)
        assert reply.value == "alive"
    await asyncio.wait_for(server.close(timeout=5), BOUND)


@fuzz
@given(streams(requests([SERVICE, "containerd.task.v2.Task"], METHODS)))
def test_the_server_survives_any_byte_stream(chunks: list[bytes]) -> None:
    with no_tracebacks_logged():
        run(lambda: server_example(chunks))


async def client_example(chunks: list[bytes]) -> None:
    """A hostile server: whatever it sends, a call ends in a reply or a ttrpc error."""
    ours, theirs = socket.socketpair()
    client = await ttrpc.Client.from_fd(ours.detach())
    reader, writer = await asyncio.open_connection(sock=theirs)
    call = asyncio.ensure_future(
        client.call(SERVICE, "Echo", StringValue(value="x"), StringValue, timeout=BOUND)
    )
    await reader.readexactly(HEADER.size)  # the client's request, read and ignored
    await write_all_then_eof(writer, chunks)
    with contextlib.suppress(ttrpc.TtrpcError):
        await asyncio.wait_for(call, BOUND * 2)
    await asyncio.wait_for(client.close(), BOUND)
    writer.close()


@fuzz
@given(streams(responses()))
def test_the_client_survives_any_byte_stream(chunks: list[bytes]) -> None:
    with no_tracebacks_logged():
        run(lambda: client_example(chunks))
