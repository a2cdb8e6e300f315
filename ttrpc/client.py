"""The ttrpc client: many concurrent unary calls multiplexed over one connection.

Each call takes the next odd stream id, writes one request frame and waits on a
future that the connection resolves when the response with that id arrives, in
whatever order responses come. No task is created per call.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from pathlib import Path
from types import TracebackType
from typing import TypeVar

from google.protobuf.message import DecodeError, Message

from ttrpc import transport
from ttrpc.context import MetadataArg, metadata_to_pairs
from ttrpc.errors import (
    DeadlineExceeded,
    Internal,
    ResourceExhausted,
    Unavailable,
    status_error,
)
from ttrpc.framing import MAX_MESSAGE_LENGTH, MAX_STREAM_ID, REQUEST, RESPONSE
from ttrpc.proto.ttrpc_pb2 import Request, Response
from ttrpc.protocol import FrameProtocol

log = logging.getLogger(__name__)

M = TypeVar("M", bound=Message)


class ClientConnection(FrameProtocol):
    """The client side of one connection: routes responses to waiting calls."""

    def __init__(self) -> None:
        super().__init__()
        self.label = "ttrpc client"
        self.pending: dict[int, asyncio.Future[bytes]] = {}

    def frame_received(self, stream_id: int, message_type: int, flags: int, data: bytes) -> None:
        waiter = self.pending.pop(stream_id, None)
        if waiter is None or waiter.done():
            log.debug("%s: dropping a frame for stream %d, nobody waits", self.label, stream_id)
        elif message_type == RESPONSE:
            waiter.set_result(data)
        else:
            waiter.set_exception(
                Internal(
                    f"the server sent a frame of type {message_type} on unary stream {stream_id}"
                )
            )

    def oversized_frame_received(
        self, stream_id: int, message_type: int, flags: int, length: int
    ) -> None:
        waiter = self.pending.pop(stream_id, None)
        if waiter is not None and not waiter.done():
            waiter.set_exception(
                ResourceExhausted(
                    f"response of {length} bytes exceeds the maximum message size of "
                    f"{MAX_MESSAGE_LENGTH}"
                )
            )

    def connection_ended(self, reason: str) -> None:
        pending = list(self.pending.values())
        self.pending.clear()
        for waiter in pending:
            if not waiter.done():
                waiter.set_exception(Unavailable(f"{self.label}: {reason}"))


def _expire(waiter: asyncio.Future[bytes], timeout: float) -> None:
    if not waiter.done():
        waiter.set_exception(DeadlineExceeded(f"no response within {timeout:g}s"))


async def _drain_unless_ended(connection: ClientConnection, waiter: asyncio.Future[bytes]) -> None:
    """Wait for room to write, unless the call ends first: a peer that stops reading
    must not hold a call past its deadline (the timer fails ``waiter``)."""
    drained = asyncio.ensure_future(connection.drain())
    try:
        await asyncio.wait((drained, waiter), return_when=asyncio.FIRST_COMPLETED)
    finally:
        if not drained.done():
            drained.cancel()
    if not waiter.done():
        drained.result()  # raises as drain() does (Unavailable once closed)


class Client:
    """A ttrpc client over one connection. Use a constructor classmethod to make one."""

    def __init__(
        self, connection: ClientConnection, pump: asyncio.Task[None] | None = None
    ) -> None:
        self._connection = connection
        self._pump = pump
        self._loop = asyncio.get_running_loop()
        self._next_stream_id = 1

    @classmethod
    async def connect_unix(cls, path: str | Path) -> Client:
        """Connect to a ttrpc server on a unix socket. Raises TransportError."""
        return cls(await transport.connect_unix(path, ClientConnection))

    @classmethod
    async def from_fd(cls, fd: int) -> Client:
        """Use an open fd (stream socket or character device); the client owns it.

        Raises TransportError.
        """
        return cls(await transport.open_fd(fd, ClientConnection))

    @classmethod
    async def open_char_device(cls, path: str | Path) -> Client:
        """Talk over a character device such as a virtio-serial port. Raises TransportError."""
        return cls(await transport.open_char_device(path, ClientConnection))

    @classmethod
    def from_streams(cls, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> Client:
        """Use an asyncio stream pair (must be called with the loop running)."""
        connection, pump = transport.open_streams(reader, writer, ClientConnection)
        return cls(connection, pump)

    @property
    def closed(self) -> bool:
        """The connection is closed; every call raises Unavailable."""
        return self._connection.is_closed

    async def call(
        self,
        service: str,
        method: str,
        request: Message,
        response_type: type[M],
        *,
        timeout: float | None = None,
        metadata: MetadataArg | None = None,
    ) -> M:
        """Call ``service/method`` and return its decoded response.

        ``timeout`` (seconds) is sent as the request's deadline and also enforced
        here. Raises a StatusError subclass for a non-OK status (Unimplemented,
        DeadlineExceeded, ...), Unavailable when the connection is or gets closed,
        ResourceExhausted for a request over 4 MiB (not sent), Internal for a
        response that does not decode.
        """
        connection = self._connection
        if connection.is_closed:
            raise Unavailable(f"ttrpc client: {connection.close_reason}")
        envelope = Request(service=service, method=method, payload=request.SerializeToString())
        if timeout is not None:
            if timeout <= 0:
                raise DeadlineExceeded(f"{service}/{method}: timeout {timeout:g}s already passed")
            envelope.timeout_nano = int(timeout * 1e9)
        if metadata:
            envelope.metadata.extend(metadata_to_pairs(metadata))
        data = envelope.SerializeToString()
        if len(data) > MAX_MESSAGE_LENGTH:
            raise ResourceExhausted(
                f"{service}/{method}: request of {len(data)} bytes exceeds the maximum message "
                f"size of {MAX_MESSAGE_LENGTH}"
            )
        stream_id = self._next_stream_id
        if stream_id > MAX_STREAM_ID:
            raise Unavailable("ttrpc client: stream ids exhausted on this connection; reconnect")
        self._next_stream_id = stream_id + 2

        waiter: asyncio.Future[bytes] = self._loop.create_future()
        pending = connection.pending
        pending[stream_id] = waiter
        connection.write_frame(stream_id, REQUEST, 0, data)
        timer = (
            None if timeout is None else self._loop.call_later(timeout, _expire, waiter, timeout)
        )
        try:
            if connection.write_paused:
                await _drain_unless_ended(connection, waiter)
            raw = await waiter
        finally:
            if timer is not None:
                timer.cancel()
            pending.pop(stream_id, None)

        try:
            response = Response.FromString(raw)
        except DecodeError as err:
            raise Internal(f"{service}/{method}: cannot decode the response: {err}") from err
        status = response.status
        if status.code:
            raise status_error(status.code, status.message, status.details)
        try:
            return response_type.FromString(response.payload)
        except DecodeError as err:
            raise Internal(
                f"{service}/{method}: cannot decode {response_type.DESCRIPTOR.full_name}: {err}"
            ) from err

    async def close(self, timeout: float = 5.0) -> None:
        """Close the connection; calls still waiting fail with Unavailable."""
        connection = self._connection
        connection.close("client closed")
        try:
            await asyncio.wait_for(connection.wait_closed(), timeout)
        except TimeoutError:
            connection.abort("client closed (unsent data dropped)")
        if self._pump is not None:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(asyncio.shield(self._pump), timeout)

    async def wait_closed(self) -> None:
        """Return once the connection has ended (either side closed it)."""
        await self._connection.wait_closed()

    async def __aenter__(self) -> Client:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()
