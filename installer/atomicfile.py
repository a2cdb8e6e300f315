"""Crash-safe file replacement: temp file in the same directory, fsync, rename, fsync dir.

Each step is a module-level function so tests can inject a failure (or a kill) between
any two of them. Whatever happens, the target path holds either its old or its new
content, never a mix; a temp file left by a killed run is removed by the next one.
"""

from __future__ import annotations

import contextlib
import logging
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

from installer.errors import WriteError

log = logging.getLogger(__name__)

TEMP_MARK = ".contrast-tmp-"


def create_temp(directory: Path, name: str) -> tuple[int, Path]:
    fd, tmp = tempfile.mkstemp(prefix=f".{name}{TEMP_MARK}", dir=directory)
    return fd, Path(tmp)


def sync_file(fd: int) -> None:
    os.fsync(fd)


def publish(tmp: Path, path: Path) -> None:
    tmp.replace(path)


def sync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def remove_stale_temps(path: Path) -> None:
    """Delete temp files a killed earlier run left next to ``path`` (or its backups)."""
    with contextlib.suppress(FileNotFoundError):
        for stale in path.parent.glob(f".{path.name}*{TEMP_MARK}*"):
            log.info("removing %s left by an interrupted run", stale)
            stale.unlink(missing_ok=True)


@contextlib.contextmanager
def atomic_replace(
    path: Path, mode: int, owner: tuple[int, int] | None = None
) -> Iterator[BinaryIO]:
    """Yield a binary file; on a clean exit it replaces ``path`` atomically and durably.

    An exception inside the block (an integrity failure, say) discards the temp file
    and leaves ``path`` untouched. Raises WriteError when a write step fails.
    """
    directory = path.parent
    try:
        remove_stale_temps(path)
        fd, tmp = create_temp(directory, path.name)
    except OSError as err:
        raise WriteError(f"{path}: cannot create a temp file in {directory}: {err}") from err
    published = False
    try:
        with os.fdopen(fd, "wb") as stream:
            yield stream
            try:
                stream.flush()
                os.fchmod(stream.fileno(), mode)
                if owner is not None:
                    os.fchown(stream.fileno(), *owner)
                sync_file(stream.fileno())
            except OSError as err:
                raise WriteError(f"{path}: writing the new content failed: {err}") from err
        try:
            publish(tmp, path)
        except OSError as err:
            raise WriteError(f"{path}: renaming {tmp.name} into place failed: {err}") from err
        published = True
    finally:
        if not published:
            with contextlib.suppress(OSError):
                tmp.unlink()
    try:
        sync_dir(directory)
    except OSError as err:
        raise WriteError(f"{path}: written, but syncing {directory} failed: {err}") from err


def write_atomic(path: Path, data: bytes, mode: int, owner: tuple[int, int] | None = None) -> None:
    """Replace ``path`` with ``data`` atomically and durably; raises WriteError."""
    with atomic_replace(path, mode, owner) as stream:
        try:
            stream.write(data)
        except OSError as err:
            raise WriteError(f"{path}: writing the new content failed: {err}") from err


def write_backup(path: Path, data: bytes, now: float) -> Path:
    """Keep ``data`` (the current content of ``path``) as ``<path>.<unix-time>.bak``.

    The backup is itself written atomically, so a half-written backup never exists.
    An existing backup of the same second is reused when identical, else the next free
    second is taken. Raises WriteError.
    """
    stamp = int(now)
    while True:
        backup = path.with_name(f"{path.name}.{stamp}.bak")
        try:
            if not backup.exists():
                break
            if backup.read_bytes() == data:
                return backup
        except OSError as err:
            raise WriteError(f"{backup}: cannot inspect existing backup: {err}") from err
        stamp += 1
    try:
        st = path.stat()
        mode, owner = st.st_mode & 0o7777, (st.st_uid, st.st_gid)
    except OSError as err:
        raise WriteError(f"{path}: cannot stat before backup: {err}") from err
    write_atomic(backup, data, mode, owner)
    return backup
