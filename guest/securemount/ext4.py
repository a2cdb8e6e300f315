"""ext4 on the opened mapping, which has never been written (no wipe).

With ``--integrity-no-wipe`` every sector reads as an integrity error (EIO) until it
is first written; ext4 never reads what it did not write, but mke2fs probes the head
of the device for old signatures and the old superblock's backups. Those blocks are
zeroed beforehand (with O_DIRECT, so the writes go to the device); the backups'
numbers come from a dry run of the same mke2fs command (``-n``), which writes nothing.

No ext4 journal (``^has_journal``), lazy inode tables and no discard: the store is
ephemeral, so a journal protects nothing that survives a crash, and each avoided
write is one less 4 KiB sector through AES and HMAC at format time.
"""

from __future__ import annotations

import mmap
import os
import re
from pathlib import Path

from guest.securemount.errors import StepError

BLOCK_SIZE = 4096
HEAD_BLOCKS = 16  # the first 64 KiB, where mke2fs and libblkid look for old signatures
LABEL = "contrast-store"
_BACKUPS = "Superblock backups stored on blocks:"
_NUMBER = re.compile(r"\d+")


def mkfs_args(device: Path, dry_run: bool = False) -> list[str]:
    return [
        "mkfs.ext4", *(["-n"] if dry_run else ["-q"]), "-F", "-b", str(BLOCK_SIZE), "-m", "0",
        "-L", LABEL, "-O", "^has_journal", "-E", "nodiscard,lazy_itable_init=1", str(device),
    ]  # fmt: skip


def superblock_blocks(device: str, dry_run_output: str) -> list[int]:
    """Block 0 and the backup superblocks the dry run lists. Raises StepError when
    the list is there but unreadable."""
    blocks = [0]
    _, found, rest = dry_run_output.partition(_BACKUPS)
    if found:
        # The list runs over indented lines up to the next blank line.
        listed = rest.split("\n\n", 1)[0]
        numbers = _NUMBER.findall(listed)
        if not numbers:
            raise StepError(device, "mkfs.ext4 dry run", f"no block numbers after {_BACKUPS!r}")
        blocks += [int(n) for n in numbers]
    return blocks


def zero_blocks(device: str, path: Path, blocks: list[int]) -> None:
    """Write zeroes over ``blocks`` (of BLOCK_SIZE) of ``path`` with O_DIRECT.

    Raises StepError naming the block that could not be written.
    """
    buffer = mmap.mmap(-1, BLOCK_SIZE)  # page-aligned, zero-filled: what O_DIRECT needs
    try:
        fd = os.open(path, os.O_WRONLY | os.O_DIRECT | os.O_CLOEXEC)
    except OSError as err:
        buffer.close()
        raise StepError(device, "zeroing the superblocks", f"open {path}: {err}") from err
    try:
        for block in blocks:
            try:
                written = os.pwritev(fd, [buffer], block * BLOCK_SIZE)
            except OSError as err:
                raise StepError(
                    device, "zeroing the superblocks", f"block {block} of {path}: {err}"
                ) from err
            if written != BLOCK_SIZE:
                raise StepError(
                    device, "zeroing the superblocks", f"block {block} of {path}: short write"
                )
        os.fsync(fd)
    finally:
        os.close(fd)
        buffer.close()
