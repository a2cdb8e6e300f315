"""A reproducible cpio "newc" archive writer, the initramfs format the kernel unpacks."""

from __future__ import annotations

import stat
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

_TRAILER = "TRAILER!!!"


@dataclass(frozen=True)
class Entry:
    """One archive member: a directory, a regular file or a symlink."""

    name: str
    mode: int
    data: bytes = b""


def directory(name: str) -> Entry:
    return Entry(name, stat.S_IFDIR | 0o755)


def file(name: str, data: bytes, executable: bool = False) -> Entry:
    return Entry(name, stat.S_IFREG | (0o755 if executable else 0o644), data)


def symlink(name: str, target: str) -> Entry:
    return Entry(name, stat.S_IFLNK | 0o777, target.encode())


def from_path(name: str, path: Path) -> Entry:
    """A regular file's content under ``name``, keeping its executable bit."""
    return file(name, path.read_bytes(), executable=bool(path.stat().st_mode & 0o111))


def _header(ino: int, entry: Entry, namesize: int) -> bytes:
    fields = (ino, entry.mode, 0, 0, 1, 0, len(entry.data), 0, 0, 0, 0, namesize, 0)
    return ("070701" + "".join(f"{v:08x}" for v in fields)).encode()


def _pad(f: BinaryIO, length: int) -> None:
    f.write(b"\0" * (-length % 4))


def write(f: BinaryIO, entries: list[Entry]) -> None:
    """Write ``entries`` (sorted by name, owner root, mtime 0) and the trailer."""
    for ino, entry in enumerate([*sorted(entries, key=lambda e: e.name), Entry(_TRAILER, 0)], 1):
        name = entry.name.encode() + b"\0"
        header = _header(ino if entry.name != _TRAILER else 0, entry, len(name))
        f.write(header + name)
        _pad(f, len(header) + len(name))
        f.write(entry.data)
        _pad(f, len(entry.data))
