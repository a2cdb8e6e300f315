"""The few protobuf messages the shim entry speaks, encoded and decoded by hand.

containerd runs ``containerd-shim-contrast-cc-v2 start`` twice per pod, on the pod's
path; importing the protobuf runtime and our generated modules costs that short-lived
process more than everything else it does (measured in ``bench/pod_shim.py``). The
messages it needs are small and flat, so they are written here from their ``.proto``
definitions (field numbers as in ``api/``): proto3, so empty strings, zero numbers and
unset messages are left out, fields in field-number order, as the protobuf runtime
serializes them. ``tests/unit/shim/test_messages.py`` checks every encoder and decoder
against the generated classes.

A decoder here only answers when it is sure to answer what the protobuf runtime would:
for anything else (a wire type it does not expect, an unknown or repeated sub-message,
bad UTF-8, a truncated field) it raises :class:`Unusual`, and the caller falls back to
the generated code, whose answer (or error message) is then the one given.
"""

from __future__ import annotations

# Wire types.
VARINT = 0
FIXED64 = 1
LENGTH = 2
FIXED32 = 5


class Unusual(Exception):
    """Input the hand decoders leave to the protobuf runtime."""


class BadText(Unusual):
    """A string field that is no UTF-8: the protobuf runtime refuses the whole message
    (proto3 strings are checked), so the caller may take that as its answer."""


def varint(value: int) -> bytes:
    """A base-128 varint; negative numbers as their 64-bit two's complement (int32/int64)."""
    if value < 0:
        value += 1 << 64
    out = bytearray()
    while True:
        low = value & 0x7F
        value >>= 7
        if value:
            out.append(low | 0x80)
        else:
            out.append(low)
            return bytes(out)


def length_field(number: int, data: bytes) -> bytes:
    """A length-delimited field (string, bytes, sub-message), always written."""
    return varint(number << 3 | LENGTH) + varint(len(data)) + data


def string_field(number: int, text: str) -> bytes:
    """A proto3 string field: nothing when empty."""
    return length_field(number, text.encode()) if text else b""


def fields(data: bytes) -> list[tuple[int, int, int | bytes]]:
    """(field number, wire type, value) of a serialized message: varints as int, the
    others as their bytes. Raises Unusual for a malformed message or a group."""
    out: list[tuple[int, int, int | bytes]] = []
    pos = 0
    end = len(data)

    def read_varint() -> int:
        nonlocal pos
        value = shift = 0
        while True:
            if pos >= end or shift > 63:
                raise Unusual("a varint runs past the end")
            byte = data[pos]
            pos += 1
            value |= (byte & 0x7F) << shift
            shift += 7
            if not byte & 0x80:
                if value >> 64:
                    raise Unusual("a varint over 64 bits")
                return value

    while pos < end:
        tag = read_varint()
        number, kind = tag >> 3, tag & 7
        if number == 0 or number >= 1 << 29:
            raise Unusual(f"field number {number}")
        value: int | bytes
        if kind == VARINT:
            value = read_varint()
        elif kind == LENGTH:
            size = read_varint()
            if size > end - pos:
                raise Unusual("a field runs past the end")
            value = data[pos : pos + size]
            pos += size
        elif kind in (FIXED64, FIXED32):
            size = 8 if kind == FIXED64 else 4
            if size > end - pos:
                raise Unusual("a field runs past the end")
            value = data[pos : pos + size]
            pos += size
        else:
            raise Unusual(f"wire type {kind}")
        out.append((number, kind, value))
    return out


def _text(value: int | bytes, kind: int) -> str:
    if kind != LENGTH or not isinstance(value, bytes):
        raise Unusual("a string field of another wire type")
    try:
        return value.decode()
    except UnicodeDecodeError as err:
        raise BadText("a string field with bad UTF-8") from err


def _strings(data: bytes, known: dict[int, str]) -> dict[str, str]:
    """The string fields ``known`` (number -> name) of a flat message, the last of each
    when repeated (as protobuf keeps); any other field raises Unusual."""
    found = dict.fromkeys(known.values(), "")
    for number, kind, value in fields(data):
        if number not in known:
            raise Unusual(f"field {number}")
        found[known[number]] = _text(value, kind)
    return found


class AnyMessage:
    """A ``google.protobuf.Any``: ``type_url`` (1) and ``value`` (2)."""

    __slots__ = ("_serialized", "type_url", "value")

    def __init__(
        self, type_url: str = "", value: bytes = b"", serialized: bytes | None = None
    ) -> None:
        self.type_url = type_url
        self.value = value
        # As the protobuf runtime serialized it (with any unknown fields it kept).
        self._serialized = serialized

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, AnyMessage):
            return NotImplemented
        return (self.type_url, self.value) == (other.type_url, other.value)

    def __hash__(self) -> int:
        return hash((self.type_url, self.value))

    def __repr__(self) -> str:
        return f"AnyMessage(type_url={self.type_url!r}, value={self.value!r})"

    def serialize(self) -> bytes:
        if self._serialized is not None:
            return self._serialized
        out = string_field(1, self.type_url)
        if self.value:
            out += length_field(2, self.value)
        return out

    @classmethod
    def parse(cls, data: bytes) -> AnyMessage:
        """Raises Unusual (see the module's docstring)."""
        message = cls()
        for number, kind, value in fields(data):
            if number == 1:
                message.type_url = _text(value, kind)
            elif number == 2 and kind == LENGTH and isinstance(value, bytes):
                message.value = value
            else:
                raise Unusual(f"Any field {number}")
        return message


class BootstrapParams:
    """What the shim entry reads of containerd 2.3's ``BootstrapParams``
    (``containerd.runtime.bootstrap.v1``): instance_id 1, namespace 2, log_level 3,
    containerd_version 4, containerd_ttrpc_address 5, containerd_grpc_address 6,
    containerd_binary 7, extensions 8 (``Extension``: value 1, an Any), socket_dir 9."""

    __slots__ = ("extensions", "grpc_address", "instance_id", "namespace", "ttrpc_address")

    def __init__(self) -> None:
        self.instance_id = ""
        self.namespace = ""
        self.ttrpc_address = ""
        self.grpc_address = ""
        # Each extension's value; None for an extension without one.
        self.extensions: list[AnyMessage | None] = []

    @classmethod
    def parse(cls, data: bytes) -> BootstrapParams:
        """Raises Unusual, also where the protobuf runtime would fail to decode."""
        params = cls()
        strings = {1: "instance_id", 2: "namespace", 4: "", 5: "ttrpc_address",
                   6: "grpc_address", 7: "", 9: ""}  # fmt: skip
        for number, kind, value in fields(data):
            if number in strings:
                text = _text(value, kind)
                if strings[number]:
                    setattr(params, strings[number], text)
            elif number == 3 and kind == VARINT:
                pass  # log_level: an enum, any value is kept by proto3
            elif number == 8 and kind == LENGTH and isinstance(value, bytes):
                params.extensions.append(_extension_value(value))
            else:
                raise Unusual(f"BootstrapParams field {number}")
        return params


def _extension_value(data: bytes) -> AnyMessage | None:
    found = fields(data)
    if not found:
        return None
    if len(found) > 1 or found[0][:2] != (1, LENGTH):
        raise Unusual("an Extension with other or repeated fields")  # protobuf merges these
    value = found[0][2]
    assert isinstance(value, bytes)
    return AnyMessage.parse(value)


def bootstrap_result(version: int, address: str, protocol: str) -> bytes:
    """A serialized ``BootstrapResult`` (version 1, address 2, protocol 3; no metadata)."""
    return _number_field(1, version) + string_field(2, address) + string_field(3, protocol)


def register_request(  # noqa: PLR0917 (the message's fields, in their order)
    namespace: str,
    task_id: str,
    bundle: str,
    ttrpc_address: str,
    grpc_address: str,
    options: AnyMessage | None,
) -> bytes:
    """A serialized ``contrast.node.v1.RegisterRequest`` (``api/node/shim.proto``)."""
    out = (
        string_field(1, namespace)
        + string_field(2, task_id)
        + string_field(3, bundle)
        + string_field(4, ttrpc_address)
        + string_field(5, grpc_address)
    )
    if options is not None:  # a set message field is written even when empty
        out += length_field(6, options.serialize())
    return out


def listen_request(namespace: str) -> bytes:
    """A serialized ``contrast.node.v1.ListenRequest``."""
    return string_field(1, namespace)


def address_of(data: bytes) -> str:
    """``address`` (1) of a ``RegisterResponse`` or ``ListenResponse``; raises Unusual."""
    return _strings(data, {1: "address"})["address"]


def runtime_info(name: str, version: str, options: AnyMessage | None) -> bytes:
    """A serialized ``containerd.types.RuntimeInfo``: name 1, version 2
    (``RuntimeVersion``: version 1), options 3."""
    out = string_field(1, name) + length_field(2, string_field(1, version))
    if options is not None:
        out += length_field(3, options.serialize())
    return out


def cleanup_request(namespace: str, task_id: str, bundle: str) -> bytes:
    """A serialized ``contrast.node.v1.CleanupRequest``."""
    return string_field(1, namespace) + string_field(2, task_id) + string_field(3, bundle)


def _number_field(number: int, value: int) -> bytes:
    return varint(number << 3 | VARINT) + varint(value) if value else b""


def _varints(
    found: list[tuple[int, int, int | bytes]], signed: tuple[int, ...] = ()
) -> dict[int, int]:
    """The varint fields among ``found`` (the last of each), ``signed`` ones as two's
    complement; raises Unusual for a field of another wire type."""
    numbers: dict[int, int] = {}
    for number, kind, value in found:
        if kind != VARINT or not isinstance(value, int):
            raise Unusual(f"field {number} is no varint")
        numbers[number] = value - (1 << 64) if number in signed and value >> 63 else value
    return numbers


def canonical_delete_response(data: bytes) -> bytes:
    """``data``, a serialized ``containerd.task.v2.DeleteResponse`` (pid 1 and
    exit_status 2, uint32; exited_at 3, a Timestamp: seconds 1, int64, nanos 2,
    int32), when it is exactly what the protobuf runtime writes for the message it
    parses from it (so printing ``data`` prints the parsed message); raises Unusual
    otherwise (repeats, order, explicit zeros, unknown fields, values the runtime
    would truncate all make the re-encoding differ)."""
    found = fields(data)
    numbers = _varints([field for field in found if field[0] != 3])
    if any(value >> 32 for value in numbers.values()):
        raise Unusual("a uint32 field out of range")
    out = _number_field(1, numbers.get(1, 0)) + _number_field(2, numbers.get(2, 0))
    stamps = [value for number, kind, value in found if number == 3 and kind == LENGTH]
    if stamps:
        stamp = stamps[-1]
        assert isinstance(stamp, bytes)
        time = _varints(fields(stamp), signed=(1, 2))
        if not -(1 << 31) <= time.get(2, 0) < 1 << 31:
            raise Unusual("nanos out of range")
        body = _number_field(1, time.get(1, 0)) + _number_field(2, time.get(2, 0))
        out += length_field(3, body)
    if out != data:
        raise Unusual("not as the protobuf runtime writes it")
    return out
