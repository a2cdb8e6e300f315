"""The initdata disk: a raw virtio-blk device the host attaches to the pod-VM.

Layout (kata-containers agent, ``src/agent/src/initdata.rs``)::

    0   8   magic b"initdata"
    8   8   length of the gzip data, little-endian u64
    16  n   gzip of the raw TOML document
    ..      zero padding to a multiple of 512 bytes (a sector)

The reader trusts nothing: magic, a length within the limit, exactly that many bytes,
then bounded decompression. Padding is not required (a short file is fine).
"""

from __future__ import annotations

import logging
import stat
import struct
from pathlib import Path

from guest.initdata.codec import MAX_COMPRESSED_BYTES, compress, decompress
from guest.initdata.errors import InitdataError

log = logging.getLogger(__name__)

MAGIC = b"initdata"
HEADER = struct.Struct("<8sQ")
SECTOR = 512

# Kata's agent looks at virtio-blk (vd*) and virtio-scsi (sd*) disks.
DISK_PREFIXES = ("vd", "sd")


def encode(raw: bytes) -> bytes:
    """The disk image for a raw TOML document (gzip, header, padding to 512 bytes)."""
    blob = compress(raw)
    if len(blob) > MAX_COMPRESSED_BYTES:
        raise InitdataError(
            f"initdata gzip is {len(blob)} bytes, more than the limit of {MAX_COMPRESSED_BYTES}"
        )
    image = HEADER.pack(MAGIC, len(blob)) + blob
    return image + b"\0" * (-len(image) % SECTOR)


def decode(image: bytes) -> bytes:
    """The raw payload (decompressed) of a disk image held in memory."""
    length = _header(image[: HEADER.size])
    blob = image[HEADER.size : HEADER.size + length]
    if len(blob) < length:
        raise InitdataError(
            f"initdata disk is truncated: header says {length} bytes of gzip, {len(blob)} present"
        )
    return decompress(blob)


def read(path: Path) -> bytes:
    """Read and decompress the payload of the initdata disk at ``path``.

    Raises InitdataError for an unreadable device, bad magic, a bad or truncated
    length, or a payload that fails bounded decompression.
    """
    try:
        with open(path, "rb") as dev:
            head = dev.read(HEADER.size)
            length = _header(head)
            blob = dev.read(length)
    except OSError as err:
        raise InitdataError(f"cannot read initdata disk {path}: {err}") from err
    if len(blob) < length:
        raise InitdataError(
            f"initdata disk {path} is truncated: header says {length} bytes of gzip, "
            f"{len(blob)} present"
        )
    return decompress(blob)


def _header(head: bytes) -> int:
    if len(head) < len(MAGIC) or head[: len(MAGIC)] != MAGIC:
        raise InitdataError(f"initdata disk has a bad magic {head[:8]!r} (expected {MAGIC!r})")
    if len(head) < HEADER.size:
        raise InitdataError("initdata disk is truncated inside its length field")
    length = int(HEADER.unpack(head)[1])
    if length == 0:
        raise InitdataError("initdata disk declares an empty payload")
    if length > MAX_COMPRESSED_BYTES:
        raise InitdataError(
            f"initdata disk declares {length} bytes of gzip, more than the limit of "
            f"{MAX_COMPRESSED_BYTES}"
        )
    return length


def find(dev_dir: Path = Path("/dev"), *, block_devices_only: bool = True) -> Path | None:
    """The one disk under ``dev_dir`` that starts with the initdata magic, or None.

    Whole disks named ``vd*``/``sd*`` are probed (partitions cannot hold the image).
    ``block_devices_only=False`` lets tests use plain files. Raises InitdataError when
    more than one disk carries the magic: which one the host meant is then unclear.
    """
    found: list[Path] = []
    try:
        names = sorted(entry.name for entry in dev_dir.iterdir())
    except OSError as err:
        raise InitdataError(f"cannot list {dev_dir}: {err}") from err
    for name in names:
        if not name.startswith(DISK_PREFIXES) or name[-1].isdigit():
            continue
        path = dev_dir / name
        try:
            mode = path.stat().st_mode
            if block_devices_only and not stat.S_ISBLK(mode):
                continue
            if not block_devices_only and not stat.S_ISREG(mode):
                continue
            with open(path, "rb") as dev:
                magic = dev.read(len(MAGIC))
        except OSError as err:
            log.debug("initdata: cannot probe %s: %s", path, err)
            continue
        if magic == MAGIC:
            found.append(path)
    if len(found) > 1:
        raise InitdataError(
            "more than one disk carries the initdata magic: " + ", ".join(map(str, found))
        )
    return found[0] if found else None
