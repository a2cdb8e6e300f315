"""The volume layer's error: a mount that cannot be provided in the pod-VM."""

from __future__ import annotations

from agent.sandbox.errors import SandboxError


class VolumeError(SandboxError):
    """A container's mount is refused or could not be copied in; names the mount (its
    destination, kind and source) and why (the policy's reason for a refused copy)."""
