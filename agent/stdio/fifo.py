"""Non-blocking FIFO ends driven by the asyncio loop.

containerd creates the FIFOs and opens its own ends (it reads stdout/stderr, writes
stdin). Our ends never block at open:

- output FIFOs are opened read-write: open(2) of a FIFO with O_RDWR returns at once
  on Linux, and holding a reader end means a write never fails with EPIPE while
  containerd reopens its end (its restart), so no output is lost;
- the stdin FIFO is opened read-only and non-blocking, and we hold a writer end of
  our own so that reading does not see end-of-file before containerd has opened its
  end; ``CloseIO`` drops that extra writer, after which containerd closing its end
  is the end of input.
"""

from __future__ import annotations

import asyncio
import errno
import os
from pathlib import Path


class FifoError(Exception):
    """A FIFO could not be opened, read or written; names the path."""


def _open(path: str, flags: int) -> int:
    try:
        return os.open(path, flags | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError as err:
        raise FifoError(f"cannot open FIFO {path}: {err}") from err


class OutputFifo:
    """Our writing end of a stdout/stderr FIFO."""

    def __init__(self, path: str) -> None:
        self.path = path
        self.fd = _open(path, os.O_RDWR)

    async def write_all(self, data: bytes) -> None:
        """Write every byte, waiting while the pipe is full; raises FifoError."""
        loop = asyncio.get_running_loop()
        view = memoryview(data)
        while view:
            try:
                written = os.write(self.fd, view)
            except BlockingIOError:
                ready = loop.create_future()
                loop.add_writer(self.fd, ready.set_result, None)
                try:
                    await ready
                finally:
                    loop.remove_writer(self.fd)
                continue
            except OSError as err:
                raise FifoError(f"cannot write to FIFO {self.path}: {err}") from err
            view = view[written:]

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1


class InputFifo:
    """Our reading end of a stdin FIFO, plus the writer end that keeps it open."""

    def __init__(self, path: str) -> None:
        self.path = path
        self.fd = _open(path, os.O_RDONLY)
        try:
            self._hold = _open(path, os.O_WRONLY)
        except FifoError:
            os.close(self.fd)
            raise

    def release(self) -> None:
        """Drop our own writer end: EOF comes once containerd has closed its end too."""
        if self._hold >= 0:
            os.close(self._hold)
            self._hold = -1

    async def read(self, size: int = 65536) -> bytes:
        """Up to ``size`` bytes; empty at end of input. Raises FifoError."""
        loop = asyncio.get_running_loop()
        while True:
            try:
                return os.read(self.fd, size)
            except BlockingIOError:
                pass
            except OSError as err:
                if err.errno == errno.EINTR:
                    continue
                raise FifoError(f"cannot read FIFO {self.path}: {err}") from err
            ready = loop.create_future()
            loop.add_reader(self.fd, ready.set_result, None)
            try:
                await ready
            finally:
                loop.remove_reader(self.fd)

    def close(self) -> None:
        self.release()
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1


def is_fifo(path: str) -> bool:
    """Whether ``path`` names an existing FIFO (containerd's stdio paths always do)."""
    try:
        return Path(path).is_fifo()
    except OSError:
        return False
