"""One connection of the ttrpc server: frames in, handlers dispatched, answers out.

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
connection. Handlers still running then finish, their answers dropped; those of RPCs
registered as ``waiting`` (Server.register) are cancelled instead.

Over a character device (a virtio-serial port) the peer's reconnection may not be seen
as an end of file: the host can go and come back between two of our reads. A
connection made with ``new_sessions=True`` therefore takes a request on stream 1
after earlier ones for a new client (every client starts at 1 and never reuses it):
the earlier requests' handlers finish and their answers are dropped, as if the
connection had ended, and stream ids count from 1 again.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import TYPE_CHECKING

from google.protobuf import any_pb2
from google.protobuf.message import DecodeError

from ttrpc import transport
from ttrpc.context import CallContext, metadata_from_pairs
from ttrpc.errors import Code, StatusError
from ttrpc.framing import DATA, MAX_MESSAGE_LENGTH, REQUEST, RESPONSE, Flag
from ttrpc.proto.ttrpc_pb2 import Request
from ttrpc.protocol import FrameProtocol
from ttrpc.responses import encode_ok_response, encode_response, status_of
from ttrpc.service import Method
from ttrpc.transport import PeerCredentials

if TYPE_CHECKING:
    from ttrpc.server import Server

log = logging.getLogger(__name__)

_REMOTE_OPEN = int(Flag.REMOTE_OPEN)


class ServerConnection(FrameProtocol):
    """One client connection to a :class:`Server`."""

    def __init__(self, server: Server, *, new_sessions: bool = False) -> None:
        super().__init__()
        self.label = "ttrpc server connection"
        self._server = server
        self._services = server.services
        self._inflight: dict[int, asyncio.Task[None]] = {}
        self._waiters: set[asyncio.Task[None]] = set()  # of RPCs that only wait
        self._last_stream_id = 0
        self._new_sessions = new_sessions
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
        if stream_id == 1 and self._last_stream_id and self._new_sessions:
            self._new_session()
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
        task = self._loop.create_task(self._handle(stream_id, method, request))
        self._inflight[stream_id] = task
        if method.waits:
            self._waiters.add(task)
            task.add_done_callback(self._waiters.discard)

    def _abandon(self) -> None:
        """The client is gone: its waiting calls cancelled, the others run to their end
        (kept by the server), every answer dropped."""
        for task in self._inflight.values():
            if task in self._waiters:
                task.cancel()
        self._server._keep_orphans(self._inflight.values())
        self._inflight.clear()

    def _new_session(self) -> None:
        log.info(
            "%s: stream 1 again: a new client on this device; dropping the answers of %d "
            "calls of the previous one", self.label, len(self._inflight),
        )  # fmt: skip
        self._abandon()
        self._last_stream_id = 0

    def _owns(self, stream_id: int) -> bool:
        """Whether this task is the current handler of ``stream_id`` (then forget it)."""
        if self._inflight.get(stream_id) is not asyncio.current_task():
            return False  # answered already, the connection is gone, or a new session
        del self._inflight[stream_id]
        return True

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
            if self._owns(stream_id):
                self._reply(stream_id, Code.CANCELLED, "the server cancelled the call")
            raise
        except Exception as err:  # noqa: BLE001 - the one boundary where failures become statuses
            frame = self._error_response(method, err)
        if not self._owns(stream_id):
            return  # already answered (protocol violation), the connection or session is gone
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
        code, message = status_of(err)
        details: tuple[any_pb2.Any, ...] = ()
        if isinstance(err, StatusError):
            details = err.details
        elif code == Code.UNKNOWN:
            log.error("%s: %s/%s failed", self.label, method.service, method.name, exc_info=err)
        else:
            log.info("%s: %s/%s: %s", self.label, method.service, method.name, message)
        return encode_response(code, message, b"", details)

    def connection_lost(self, exc: Exception | None) -> None:
        # Running handlers finish (waiting ones are cancelled); their answers are
        # dropped. The server keeps them referenced and waits for them when it closes.
        self._abandon()
        super().connection_lost(exc)
