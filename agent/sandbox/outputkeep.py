"""A container's output FIFOs held open by its pod's QEMU, so that a daemon restart
does not end the container's CRI log.

containerd's CRI reads a container's stdout/stderr FIFOs and copies them into the
container's log until end of file; a FIFO's reader sees end of file once no writer is
left. The daemon is the writer (``agent.stdio``): when it dies, so does the log copy,
and the next daemon's writes go to a FIFO nobody copies any more. So each init
process's output FIFO end is also handed to the pod's QEMU (QMP ``add-fd``, the way a
block device's fd is): QEMU outlives the daemon and never touches the fd; there is
always a writer, containerd's copy goes on, and the next daemon reopens the FIFO by
path and writes on. At the stream's real end (the process's output done) the daemon
takes QEMU's copies back (``remove-fd`` of every fd set whose opaque names the
stream, including an earlier daemon's) before closing its own end, so containerd
sees end of file as before. When the pod-VM stops, QEMU's copies close with it.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Protocol

from agent.vm.errors import VMError
from agent.vm.qmp import Monitor

log = logging.getLogger(__name__)

OPAQUE_PREFIX = "contrast-stdio "


class HasMonitor(Protocol):
    async def monitor(self) -> Monitor: ...


class QemuOutputKeeper:
    """Holds FIFO ends in one pod-VM's QEMU (see the module docstring)."""

    def __init__(self, vm: HasMonitor) -> None:
        self.vm = vm
        # add-fd pairs the fd sent with the command after it: one at a time.
        self._lock = asyncio.Lock()

    async def hold(self, stream: str, fd: int) -> None:
        """QEMU keeps a copy of ``fd`` under ``stream``'s name. A failure is logged:
        the stream flows as before, only a daemon restart would end its log."""
        try:
            async with self._lock:
                await (await self.vm.monitor()).add_fd(fd, OPAQUE_PREFIX + stream)
        except (VMError, OSError) as err:
            log.warning("%s: output not held across a daemon restart: %s", stream, err)

    async def release(self, stream: str) -> None:
        """QEMU's copies of ``stream`` (any daemon's) closed. A failure is logged: the
        copies then close with the pod-VM."""
        try:
            async with self._lock:
                monitor = await self.vm.monitor()
                for fdset, opaques in (await monitor.fdsets()).items():
                    if OPAQUE_PREFIX + stream in opaques:
                        await monitor.remove_fdset(fdset)
        except (VMError, OSError) as err:
            log.warning("%s: QEMU's copy of the output not released: %s", stream, err)
