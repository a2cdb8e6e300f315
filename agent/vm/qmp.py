"""The QMP control channel, through ``qemu.qmp``."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path
from typing import Any

from qemu.qmp import EventListener, QMPClient, QMPError
from qemu.qmp.qmp_client import ExecuteError

from agent.vm.errors import QemuError

log = logging.getLogger(__name__)

# QMP commands answer at once; a device's removal is awaited as an event, not here.
COMMAND_SECONDS = 30.0


class Monitor:
    """One QMP session to one QEMU: commands, status and device-removal events."""

    def __init__(self, name: str) -> None:
        self._client = QMPClient(name)
        self._name = name

    async def connect(self, socket: Path, timeout: float) -> dict[str, Any]:
        """Connect, read the greeting and negotiate capabilities; return QEMU's version
        from the greeting (``{"qemu": {"major": ..}, "package": ..}``).

        Raises QemuError when QEMU does not answer within ``timeout`` seconds.
        """
        try:
            await asyncio.wait_for(self._client.connect(str(socket)), timeout)
        except (QMPError, OSError, TimeoutError) as err:
            raise QemuError(f"{self._name}: QMP connection to {socket} failed: {err}") from err
        greeting = self._client.greeting
        if greeting is None:
            raise QemuError(f"{self._name}: QMP session without a greeting")
        return dict(greeting.QMP.version)

    async def execute(
        self,
        command: str,
        arguments: dict[str, Any] | None = None,
        timeout: float = COMMAND_SECONDS,
    ) -> Any:
        """Run a QMP command; raises QemuError with QEMU's error text on failure, or when
        QEMU has not answered within ``timeout`` seconds (a wedged QEMU or library must
        not hold the Task request waiting on it forever)."""
        try:
            return await asyncio.wait_for(self._client.execute(command, arguments), timeout)
        except TimeoutError as err:
            raise QemuError(f"{self._name}: QMP {command}: no answer within {timeout:g} s") from err
        except ExecuteError as err:
            raise QemuError(f"{self._name}: QMP {command} failed: {err.error.error.desc}") from err
        except QMPError as err:
            raise QemuError(f"{self._name}: QMP {command} failed: {err}") from err

    async def status(self) -> str:
        """The run state from query-status (e.g. "running", "paused")."""
        reply = await self.execute("query-status")
        return str(reply["status"])

    async def block_nodes(self) -> list[str]:
        """Node names of every block node (query-named-block-nodes)."""
        reply = await self.execute("query-named-block-nodes")
        return [str(node["node-name"]) for node in reply]

    async def peripherals(self) -> list[str]:
        """Ids of the devices added with an id (-device or device_add)."""
        reply = await self.execute("qom-list", {"path": "/machine/peripheral"})
        return [str(entry["name"]) for entry in reply if str(entry["type"]).startswith("child<")]

    async def bus_of(self, device_id: str) -> str:
        """The id of the bus device ``device_id`` sits on (e.g. ``hp0``, ``pcie.0``)."""
        path = await self.execute(
            "qom-get", {"path": f"/machine/peripheral/{device_id}", "property": "parent_bus"}
        )
        return str(path).rsplit("/", 1)[-1]

    async def add_fd(self, fd: int, opaque: str) -> int:
        """Pass ``fd`` to QEMU (SCM_RIGHTS) into a new fd set; return the set's id.

        QEMU then opens ``/dev/fdset/<id>`` by duplicating it, never by a path.
        Raises QemuError when QEMU refuses.
        """
        try:
            self._client.send_fd_scm(fd)
        except (QMPError, OSError) as err:
            raise QemuError(f"{self._name}: passing a file descriptor failed: {err}") from err
        reply = await self.execute("add-fd", {"opaque": opaque})
        return int(reply["fdset-id"])

    async def get_fd(self, fd: int, name: str) -> None:
        """Pass ``fd`` to QEMU (SCM_RIGHTS) to keep under ``name`` (getfd; a name given
        again replaces, and closes, the earlier fd). Unlike an fd set's fds, QEMU keeps
        these while no QMP client is connected. Raises QemuError when QEMU refuses."""
        try:
            self._client.send_fd_scm(fd)
        except (QMPError, OSError) as err:
            raise QemuError(f"{self._name}: passing a file descriptor failed: {err}") from err
        await self.execute("getfd", {"fdname": name})

    async def close_fd(self, name: str) -> bool:
        """Close QEMU's fd kept under ``name`` (closefd); False when it has none by that
        name. Raises QemuError for any other refusal."""
        try:
            await self.execute("closefd", {"fdname": name})
        except QemuError as err:
            if "not found" in str(err):
                return False
            raise
        return True

    async def fdsets(self) -> dict[int, list[str]]:
        """Fd set id -> the opaque strings of its fds (query-fdsets)."""
        reply = await self.execute("query-fdsets")
        return {
            int(s["fdset-id"]): [str(fd.get("opaque", "")) for fd in s.get("fds", [])]
            for s in reply
        }

    async def remove_fdset(self, fdset_id: int) -> None:
        """Close QEMU's copies of the fds in a set (remove-fd)."""
        await self.execute("remove-fd", {"fdset-id": fdset_id})

    async def remove_device(self, device_id: str, node: str | None, timeout: float) -> None:
        """device_del, wait for the guest's release (DEVICE_DELETED), blockdev-del ``node``.

        Raises QemuError when the guest does not release it within ``timeout`` seconds.
        """
        listener = self.listen_device_deleted(device_id)
        try:
            await self.execute("device_del", {"id": device_id})
            try:
                await asyncio.wait_for(listener.get(), timeout)
            except TimeoutError as err:
                raise QemuError(
                    f"{self._name}: guest did not release device {device_id} in {timeout} s"
                ) from err
        finally:
            self.remove_listener(listener)
        if node is not None:
            await self.execute("blockdev-del", {"node-name": node})

    def listen_device_deleted(self, device_id: str) -> EventListener:
        """A listener for DEVICE_DELETED of ``device_id``; register before device_del."""

        def accept(event: Any) -> bool:
            return bool(
                event["event"] == "DEVICE_DELETED"
                and event.get("data", {}).get("device") == device_id
            )

        listener = EventListener(("DEVICE_DELETED",), accept)
        self._client.register_listener(listener)
        return listener

    def remove_listener(self, listener: EventListener) -> None:
        self._client.remove_listener(listener)

    async def close(self, timeout: float = COMMAND_SECONDS) -> None:
        """Disconnect; errors of a connection QEMU already closed are not interesting.
        Given up after ``timeout`` seconds (logged): a VM's teardown must not hang on it."""
        try:
            await asyncio.wait_for(self._client.disconnect(), timeout)
        except TimeoutError:
            log.warning("%s: QMP disconnect took over %g s, abandoned", self._name, timeout)
        except (QMPError, EOFError, OSError) as err:
            log.debug("%s: QMP disconnect: %s", self._name, err)
