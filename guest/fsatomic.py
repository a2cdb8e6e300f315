"""Crash-safe file replacement: temp file in the same directory, fsync, rename, fsync dir.

Shared by host code (installer, shim state) and guest code (image store, initdata), so
it lives in ``guest`` (which the guest image ships) and imports nothing but the standard
library. Whatever happens, the target path holds either its old or its new content,
never a mix. Each caller keeps its own exception type: pass ``error``, a factory that
turns a failed step's description and its OSError into that caller's exception; without
one the OSError propagates unchanged.

The steps are separate functions gathered in :class:`Steps`, so a caller (and its tests)
can supply its own to inject a failure, or a kill, between any two of them.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

# Turns (what failed, the cause) into the caller's exception.
ErrorFactory = Callable[[str, OSError], Exception]


def create_temp(directory: Path, prefix: str) -> tuple[int, Path]:
    """A new private (0600) temp file in ``directory``: its open fd and its path."""
    fd, tmp = tempfile.mkstemp(prefix=prefix, dir=directory)
    return fd, Path(tmp)


def sync_file(fd: int) -> None:
    os.fsync(fd)


def publish(tmp: Path, path: Path) -> None:
    tmp.replace(path)


def sync_dir(directory: Path) -> None:
    """Make a rename (or unlink) in ``directory`` durable; raises OSError."""
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


@dataclass(frozen=True)
class Steps:
    """The four steps of a replacement, each a seam for crash-injection tests."""

    create_temp: Callable[[Path, str], tuple[int, Path]] = create_temp
    sync_file: Callable[[int], None] = sync_file
    publish: Callable[[Path, Path], None] = publish
    sync_dir: Callable[[Path], None] = sync_dir


DEFAULT_STEPS = Steps()


@contextlib.contextmanager
def _step(error: ErrorFactory | None, what: str) -> Iterator[None]:
    try:
        yield
    except OSError as err:
        if error is None:
            raise
        raise error(what, err) from err


@contextlib.contextmanager
def replace_file(
    path: Path,
    *,
    prefix: str,
    mode: int | None = None,
    owner: tuple[int, int] | None = None,
    error: ErrorFactory | None = None,
    steps: Steps = DEFAULT_STEPS,
) -> Iterator[BinaryIO]:
    """Yield a binary file; on a clean exit it replaces ``path`` atomically and durably.

    The temp file is named ``prefix`` plus random characters, in ``path``'s directory.
    ``mode`` (else mkstemp's 0600) and ``owner`` are set before the file is published.
    An exception inside the block discards the temp file, leaves ``path`` untouched and
    propagates as it is. A failed step raises ``error(what, err)``, or the OSError.
    """
    directory = path.parent
    with _step(error, f"cannot create a temp file in {directory}"):
        fd, tmp = steps.create_temp(directory, prefix)
    published = False
    try:
        with os.fdopen(fd, "wb") as stream:
            yield stream
            with _step(error, "writing the new content failed"):
                stream.flush()
                if mode is not None:
                    os.fchmod(stream.fileno(), mode)
                if owner is not None:
                    os.fchown(stream.fileno(), *owner)
                steps.sync_file(stream.fileno())
                stream.close()
        with _step(error, f"renaming {tmp.name} into place failed"):
            steps.publish(tmp, path)
        published = True
    finally:
        if not published:
            with contextlib.suppress(OSError):
                tmp.unlink()
    with _step(error, f"written, but syncing {directory} failed"):
        steps.sync_dir(directory)


def write_file(
    path: Path,
    data: bytes,
    *,
    prefix: str,
    mode: int | None = None,
    owner: tuple[int, int] | None = None,
    error: ErrorFactory | None = None,
    steps: Steps = DEFAULT_STEPS,
) -> None:
    """Replace ``path`` with ``data`` atomically and durably (see :func:`replace_file`)."""
    with (
        replace_file(
            path, prefix=prefix, mode=mode, owner=owner, error=error, steps=steps
        ) as stream,
        _step(error, "writing the new content failed"),
    ):
        stream.write(data)
