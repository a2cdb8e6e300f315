"""The read-only root: an erofs image followed by its dm-verity hash tree in one file."""

from __future__ import annotations

import re
import uuid
from dataclasses import dataclass
from pathlib import Path

from guest.image import command
from guest.image.errors import ImageError

BLOCK = 4096


@dataclass(frozen=True)
class VerityRoot:
    """What the guest needs to open the verity device (all on the measured cmdline)."""

    root_hash: str
    data_blocks: int
    hash_offset: int
    salt: str
    data_bytes: int
    total_bytes: int

    def cmdline(self) -> tuple[str, ...]:
        """Kernel parameters the initrd reads to open the root."""
        return (
            f"contrast.verity.roothash={self.root_hash}",
            f"contrast.verity.blocks={self.data_blocks}",
            f"contrast.verity.hashoffset={self.hash_offset}",
            f"contrast.verity.salt={self.salt}",
        )


def make_erofs(tree: Path, image: Path, epoch: int, key: str) -> None:
    """Pack ``tree`` into a reproducible lz4hc-compressed erofs image."""
    fs_uuid = str(uuid.UUID(key[:32]))
    command.run(
        [
            "mkfs.erofs",
            "-zlz4hc",
            f"-T{epoch}",
            f"-U{fs_uuid}",
            "--all-root",
            "--quiet",
            image,
            tree,
        ],
        timeout=1200,
    )
    size = image.stat().st_size
    if size % BLOCK:
        with image.open("r+b") as f:
            f.truncate(size + BLOCK - size % BLOCK)


def append_hash_tree(image: Path, salt: str) -> VerityRoot:
    """Append the dm-verity hash tree to ``image`` and return the parameters.

    No verity superblock: every parameter travels on the kernel command line, which
    the launch measurement covers, so nothing the guest trusts is read from the disk
    unverified. Raises ImageError when veritysetup's output has no root hash.
    """
    data_bytes = image.stat().st_size
    blocks = data_bytes // BLOCK
    out = command.run(
        [
            "veritysetup",
            "format",
            "--no-superblock",
            f"--data-blocks={blocks}",
            f"--hash-offset={data_bytes}",
            f"--salt={salt}",
            image,
            image,
        ],
        timeout=600,
    )
    match = re.search(r"^Root hash:\s*([0-9a-f]{64})\s*$", out, re.MULTILINE)
    if not match:
        raise ImageError(f"veritysetup format printed no root hash: {out}")
    return VerityRoot(
        root_hash=match.group(1),
        data_blocks=blocks,
        hash_offset=data_bytes,
        salt=salt,
        data_bytes=data_bytes,
        total_bytes=image.stat().st_size,
    )
