"""A call's deadline holds while the peer stops reading and our writes are paused
(issue 14: no outbound call of the daemon may wait forever)."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from google.protobuf.wrappers_pb2 import StringValue

import ttrpc
from tests.unit.ttrpc.echo_service import SERVICE

WAIT = 30.0  # only bounds a failure


async def test_a_call_behind_a_paused_write_fails_at_its_deadline(tmp_path: Path) -> None:
    stop = asyncio.Event()

    async def never_reads(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await stop.wait()
        writer.close()

    path = tmp_path / "deaf.sock"
    server = await asyncio.start_unix_server(never_reads, str(path))
    client = await ttrpc.Client.connect_unix(path)
    try:
        big = StringValue(value="x" * (3 << 20))  # more than the socket buffers hold
        first = asyncio.create_task(client.call(SERVICE, "Echo", big, StringValue, timeout=WAIT))
        for _ in range(100):  # until the transport has paused our writes
            await asyncio.sleep(0.01)
            if client._connection.write_paused:
                break
        assert client._connection.write_paused
        with pytest.raises(ttrpc.DeadlineExceeded, match=r"no response within 0\.2s"):
            await asyncio.wait_for(
                client.call(SERVICE, "Echo", StringValue(value="y"), StringValue, timeout=0.2),
                WAIT,
            )
        first.cancel()
        with pytest.raises(asyncio.CancelledError):
            await first
    finally:
        stop.set()
        await client.close(timeout=1.0)
        server.close()
        await server.wait_closed()
