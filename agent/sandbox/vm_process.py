"""A pod-VM's QEMU process known only from its state record (:class:`VmRecord`), not
as our child: a VM an earlier daemon launched, or one whose daemon is gone.

Whether the recorded pid is still our QEMU (:func:`runs_our_qemu`: its command line
names the VM's console log, so a recycled pid is never mistaken), stopping a reattached
QEMU by pid (:func:`stop_by_pid`), and killing an orphan with its sockets and pod cgroup
directories (:func:`kill_orphan`, also the shim's daemon-less ``delete``). The pod-VM
backend (:mod:`agent.sandbox.vm_backend`) stops the VMs it launched itself through
:mod:`agent.vm`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
from pathlib import Path

from agent.sandbox import podcgroup
from agent.sandbox.errors import BackendError
from agent.sandbox.state import VmRecord

log = logging.getLogger(__name__)

# The pod-VM backend's name in state records (VmRecord.backend).
NAME = "pod-vm"


def runs_our_qemu(vm: VmRecord) -> bool:
    """Whether ``vm.pid`` is still the QEMU we started: its command line names our
    console log (QEMU gets its sockets as fds), so a recycled pid is never mistaken."""
    marker = vm.details.get("console_log", "")
    try:
        argv = Path(f"/proc/{vm.pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return False
    return bool(marker) and any(marker.encode() in arg for arg in argv)


def _remove_sockets(vm: VmRecord) -> None:
    for key in ("qmp_socket", "agent_socket"):
        if vm.details.get(key):
            Path(vm.details[key]).unlink(missing_ok=True)


async def _exited(pidfd: int, timeout: float) -> bool:
    loop = asyncio.get_running_loop()
    done: asyncio.Future[None] = loop.create_future()

    def readable() -> None:
        if not done.done():
            done.set_result(None)

    loop.add_reader(pidfd, readable)
    try:
        await asyncio.wait_for(done, timeout)
    except TimeoutError:
        return False
    finally:
        loop.remove_reader(pidfd)
    return True


async def stop_by_pid(vm: VmRecord, timeout: float) -> None:
    """Stop a reattached QEMU: SIGTERM (QEMU shuts down cleanly), SIGKILL after
    ``timeout`` seconds; remove its sockets. Raises BackendError when it survives."""
    if not runs_our_qemu(vm):
        _remove_sockets(vm)
        return
    try:
        pidfd = os.pidfd_open(vm.pid)
    except ProcessLookupError:
        _remove_sockets(vm)
        return
    try:
        for signum, wait in ((signal.SIGTERM, timeout), (signal.SIGKILL, 10.0)):
            with contextlib.suppress(ProcessLookupError):
                signal.pidfd_send_signal(pidfd, signum)
            if await _exited(pidfd, wait):
                log.info("pod-VM pid %d stopped (%s)", vm.pid, signal.Signals(signum).name)
                break
        else:
            raise BackendError(f"pod-VM pid {vm.pid} survived SIGKILL")
    finally:
        os.close(pidfd)
        _remove_sockets(vm)


def _pids_with(marker: str) -> list[int]:
    """Processes whose command line contains ``marker`` (a VM's console log path)."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and runs_our_qemu(
            VmRecord(NAME, int(entry.name), {"console_log": marker})
        ):
            found.append(int(entry.name))
    return found


def kill_orphan(vm: VmRecord, *, remove_cgroup: bool = True) -> bool:
    """SIGKILL the QEMU of ``vm`` if it still runs (see :func:`runs_our_qemu`); for a
    VM recorded before its launch finished (pid 0), the QEMU naming its console log.

    Returns whether a process was killed; removes the VM's sockets either way, and with
    ``remove_cgroup`` the pod cgroup directories we created for it (waiting up to 5 s
    for the killed QEMU to leave them; failures are logged).
    """
    pids = [vm.pid] if vm.pid > 0 and runs_our_qemu(vm) else []
    if vm.pid == 0 and vm.details.get("console_log"):
        pids = _pids_with(vm.details["console_log"])
    killed = False
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
            killed = True
            log.info("killed orphaned pod-VM pid %d", pid)
    _remove_sockets(vm)
    if remove_cgroup:
        try:
            podcgroup.remove_blocking(podcgroup.created_dirs(vm.details))
        except podcgroup.CgroupError as err:
            log.warning("pod-VM pid %d: %s", vm.pid, err)
    return killed
