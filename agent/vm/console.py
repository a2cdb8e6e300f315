"""Reading the guest's serial console log, which QEMU writes to a file."""

from __future__ import annotations

import os
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


class Watch:
    """Whether a growing log holds ``needle`` yet, reading each byte of it once.

    A boot's wait polls the console every few tens of ms for the guest agent's ready
    line; reading the whole log at each poll cost the daemon's event loop about 80 ms of
    CPU per boot (bench.pod_bench, cProfile), more with pods booting at once. The last
    ``len(needle) - 1`` bytes are kept, so a needle split across two reads is found; a
    log that shrank (written anew) is read again from its start.
    """

    def __init__(self, path: Path, needle: str) -> None:
        self._path = path
        self._needle = needle.encode()
        self._offset = 0
        self._carry = b""

    def found(self) -> bool:
        try:
            with self._path.open("rb") as f:
                if os.fstat(f.fileno()).st_size < self._offset:
                    self._offset, self._carry = 0, b""
                f.seek(self._offset)
                data = f.read()
        except FileNotFoundError:
            return False
        self._offset += len(data)
        window = self._carry + data
        if self._needle in window:
            return True
        self._carry = window[max(0, len(window) - len(self._needle) + 1) :]
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
