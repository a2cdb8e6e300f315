"""gzip with a ceiling, and the pod annotation encoding (base64 of gzip of the TOML).

Decompression is streamed with a hard output cap, so a gzip bomb costs at most the cap
in memory and is refused, never expanded.
"""

from __future__ import annotations

import base64
import binascii
import gzip
import re
import zlib

from guest.initdata.document import MAX_DOCUMENT_BYTES
from guest.initdata.errors import InitdataError

ANNOTATION = "io.katacontainers.config.hypervisor.cc_init_data"

# Kubernetes caps all annotations of an object at 256 KiB together.
MAX_COMPRESSED_BYTES = 256 * 1024
MAX_ANNOTATION_CHARS = (MAX_COMPRESSED_BYTES + 2) // 3 * 4

_BASE64 = re.compile(r"[A-Za-z0-9+/]*={0,2}")


def compress(raw: bytes) -> bytes:
    """gzip ``raw`` reproducibly (no name, mtime 0)."""
    return gzip.compress(raw, compresslevel=9, mtime=0)


def decompress(blob: bytes, limit: int = MAX_DOCUMENT_BYTES) -> bytes:
    """Gunzip exactly one gzip member of ``blob``, producing at most ``limit`` bytes.

    Raises InitdataError when ``blob`` is not gzip, is truncated or corrupt, has bytes
    after the member, or would expand beyond ``limit`` (a gzip bomb).
    """
    if len(blob) > MAX_COMPRESSED_BYTES:
        raise InitdataError(
            f"initdata gzip is {len(blob)} bytes, more than the limit of {MAX_COMPRESSED_BYTES}"
        )
    if blob[:2] != b"\x1f\x8b":
        raise InitdataError("initdata payload is not gzip (bad magic)")
    inflater = zlib.decompressobj(wbits=16 + zlib.MAX_WBITS)
    out = bytearray()
    pending = blob
    try:
        while not inflater.eof:
            room = limit + 1 - len(out)
            chunk = inflater.decompress(pending, room)
            out += chunk
            if len(out) > limit:
                raise InitdataError(
                    f"initdata gzip expands beyond the limit of {limit} bytes (gzip bomb refused)"
                )
            pending = inflater.unconsumed_tail
            if not pending and not chunk:
                break  # input exhausted without reaching the end of the stream
    except zlib.error as err:
        raise InitdataError(f"initdata gzip is corrupt: {err}") from err
    if not inflater.eof:
        raise InitdataError("initdata gzip is truncated")
    if inflater.unused_data:
        raise InitdataError(
            f"initdata gzip has {len(inflater.unused_data)} unexpected bytes after its end"
        )
    return bytes(out)


def encode_annotation(raw: bytes) -> str:
    """The value of the pod annotation for a raw TOML document."""
    return base64.b64encode(compress(raw)).decode("ascii")


def decode_annotation(value: str) -> bytes:
    """The raw TOML bytes carried by an annotation value.

    Standard base64 alphabet only. Missing ``=`` padding is tolerated (a published
    example omits it); whitespace or any other character is refused.
    """
    if len(value) > MAX_ANNOTATION_CHARS:
        raise InitdataError(
            f"{ANNOTATION} is {len(value)} characters, more than the limit of "
            f"{MAX_ANNOTATION_CHARS}"
        )
    if not value:
        raise InitdataError(f"{ANNOTATION} is empty")
    if not _BASE64.fullmatch(value):
        raise InitdataError(f"{ANNOTATION} is not standard base64")
    bare = value.rstrip("=")
    padded = bare + "=" * (-len(bare) % 4)
    try:
        blob = base64.b64decode(padded, validate=True)
    except (binascii.Error, ValueError) as err:
        raise InitdataError(f"{ANNOTATION} is not valid base64: {err}") from err
    return decompress(blob)
