"""The secure mount's exceptions: one root, a subclass per kind of failure.

Every message names the device and the step that failed; ``service`` turns them into
ttrpc statuses.
"""

from __future__ import annotations


class SecureMountError(Exception):
    """Root of every error the secure mount raises."""


class InvalidRequest(SecureMountError):
    """The request is malformed or asks for something this guest does not do."""


class DeviceError(SecureMountError):
    """The device is missing, not a block device, or unusable (e.g. too small)."""


class StateError(SecureMountError):
    """The store is in the wrong state (already mounted from another device, holds
    images pulled before, ...)."""


class StepError(SecureMountError):
    """A step of the format (cryptsetup, mkfs.ext4, mount, ...) failed."""

    def __init__(self, device: str, step: str, detail: str) -> None:
        self.device = device
        self.step = step
        super().__init__(f"secure mount of {device}: {step} failed: {detail}")
