"""The ttrpc server: registers services and answers requests on any transport.

Protocol violations are answered the way the Go server (containerd/ttrpc) answers
them, on the offending stream id, and the connection stays open:

- a frame over 4 MiB: RESOURCE_EXHAUSTED, its data skipped unread;
- an even stream id: INVALID_ARGUMENT "StreamID must be odd for client initiated streams";
- a request whose stream id is not above every earlier one (re-used, also while still
  in flight): INVALID_ARGUMENT "StreamID cannot be re-used and must increment";
- a request that does not decode: INVALID_ARGUMENT "unmarshal request error: ...";
- a data frame for a stream that is not active: INVALID_ARGUMENT; for an active
  (unary) stream: INVALID_ARGUMENT and the handler is cancelled (the Go server
  dereferences a nil stream handler there);
- a request with the ``remote open`` flag for a unary method: INVALID_ARGUMENT;
  streaming methods: UNIMPLEMENTED (this server implements unary calls only);
- unknown message types are ignored, for compatibility with later protocol versions.

Where we deliberately differ from Go: a request payload that does not decode is
INVALID_ARGUMENT (Go: INTERNAL), and a response over 4 MiB is answered
RESOURCE_EXHAUSTED on its stream (Go drops the whole connection).

A peer that closes the connection, also in the middle of a frame, ends only that
connection. Handlers still running then finish; their answers are dropped.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from collections.abc import Iterable
from pathlib import Path

from google.protobuf import any_pb2
from google.protobuf.descriptor import ServiceDescriptor
from google.protobuf.message import DecodeError

from ttrpc import transport
from ttrpc.context import CallContext, metadata_from_pairs
from ttrpc.errors import Code, StatusError, TransportError
from ttrpc.framing import DATA, MAX_MESSAGE_LENGTH, REQUEST, RESPONSE, Flag
from ttrpc.proto.ttrpc_pb2 import Request, Response, Status
from ttrpc.protocol import FrameProtocol
from ttrpc.service import Method, bind_service
from ttrpc.transport import PeerCheck, PeerCredentials, same_uid

log = logging.getLogger(__name__)

_REMOTE_OPEN = int(Flag.REMOTE_OPEN)


def _status_of(err: Exception) -> tuple[Code, str]:
    """The status for an exception a handler raised (Go's convertCode, for Python)."""
    if isinstance(err, StatusError):
        return err.code, err.message
    if isinstance(err, TimeoutError):
        return Code.DEADLINE_EXCEEDED, str(err) or "deadline exceeded"
    if isinstance(err, FileNotFoundError):
        return Code.NOT_FOUND, str(err)
    if isinstance(err, FileExistsError):
        return Code.ALREADY_EXISTS, str(err)
    if isinstance(err, PermissionError):
        return Code.PERMISSION_DENIED, str(err)
    if isinstance(err, NotImplementedError):
        return Code.UNIMPLEMENTED, str(err) or "not implemented"
    return Code.UNKNOWN, f"{type(err).__name__}: {err}"


_PAYLOAD_TAG = b"\x12"  # Response.payload: field 2, length-delimited
_VARINT_1 = [bytes([n]) for n in range(0x80)]


def _varint(value: int) -> bytes:
    if value < 0x80:
        return _VARINT_1[value]
    out = bytearray()
    while value >= 0x80:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def encode_ok_response(payload: bytes) -> bytes:
    """A serialized OK Response carrying ``payload``, encoded by hand (hot path).

    Like Go, an OK response has no status field at all. An oversized one becomes
    RESOURCE_EXHAUSTED.
    """
    if not payload:
        return b""
    data = _PAYLOAD_TAG + _varint(len(payload)) + payload
    if len(data) > MAX_MESSAGE_LENGTH:
        return _oversized_response(len(data))
    return data


def _oversized_response(length: int) -> bytes:
    status = Status(
        code=Code.RESOURCE_EXHAUSTED,
        message=f"response of {length} bytes exceeds the maximum message size of "
        f"{MAX_MESSAGE_LENGTH}",
    )
    return Response(status=status).SerializeToString()


def encode_response(
    code: int, message: str, payload: bytes, details: tuple[any_pb2.Any, ...] = ()
) -> bytes:
    """A serialized ttrpc Response; an oversized one becomes RESOURCE_EXHAUSTED."""
    if code == Code.OK:
        data = Response(payload=payload).SerializeToString()
    else:
        status = Status(code=code, message=message, details=details)
        data = Response(status=status, payload=payload).SerializeToString()
    if len(data) > MAX_MESSAGE_LENGTH:
        return _oversized_response(len(data))
    return data


class ServerConnection(FrameProtocol):
    """One client connection to a :class:`Server`."""

    def __init__(self, server: Server) -> None:
        super().__init__()
        self.label = "ttrpc server connection"
        self._server = server
        self._services = server.services
        self._inflight: dict[int, asyncio.Task[None]] = {}
        self._last_stream_id = 0
        self._draining = False
        self.peer: PeerCredentials | None = None

    def connection_ready(self) -> bool:
        sock = self.get_extra_info("socket")
        if sock is not None:
            try:
                self.peer = transport.peer_credentials(sock)
            except OSError as err:
                log.warning("ttrpc: refusing a connection: no peer credentials: %s", err)
                return False
        check = self._server.peer_check
        if self.peer is not None and check is not None and not check(self.peer):
            log.warning(
                "ttrpc: refusing a connection from pid %d uid %d gid %d",
                self.peer.pid,
                self.peer.uid,
                self.peer.gid,
            )
            return False
        if self.peer is not None:
            self.label = f"ttrpc server connection from pid {self.peer.pid}"
        return self._server._adopt(self)

    def connection_ended(self, reason: str) -> None:
        self._server._forget(self)

    def pause_writing(self) -> None:
        # The peer does not read our answers: stop reading its requests meanwhile.
        super().pause_writing()
        if isinstance(self._reader, asyncio.ReadTransport):
            self._reader.pause_reading()

    def resume_writing(self) -> None:
        super().resume_writing()
        if isinstance(self._reader, asyncio.ReadTransport) and not self._reader.is_closing():
            self._reader.resume_reading()

    @property
    def inflight(self) -> list[asyncio.Task[None]]:
        """Handler tasks still running."""
        return list(self._inflight.values())

    def start_draining(self) -> None:
        """Answer new requests UNAVAILABLE; running ones go on (graceful shutdown)."""
        self._draining = True

    # -- frames ------------------------------------------------------------------

    def _reply(self, stream_id: int, code: Code, message: str) -> None:
        self.write_frame(stream_id, RESPONSE, 0, encode_response(code, message, b""))

    def oversized_frame_received(
        self, stream_id: int, message_type: int, flags: int, length: int
    ) -> None:
        log.warning("%s: stream %d: discarding a frame of %d bytes", self.label, stream_id, length)
        self._reply(
            stream_id,
            Code.RESOURCE_EXHAUSTED,
            f"message length {length} exceed maximum message size of {MAX_MESSAGE_LENGTH}",
        )

    def frame_received(self, stream_id: int, message_type: int, flags: int, data: bytes) -> None:
        if not stream_id & 1:
            self._reply(
                stream_id,
                Code.INVALID_ARGUMENT,
                "StreamID must be odd for client initiated streams",
            )
        elif message_type == REQUEST:
            self._request_received(stream_id, flags, data)
        elif message_type == DATA:
            task = self._inflight.pop(stream_id, None)
            if task is None:
                self._reply(stream_id, Code.INVALID_ARGUMENT, "StreamID is no longer active")
            else:
                task.cancel()
                self._reply(
                    stream_id,
                    Code.INVALID_ARGUMENT,
                    "data frames are not allowed on a unary stream",
                )
        else:
            log.debug("%s: ignoring a frame of type %d", self.label, message_type)

    def _request_received(self, stream_id: int, flags: int, data: bytes) -> None:
        if stream_id <= self._last_stream_id:
            self._reply(
                stream_id, Code.INVALID_ARGUMENT, "StreamID cannot be re-used and must increment"
            )
            return
        self._last_stream_id = stream_id
        try:
            request = Request.FromString(data)
        except DecodeError as err:
            self._reply(stream_id, Code.INVALID_ARGUMENT, f"unmarshal request error: {err}")
            return
        if self._draining:
            self._reply(stream_id, Code.UNAVAILABLE, "server is shutting down")
            return
        methods = self._services.get(request.service)
        if methods is None:
            self._reply(stream_id, Code.UNIMPLEMENTED, f"service {request.service}")
            return
        method = methods.get(request.method)
        if method is None or method.handler is None:
            self._reply(stream_id, Code.UNIMPLEMENTED, f"method {request.method}")
            return
        if method.streaming:
            self._reply(
                stream_id,
                Code.UNIMPLEMENTED,
                f"streaming method {request.method} is not supported by this server",
            )
            return
        if flags & _REMOTE_OPEN:
            self._reply(
                stream_id,
                Code.INVALID_ARGUMENT,
                f"method {request.method} is unary; the request must not keep the stream open",
            )
            return
        self._inflight[stream_id] = self._loop.create_task(self._handle(stream_id, method, request))

    # -- handlers ----------------------------------------------------------------

    async def _handle(self, stream_id: int, method: Method, request: Request) -> None:
        # One task per call runs this; it is the hot path, hence written out flat.
        timeout_nano = request.timeout_nano
        timeout = timeout_nano / 1e9 if timeout_nano > 0 else None
        ctx = CallContext(
            method.service,
            method.name,
            metadata_from_pairs(request.metadata),
            deadline=None if timeout is None else self._loop.time() + timeout,
            peer=self.peer,
            stream_id=stream_id,
        )
        try:
            try:
                message = method.request_type.FromString(request.payload)
            except DecodeError as err:
                raise StatusError(
                    Code.INVALID_ARGUMENT,
                    f"cannot decode {method.request_type.DESCRIPTOR.full_name}: {err}",
                ) from err
            assert method.handler is not None
            if timeout is None:
                response = await method.handler(message, ctx)
            else:
                try:
                    async with asyncio.timeout(timeout):
                        response = await method.handler(message, ctx)
                except TimeoutError as err:
                    raise StatusError(
                        Code.DEADLINE_EXCEEDED, f"deadline of {timeout:g}s exceeded"
                    ) from err
            if type(response) is method.response_type or isinstance(response, method.response_type):
                frame = encode_ok_response(response.SerializeToString())
            else:
                frame = self._wrong_type_response(method, response)
        except asyncio.CancelledError:
            if self._inflight.pop(stream_id, None) is not None:
                self._reply(stream_id, Code.CANCELLED, "the server cancelled the call")
            raise
        except Exception as err:  # noqa: BLE001 - the one boundary where failures become statuses
            frame = self._error_response(method, err)
        if self._inflight.pop(stream_id, None) is None:
            return  # already answered (protocol violation) or the connection is gone
        self.write_frame(stream_id, RESPONSE, 0, frame)
        if self._write_paused:
            with contextlib.suppress(StatusError):
                await self.drain()

    def _wrong_type_response(self, method: Method, response: object) -> bytes:
        message = (
            f"{method.service}/{method.name} returned {type(response).__name__}, "
            f"expected {method.response_type.DESCRIPTOR.full_name}"
        )
        log.error("%s: %s", self.label, message)
        return encode_response(Code.INTERNAL, message, b"")

    def _error_response(self, method: Method, err: Exception) -> bytes:
        code, message = _status_of(err)
        details: tuple[any_pb2.Any, ...] = ()
        if isinstance(err, StatusError):
            details = err.details
        elif code == Code.UNKNOWN:
            log.error("%s: %s/%s failed", self.label, method.service, method.name, exc_info=err)
        else:
            log.info("%s: %s/%s: %s", self.label, method.service, method.name, message)
        return encode_response(code, message, b"", details)

    def connection_lost(self, exc: Exception | None) -> None:
        # Running handlers finish; their answers are dropped (see module docstring).
        # The server keeps them referenced and waits for them when it closes.
        self._server._keep_orphans(self._inflight.values())
        self._inflight.clear()
        super().connection_lost(exc)


class Server:
    """A ttrpc server: register services, then serve any number of transports.

    ``peer_check`` decides about unix socket peers (default :func:`same_uid`; None
    accepts everyone). Connections without peer credentials (character devices,
    pipes) are not checked.
    """

    def __init__(self, *, peer_check: PeerCheck | None = same_uid) -> None:
        self.peer_check = peer_check
        self.services: dict[str, dict[str, Method]] = {}
        self._listeners: list[tuple[asyncio.Server, str | None]] = []
        self._connections: set[ServerConnection] = set()
        self._pumps: set[asyncio.Task[None]] = set()
        self._orphans: set[asyncio.Task[None]] = set()
        self._closing = False

    def register(
        self, descriptor: ServiceDescriptor, impl: object, *, name: str | None = None
    ) -> None:
        """Serve ``descriptor``'s RPCs with ``impl``'s methods of the same names.

        ``name`` overrides the service name (default ``descriptor.full_name``).
        Raises ValueError when the name is already registered, TypeError for an RPC
        attribute that is not an async method.
        """
        methods = bind_service(descriptor, impl, name)
        service = name or descriptor.full_name
        if service in self.services:
            raise ValueError(f"service {service} is already registered")
        self.services[service] = methods

    # -- transports ----------------------------------------------------------------

    def _check_open(self) -> None:
        if self._closing:
            raise TransportError("the server is closed")

    async def serve_unix(self, path: str | Path, *, mode: int = 0o600) -> None:
        """Listen on a unix socket and return once it accepts connections.

        The socket file gets ``mode``; peers are checked with ``peer_check``. The
        file is removed by :meth:`close`. Raises TransportError.
        """
        self._check_open()
        listener = await transport.listen_unix(path, lambda: ServerConnection(self), mode=mode)
        name = os.fspath(path)
        self._listeners.append((listener, None if name.startswith(("@", "\0")) else name))
        log.info("ttrpc: serving on %s", name)

    async def serve_fd(self, fd: int) -> ServerConnection:
        """Serve one connection over an open fd (stream socket or character device).

        The server owns ``fd`` from now on. Returns the connection; await its
        ``wait_closed()`` to learn when the peer is gone. Raises TransportError.
        """
        self._check_open()
        return await transport.open_fd(fd, lambda: ServerConnection(self))

    async def serve_char_device(self, path: str | Path) -> ServerConnection:
        """Serve one connection over a character device such as a virtio-serial port."""
        self._check_open()
        return await transport.open_char_device(path, lambda: ServerConnection(self))

    def serve_connection(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> ServerConnection:
        """Serve one connection over an asyncio stream pair; returns at once.

        Await the connection's ``wait_closed()`` to learn when it ends.
        """
        self._check_open()
        connection, pump = transport.open_streams(reader, writer, lambda: ServerConnection(self))
        self._pumps.add(pump)
        pump.add_done_callback(self._pumps.discard)
        return connection

    # -- bookkeeping -----------------------------------------------------------------

    def _adopt(self, connection: ServerConnection) -> bool:
        """Track a new connection; False (refuse it) once the server is closing."""
        if self._closing:
            return False
        self._connections.add(connection)
        return True

    def _forget(self, connection: ServerConnection) -> None:
        """Stop tracking a connection that ended."""
        self._connections.discard(connection)

    def _keep_orphans(self, tasks: Iterable[asyncio.Task[None]]) -> None:
        """Hold on to handlers whose connection is gone until they finish."""
        for task in tasks:
            if not task.done():
                self._orphans.add(task)
                task.add_done_callback(self._orphans.discard)

    @property
    def connections(self) -> frozenset[ServerConnection]:
        """The open connections."""
        return frozenset(self._connections)

    async def close(self, timeout: float = 5.0) -> None:
        """Shut down gracefully: stop accepting, let running calls finish, close.

        New requests on open connections are answered UNAVAILABLE meanwhile; calls
        still running after ``timeout`` seconds are cancelled (answered CANCELLED).
        """
        self._closing = True
        for listener, _ in self._listeners:
            listener.close()
        for connection in self._connections:
            connection.start_draining()
        running = [task for c in self._connections for task in c.inflight]
        running.extend(self._orphans)
        if running:
            _, late = await asyncio.wait(running, timeout=timeout)
            for task in late:
                task.cancel()
            if late:
                log.warning("ttrpc: cancelled %d calls still running at shutdown", len(late))
                await asyncio.wait(late)
        connections = list(self._connections)
        for connection in connections:
            connection.close("server shut down")
        if connections:
            closing = [asyncio.ensure_future(c.wait_closed()) for c in connections]
            _, stuck = await asyncio.wait(closing, timeout=timeout)
            for waiter in stuck:
                waiter.cancel()
        for connection in connections:
            connection.abort("server shut down")
        for listener, path in self._listeners:
            await listener.wait_closed()
            if path is not None:
                Path(path).unlink(missing_ok=True)
        self._listeners.clear()
        if self._pumps:
            await asyncio.wait(list(self._pumps), timeout=timeout)
