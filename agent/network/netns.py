"""Run a function inside a network namespace without moving the daemon's own threads.

setns(2) with CLONE_NEWNET changes only the calling thread, so each call here gets a
fresh thread that enters the netns, runs the function and ends: no thread of the
daemon (and no pooled executor thread) is ever left inside a pod's netns. Sockets and
file descriptors opened there (a netlink socket, the tap's /dev/net/tun fd) stay bound
to that netns after the thread is gone, which is what makes this enough.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import ctypes
import errno
import os
import threading
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

from agent.network.errors import NetnsError

T = TypeVar("T")

CLONE_NEWNET = 0x40000000
_libc = ctypes.CDLL(None, use_errno=True)


def check_path(path: Path) -> Path:
    """``path`` if it is an absolute path without control characters, else NetnsError."""
    text = str(path)
    if not path.is_absolute():
        raise NetnsError(f"netns path {text!r} is not absolute")
    if any(ord(c) < 0x20 or ord(c) == 0x7F for c in text):
        raise NetnsError(f"netns path {text!r} contains a control character")
    return path


def _enter(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except OSError as err:
        raise NetnsError(f"cannot open netns {str(path)!r}: {err.strerror}") from err
    try:
        if _libc.setns(fd, CLONE_NEWNET) != 0:
            code = ctypes.get_errno()
            why = "not a network namespace" if code == errno.EINVAL else os.strerror(code)
            raise NetnsError(f"cannot enter netns {str(path)!r}: {why}")
    finally:
        os.close(fd)


def submit(path: Path, fn: Callable[[], T]) -> concurrent.futures.Future[T]:
    """Start ``fn`` on a new thread inside the netns at ``path``; its result as a future.

    The future fails with NetnsError when the netns cannot be entered, or with what
    ``fn`` raised.
    """
    check_path(path)
    future: concurrent.futures.Future[T] = concurrent.futures.Future()

    def body() -> None:
        if not future.set_running_or_notify_cancel():
            return
        try:
            _enter(path)
            result = fn()
        except BaseException as err:  # noqa: BLE001 (handed to the waiting caller)
            future.set_exception(err)
        else:
            future.set_result(result)

    threading.Thread(target=body, name=f"netns:{path.name}", daemon=True).start()
    return future


def run(path: Path, fn: Callable[[], T]) -> T:
    """Run ``fn`` inside the netns at ``path`` and return its result (blocking)."""
    return submit(path, fn).result()


async def run_async(path: Path, fn: Callable[[], T]) -> T:
    """Run ``fn`` inside the netns at ``path`` without blocking the event loop."""
    return await asyncio.wrap_future(submit(path, fn))
