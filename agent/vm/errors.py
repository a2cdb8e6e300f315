"""Errors of the VM manager. Everything it raises is a VMError."""

from __future__ import annotations


class VMError(Exception):
    """Root of the VM manager's errors."""


class ConfigError(VMError):
    """A VM configuration value is invalid; the message names the field and the value."""


class QemuError(VMError):
    """QEMU could not be started, or a QMP command failed."""


class SpawnSetupError(QemuError):
    """The setup run in QEMU's process between fork and exec failed (e.g. joining the
    pod's cgroup): QEMU never ran."""


class BootError(VMError):
    """The guest did not reach readiness; carries the console tail."""

    def __init__(self, message: str, console_tail: str) -> None:
        self.console_tail = console_tail
        super().__init__(f"{message}\n--- guest console (tail) ---\n{console_tail}")


class VerityError(BootError):
    """The guest's dm-verity check of its root image failed."""


class VMExitedError(VMError):
    """The operation needs a running VM but QEMU has exited."""


class HotplugError(VMError):
    """A host device cannot be attached to (or detached from) a running VM: not a block
    device, missing, or QEMU refused; the message names the device."""
