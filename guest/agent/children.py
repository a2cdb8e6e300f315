"""Child processes: the one reaper, the one spawn function, the one command runner.

The agent is a child subreaper (``PR_SET_CHILD_SUBREAPER``): a container's init and
its exec'd processes, started by ``crun create``/``crun exec -d`` which then exit,
become the agent's children. A SIGCHLD handler reaps *every* child with
``waitpid(-1)`` and hands each status to whoever waits for that pid; a status nobody
waits for yet is kept, because a container's init may die before its pid is read
from the pid file. Nothing else in the agent's process may wait for children: every
program is started through :func:`spawn` (no ``subprocess``, no asyncio child
watcher), so no status is ever stolen.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import logging
import os
import signal
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from guest.agent.errors import AgentError, CommandError

log = logging.getLogger(__name__)

PR_SET_CHILD_SUBREAPER = 36
# Statuses of orphans nobody asked for (grandchildren reparented to us) are kept this
# long, newest last, so a late claim still finds its status.
MAX_UNCLAIMED = 4096


def exit_code(status: int) -> int:
    """A wait status as the agent reports it: the exit code, or 128+n for signal n."""
    if os.WIFSIGNALED(status):
        return 128 + os.WTERMSIG(status)
    if os.WIFEXITED(status):
        return os.WEXITSTATUS(status)
    raise ValueError(f"wait status {status:#x} is neither an exit nor a signal")


def become_subreaper() -> None:
    """Make orphaned descendants our children. Raises AgentError when refused."""
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) != 0:
        err = ctypes.get_errno()
        raise AgentError(f"prctl(PR_SET_CHILD_SUBREAPER): {os.strerror(err)}")


class Reaper:
    """Reaps every child on SIGCHLD; ``wait(pid)`` returns its exit code."""

    def __init__(self) -> None:
        self._waiters: dict[int, asyncio.Future[int]] = {}
        self._unclaimed: OrderedDict[int, int] = OrderedDict()
        self._loop: asyncio.AbstractEventLoop | None = None

    def start(self) -> None:
        """Install the SIGCHLD handler on the running loop (and reap what is there)."""
        self._loop = asyncio.get_running_loop()
        self._loop.add_signal_handler(signal.SIGCHLD, self.reap)
        self.reap()

    def stop(self) -> None:
        if self._loop is not None:
            self._loop.remove_signal_handler(signal.SIGCHLD)
            self._loop = None

    def reap(self) -> None:
        """Collect every exited child (called from the loop on SIGCHLD)."""
        while True:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            code = exit_code(status)
            waiter = self._waiters.pop(pid, None)
            if waiter is not None and not waiter.done():
                waiter.set_result(code)
            else:
                self._unclaimed[pid] = code
                while len(self._unclaimed) > MAX_UNCLAIMED:
                    self._unclaimed.popitem(last=False)

    def watch(self, pid: int) -> asyncio.Future[int]:
        """A future for ``pid``'s exit code (already resolved if it was reaped)."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[int] = loop.create_future()
        if pid in self._unclaimed:
            future.set_result(self._unclaimed.pop(pid))
            return future
        if pid in self._waiters:
            raise AgentError(f"pid {pid} is already watched")
        self._waiters[pid] = future
        # It may have become a zombie between spawn and now without a SIGCHLD yet.
        self.reap()
        return future


@dataclass(frozen=True)
class Stdio:
    """File descriptors a spawned program gets as 0, 1, 2 (None: /dev/null)."""

    stdin: int | None = None
    stdout: int | None = None
    stderr: int | None = None


def spawn(
    args: Sequence[str], stdio: Stdio, env: Mapping[str, str] | None = None, setsid: bool = False
) -> int:
    """Start ``args`` (never through a shell) with ``stdio``; returns its pid.

    The caller must ``Reaper.watch`` the pid right away (same loop iteration).
    Raises AgentError when the program cannot be started.
    """
    devnull = os.open(os.devnull, os.O_RDWR | os.O_CLOEXEC)
    try:
        actions = []
        for target, fd in enumerate((stdio.stdin, stdio.stdout, stdio.stderr)):
            actions.append((os.POSIX_SPAWN_DUP2, devnull if fd is None else fd, target))
        try:
            return os.posix_spawnp(
                args[0],
                list(args),
                dict(os.environ if env is None else env),
                file_actions=actions,
                setsid=setsid,
            )
        except OSError as err:
            raise AgentError(f"cannot start {args[0]}: {err}") from err
    finally:
        os.close(devnull)


async def run(
    reaper: Reaper,
    args: Sequence[str],
    *,
    timeout: float = 60.0,
    stdio: Stdio | None = None,
    log_path: str | None = None,
) -> str:
    """Run a program to completion; returns its output.

    Without ``stdio`` the output (stdout and stderr) is captured; with it the program
    writes where ``stdio`` says and ``log_path`` (the runtime's own log file) is read
    instead. Raises CommandError (command line, status or timeout, output) unless it
    exits 0.
    """
    capture = os.memfd_create("agent-command-output", os.MFD_CLOEXEC)
    try:
        if stdio is None:
            stdio = Stdio(None, capture, capture)
        pid = spawn(args, stdio)
        exited = reaper.watch(pid)
        try:
            status: int | None = await asyncio.wait_for(asyncio.shield(exited), timeout)
        except TimeoutError:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
            await exited
            status = None
        output = _read_all(capture)
        if log_path is not None:
            try:
                with open(log_path, errors="replace") as f:
                    output += f.read()
            except FileNotFoundError:
                pass
        if status != 0:
            raise CommandError(list(args), status, output)
        return output
    finally:
        os.close(capture)


def _read_all(fd: int) -> str:
    os.lseek(fd, 0, os.SEEK_SET)
    chunks = []
    while chunk := os.read(fd, 65536):
        chunks.append(chunk)
    return b"".join(chunks).decode(errors="replace")
