"""Hypothesis strategies for ttrpc byte streams: raw garbage, frames with arbitrary
headers, and well-formed frames carrying arbitrary requests, mixed."""

from __future__ import annotations

import struct

from hypothesis import strategies as st

from ttrpc.framing import MAX_MESSAGE_LENGTH
from ttrpc.proto.ttrpc_pb2 import KeyValue, Request, Response

HEADER = struct.Struct(">IIBB")
U32 = st.integers(0, 0xFFFFFFFF)
U8 = st.integers(0, 0xFF)
# Lengths near the limits matter more than any in between.
LENGTHS = st.one_of(
    st.integers(0, 64),
    st.sampled_from([MAX_MESSAGE_LENGTH - 1, MAX_MESSAGE_LENGTH, MAX_MESSAGE_LENGTH + 1]),
    U32,
)
STREAM_IDS = st.one_of(st.integers(1, 16), U32)
MESSAGE_TYPES = st.one_of(st.sampled_from([1, 2, 3]), U8)
TEXT = st.text(max_size=40)


def requests(services: list[str], methods: list[str]) -> st.SearchStrategy[bytes]:
    """A serialized ttrpc Request: known or arbitrary names, arbitrary payload bytes."""
    return st.builds(
        lambda service, method, payload, timeout, metadata: Request(
            service=service,
            method=method,
            payload=payload,
            timeout_nano=timeout,
            metadata=[KeyValue(key=k, value=v) for k, v in metadata],
        ).SerializeToString(),
        st.one_of(st.sampled_from(services), TEXT),
        st.one_of(st.sampled_from(methods), TEXT),
        st.binary(max_size=256),
        st.one_of(st.just(0), st.integers(-(2**63), 2**63 - 1)),
        st.lists(st.tuples(TEXT, TEXT), max_size=3),
    )


def responses() -> st.SearchStrategy[bytes]:
    return st.builds(
        lambda payload: Response(payload=payload).SerializeToString(), st.binary(max_size=256)
    )


def frames(body: st.SearchStrategy[bytes], lying: bool = True) -> st.SearchStrategy[bytes]:
    """One frame: header fields arbitrary, data from ``body`` or arbitrary bytes; the
    declared length is the true one, or (``lying``) anything."""

    def build(
        stream_id: int, message_type: int, flags: int, data: bytes, length: int | None
    ) -> bytes:
        declared = len(data) if length is None else length
        return HEADER.pack(declared, stream_id, message_type, flags) + data

    return st.builds(
        build,
        STREAM_IDS,
        MESSAGE_TYPES,
        st.one_of(st.just(0), U8),
        st.one_of(body, st.binary(max_size=128)),
        st.one_of(st.none(), LENGTHS) if lying else st.none(),
    )


def streams(body: st.SearchStrategy[bytes]) -> st.SearchStrategy[list[bytes]]:
    """What a hostile peer writes, as the chunks it writes them in."""
    return st.lists(st.one_of(frames(body), st.binary(min_size=1, max_size=64)), max_size=8)


def framed(body: st.SearchStrategy[bytes]) -> st.SearchStrategy[list[bytes]]:
    """Complete frames with arbitrary headers and data: a peer that keeps the stream in
    step (after bytes that are not, any stream is indistinguishable from a slow one)."""
    return st.lists(frames(body, lying=False), max_size=8)
