"""One installer at a time per node: an flock next to the assets it manages."""

from __future__ import annotations

import contextlib
import fcntl
import os
import time
from collections.abc import Iterator
from pathlib import Path

from installer.errors import InstallerError

LOCK_NAME = ".installer.lock"


@contextlib.contextmanager
def exclusive(directory: Path, timeout: float = 300.0) -> Iterator[None]:
    """Hold an exclusive lock on ``directory/.installer.lock``; raises InstallerError.

    Two installers (a DaemonSet pod restarting while an admin runs the command) would
    otherwise interleave their read-modify-write of the containerd config.
    """
    try:
        directory.mkdir(mode=0o755, parents=True, exist_ok=True)
        fd = os.open(directory / LOCK_NAME, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    except OSError as err:
        raise InstallerError(f"{directory / LOCK_NAME}: cannot open lock: {err}") from err
    try:
        deadline = time.monotonic() + timeout
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() > deadline:
                    raise InstallerError(
                        f"{directory / LOCK_NAME}: another installer has held the lock for "
                        f"{timeout:g} s"
                    ) from None
                time.sleep(0.2)
        yield
    finally:
        os.close(fd)
