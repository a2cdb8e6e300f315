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

Waiting for a FIFO to become readable or writable registers its fd with the event
loop; closing our end first takes that registration back (and wakes the waiter with
FifoError). Closing the fd first would leave the loop's selector holding a key for a
number the kernel hands out again: the next file opened under it (a socket of gRPC,
of ttrpc) is then never polled, and whoever waits on it waits forever (issue 14: a
terminal exec deleted while containerd still held its stdin, then every later
container's image lookup hung).
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


class _FifoEnd:
    """One end of a FIFO, non-blocking, with at most one wait on the event loop."""

    def __init__(self, path: str, fd: int) -> None:
        self.path = path
        self.fd = fd
        # (loop, future, writer) while a coroutine waits for the fd.
        self._waiting: tuple[asyncio.AbstractEventLoop, asyncio.Future[None], bool] | None = None

    def _open_fd(self) -> int:
        if self.fd < 0:
            raise FifoError(f"FIFO {self.path} is closed")
        return self.fd

    async def _wait(self, writer: bool) -> None:
        """Until the fd is writable (``writer``) or readable; FifoError when our end is
        closed meanwhile."""
        loop = asyncio.get_running_loop()
        fd = self._open_fd()
        if self._waiting is not None:
            raise FifoError(f"FIFO {self.path}: already waited on")
        ready: asyncio.Future[None] = loop.create_future()
        if writer:
            loop.add_writer(fd, _wake, ready)
        else:
            loop.add_reader(fd, _wake, ready)
        self._waiting = (loop, ready, writer)
        try:
            await ready
        finally:
            self._unwatch()

    def _unwatch(self) -> None:
        """Take the loop's registration back while the fd is still ours."""
        if self._waiting is None:
            return
        loop, ready, writer = self._waiting
        self._waiting = None
        if writer:
            loop.remove_writer(self.fd)
        else:
            loop.remove_reader(self.fd)
        if not ready.done():
            ready.set_exception(FifoError(f"FIFO {self.path} was closed"))

    def _close_fd(self) -> None:
        if self.fd >= 0:
            self._unwatch()
            os.close(self.fd)
            self.fd = -1


def _wake(ready: asyncio.Future[None]) -> None:
    if not ready.done():
        ready.set_result(None)


class OutputFifo(_FifoEnd):
    """Our writing end of a stdout/stderr FIFO."""

    def __init__(self, path: str) -> None:
        super().__init__(path, _open(path, os.O_RDWR))

    async def write_all(self, data: bytes) -> None:
        """Write every byte, waiting while the pipe is full; raises FifoError (also
        when our end is or gets closed)."""
        view = memoryview(data)
        while view:
            try:
                written = os.write(self._open_fd(), view)
            except BlockingIOError:
                await self._wait(writer=True)
                continue
            except OSError as err:
                raise FifoError(f"cannot write to FIFO {self.path}: {err}") from err
            view = view[written:]

    def close(self) -> None:
        self._close_fd()


class InputFifo(_FifoEnd):
    """Our reading end of a stdin FIFO, plus the writer end that keeps it open."""

    def __init__(self, path: str) -> None:
        super().__init__(path, _open(path, os.O_RDONLY))
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
        """Up to ``size`` bytes; empty at end of input. Raises FifoError (also when our
        end is or gets closed)."""
        while True:
            try:
                return os.read(self._open_fd(), size)
            except BlockingIOError:
                pass
            except OSError as err:
                if err.errno == errno.EINTR:
                    continue
                raise FifoError(f"cannot read FIFO {self.path}: {err}") from err
            await self._wait(writer=False)

    def close(self) -> None:
        self.release()
        self._close_fd()


def is_fifo(path: str) -> bool:
    """Whether ``path`` names an existing FIFO (containerd's stdio paths always do)."""
    try:
        return Path(path).is_fifo()
    except OSError:
        return False
