"""The connection plumbing shared by server and client: an asyncio protocol of frames.

:class:`FrameProtocol` receives bytes from any asyncio transport (socket, pipe or
character device, or a ``StreamReader`` pumped by :func:`pump_stream`), decodes
frames with :class:`~ttrpc.framing.FrameDecoder` and writes frames to a write
transport, which may be a different object than the read side (a character device
is read and written through two pipe transports). Subclasses implement what a
frame means.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from ttrpc.errors import Unavailable
from ttrpc.framing import HEADER, FrameDecoder

log = logging.getLogger(__name__)

_pack_header = HEADER.pack


class FrameProtocol(asyncio.Protocol):
    """Base of the server and client connections: frame I/O, flow control, close."""

    def __init__(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._decoder = FrameDecoder(self.frame_received, self.oversized_frame_received)
        self._reader: asyncio.BaseTransport | None = None
        self._writer: asyncio.WriteTransport | None = None
        self._stream_writer: asyncio.StreamWriter | None = None
        self._write_paused = False
        # Frames written in one event loop iteration leave in one transport write.
        self._outbox: list[bytes] = []
        self._flush_scheduled = False
        self._drain_waiters: list[asyncio.Future[None]] = []
        self._closed: asyncio.Future[None] = self._loop.create_future()
        self._close_reason = "connection not established"
        self.label = "ttrpc connection"

    # -- what subclasses implement -------------------------------------------------

    def frame_received(self, stream_id: int, message_type: int, flags: int, data: bytes) -> None:
        """A complete frame arrived. Must not raise."""
        raise NotImplementedError

    def oversized_frame_received(
        self, stream_id: int, message_type: int, flags: int, length: int
    ) -> None:
        """A frame over the size limit arrived; its data is being skipped. Must not raise."""
        raise NotImplementedError

    def connection_ready(self) -> bool:
        """The transport is attached; return False to refuse (the transport is aborted)."""
        return True

    def connection_ended(self, reason: str) -> None:
        """The connection is gone; called once."""

    # -- asyncio.Protocol ------------------------------------------------------------

    def attach_writer(self, writer: asyncio.WriteTransport) -> None:
        """Write through ``writer`` instead of the read transport (a pair of pipes)."""
        self._writer = writer

    def attach_streams(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        """Run over a StreamReader/StreamWriter pair; call :func:`pump_stream` next.

        The writer's transport carries our frames; flow control goes through
        ``writer.drain()`` because the transport reports to the stream's protocol.
        """
        transport = writer.transport
        if not isinstance(transport, asyncio.WriteTransport):
            raise TypeError(f"{transport!r} cannot be written")
        self._stream_writer = writer
        self.connection_made(transport)

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._reader = transport
        if self._writer is None:
            if not isinstance(transport, asyncio.WriteTransport):
                raise TypeError(f"{transport!r} cannot be written; attach a writer first")
            self._writer = transport
        self._close_reason = "connection closed"
        if not self.connection_ready():
            self._writer.abort()
            if transport is not self._writer:
                transport.close()

    def data_received(self, data: bytes) -> None:
        self._decoder.feed(data)

    def eof_received(self) -> bool | None:
        # Returning False lets the transport close itself; connection_lost follows.
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        if self._closed.done():
            return
        pending = self._decoder.pending
        if exc is not None:
            reason = f"connection lost: {exc}"
        elif pending:
            reason = f"peer closed the connection in the middle of a frame ({pending} bytes)"
        else:
            reason = self._close_reason
        self._close_reason = reason
        self._closed.set_result(None)
        if self._writer is not None and self._writer is not self._reader:
            self._writer.close()
        if self._reader is not None and not self._reader.is_closing():
            self._reader.close()
        for waiter in self._drain_waiters:
            if not waiter.done():
                waiter.set_exception(Unavailable(f"{self.label}: {reason}"))
        self._drain_waiters.clear()
        log.debug("%s: %s", self.label, reason)
        self.connection_ended(reason)

    def pause_writing(self) -> None:
        self._write_paused = True

    def resume_writing(self) -> None:
        self._write_paused = False
        for waiter in self._drain_waiters:
            if not waiter.done():
                waiter.set_result(None)
        self._drain_waiters.clear()

    # -- used by subclasses and owners -----------------------------------------------

    @property
    def is_closed(self) -> bool:
        """The connection is closed or closing; nothing more can be written."""
        return self._closed.done() or self._writer is None or self._writer.is_closing()

    @property
    def close_reason(self) -> str:
        """Why the connection ended (meaningful once it has)."""
        return self._close_reason

    @property
    def write_paused(self) -> bool:
        """The transport's buffer is full; writers should await :meth:`drain`."""
        return self._write_paused

    def write_frame(self, stream_id: int, message_type: int, flags: int, data: bytes) -> None:
        """Queue one frame. The caller has checked the size limit; dropped when closed.

        Frames queued during one event loop iteration are written together at the
        start of the next, which saves a system call per frame under concurrency.
        """
        outbox = self._outbox
        outbox.append(_pack_header(len(data), stream_id, message_type, flags))
        outbox.append(data)
        if not self._flush_scheduled:
            self._flush_scheduled = True
            self._loop.call_soon(self._flush)

    def _flush(self) -> None:
        self._flush_scheduled = False
        outbox = self._outbox
        if not outbox:
            return
        self._outbox = []
        writer = self._writer
        if writer is not None and not writer.is_closing():
            writer.write(b"".join(outbox))

    async def drain(self) -> None:
        """Wait until the transport accepts more data. Raises Unavailable when closed."""
        if self._stream_writer is not None:
            try:
                await self._stream_writer.drain()
            except (ConnectionError, OSError) as err:
                raise Unavailable(f"{self.label}: {err}") from err
            return
        if not self._write_paused:
            return
        if self._closed.done():
            raise Unavailable(f"{self.label}: {self._close_reason}")
        waiter: asyncio.Future[None] = self._loop.create_future()
        self._drain_waiters.append(waiter)
        await waiter

    def get_extra_info(self, name: str) -> Any:
        """Transport information (``"socket"``, ``"peername"``) from the read side."""
        return None if self._reader is None else self._reader.get_extra_info(name)

    def close(self, reason: str = "closed locally") -> None:
        """Close the connection; pending writes are flushed first."""
        if self._closed.done():
            return
        self._close_reason = reason
        self._flush()
        if self._writer is not None:
            self._writer.close()
        if self._reader is not None and self._reader is not self._writer:
            self._reader.close()
        if self._writer is None and self._reader is None:
            self.connection_lost(None)

    def abort(self, reason: str) -> None:
        """Close the connection at once, dropping unsent data."""
        if self._closed.done():
            return
        self._close_reason = reason
        self._outbox.clear()
        if self._writer is not None:
            self._writer.abort()
        if self._reader is not None and self._reader is not self._writer:
            self._reader.close()
        if self._writer is None and self._reader is None:
            self.connection_lost(None)

    async def wait_closed(self) -> None:
        """Return once the connection has ended."""
        await asyncio.shield(self._closed)


class WriteSide(asyncio.Protocol):
    """The protocol of a separate write transport: forwards flow control and loss."""

    def __init__(self, owner: FrameProtocol) -> None:
        self._owner = owner

    def pause_writing(self) -> None:
        self._owner.pause_writing()

    def resume_writing(self) -> None:
        self._owner.resume_writing()

    def connection_lost(self, exc: Exception | None) -> None:
        self._owner.connection_lost(exc)


async def pump_stream(reader: asyncio.StreamReader, protocol: FrameProtocol) -> None:
    """Feed a StreamReader into ``protocol`` until end of stream or error."""
    exc: Exception | None = None
    try:
        while True:
            data = await reader.read(256 * 1024)
            if not data:
                break
            protocol.data_received(data)
    except (ConnectionError, OSError) as err:
        exc = err
    protocol.connection_lost(exc)
