"""A process's stdio as the agent protocol exposes it: pipes or a pseudo-terminal.

Semantics of the Kata agent's stream calls:

- ReadStdout/ReadStderr return up to ``len`` bytes as soon as any are available; an
  empty answer means end of stream (every writer closed, e.g. the process exited and
  its output is drained). A terminal process has one stream, read via ReadStdout;
  its ReadStderr is at end of stream at once.
- WriteStdin writes all of ``data`` and returns its length; CloseStdin closes our end
  so the process reads end of file (for a terminal: the EOF character).
"""

from __future__ import annotations

import array
import asyncio
import contextlib
import errno
import fcntl
import os
import socket
import struct
import termios
from dataclasses import dataclass

from guest.agent.children import Stdio
from guest.agent.errors import FailedPrecondition, InvalidRequest

MAX_READ = 1024 * 1024
_EOF_CHAR = b"\x04"


class OutputStream:
    """The reading end of a pipe or a pty master; ``read`` follows the agent semantics."""

    def __init__(self, fd: int | None) -> None:
        self._fd = fd
        self._lock = asyncio.Lock()
        # (loop, future) while a read waits for the fd: close() wakes it.
        self._waiting: tuple[asyncio.AbstractEventLoop, asyncio.Future[None]] | None = None
        if fd is not None:
            os.set_blocking(fd, False)

    async def read(self, size: int) -> bytes:
        """Up to ``size`` bytes once available; b"" at end of stream (also when the
        stream is closed while the read waits)."""
        if size <= 0:
            raise InvalidRequest("read length must be positive")
        size = min(size, MAX_READ)
        async with self._lock:
            while self._fd is not None:
                try:
                    data = os.read(self._fd, size)
                except BlockingIOError:
                    await self._readable(self._fd)
                    continue
                except OSError as err:
                    # A pty master reads EIO once the last slave fd is closed.
                    if err.errno != errno.EIO:
                        raise
                    data = b""
                if not data:
                    self.close()
                return data
            return b""

    async def _readable(self, fd: int) -> None:
        loop = asyncio.get_running_loop()
        ready: asyncio.Future[None] = loop.create_future()
        loop.add_reader(fd, _wake, ready)
        self._waiting = (loop, ready)
        try:
            await ready
        finally:
            self._unwatch()

    def _unwatch(self) -> None:
        """Take the loop's registration back while the fd is still ours: once closed,
        its number belongs to whatever is opened next."""
        if self._waiting is None or self._fd is None:
            return
        loop, ready = self._waiting
        self._waiting = None
        loop.remove_reader(self._fd)
        _wake(ready)

    @property
    def at_end(self) -> bool:
        """True once end of stream was read (or the stream was closed)."""
        return self._fd is None

    def close(self) -> None:
        if self._fd is not None:
            self._unwatch()
            os.close(self._fd)
            self._fd = None


class InputStream:
    """The writing end of stdin (a pipe, or the pty master shared with the output)."""

    def __init__(self, fd: int | None, terminal: bool, owns_fd: bool = True) -> None:
        self._fd = fd
        self._terminal = terminal
        self._owns_fd = owns_fd
        self._lock = asyncio.Lock()
        if fd is not None:
            os.set_blocking(fd, False)

    async def write(self, data: bytes) -> int:
        """Write all of ``data``. Raises FailedPrecondition once stdin is closed."""
        async with self._lock:
            if self._fd is None:
                raise FailedPrecondition("stdin is closed")
            view = memoryview(data)
            while view:
                try:
                    written = os.write(self._fd, view)
                except BlockingIOError:
                    await _writable(self._fd)
                    continue
                except BrokenPipeError as err:
                    raise FailedPrecondition("the process closed its stdin") from err
                view = view[written:]
            return len(data)

    async def close(self) -> None:
        async with self._lock:
            if self._fd is None:
                return
            if self._terminal:
                # The master stays open for reading: the line discipline's EOF it is.
                with contextlib.suppress(OSError):
                    os.write(self._fd, _EOF_CHAR)
            elif self._owns_fd:
                os.close(self._fd)
            self._fd = None


@dataclass
class ProcessStdio:
    """Our ends of a process's stdio and the fds its runtime gets (closed after start)."""

    stdin: InputStream
    stdout: OutputStream
    stderr: OutputStream
    child: Stdio
    terminal: bool
    master: int | None = None

    def close_child_ends(self) -> None:
        for fd in {self.child.stdin, self.child.stdout, self.child.stderr}:
            if fd is not None:
                os.close(fd)
        self.child = Stdio()

    def resize(self, rows: int, columns: int) -> None:
        """Set the terminal's window size. Raises FailedPrecondition without a terminal."""
        if self.master is None:
            raise FailedPrecondition("the process has no terminal")
        fcntl.ioctl(self.master, termios.TIOCSWINSZ, struct.pack("HHHH", rows, columns, 0, 0))

    async def close(self) -> None:
        self.close_child_ends()
        await self.stdin.close()
        self.stdout.close()
        self.stderr.close()
        if self.master is not None:
            os.close(self.master)
            self.master = None


def pipes() -> ProcessStdio:
    """Three pipes: the child gets the read end of stdin and the write ends of output."""
    in_r, in_w = os.pipe2(os.O_CLOEXEC)
    out_r, out_w = os.pipe2(os.O_CLOEXEC)
    err_r, err_w = os.pipe2(os.O_CLOEXEC)
    return ProcessStdio(
        stdin=InputStream(in_w, terminal=False),
        stdout=OutputStream(out_r),
        stderr=OutputStream(err_r),
        child=Stdio(in_r, out_w, err_w),
        terminal=False,
    )


def terminal(master: int) -> ProcessStdio:
    """A pty master received from the runtime: one stream both ways, no stderr."""
    dup = os.dup(master)  # the output stream owns one fd, stdin and resize the other
    return ProcessStdio(
        stdin=InputStream(master, terminal=True, owns_fd=False),
        stdout=OutputStream(dup),
        stderr=OutputStream(None),
        child=Stdio(),
        terminal=True,
        master=master,
    )


async def receive_console(listener: socket.socket, timeout: float) -> int:
    """Accept the runtime's connection on a --console-socket and take the pty master."""
    loop = asyncio.get_running_loop()
    listener.setblocking(False)
    conn, _ = await asyncio.wait_for(loop.sock_accept(listener), timeout)
    with conn:
        conn.setblocking(False)
        fds = array.array("i")
        await _readable(conn.fileno())
        _, ancdata, _, _ = conn.recvmsg(1024, socket.CMSG_SPACE(fds.itemsize))
        for level, kind, data in ancdata:
            if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
                fds.frombytes(data[: len(data) - (len(data) % fds.itemsize)])
    if not fds:
        raise FailedPrecondition("the runtime sent no terminal over the console socket")
    for extra in fds[1:]:
        os.close(extra)
    os.set_inheritable(fds[0], False)
    return fds[0]


async def _readable(fd: int) -> None:
    loop = asyncio.get_running_loop()
    ready: asyncio.Future[None] = loop.create_future()
    loop.add_reader(fd, _wake, ready)
    try:
        await ready
    finally:
        loop.remove_reader(fd)


async def _writable(fd: int) -> None:
    loop = asyncio.get_running_loop()
    ready: asyncio.Future[None] = loop.create_future()
    loop.add_writer(fd, _wake, ready)
    try:
        await ready
    finally:
        loop.remove_writer(fd)


def _wake(ready: asyncio.Future[None]) -> None:
    if not ready.done():
        ready.set_result(None)
