"""Closing a process's stdio while a pump waits on a FIFO (issue 14).

containerd deletes a terminal exec while it still holds its end of the stdin FIFO open,
so the bridge's input pump is waiting for the FIFO to become readable when the bridge
closes it. The event loop must not keep watching that fd number: the kernel hands it
out again, and the next file under it (in the daemon: gRPC's wake-up socket) was never
polled again, which wedged every later image lookup. The tests put a new pipe at exactly
the closed number (dup2) and check that the loop still sees it.
"""

from __future__ import annotations

import asyncio
import logging
import os
from pathlib import Path

import pytest

from agent.stdio import FifoError, StdioBridge
from agent.stdio.fifo import InputFifo, OutputFifo

WAIT = 30.0  # only bounds a failure; a passing test is answered at once


class SilentProcess:
    """A guest process that prints nothing (its reads wait) and takes all input."""

    def __init__(self) -> None:
        self.stdin = bytearray()
        self.done = asyncio.Event()

    async def read_stdout(self, size: int) -> bytes:
        await self.done.wait()
        return b""

    async def read_stderr(self, size: int) -> bytes:
        await self.done.wait()
        return b""

    async def write_stdin(self, data: bytes) -> int:
        self.stdin += data
        return len(data)

    async def close_stdin(self) -> None:
        pass


async def loop_still_sees(fd: int) -> None:
    """A new pipe placed at ``fd``: the loop reports its read end readable."""
    loop = asyncio.get_running_loop()
    read_end, write_end = os.pipe()
    if read_end != fd:
        os.dup2(read_end, fd, inheritable=False)
        os.close(read_end)
    seen: asyncio.Future[None] = loop.create_future()

    def readable() -> None:
        if not seen.done():
            seen.set_result(None)

    loop.add_reader(fd, readable)
    try:
        os.write(write_end, b"x")
        await asyncio.wait_for(seen, WAIT)
    finally:
        loop.remove_reader(fd)
        os.close(fd)
        os.close(write_end)


async def test_a_waiting_input_pump_closed_leaves_its_fd_unwatched(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    stdin = tmp_path / "stdin"
    os.mkfifo(stdin)
    bridge = StdioBridge("pod/c/tty", SilentProcess(), stdin=str(stdin))
    bridge.open()
    containerd = os.open(stdin, os.O_WRONLY | os.O_NONBLOCK)  # held open, nothing typed
    try:
        await asyncio.sleep(0.05)  # the pump now waits for input
        assert bridge._stdin is not None
        fd = bridge._stdin.fd
        with caplog.at_level(logging.WARNING, logger="agent.stdio.bridge"):
            await bridge.close()
        await loop_still_sees(fd)
        assert not [r for r in caplog.records if "Invalid file descriptor" in r.getMessage()]
    finally:
        os.close(containerd)


async def test_a_waiting_output_pump_closed_leaves_its_fd_unwatched(tmp_path: Path) -> None:
    stdout = tmp_path / "stdout"
    os.mkfifo(stdout)
    fifo = OutputFifo(str(stdout))
    fd = fifo.fd
    # Nobody reads: the pipe fills and the writer waits for room.
    writing = asyncio.create_task(fifo.write_all(b"x" * (4 << 20)))
    await asyncio.sleep(0.05)
    assert not writing.done()
    writing.cancel()
    fifo.close()
    with pytest.raises(asyncio.CancelledError):
        await writing
    await loop_still_sees(fd)


async def test_closing_wakes_a_reader_with_an_error_naming_the_fifo(tmp_path: Path) -> None:
    stdin = tmp_path / "stdin"
    os.mkfifo(stdin)
    fifo = InputFifo(str(stdin))
    fd = fifo.fd
    reading = asyncio.create_task(fifo.read())
    await asyncio.sleep(0.05)
    assert not reading.done()
    fifo.close()
    with pytest.raises(FifoError, match=f"FIFO {stdin} was closed"):
        await asyncio.wait_for(reading, WAIT)
    with pytest.raises(FifoError, match="is closed"):
        await fifo.read()
    await loop_still_sees(fd)


class StubbornProcess(SilentProcess):
    """Output reads that ignore cancellation until ``done`` (a misbehaving backend)."""

    async def read_stdout(self, size: int) -> bytes:
        while not self.done.is_set():
            try:
                await self.done.wait()
            except asyncio.CancelledError:
                continue
        return b""


async def test_close_gives_up_on_a_pump_that_ignores_cancellation(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    stdout = tmp_path / "stdout"
    os.mkfifo(stdout)
    process = StubbornProcess()
    bridge = StdioBridge("pod/c/init", process, stdout=str(stdout))
    bridge.open()
    try:
        await asyncio.sleep(0.05)
        with caplog.at_level(logging.ERROR, logger="agent.stdio.bridge"):
            await asyncio.wait_for(bridge.close(timeout=0.2), WAIT)
        assert "pod/c/init: 1 stdio pump(s) still running 0.2 s after close" in caplog.text
    finally:
        process.done.set()
        await asyncio.sleep(0.05)
