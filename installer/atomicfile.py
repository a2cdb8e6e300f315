"""Crash-safe file replacement for the installer, over :mod:`guest.fsatomic`.

Each step is a module-level function here so tests can inject a failure (or a kill)
between any two of them: the steps are looked up at every write. Whatever happens, the
target path holds either its old or its new content, never a mix; a temp file left by a
killed run is removed by the next one.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

from guest import fsatomic
from installer.errors import WriteError

log = logging.getLogger(__name__)

TEMP_MARK = ".contrast-tmp-"

# The steps tests patch; atomic_replace reads them from this module at each call.
create_temp = fsatomic.create_temp
sync_file = fsatomic.sync_file
publish = fsatomic.publish
sync_dir = fsatomic.sync_dir


def _steps() -> fsatomic.Steps:
    return fsatomic.Steps(
        create_temp=create_temp, sync_file=sync_file, publish=publish, sync_dir=sync_dir
    )


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
    try:
        remove_stale_temps(path)
    except OSError as err:
        raise WriteError(f"{path}: cannot create a temp file in {path.parent}: {err}") from err

    def error(what: str, err: OSError) -> WriteError:
        return WriteError(f"{path}: {what}: {err}")

    with fsatomic.replace_file(
        path,
        prefix=f".{path.name}{TEMP_MARK}",
        mode=mode,
        owner=owner,
        error=error,
        steps=_steps(),
    ) as stream:
        yield stream


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
