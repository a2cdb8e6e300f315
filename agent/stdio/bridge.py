"""One process's stdio: containerd's FIFOs <-> the guest agent's stdio calls.

Output: ``ReadStdout``/``ReadStderr`` in a loop (empty data is the end of the stream)
into the FIFO, whose end we then close (containerd reads end of file). Input: the
FIFO into ``WriteStdin``, then ``CloseStdin`` at end of input. The Task service waits
for the output pumps (:meth:`StdioBridge.drained`) before it reports the process's
exit, so a reader of the container's log sees all of it by the time containerd hears
of the exit. With a ``keeper`` (:mod:`agent.sandbox.outputkeep`), a process that
outlives the daemon holds each output FIFO open too, from the pump's start until the
stream's end, so that containerd's copy into the log survives a daemon restart.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import Protocol

from agent.stdio.fifo import FifoError, InputFifo, OutputFifo

log = logging.getLogger(__name__)

CHUNK = 32768
# How long close() waits for the cancelled pumps.
CLOSE_SECONDS = 5.0


class ProcessIO(Protocol):
    """The stdio calls of one process in the guest."""

    async def read_stdout(self, size: int) -> bytes: ...

    async def read_stderr(self, size: int) -> bytes: ...

    async def write_stdin(self, data: bytes) -> int: ...

    async def close_stdin(self) -> None: ...


class OutputKeeper(Protocol):
    """Somebody outliving the daemon who holds an output FIFO's end open meanwhile."""

    async def hold(self, stream: str, fd: int) -> None: ...

    async def release(self, stream: str) -> None: ...


class StdioBridge:
    """Pumps between one process's FIFOs and its guest stdio; ``name`` is for logs."""

    def __init__(
        self, name: str, io: ProcessIO, stdin: str = "", stdout: str = "", stderr: str = "",
        *, keeper: OutputKeeper | None = None,
    ) -> None:  # fmt: skip
        self.name = name
        self.io = io
        self.keeper = keeper
        self.paths = (stdin, stdout, stderr)
        self._stdin: InputFifo | None = None
        self._outputs: list[OutputFifo] = []
        self._out_tasks: list[asyncio.Task[None]] = []
        self._in_task: asyncio.Task[None] | None = None

    def open(self) -> None:
        """Open the FIFOs (never blocks) and start pumping. Raises FifoError."""
        stdin, stdout, stderr = self.paths
        try:
            if stdin:
                self._stdin = InputFifo(stdin)
            for path, reader, stream in (
                (stdout, self.io.read_stdout, f"{self.name} stdout"),
                (stderr, self.io.read_stderr, f"{self.name} stderr"),
            ):
                if path:
                    fifo = OutputFifo(path)
                    self._outputs.append(fifo)
                    pump = self._pump_out(reader, fifo, stream)
                    self._out_tasks.append(asyncio.create_task(pump))
        except FifoError:
            self.close_now()
            raise
        if self._stdin is not None:
            self._in_task = asyncio.create_task(self._pump_in(self._stdin))

    async def _pump_out(
        self, reader: Callable[[int], Awaitable[bytes]], fifo: OutputFifo, stream: str
    ) -> None:
        ended = False  # the stream's own end, not our cancellation (a daemon stopping)
        try:
            if self.keeper is not None:
                await self.keeper.hold(stream, fifo.fd)
            while data := await reader(CHUNK):
                await fifo.write_all(data)
            ended = True
        except FifoError as err:
            ended = True
            log.warning("%s: output stopped: %s", self.name, err)
        except Exception as err:  # noqa: BLE001 (the backend's errors end this stream only)
            ended = True
            log.warning("%s: output from the guest ended: %s", self.name, err)
        finally:
            if ended and self.keeper is not None:
                await self.keeper.release(stream)
            # Our end is also a writer: containerd's reader sees end of file only once
            # it is closed (CRI's ExecSync waits for that before it answers).
            fifo.close()

    async def _pump_in(self, fifo: InputFifo) -> None:
        try:
            while data := await fifo.read(CHUNK):
                view = memoryview(data)
                while view:
                    view = view[await self.io.write_stdin(bytes(view)) :]
            await self.io.close_stdin()
        except FifoError as err:
            log.warning("%s: input stopped: %s", self.name, err)
        except Exception as err:  # noqa: BLE001 (the backend's errors end this stream only)
            log.warning("%s: input to the guest ended: %s", self.name, err)

    def close_stdin(self) -> None:
        """containerd's CloseIO: input ends once containerd's writer is closed too."""
        if self._stdin is not None:
            self._stdin.release()

    async def drained(self, timeout: float) -> bool:
        """Wait up to ``timeout`` seconds for the output streams to end; True if they did."""
        if not self._out_tasks:
            return True
        _, pending = await asyncio.wait(self._out_tasks, timeout=timeout)
        return not pending

    def close_now(self) -> None:
        """Stop every pump and close our FIFO ends."""
        for task in [*self._out_tasks, *([self._in_task] if self._in_task else [])]:
            task.cancel()
        for fifo in self._outputs:
            fifo.close()
        if self._stdin is not None:
            self._stdin.close()

    async def close(self, timeout: float = CLOSE_SECONDS, *, release: bool = False) -> None:
        """Stop the pumps and wait up to ``timeout`` seconds for them to end (a Task
        request waits on this: it must not wait forever on a pump that ignores its
        cancellation); one still running is logged and left behind. ``release``: the
        process is being deleted, so the keeper lets go of its output too (a daemon
        that stops keeps it held for the next one)."""
        self.close_now()
        tasks = [*self._out_tasks, *([self._in_task] if self._in_task else [])]
        if tasks:
            _, stuck = await asyncio.wait(tasks, timeout=timeout)
            if stuck:
                log.error("%s: %d stdio pump(s) still running %s s after close", self.name,
                          len(stuck), timeout)  # fmt: skip
        if release and self.keeper is not None:
            _, stdout, stderr = self.paths
            for path, stream in ((stdout, "stdout"), (stderr, "stderr")):
                if path:
                    await self.keeper.release(f"{self.name} {stream}")
