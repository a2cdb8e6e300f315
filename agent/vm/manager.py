"""One pod-VM's life: launch QEMU, wait for the guest agent, hotplug disks, stop.

Usage::

    vm = await VM.launch(config)
    try:
        await vm.wait_ready(timeout=120)
        ...
    finally:
        await vm.stop()
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import socket
import time
from collections.abc import Callable
from pathlib import Path
from types import TracebackType
from typing import Any

from agent.vm import console
from agent.vm.argv import PassedFds, blockdev_json, build_argv, device_json, hotplug_port
from agent.vm.blockdev import open_block_device
from agent.vm.config import Disk, VirtioSerialTransport, VMConfig
from agent.vm.errors import BootError, HotplugError, QemuError, VerityError, VMExitedError
from agent.vm.process import ExitInfo, QemuProcess
from agent.vm.qmp import Monitor

log = logging.getLogger(__name__)

# What the guest agent prints on the console once it serves (see guest.init).
READY_LINE = "contrast-guest-agent: ready"
_POLL = 0.05


def _listen(path: Path) -> socket.socket:
    path.unlink(missing_ok=True)
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.bind(str(path))
    path.chmod(0o600)
    sock.listen(1)
    return sock


class VM:
    """A running QEMU pod-VM under our control."""

    def __init__(self, config: VMConfig, process: QemuProcess, monitor: Monitor) -> None:
        self.config = config
        self.process = process
        self.monitor = monitor
        self.qemu_version: dict[str, object] = {}
        self._slots: dict[int, str | None] = dict.fromkeys(range(config.hotplug_slots))
        self._hotplugged: dict[str, int] = {}

    @classmethod
    async def launch(
        cls,
        config: VMConfig,
        *,
        qmp_timeout: float = 15.0,
        tap_fd: int | None = None,
        preexec: Callable[[], None] | None = None,
    ) -> VM:
        """Start QEMU for ``config`` and connect QMP; the guest is then booting.

        ``tap_fd`` is the open tap for ``config.net`` (QEMU gets a copy; the caller
        keeps and closes its own). ``preexec`` runs in QEMU's process before exec (see
        :meth:`QemuProcess.start`; its failure raises SpawnSetupError).

        Raises QemuError when QEMU fails to start or QMP does not come up (QEMU is
        then killed and its sockets removed), HotplugError when one of
        ``config.block_devices`` is not a block device (QEMU is not started).
        """
        config.console_log.parent.mkdir(parents=True, exist_ok=True)
        config.console_log.unlink(missing_ok=True)
        listeners = [_listen(config.qmp_socket)]
        agent_fd = None
        if isinstance(config.transport, VirtioSerialTransport):
            listeners.append(_listen(config.transport.socket))
            agent_fd = listeners[1].fileno()
        process = QemuProcess(config.name, config.console_log)
        vm = cls(config, process, Monitor(config.name))
        block: list[int] = []
        try:
            for device in config.block_devices:  # checked and opened here, not by QEMU
                block.append(open_block_device(device.path, device.read_only)[0])
            fds = PassedFds(listeners[0].fileno(), agent_fd, tap_fd, tuple(block))
            passed = [s.fileno() for s in listeners] + ([] if tap_fd is None else [tap_fd])
            await process.start(build_argv(config, fds), [*passed, *block], preexec)
        except (QemuError, HotplugError):
            vm._remove_sockets()
            raise
        finally:
            for sock in listeners:  # QEMU holds its own copies now
                sock.close()
            for fd in block:
                os.close(fd)
        try:
            await vm._connect_qmp(qmp_timeout)
        except BaseException:
            await vm._kill()
            raise
        return vm

    async def _connect_qmp(self, timeout: float) -> None:
        connect: asyncio.Future[dict[str, object]] = asyncio.ensure_future(
            self.monitor.connect(self.config.qmp_socket, timeout)
        )
        waiting: set[asyncio.Future[Any]] = {connect, self.process.exited}
        done, _ = await asyncio.wait(waiting, return_when=asyncio.FIRST_COMPLETED)
        if connect not in done:
            connect.cancel()
            info = self.process.exited.result()
            raise QemuError(
                f"{self.config.name}: QEMU {info.reason} before QMP came up: {info.qemu_stderr}"
            )
        self.qemu_version = connect.result()
        status = await self.monitor.status()
        log.info("%s: QEMU pid %d, status %s", self.config.name, self.process.pid, status)

    @property
    def exited(self) -> asyncio.Future[ExitInfo]:
        """Resolves with ExitInfo when QEMU exits, for whatever reason."""
        return self.process.exited

    async def wait_ready(self, timeout: float, ready_line: str = READY_LINE) -> float:
        """Wait until the guest agent announces itself on the console; return seconds waited.

        Raises VerityError when the console shows dm-verity rejecting the root image,
        BootError when QEMU exits or ``timeout`` passes first (with the console tail).
        """
        started = time.monotonic()
        deadline = started + timeout
        watch = console.Watch(self.config.console_log, ready_line)
        while not watch.found():
            if self.exited.done():
                raise self._boot_error(f"QEMU {self.exited.result().reason} during boot")
            if time.monotonic() > deadline:
                raise self._boot_error(f"guest not ready after {timeout:.0f} s")
            await asyncio.sleep(_POLL)
        return time.monotonic() - started

    def _boot_error(self, what: str) -> BootError:
        text = console.tail(self.config.console_log)
        lines = console.diagnostic_lines(text)
        if console.verity_failed(text):
            return VerityError(
                f"{self.config.name}: dm-verity check of the root image failed ({what}): "
                + " | ".join(lines),
                text,
            )
        detail = (": " + " | ".join(lines)) if lines else ""
        return BootError(f"{self.config.name}: {what}{detail}", text)

    async def status(self) -> str:
        """QEMU's run state (query-status). Raises VMExitedError once QEMU is gone."""
        self._require_running()
        return await self.monitor.status()

    def _require_running(self) -> None:
        if self.exited.done():
            raise VMExitedError(f"{self.config.name}: QEMU {self.exited.result().reason}")

    async def hotplug_disk(self, disk: Disk, blockdev: dict[str, object] | None = None) -> None:
        """Attach ``disk`` as a virtio-blk device on a free PCIe root port.

        ``blockdev`` replaces the blockdev-add argument made from ``disk`` (a host
        block device's, see :mod:`agent.vm.hotplug`); its node-name must be disk.id.
        Raises QemuError when no slot is free or QEMU refuses (nothing is left half
        attached: a failed device_add removes the block node again).
        """
        self._require_running()
        if disk.id in self._hotplugged or disk.id == self.config.root.id:
            raise QemuError(f"{self.config.name}: disk {disk.id} is already attached")
        slot = next((i for i, used in self._slots.items() if used is None), None)
        if slot is None:
            raise QemuError(f"{self.config.name}: no free hotplug slot for disk {disk.id}")
        node = blockdev if blockdev is not None else blockdev_json(disk)
        if node.get("node-name") != disk.id:
            raise QemuError(f"{self.config.name}: block node for disk {disk.id} is misnamed")
        await self.monitor.execute("blockdev-add", node)
        try:
            await self.monitor.execute("device_add", device_json(disk, bus=hotplug_port(slot)))
        except QemuError:
            await self.monitor.execute("blockdev-del", {"node-name": disk.id})
            raise
        self._slots[slot] = disk.id
        self._hotplugged[disk.id] = slot
        log.info("%s: disk %s attached on %s", self.config.name, disk.id, hotplug_port(slot))

    async def unplug_disk(self, disk_id: str, timeout: float = 30.0) -> None:
        """Detach a hotplugged disk: device_del, wait for DEVICE_DELETED, blockdev-del.

        Raises QemuError when the guest does not release it within ``timeout``.
        """
        self._require_running()
        slot = self._hotplugged.get(disk_id)
        if slot is None:
            raise QemuError(f"{self.config.name}: disk {disk_id} is not hotplugged")
        await self.monitor.remove_device(disk_id, disk_id, timeout)
        del self._hotplugged[disk_id]
        self._slots[slot] = None
        log.info("%s: disk %s detached", self.config.name, disk_id)

    async def stop(self, powerdown_timeout: float = 20.0) -> ExitInfo:
        """Stop the VM: ACPI powerdown, then QMP quit, then SIGKILL; remove the sockets.

        Returns how QEMU ended. Safe to call again, or after QEMU died on its own.
        """
        if not self.exited.done():
            self.process.expect_exit()
            with contextlib.suppress(QemuError):
                await self.monitor.execute("system_powerdown")
            info = await self.process.wait(powerdown_timeout)
            if info is None:
                log.warning(
                    "%s: no powerdown in %s s, quitting", self.config.name, powerdown_timeout
                )
                with contextlib.suppress(QemuError):
                    await self.monitor.execute("quit")
                info = await self.process.wait(5.0)
            if info is None:
                await self._kill()
        await self.monitor.close()
        self._remove_sockets()
        return self.exited.result()

    async def _kill(self) -> None:
        self.process.expect_exit()
        self.process.signal(signal.SIGKILL)
        if await self.process.wait(10.0) is None:
            raise QemuError(f"{self.config.name}: QEMU pid {self.process.pid} survived SIGKILL")
        await self.monitor.close()
        self._remove_sockets()

    def _remove_sockets(self) -> None:
        self.config.qmp_socket.unlink(missing_ok=True)
        if isinstance(self.config.transport, VirtioSerialTransport):
            self.config.transport.socket.unlink(missing_ok=True)

    async def __aenter__(self) -> VM:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop()
