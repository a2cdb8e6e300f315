"""Bounded log files for a node process started detached (not under systemd).

:func:`agent.daemon.lifecycle.spawn_detached` points the child's stdout and stderr at
``<run dir>/<name>.log`` and passes ``--log-file`` with that path; once the child holds
its run directory's lock it logs through :class:`FollowingRotatingHandler` into the same
file: at most ``max_bytes`` per file, ``backups`` older files beside it (``.1`` the
newest, as :class:`logging.handlers.RotatingFileHandler` names them). What reaches file
descriptors 1 and 2 directly (faulthandler's dumps, an uncaught traceback) lands in the
current file as well: after every rotation the handler points them at the new file, and
the size check counts their bytes (the file is shared in append mode). Records are
written whole: a rotation happens between two records, never inside one. A process that
dies before it logs, again and again (a crash loop), cannot grow the file either: the
spawn rotates a file that is over the limit (:func:`open_for_child`).
"""

from __future__ import annotations

import faulthandler
import logging
import logging.handlers
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import BinaryIO

# Defined with the settings: the shim entry reads those on every task start and
# should not import logging.handlers for it.
from agent.daemon.settings import LogLimits

__all__ = ["LogLimits"]

FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
STDOUT_STDERR = (1, 2)


def backup(path: Path, n: int) -> Path:
    return path.with_name(f"{path.name}.{n}")


def rotate(path: Path, backups: int) -> None:
    """``path`` becomes ``path.1``, ``path.1`` becomes ``path.2``, ...; what would
    become ``path.<backups + 1>`` is dropped."""
    for n in range(backups - 1, 0, -1):
        if backup(path, n).exists():
            backup(path, n).replace(backup(path, n + 1))
    if path.exists():
        path.replace(backup(path, 1))


def open_for_child(path: Path, limits: LogLimits) -> BinaryIO:
    """``path`` opened for appending, rotated first when it is at the size limit;
    raises OSError."""
    try:
        full = path.stat().st_size >= limits.max_bytes
    except FileNotFoundError:
        full = False
    if full:
        rotate(path, limits.backups)
    return open(path, "ab")


class FollowingRotatingHandler(logging.handlers.RotatingFileHandler):
    """A size-capped rotating log file that file descriptors ``follow`` (stdout and
    stderr in the daemon) always point at."""

    def __init__(
        self, path: Path, limits: LogLimits, follow: Sequence[int] = STDOUT_STDERR
    ) -> None:
        if limits.max_bytes < 1 or limits.backups < 1:
            raise ValueError(f"log limits must be at least 1 byte and 1 backup: {limits}")
        super().__init__(
            path,
            maxBytes=limits.max_bytes,
            backupCount=limits.backups,
            encoding="utf-8",
            errors="backslashreplace",
        )
        self.follow = tuple(follow)
        self._point_followers()

    def doRollover(self) -> None:
        for stream in (sys.stdout, sys.stderr):
            if stream is not None:
                stream.flush()  # what Python buffered belongs to the file it was written for
        super().doRollover()
        self._point_followers()

    def _point_followers(self) -> None:
        if self.stream is None:
            self.stream = self._open()
        for fd in self.follow:
            os.dup2(self.stream.fileno(), fd)


def log_to_file(
    path: Path,
    level: int,
    limits: LogLimits,
    *,
    logger: logging.Logger | None = None,
    follow: Sequence[int] = STDOUT_STDERR,
) -> FollowingRotatingHandler:
    """Log ``logger`` (the root logger) only to ``path``, size-capped, with the file
    descriptors ``follow`` pointed at it and faulthandler on (dumps go to stderr);
    raises OSError."""
    logger = logger if logger is not None else logging.getLogger()
    handler = FollowingRotatingHandler(path, limits, follow)
    handler.setFormatter(logging.Formatter(FORMAT))
    for old in list(logger.handlers):  # stderr's handler: stderr is this file now
        logger.removeHandler(old)
    logger.addHandler(handler)
    logger.setLevel(level)
    if 2 in handler.follow:
        faulthandler.enable(file=sys.stderr, all_threads=True)
    return handler
