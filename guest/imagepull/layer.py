"""One layer from registry stream to staging directory, verified on the way.

compressed bytes → VerifyingReader (blob digest, descriptor size) → decompressor →
VerifyingReader (config diff_id) → tar extraction. Both digests are checked after the
tar ends and the streams are drained; a failure anywhere leaves only the staging
directory, which the caller discards. When extraction trips over corrupt data, the
digest is checked first so the error names the digest rather than a tar symptom.
"""

from __future__ import annotations

import zlib
from typing import IO, Any, cast

import zstandard

from guest.imagepull.digest import CHUNK, Digest, Readable, VerifyingReader
from guest.imagepull.errors import (
    ImagePullError,
    StoreError,
    UnsafeLayerError,
    VerificationError,
)
from guest.imagepull.manifest import LAYER_TYPES, Compression, Descriptor
from guest.imagepull.unpack import Limits, UnpackResult, unpack


class GzipReader:
    """Streaming gzip decoder accepting concatenated members (as ``gzip`` writes them)."""

    def __init__(self, source: Readable) -> None:
        self._source = source
        self._decoder = zlib.decompressobj(16 + zlib.MAX_WBITS)
        self._pending = b""
        self._in_member = False

    def read(self, size: int = -1, /) -> bytes:
        if size is None or size < 0:
            size = CHUNK
        while True:
            if self._pending:
                self._in_member = True
                try:
                    out = self._decoder.decompress(self._pending, size)
                except zlib.error as err:
                    raise UnsafeLayerError(f"corrupt gzip data: {err}") from err
                self._pending = self._decoder.unconsumed_tail
                if self._decoder.eof:
                    self._pending = self._decoder.unused_data + self._pending
                    self._decoder = zlib.decompressobj(16 + zlib.MAX_WBITS)
                    self._in_member = False
                if out:
                    return out
                continue
            data = self._source.read(CHUNK)
            if not data:
                if self._in_member:
                    raise UnsafeLayerError("truncated gzip stream")
                return b""
            self._pending = data


class ZstdReader:
    def __init__(self, source: Readable) -> None:
        decoder = zstandard.ZstdDecompressor()
        self._reader: Any = decoder.stream_reader(
            cast("IO[bytes]", source), read_size=CHUNK, read_across_frames=True, closefd=False
        )

    def read(self, size: int = -1, /) -> bytes:
        try:
            data: bytes = self._reader.read(CHUNK if size is None or size < 0 else size)
        except zstandard.ZstdError as err:
            raise UnsafeLayerError(f"corrupt zstd data: {err}") from err
        return data


def decompressor(compression: Compression, source: Readable) -> Readable:
    if compression is Compression.GZIP:
        return GzipReader(source)
    if compression is Compression.ZSTD:
        return ZstdReader(source)
    return source


def fetch_layer(
    source: Readable,
    descriptor: Descriptor,
    diff_id: Digest,
    dest: str,
    *,
    limits: Limits,
    preserve_owner: bool | None = None,
) -> UnpackResult:
    """Verify and unpack the layer blob read from ``source`` into ``dest``.

    Raises VerificationError (naming the layer digest) when the blob or its uncompressed
    tar does not match; UnsafeLayerError for hostile or malformed content.
    """
    blob = VerifyingReader(source, descriptor.digest, descriptor.size, what="layer")
    tar_limit = limits.max_total_size + (limits.max_entries + 1) * 2048
    tar = VerifyingReader(
        decompressor(LAYER_TYPES[descriptor.media_type], blob),
        diff_id,
        None,
        limit=tar_limit,
        what=f"layer {descriptor.digest}: uncompressed content (diff_id)",
    )
    try:
        result = unpack(tar, dest, limits, preserve_owner)
        tar.verify()
        blob.verify()
    except (ImagePullError, OSError) as err:
        if isinstance(err, VerificationError) and str(descriptor.digest) in str(err):
            raise
        # Corrupt bytes usually break the tar or the decoder first: say what really failed.
        try:
            blob.verify()
        except VerificationError as mismatch:
            raise mismatch from err
        except ImagePullError:
            pass
        if isinstance(err, ImagePullError):
            raise type(err)(f"layer {descriptor.digest}: {err}") from err
        raise StoreError(
            f"layer {descriptor.digest}: writing into {dest} failed: {err.strerror or err}"
        ) from err
    return result
