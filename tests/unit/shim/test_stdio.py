"""FIFOs as containerd creates them, bridged to a process's stdio calls."""

from __future__ import annotations

import asyncio
import collections
import os
from pathlib import Path

import pytest

from agent.stdio import FifoError, StdioBridge


class GuestProcess:
    """The guest side of one process's stdio: queued output, recorded input."""

    def __init__(self, stdout: list[bytes], stderr: list[bytes]) -> None:
        # Everything the process will print, already there; an empty chunk ends a stream.
        self.stdout = collections.deque(stdout)
        self.stderr = collections.deque(stderr)
        self.stdin = bytearray()
        self.stdin_closed = asyncio.Event()

    @staticmethod
    async def _read(chunks: collections.deque[bytes], size: int) -> bytes:
        await asyncio.sleep(0)
        chunk = chunks.popleft() if chunks else b""
        if len(chunk) > size:  # like the agent: at most size bytes, the rest stays
            chunks.appendleft(chunk[size:])
            chunk = chunk[:size]
        return chunk

    async def read_stdout(self, size: int) -> bytes:
        return await self._read(self.stdout, size)

    async def read_stderr(self, size: int) -> bytes:
        return await self._read(self.stderr, size)

    async def write_stdin(self, data: bytes) -> int:
        take = min(len(data), 5)  # short writes: the bridge must loop
        self.stdin += data[:take]
        return take

    async def close_stdin(self) -> None:
        self.stdin_closed.set()


def fifos(folder: Path) -> tuple[str, str, str]:
    paths = tuple(str(folder / name) for name in ("stdin", "stdout", "stderr"))
    for path in paths:
        os.mkfifo(path)
    return paths  # type: ignore[return-value]


async def read_until_eof(fd: int) -> bytes:
    loop = asyncio.get_running_loop()
    out = bytearray()
    while True:
        chunk = await loop.run_in_executor(None, os.read, fd, 65536)
        if not chunk:
            return bytes(out)
        out += chunk


async def test_output_reaches_containerd_and_input_the_guest(tmp_path: Path) -> None:
    stdin, stdout, stderr = fifos(tmp_path)
    big = os.urandom(300_000)  # several times a pipe's buffer
    guest = GuestProcess([b"hello ", big, b""], [b"oops", b""])
    bridge = StdioBridge("pod/c/init", guest, stdin, stdout, stderr)
    bridge.open()  # before containerd opened anything: must not block
    # containerd's ends, as it opens them.
    out_fd = os.open(stdout, os.O_RDONLY)
    err_fd = os.open(stderr, os.O_RDONLY)
    in_fd = os.open(stdin, os.O_WRONLY)
    reading = asyncio.gather(read_until_eof(out_fd), read_until_eof(err_fd))
    os.write(in_fd, b"typed input\n")
    assert await bridge.drained(10)
    os.close(in_fd)
    await asyncio.sleep(0.1)
    assert not guest.stdin_closed.is_set()  # our own writer keeps stdin open until CloseIO
    bridge.close_stdin()
    await asyncio.wait_for(guest.stdin_closed.wait(), 5)
    assert bytes(guest.stdin) == b"typed input\n"
    await bridge.close()
    out, err = await asyncio.wait_for(reading, 10)
    os.close(out_fd)
    os.close(err_fd)
    assert out == b"hello " + big
    assert err == b"oops"


async def test_missing_fifo_is_an_error_naming_it(tmp_path: Path) -> None:
    guest = GuestProcess([], [])
    bridge = StdioBridge("p", guest, stdout=str(tmp_path / "gone"))
    with pytest.raises(FifoError, match=r"cannot open FIFO .*gone"):
        bridge.open()


async def test_no_paths_nothing_to_do() -> None:
    bridge = StdioBridge("p", GuestProcess([], []))
    bridge.open()
    assert await bridge.drained(0.1)
    await bridge.close()


async def test_containerd_reads_end_of_file_when_the_guest_stream_ends(tmp_path: Path) -> None:
    """CRI's ExecSync answers only after its readers hit end of file, and Delete comes
    after that: the bridge must close its end when the stream ends, not at Delete."""
    _, stdout, stderr = fifos(tmp_path)
    bridge = StdioBridge(
        "pod/c/exec1", GuestProcess([b"exec ok\n", b""], [b""]), "", stdout, stderr
    )
    out_fd = os.open(stdout, os.O_RDONLY | os.O_NONBLOCK)
    err_fd = os.open(stderr, os.O_RDONLY | os.O_NONBLOCK)
    for fd in (out_fd, err_fd):
        os.set_blocking(fd, True)
    bridge.open()
    try:
        reading = asyncio.gather(read_until_eof(out_fd), read_until_eof(err_fd))
        assert list(await asyncio.wait_for(reading, 10)) == [b"exec ok\n", b""]
    finally:
        await bridge.close()
        os.close(out_fd)
        os.close(err_fd)
