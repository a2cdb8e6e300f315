"""ReadStdout/ReadStderr semantics on real pipes and a real pty (no process needed)."""

from __future__ import annotations

import asyncio
import os
import pty

import pytest

from guest.agent import stdio
from guest.agent.children import exit_code
from guest.agent.errors import FailedPrecondition, InvalidRequest


async def test_read_up_to_len_then_empty_at_end_of_stream() -> None:
    io = stdio.pipes()
    assert io.child.stdout is not None
    os.write(io.child.stdout, b"0123456789")
    io.close_child_ends()  # the writer is gone: after the data, end of stream
    assert await io.stdout.read(4) == b"0123"
    assert await io.stdout.read(100) == b"456789"
    assert await io.stdout.read(100) == b""
    assert await io.stdout.read(100) == b""  # stays at end of stream
    await io.close()


async def test_read_waits_for_data() -> None:
    io = stdio.pipes()
    writer = os.dup(io.child.stderr or -1)
    io.close_child_ends()
    pending = asyncio.ensure_future(io.stderr.read(10))
    await asyncio.sleep(0.05)
    assert not pending.done()
    os.write(writer, b"late")
    assert await pending == b"late"
    os.close(writer)
    assert await io.stderr.read(10) == b""
    await io.close()


async def test_stdin_write_and_close() -> None:
    io = stdio.pipes()
    reader = os.dup(io.child.stdin or -1)
    io.close_child_ends()
    assert await io.stdin.write(b"abc") == 3
    await io.stdin.close()
    assert os.read(reader, 10) == b"abc"
    assert os.read(reader, 10) == b""  # the process sees end of file
    os.close(reader)
    with pytest.raises(FailedPrecondition):
        await io.stdin.write(b"more")
    await io.close()


async def test_bad_length_refused() -> None:
    io = stdio.pipes()
    with pytest.raises(InvalidRequest):
        await io.stdout.read(0)
    await io.close()


async def test_terminal_one_stream_and_resize() -> None:
    master, slave = pty.openpty()
    io = stdio.terminal(master)
    io.resize(24, 100)
    import fcntl
    import struct
    import termios

    rows, cols, _, _ = struct.unpack("HHHH", fcntl.ioctl(slave, termios.TIOCGWINSZ, b"\0" * 8))
    assert (rows, cols) == (24, 100)
    os.write(slave, b"out")
    assert await io.stdout.read(10) == b"out"
    assert await io.stderr.read(10) == b""  # no separate stderr with a terminal
    os.close(slave)
    assert await io.stdout.read(10) == b""  # EIO after the last slave closes: end of stream
    await io.close()


def test_exit_codes() -> None:
    assert exit_code(3 << 8) == 3
    assert exit_code(15) == 128 + 15
    assert exit_code(9) == 128 + 9


async def test_close_under_a_waiting_read_ends_it_and_frees_the_fd() -> None:
    """A process deleted while a ReadStdout waits (ProcessStdio.close) must end that read
    with end of stream, and take the fd back from the event loop before closing it: the
    fd number is reused at once, and a reader left registered (or removed later, by the
    stale read's cleanup) would watch or unwatch whatever got that number next."""
    io = stdio.pipes()
    writer = os.dup(io.child.stdout or -1)
    io.close_child_ends()
    pending = asyncio.ensure_future(io.stdout.read(10))
    await asyncio.sleep(0)  # the read now waits for the fd
    assert not pending.done()
    await io.close()
    # Not a time margin: a read left hanging never finishes; the bound only stops the test.
    assert await asyncio.wait_for(pending, 30) == b""
    # The next stream likely gets the closed fd's number: it must work normally.
    again = stdio.pipes()
    late = os.dup(again.child.stdout or -1)
    again.close_child_ends()
    reading = asyncio.ensure_future(again.stdout.read(10))
    await asyncio.sleep(0)
    os.write(late, b"next")
    assert await asyncio.wait_for(reading, 30) == b"next"
    for fd in (writer, late):
        os.close(fd)
    await again.close()
