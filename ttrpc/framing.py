"""The ttrpc frame: a 10-byte big-endian header and up to 4 MiB of data.

Header (containerd/ttrpc PROTOCOL.md): u32 data length, u32 stream id, u8 message
type, u8 flags. This module is sans-I/O: :func:`encode_frame` builds the bytes to
write and :class:`FrameDecoder` turns whatever a transport delivered into frames.
It is on the hot path of every call, so it avoids per-frame objects and copies the
payload exactly once.
"""

from __future__ import annotations

import enum
import struct
from collections.abc import Callable
from typing import Final

HEADER: Final = struct.Struct(">IIBB")
HEADER_LENGTH: Final = HEADER.size
MAX_MESSAGE_LENGTH: Final = 4 << 20
MAX_STREAM_ID: Final = 0xFFFFFFFF

_pack = HEADER.pack
_unpack_from = HEADER.unpack_from


class MessageType(enum.IntEnum):
    """The message types of PROTOCOL.md."""

    REQUEST = 0x1
    RESPONSE = 0x2
    DATA = 0x3


class Flag(enum.IntFlag):
    """Frame flags; their meaning depends on the message type."""

    REMOTE_CLOSED = 0x1
    REMOTE_OPEN = 0x2
    # Not in PROTOCOL.md, but the Go implementation sets it on data frames without data.
    NO_DATA = 0x4


# Plain ints for the hot path (IntEnum comparisons cost an attribute lookup each).
REQUEST: Final = int(MessageType.REQUEST)
RESPONSE: Final = int(MessageType.RESPONSE)
DATA: Final = int(MessageType.DATA)


def encode_frame(stream_id: int, message_type: int, flags: int, payload: bytes) -> bytes:
    """Header and payload as one bytes object, ready for a single transport write.

    Raises ValueError when the payload exceeds the 4 MiB limit or a field is out of
    range; callers check the size first when they want to answer with a status.
    """
    if len(payload) > MAX_MESSAGE_LENGTH:
        raise ValueError(
            f"ttrpc message of {len(payload)} bytes exceeds the maximum of {MAX_MESSAGE_LENGTH}"
        )
    try:
        return _pack(len(payload), stream_id, message_type, flags) + payload
    except struct.error as err:
        raise ValueError(f"invalid ttrpc frame header: {err}") from err


FrameCallback = Callable[[int, int, int, bytes], None]
"""Called with (stream id, message type, flags, payload) for each complete frame."""

OversizedCallback = Callable[[int, int, int, int], None]
"""Called with (stream id, message type, flags, declared length) for a frame over the limit."""


class FrameDecoder:
    """Splits a byte stream into frames and reports each to a callback.

    A frame whose declared length exceeds ``max_length`` is reported to
    ``on_oversized`` as soon as its header arrives; its data is then skipped as it
    comes in, without being buffered, and decoding resumes with the next frame (this
    is how the Go implementation keeps the connection usable).
    """

    __slots__ = ("_buffer", "_discard", "_max_length", "_need", "_on_frame", "_on_oversized")

    def __init__(
        self,
        on_frame: FrameCallback,
        on_oversized: OversizedCallback,
        max_length: int = MAX_MESSAGE_LENGTH,
    ) -> None:
        self._on_frame = on_frame
        self._on_oversized = on_oversized
        self._max_length = max_length
        self._buffer = bytearray()
        # Bytes the buffer must hold before decoding is worth trying again.
        self._need = HEADER_LENGTH
        # Bytes of an oversized frame still to skip.
        self._discard = 0

    @property
    def pending(self) -> int:
        """Bytes of an incomplete frame held or still to be skipped (0 at a frame boundary)."""
        return len(self._buffer) + self._discard

    def feed(self, data: bytes) -> None:
        """Decode ``data``, calling the callbacks for every frame it completes."""
        if self._discard:
            if len(data) <= self._discard:
                self._discard -= len(data)
                return
            data = data[self._discard :]
            self._discard = 0
        buffer = self._buffer
        if buffer:
            buffer += data
            if len(buffer) < self._need:
                return
            data = bytes(buffer)
            buffer.clear()

        end = len(data)
        pos = 0
        max_length = self._max_length
        on_frame = self._on_frame
        while end - pos >= HEADER_LENGTH:
            length, stream_id, message_type, flags = _unpack_from(data, pos)
            start = pos + HEADER_LENGTH
            if length > max_length:
                pos = start + length
                if pos > end:
                    self._discard = pos - end
                    pos = end
                self._on_oversized(stream_id, message_type, flags, length)
                continue
            stop = start + length
            if stop > end:
                self._need = stop - pos
                buffer += memoryview(data)[pos:]
                return
            on_frame(stream_id, message_type, flags, data[start:stop])
            pos = stop
        self._need = HEADER_LENGTH
        if pos < end:
            buffer += memoryview(data)[pos:]
