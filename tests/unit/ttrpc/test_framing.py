"""The frame header and the incremental decoder."""

from __future__ import annotations

import random
import struct

import pytest

from ttrpc.framing import (
    HEADER_LENGTH,
    MAX_MESSAGE_LENGTH,
    FrameDecoder,
    MessageType,
    encode_frame,
)

Frame = tuple[int, int, int, bytes]
Oversized = tuple[int, int, int, int]


class Collector:
    def __init__(self, max_length: int = MAX_MESSAGE_LENGTH) -> None:
        self.frames: list[Frame] = []
        self.oversized: list[Oversized] = []
        self.decoder = FrameDecoder(self.on_frame, self.on_oversized, max_length)

    def on_frame(self, stream_id: int, message_type: int, flags: int, data: bytes) -> None:
        self.frames.append((stream_id, message_type, flags, data))

    def on_oversized(self, stream_id: int, message_type: int, flags: int, length: int) -> None:
        self.oversized.append((stream_id, message_type, flags, length))


def test_header_layout_is_big_endian_length_stream_type_flags() -> None:
    frame = encode_frame(0x01020304, MessageType.RESPONSE, 0x05, b"abc")
    assert HEADER_LENGTH == 10
    assert frame == bytes.fromhex("00000003010203040205") + b"abc"


def test_encode_rejects_oversized_payload_and_bad_fields() -> None:
    with pytest.raises(ValueError, match="exceeds the maximum"):
        encode_frame(1, MessageType.REQUEST, 0, b"\0" * (MAX_MESSAGE_LENGTH + 1))
    with pytest.raises(ValueError, match="invalid ttrpc frame header"):
        encode_frame(1 << 32, MessageType.REQUEST, 0, b"")
    assert len(encode_frame(1, MessageType.REQUEST, 0, b"\0" * MAX_MESSAGE_LENGTH)) == (
        MAX_MESSAGE_LENGTH + HEADER_LENGTH
    )


def test_decodes_several_frames_from_one_chunk() -> None:
    c = Collector()
    c.decoder.feed(
        encode_frame(1, 1, 0, b"one") + encode_frame(3, 1, 2, b"") + encode_frame(5, 3, 1, b"x")
    )
    assert c.frames == [(1, 1, 0, b"one"), (3, 1, 2, b""), (5, 3, 1, b"x")]
    assert c.decoder.pending == 0


def test_decodes_frames_split_at_every_byte() -> None:
    frames = [(2 * i + 1, 1, 0, bytes([i]) * (i * 7)) for i in range(20)]
    stream = b"".join(encode_frame(*f) for f in frames)
    c = Collector()
    for i in range(len(stream)):
        c.decoder.feed(stream[i : i + 1])
    assert c.frames == frames


def test_decodes_frames_split_at_random_places() -> None:
    rng = random.Random(7)
    frames = [(2 * i + 1, 1, 0, rng.randbytes(rng.randrange(0, 3000))) for i in range(200)]
    stream = b"".join(encode_frame(*f) for f in frames)
    c = Collector()
    pos = 0
    while pos < len(stream):
        step = rng.randrange(1, 5000)
        c.decoder.feed(stream[pos : pos + step])
        pos += step
    assert c.frames == frames
    assert c.decoder.pending == 0


def test_incomplete_frame_is_pending() -> None:
    c = Collector()
    c.decoder.feed(encode_frame(1, 1, 0, b"abcdef")[:13])
    assert c.frames == []
    assert c.decoder.pending == 13


def test_oversized_frame_is_reported_and_its_data_skipped_across_chunks() -> None:
    c = Collector(max_length=100)
    big = struct.pack(">IIBB", 1000, 7, 1, 0) + b"\xaa" * 1000
    stream = big + encode_frame(9, 1, 0, b"after")
    # Header alone first: reported at once, before any of its data arrives.
    c.decoder.feed(stream[:10])
    assert c.oversized == [(7, 1, 0, 1000)]
    assert c.decoder.pending == 1000
    for i in range(10, len(stream), 333):
        c.decoder.feed(stream[i : i + 333])
    assert c.frames == [(9, 1, 0, b"after")]
    assert c.oversized == [(7, 1, 0, 1000)]


def test_oversized_frame_inside_one_chunk() -> None:
    c = Collector(max_length=4)
    c.decoder.feed(encode_frame(1, 1, 0, b"toolong") + encode_frame(3, 1, 0, b"ok"))
    assert c.oversized == [(1, 1, 0, 7)]
    assert c.frames == [(3, 1, 0, b"ok")]


def test_limit_is_four_mebibytes_inclusive() -> None:
    c = Collector()
    at_limit = encode_frame(1, 1, 0, b"\0" * MAX_MESSAGE_LENGTH)
    c.decoder.feed(at_limit)
    assert len(c.frames) == 1
    assert c.oversized == []
    c.decoder.feed(struct.pack(">IIBB", MAX_MESSAGE_LENGTH + 1, 3, 1, 0))
    assert c.oversized == [(3, 1, 0, MAX_MESSAGE_LENGTH + 1)]
