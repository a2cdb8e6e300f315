"""The pod's QEMU holding a container's output FIFO across the daemon's death
(agent.sandbox.outputkeep), against a real QEMU: the daemon's QMP session ends as a
SIGKILL ends it, and containerd's reader must see no end of file until the next
daemon, over a QMP session of its own, lets go."""

from __future__ import annotations

import asyncio
import os
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from agent.sandbox.outputkeep import QemuOutputKeeper
from agent.vm.qmp import Monitor
from tests.conftest import require_programs

STREAM = "pod1/ctr1/init stdout"


@pytest.fixture
def qemu() -> Iterator[Path]:
    """A QEMU without a guest (``-machine none``), its QMP socket's path."""
    require_programs("qemu-system-x86_64")
    with tempfile.TemporaryDirectory(prefix="keep-") as tmp:
        socket = Path(tmp) / "qmp.sock"
        process = subprocess.Popen(
            ["qemu-system-x86_64", "-machine", "none", "-nodefaults", "-display", "none",
             "-qmp", f"unix:{socket},server=on,wait=off"],
            stdin=subprocess.DEVNULL,
        )  # fmt: skip
        try:
            yield socket
        finally:
            process.kill()
            process.wait()


class Session:
    """What a daemon's pod has: a QMP session, opened when first needed."""

    def __init__(self, socket: Path, name: str) -> None:
        self.socket = socket
        self.qmp = Monitor(name)
        self.connected = False

    async def monitor(self) -> Monitor:
        if not self.connected:
            await self.qmp.connect(self.socket, timeout=30.0)
            self.connected = True
        return self.qmp


def at_eof(fd: int) -> bool:
    try:
        return os.read(fd, 4096) == b""
    except BlockingIOError:
        return False  # a writer is left: nothing to read yet, no end of file


async def test_qemu_keeps_the_fifo_open_after_the_daemons_session_ends(
    qemu: Path, tmp_path: Path
) -> None:
    fifo = tmp_path / "stdout"
    os.mkfifo(fifo)
    reader = os.open(fifo, os.O_RDONLY | os.O_NONBLOCK)
    try:
        for _ in range(300):  # QEMU creates its QMP socket a moment after its start
            if qemu.exists():
                break
            await asyncio.sleep(0.1)
        first = Session(qemu, "daemon-1")
        writer = os.open(fifo, os.O_WRONLY)
        await QemuOutputKeeper(first).hold(STREAM, writer)
        os.write(writer, b"before\n")
        # The daemon dies: its FIFO end and its QMP session go.
        os.close(writer)
        await first.qmp.close()
        assert os.read(reader, 4096) == b"before\n"
        # QEMU handles the session's end in its own time: ask it something over a new
        # session first (the next daemon's), so that it has.
        second = Session(qemu, "daemon-2")
        await (await second.monitor()).status()
        assert not at_eof(reader), "QEMU let go of the FIFO when the QMP session ended"

        # The next daemon reopens the FIFO by path, writes on, and at the stream's end
        # has QEMU close its copy before closing its own end.
        writer = os.open(fifo, os.O_WRONLY)
        os.write(writer, b"after\n")
        assert os.read(reader, 4096) == b"after\n"
        await QemuOutputKeeper(second).release(STREAM)
        assert not at_eof(reader)  # our own end is still open
        os.close(writer)
        assert at_eof(reader)
        assert not await (await second.monitor()).close_fd("contrast-stdio-nothing-here")
        await second.qmp.close()
    finally:
        os.close(reader)
