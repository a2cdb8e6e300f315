"""Supervising the QEMU process: start it, notice its exit at once, explain the exit."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import subprocess
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from agent.vm import console
from agent.vm.errors import QemuError, SpawnSetupError

log = logging.getLogger(__name__)
_STDERR_LIMIT = 8192


@dataclass(frozen=True)
class ExitInfo:
    """How QEMU ended: exit code or signal, whether we asked for it, and the evidence."""

    returncode: int
    expected: bool
    qemu_stderr: str
    console_tail: str

    @property
    def reason(self) -> str:
        """A one-line human explanation, e.g. "killed by signal SIGKILL"."""
        if self.returncode < 0:
            try:
                name = signal.Signals(-self.returncode).name
            except ValueError:
                name = str(-self.returncode)
            return f"killed by signal {name}"
        return f"exited with status {self.returncode}"


class QemuProcess:
    """One running QEMU. ``exited`` resolves with ExitInfo as soon as it is gone."""

    def __init__(self, name: str, console_log: Path) -> None:
        self.name = name
        self._console_log = console_log
        self._proc: asyncio.subprocess.Process | None = None
        self._stderr = bytearray()
        self._expected = False
        self._callbacks: list[Callable[[ExitInfo], None]] = []
        self.exited: asyncio.Future[ExitInfo] = asyncio.get_running_loop().create_future()
        self._tasks: list[asyncio.Task[None]] = []

    @property
    def pid(self) -> int:
        if self._proc is None:
            raise QemuError(f"{self.name}: QEMU is not started")
        return self._proc.pid

    def on_exit(self, callback: Callable[[ExitInfo], None]) -> None:
        """Call ``callback`` with the ExitInfo when QEMU exits (at most once)."""
        self._callbacks.append(callback)

    async def start(
        self,
        argv: Sequence[str],
        pass_fds: Sequence[int],
        preexec: Callable[[], None] | None = None,
    ) -> None:
        """Start QEMU; ``preexec`` runs in the child between fork and exec (e.g. joining
        the pod's cgroup: QEMU runs nothing before it). Raises QemuError when the binary
        cannot be executed, SpawnSetupError when ``preexec`` raised (the child is gone)."""
        log.info("%s: starting %s", self.name, " ".join(argv))
        try:
            self._proc = await asyncio.create_subprocess_exec(
                *argv,
                stdin=asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.DEVNULL,
                stderr=asyncio.subprocess.PIPE,
                pass_fds=tuple(pass_fds),
                start_new_session=True,
                preexec_fn=preexec,
            )
        except subprocess.SubprocessError as err:
            raise SpawnSetupError(f"{self.name}: setup before exec of {argv[0]} failed") from err
        except OSError as err:
            raise QemuError(f"{self.name}: cannot start {argv[0]}: {err}") from err
        self._tasks.append(asyncio.create_task(self._read_stderr()))
        self._tasks.append(asyncio.create_task(self._watch()))

    async def _read_stderr(self) -> None:
        assert self._proc is not None and self._proc.stderr is not None
        while chunk := await self._proc.stderr.read(4096):
            self._stderr += chunk
            del self._stderr[:-_STDERR_LIMIT]

    async def _watch(self) -> None:
        assert self._proc is not None
        returncode = await self._proc.wait()
        # stderr is at EOF a moment after exit; give the reader that moment only.
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(asyncio.shield(self._tasks[0]), 0.2)
        info = ExitInfo(
            returncode=returncode,
            expected=self._expected,
            qemu_stderr=self._stderr.decode(errors="replace").strip(),
            console_tail=console.tail(self._console_log),
        )
        if info.expected:
            log.info("%s: QEMU %s", self.name, info.reason)
        else:
            log.error(
                "%s: QEMU died unexpectedly: %s; stderr: %s",
                self.name,
                info.reason,
                info.qemu_stderr[-500:],
            )
        self.exited.set_result(info)
        for callback in self._callbacks:
            callback(info)

    def expect_exit(self) -> None:
        """Mark the coming exit as requested (stop), not a crash."""
        self._expected = True

    def signal(self, signum: int) -> None:
        """Send ``signum`` to QEMU if it still runs."""
        if self._proc is not None and self._proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self._proc.pid, signum)

    async def wait(self, timeout: float) -> ExitInfo | None:
        """The ExitInfo if QEMU exits within ``timeout`` seconds, else None."""
        try:
            return await asyncio.wait_for(asyncio.shield(self.exited), timeout)
        except TimeoutError:
            return None
