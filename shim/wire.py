"""A blocking ttrpc client for the shim entry's few unary calls, without asyncio.

containerd runs ``containerd-shim-contrast-cc-v2 start`` for every container, and its
start is on the pod's path. Importing asyncio (and ssl with it) and the asyncio ttrpc
client costs that short-lived process about as much as everything else it imports;
``start`` makes two unary calls (the daemon's Register, the relay's Listen), one after
the other, so a plain socket does.

The wire format is containerd/ttrpc's (PROTOCOL.md, ttrpc/proto/ttrpc.proto): a
10-byte big-endian header (u32 length, u32 stream id, u8 type, u8 flags), then a
``ttrpc.Request`` (service 1, method 2, payload 3, timeout_nano 4, metadata 5 as
KeyValue key 1 value 2); the answer is a ``ttrpc.Response`` (status 1 as Status code 1
message 2, payload 2). The envelopes are encoded here by hand, so this module needs
no generated ttrpc code (importing the ``ttrpc`` package imports asyncio), and
:meth:`Connection.call_raw` none of the protobuf runtime (see :mod:`shim.messages`).
The socket is ``_socket``'s: the ``socket`` module adds nothing used here but its
imports (enum, selectors), about a tenth of the entry's own start-up.
"""

from __future__ import annotations

import _socket
import struct

from shim.messages import length_field, varint

# typing costs the entry's start-up a few ms; type checkers read the name alone.
TYPE_CHECKING = False
if TYPE_CHECKING:
    from os import PathLike
    from types import TracebackType
    from typing import TypeVar

    from google.protobuf.message import Message

    M = TypeVar("M", bound=Message)

HEADER = struct.Struct(">IIBB")
REQUEST = 1
RESPONSE = 2
MAX_MESSAGE = 4 << 20


class WireError(Exception):
    """A call did not complete; the message says why."""


class Unreachable(WireError):
    """Nobody accepts connections on the socket."""


class CallStatus(WireError):
    """The server answered with a non-OK status."""

    def __init__(self, code: int, message: str) -> None:
        super().__init__(f"status {code}: {message}")
        self.code = code
        self.message = message


def encode_request(
    service: str,
    method: str,
    payload: bytes,
    timeout_nano: int = 0,
    metadata: tuple[tuple[str, str], ...] = (),
) -> bytes:
    """A serialized ``ttrpc.Request`` (proto3: empty and zero fields are left out)."""
    out = length_field(1, service.encode()) + length_field(2, method.encode())
    if payload:
        out += length_field(3, payload)
    if timeout_nano:
        out += varint(4 << 3) + varint(timeout_nano)
    for key, value in metadata:
        out += length_field(5, length_field(1, key.encode()) + length_field(2, value.encode()))
    return out


def _fields(data: bytes) -> list[tuple[int, int | bytes]]:
    """(field number, value) of a protobuf message: varints as int, length-delimited
    as bytes; fixed-size fields are skipped. Raises WireError when malformed."""
    fields: list[tuple[int, int | bytes]] = []
    pos = 0

    def varint() -> int:
        nonlocal pos
        value = shift = 0
        while True:
            if pos >= len(data) or shift > 63:
                raise WireError("malformed ttrpc response: a varint runs past the end")
            byte = data[pos]
            pos += 1
            value |= (byte & 0x7F) << shift
            shift += 7
            if not byte & 0x80:
                return value

    while pos < len(data):
        tag = varint()
        number, kind = tag >> 3, tag & 7
        if kind == 0:
            fields.append((number, varint()))
        elif kind == 2:
            size = varint()
            if pos + size > len(data):
                raise WireError("malformed ttrpc response: a field runs past the end")
            fields.append((number, data[pos : pos + size]))
            pos += size
        elif kind in (1, 5):
            pos += 8 if kind == 1 else 4
        else:
            raise WireError(f"malformed ttrpc response: wire type {kind}")
    if pos != len(data):
        raise WireError("malformed ttrpc response: a field runs past the end")
    return fields


def decode_response(data: bytes) -> tuple[int, str, bytes]:
    """(status code, status message, payload) of a serialized ``ttrpc.Response``."""
    code, message, payload = 0, "", b""
    for number, value in _fields(data):
        if number == 1 and isinstance(value, bytes):
            for inner, item in _fields(value):
                if inner == 1 and isinstance(item, int):
                    code = item - (1 << 64) if item >= 1 << 63 else item
                elif inner == 2 and isinstance(item, bytes):
                    message = item.decode(errors="replace")
        elif number == 2 and isinstance(value, bytes):
            payload = value
    return code, message, payload


class Connection:
    """One connection to a ttrpc server on a unix socket; calls one at a time."""

    def __init__(self, path: str | PathLike[str], timeout: float) -> None:
        """Connect; raises Unreachable when nobody accepts on ``path``."""
        self._sock = _socket.socket(_socket.AF_UNIX, _socket.SOCK_STREAM)
        self._sock.settimeout(timeout)
        try:
            self._sock.connect(str(path))
        except OSError as err:
            self._sock.close()
            raise Unreachable(f"{path}: {err}") from err
        self._path = path
        self._next_stream = 1

    def __enter__(self) -> Connection:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        err: BaseException | None,
        trace: TracebackType | None,
    ) -> None:
        self.close()

    def close(self) -> None:
        self._sock.close()

    def call(
        self,
        service: str,
        method: str,
        request: Message,
        reply_type: type[M],
        timeout: float,
    ) -> M:
        """One unary call with generated messages. Raises CallStatus for a non-OK answer,
        WireError otherwise."""
        from google.protobuf.message import DecodeError

        payload = self.call_raw(service, method, request.SerializeToString(), timeout)
        try:
            return reply_type.FromString(payload)
        except DecodeError as err:
            raise WireError(
                f"{service}/{method} on {self._path}: the reply does not decode: {err}"
            ) from err

    def call_raw(self, service: str, method: str, payload: bytes, timeout: float) -> bytes:
        """One unary call: the serialized request in, the serialized reply out. Raises
        CallStatus for a non-OK answer, WireError otherwise."""
        envelope = encode_request(service, method, payload, int(timeout * 1e9))
        stream = self._next_stream
        self._next_stream += 2
        what = f"{service}/{method} on {self._path}"
        self._sock.settimeout(timeout)
        try:
            self._sock.sendall(HEADER.pack(len(envelope), stream, REQUEST, 0) + envelope)
            length, answered, kind, _ = HEADER.unpack(self._read(HEADER.size, what))
            if length > MAX_MESSAGE:
                raise WireError(f"{what}: a response of {length} bytes is over the limit")
            data = self._read(length, what)
        except TimeoutError as err:
            raise WireError(f"{what}: no answer within {timeout:g} s") from err
        except OSError as err:
            raise WireError(f"{what}: {err}") from err
        if kind != RESPONSE or answered != stream:
            raise WireError(f"{what}: unexpected frame (type {kind}, stream {answered})")
        code, message, reply = decode_response(data)
        if code != 0:
            raise CallStatus(code, message)
        return reply

    def _read(self, size: int, what: str) -> bytes:
        chunks = bytearray()
        while len(chunks) < size:
            chunk = self._sock.recv(size - len(chunks))
            if not chunk:
                raise WireError(f"{what}: the server closed the connection")
            chunks += chunk
        return bytes(chunks)
