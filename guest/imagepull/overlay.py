"""The container rootfs: an overlayfs mount over the stored layers.

``lowerdir`` lists the layers top-first (the last layer of the manifest first), a
per-container ``upperdir``/``workdir`` takes the writes. mount(2) is called directly
(ctypes) rather than through mount(8): no argument parsing, and the error is errno.
"""

from __future__ import annotations

import ctypes
import logging
import os
import shutil
from collections.abc import Sequence
from pathlib import Path

from guest.imagepull.errors import MountError

log = logging.getLogger(__name__)
# mount(2) copies at most one page of option data.
MAX_OPTIONS = 4095
MNT_DETACH = 2
_FORBIDDEN = (",", ":", "\\")


def _libc() -> ctypes.CDLL:
    return ctypes.CDLL(None, use_errno=True)


def options(lower: Sequence[Path], upper: Path, work: Path) -> str:
    """The overlay option string. Raises MountError for unusable paths or length."""
    if not lower:
        raise MountError("an overlay needs at least one lower layer")
    for path in (*lower, upper, work):
        if any(c in str(path) for c in _FORBIDDEN) or not path.is_absolute():
            raise MountError(f"overlay path {path} must be absolute without ',', ':' or '\\'")
    text = f"lowerdir={':'.join(map(str, lower))},upperdir={upper},workdir={work}"
    if len(text) > MAX_OPTIONS:
        raise MountError(
            f"overlay options are {len(text)} bytes for {len(lower)} layers, more than "
            f"mount(2) accepts ({MAX_OPTIONS}); use a shorter store path"
        )
    return text


def mount(lower: Sequence[Path], upper: Path, work: Path, target: Path) -> None:
    """Mount an overlay of ``lower`` (top-first) at ``target``, creating upper/work/target.

    Raises MountError with the kernel's reason.
    """
    data = options(lower, upper, work)
    for path in (upper, work, target):
        path.mkdir(parents=True, exist_ok=True)
    if os.path.ismount(target):
        raise MountError(f"{target} is already a mount point")
    result = _libc().mount(b"overlay", os.fsencode(target), b"overlay", 0, data.encode())
    if result != 0:
        err = ctypes.get_errno()
        raise MountError(f"mount overlay at {target}: {os.strerror(err)} (options {data})")
    log.info("mounted overlay of %d layers at %s", len(lower), target)


def unmount(target: Path, container_dir: Path | None) -> None:
    """Unmount ``target`` (if mounted), remove it and the container's upper/work dirs.

    Raises MountError when the mount is busy or unmounting fails otherwise.
    """
    if os.path.ismount(target):
        if _libc().umount2(os.fsencode(target), 0) != 0:
            err = ctypes.get_errno()
            raise MountError(f"unmount {target}: {os.strerror(err)}")
        log.info("unmounted %s", target)
    try:
        target.rmdir()
    except FileNotFoundError:
        pass
    except OSError as err:
        raise MountError(f"cannot remove {target} after unmounting: {err}") from err
    if container_dir is not None:
        shutil.rmtree(container_dir, ignore_errors=True)
