"""An init's output FIFO held by a keeper (the pod's QEMU in production) across the
daemon's end: containerd's reader (here: a reader of our own, opened as containerd
opens it) sees no end of file while the daemon is gone, the next daemon's bridge writes
on into the same FIFO, and end of file comes once the stream really ended and the
keeper let go."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

from agent.stdio import StdioBridge


class Guest:
    """One process's output: chunks handed out on demand, end of stream when told."""

    def __init__(self) -> None:
        self.chunks: asyncio.Queue[bytes] = asyncio.Queue()

    async def read_stdout(self, size: int) -> bytes:
        return await self.chunks.get()

    async def read_stderr(self, size: int) -> bytes:
        return b""

    async def write_stdin(self, data: bytes) -> int:
        return len(data)

    async def close_stdin(self) -> None:
        return None


class Keeper:
    """Holds a duplicate of each fd it is given, as QEMU's add-fd does."""

    def __init__(self) -> None:
        self.held: dict[str, list[int]] = {}
        self.calls: list[tuple[str, str]] = []

    async def hold(self, stream: str, fd: int) -> None:
        self.calls.append(("hold", stream))
        self.held.setdefault(stream, []).append(os.dup(fd))

    async def release(self, stream: str) -> None:
        self.calls.append(("release", stream))
        for fd in self.held.pop(stream, []):
            os.close(fd)


def reader_of(path: Path) -> int:
    """containerd's end: read-only, non-blocking."""
    return os.open(path, os.O_RDONLY | os.O_NONBLOCK)


async def read_some(fd: int, want: bytes) -> bytes:
    """What the reader has until ``want`` arrived, or b"" at end of file."""
    got = bytearray()
    while want not in got:
        try:
            chunk = os.read(fd, 4096)
        except BlockingIOError:
            await asyncio.sleep(0.01)
            continue
        if not chunk:
            return b""
        got += chunk
    return bytes(got)


def at_eof(fd: int) -> bool:
    try:
        return os.read(fd, 4096) == b""
    except BlockingIOError:
        return False  # no data, but a writer is left


async def test_output_flows_across_a_daemon_end_while_the_keeper_holds_it(
    tmp_path: Path,
) -> None:
    path = tmp_path / "stdout"
    os.mkfifo(path)
    reader = reader_of(path)
    keeper = Keeper()
    guest = Guest()
    first = StdioBridge("pod/c/init", guest, stdout=str(path), keeper=keeper)
    first.open()
    try:
        await guest.chunks.put(b"before\n")
        assert await read_some(reader, b"before\n") == b"before\n"
        await first.close()  # the daemon ends (SIGTERM; a SIGKILL closes the same fds)
        assert keeper.calls == [("hold", "pod/c/init stdout")]  # not released
        assert not at_eof(reader)  # the keeper's copy: containerd's copy goes on

        second = StdioBridge("pod/c/init", guest, stdout=str(path), keeper=keeper)
        second.open()  # the next daemon, reattached
        await guest.chunks.put(b"after\n")
        assert await read_some(reader, b"after\n") == b"after\n"
        await guest.chunks.put(b"")  # the process's output ends
        assert await second.drained(30)
        assert keeper.held == {}  # every copy, both daemons', released
        assert keeper.calls[-1] == ("release", "pod/c/init stdout")
        assert at_eof(reader)
    finally:
        os.close(reader)
        for fds in keeper.held.values():
            for fd in fds:
                os.close(fd)


async def test_delete_releases_what_a_running_stream_held(tmp_path: Path) -> None:
    path = tmp_path / "stdout"
    os.mkfifo(path)
    reader = reader_of(path)
    keeper = Keeper()
    bridge = StdioBridge("pod/c/init", Guest(), stdout=str(path), keeper=keeper)
    bridge.open()
    try:
        while not keeper.held:
            await asyncio.sleep(0.01)
        await bridge.close(release=True)  # Delete of a process whose output never ended
        assert keeper.held == {}
        assert at_eof(reader)
    finally:
        os.close(reader)


async def test_without_a_keeper_the_daemons_end_is_the_logs_end(tmp_path: Path) -> None:
    """What happened before the keeper (and still does for execs)."""
    path = tmp_path / "stdout"
    os.mkfifo(path)
    reader = reader_of(path)
    bridge = StdioBridge("pod/c/exec1", Guest(), stdout=str(path))
    bridge.open()
    try:
        await bridge.close()
        assert at_eof(reader)
    finally:
        os.close(reader)
