"""Reading the guest's serial console log, which QEMU writes to a file."""

from __future__ import annotations

from pathlib import Path

TAIL_BYTES = 4096
# Lines that explain a failed boot: the initrd's own messages and the kernel's.
_DIAGNOSTIC = ("contrast-initrd:", "verity", "Kernel panic", "contrast-init:")


def tail(path: Path, size: int = TAIL_BYTES) -> str:
    """The last ``size`` bytes of the log as text ("" when it does not exist yet)."""
    try:
        with path.open("rb") as f:
            f.seek(0, 2)
            end = f.tell()
            f.seek(max(0, end - size))
            data = f.read()
    except FileNotFoundError:
        return ""
    return data.decode(errors="replace").replace("\r", "")


def contains(path: Path, needle: str) -> bool:
    """Whether the whole log contains ``needle`` (logs of a boot are small)."""
    try:
        return needle.encode() in path.read_bytes()
    except FileNotFoundError:
        return False


def diagnostic_lines(text: str) -> list[str]:
    """The lines of ``text`` that say why a boot failed."""
    return [line.strip() for line in text.splitlines() if any(d in line for d in _DIAGNOSTIC)]


def verity_failed(text: str) -> bool:
    """Whether the console shows dm-verity rejecting the root image."""
    return any(
        "contrast-initrd: dm-verity" in line or ("verity" in line and "corrupt" in line)
        for line in text.splitlines()
    )
