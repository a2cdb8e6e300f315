"""A hand-driven ttrpc peer for the hostile-frame tests: writes any bytes it is told."""

from __future__ import annotations

import asyncio
import contextlib
import struct
from pathlib import Path

from google.protobuf.message import Message

from ttrpc.proto.ttrpc_pb2 import Request, Response

HEADER = struct.Struct(">IIBB")


class RawPeer:
    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer

    @classmethod
    async def connect(cls, path: Path) -> RawPeer:
        reader, writer = await asyncio.open_unix_connection(str(path))
        return cls(reader, writer)

    async def send_raw(self, data: bytes) -> None:
        self.writer.write(data)
        await self.writer.drain()

    async def send_frame(
        self, stream_id: int, message_type: int, flags: int, data: bytes, length: int | None = None
    ) -> None:
        header = HEADER.pack(
            len(data) if length is None else length, stream_id, message_type, flags
        )
        await self.send_raw(header + data)

    async def send_request(
        self,
        stream_id: int,
        method: str,
        payload: Message | bytes,
        *,
        service: str = "ttrpc.test.Echo",
        timeout_nano: int = 0,
        flags: int = 0,
    ) -> None:
        body = payload if isinstance(payload, bytes) else payload.SerializeToString()
        request = Request(service=service, method=method, payload=body, timeout_nano=timeout_nano)
        await self.send_frame(stream_id, 1, flags, request.SerializeToString())

    async def read_frame(self, timeout: float = 5.0) -> tuple[int, int, int, bytes]:
        header = await asyncio.wait_for(self.reader.readexactly(HEADER.size), timeout)
        length, stream_id, message_type, flags = HEADER.unpack(header)
        data = await asyncio.wait_for(self.reader.readexactly(length), timeout)
        return stream_id, message_type, flags, data

    async def read_response(self, timeout: float = 5.0) -> tuple[int, Response]:
        stream_id, message_type, flags, data = await self.read_frame(timeout)
        assert message_type == 2, f"expected a response frame, got type {message_type}"
        assert flags == 0
        return stream_id, Response.FromString(data)

    async def expect_silence(self, seconds: float = 0.2) -> None:
        """Nothing arrives (and the connection stays open) for ``seconds``."""
        try:
            data = await asyncio.wait_for(self.reader.read(1), seconds)
        except TimeoutError:
            return
        raise AssertionError(f"expected nothing, got {data!r}")

    async def expect_closed(self, timeout: float = 5.0) -> None:
        data = await asyncio.wait_for(self.reader.read(), timeout)
        assert data == b"", f"expected the peer to close, got {data!r}"

    async def close(self) -> None:
        self.writer.close()
        with contextlib.suppress(ConnectionError, OSError):
            await self.writer.wait_closed()
