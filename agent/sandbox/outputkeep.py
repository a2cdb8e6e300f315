"""A container's output FIFOs held open by its pod's QEMU, so that a daemon restart
does not end the container's CRI log.

containerd's CRI reads a container's stdout/stderr FIFOs and copies them into the
container's log until end of file; a FIFO's reader sees end of file once no writer is
left. The daemon is the writer (``agent.stdio``): when it dies, so does the log copy,
and the next daemon's writes go to a FIFO nobody copies any more. So each init
process's output FIFO end is also handed to the pod's QEMU (QMP ``getfd``, under a
name made from the stream's): QEMU outlives the daemon and never touches the fd; there
is always a writer, containerd's copy goes on, and the next daemon reopens the FIFO by
path and writes on. At the stream's real end (the process's output done) the daemon
has QEMU close its copy (``closefd`` of that name, whichever daemon gave it) before
closing its own end, so containerd sees end of file as before. When the pod-VM stops,
QEMU's copies close with it.

Not ``add-fd``: QEMU closes an fd set's fds that no device uses as soon as no QMP
client is connected (``monitor_fdset_cleanup``), which is exactly when the daemon has
died. Fds kept by ``getfd`` stay until ``closefd`` or QEMU's exit.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
from typing import Protocol

from agent.vm.errors import VMError
from agent.vm.qmp import Monitor

log = logging.getLogger(__name__)

NAME_PREFIX = "contrast-stdio-"


def fd_name(stream: str) -> str:
    """QEMU's name for ``stream``'s kept fd (``<pod>/<container>/<exec> stdout``): the
    same in every daemon, of a fixed length and alphabet whatever the ids hold."""
    return NAME_PREFIX + hashlib.sha256(stream.encode()).hexdigest()[:32]


class HasMonitor(Protocol):
    async def monitor(self) -> Monitor: ...


class QemuOutputKeeper:
    """Holds FIFO ends in one pod-VM's QEMU (see the module docstring)."""

    def __init__(self, vm: HasMonitor) -> None:
        self.vm = vm
        # getfd pairs the fd sent with the command after it: one at a time.
        self._lock = asyncio.Lock()

    async def hold(self, stream: str, fd: int) -> None:
        """QEMU keeps a copy of ``fd`` under ``stream``'s name. A failure is logged:
        the stream flows as before, only a daemon restart would end its log."""
        try:
            async with self._lock:
                await (await self.vm.monitor()).get_fd(fd, fd_name(stream))
        except (VMError, OSError) as err:
            log.warning("%s: output not held across a daemon restart: %s", stream, err)

    async def release(self, stream: str) -> None:
        """QEMU's copy of ``stream`` (any daemon's) closed; none is fine. A failure is
        logged: the copy then closes with the pod-VM."""
        try:
            async with self._lock:
                await (await self.vm.monitor()).close_fd(fd_name(stream))
        except (VMError, OSError) as err:
            log.warning("%s: QEMU's copy of the output not released: %s", stream, err)
