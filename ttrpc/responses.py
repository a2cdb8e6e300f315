"""Answers of the ttrpc server: a handler's exception as a status, Responses encoded.

An OK response is encoded by hand (the hot path); any response over 4 MiB becomes
RESOURCE_EXHAUSTED on its stream instead (the Go server drops the connection).
"""

from __future__ import annotations

from google.protobuf import any_pb2

from ttrpc.errors import Code, StatusError
from ttrpc.framing import MAX_MESSAGE_LENGTH
from ttrpc.proto.ttrpc_pb2 import Response, Status


def status_of(err: Exception) -> tuple[Code, str]:
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
