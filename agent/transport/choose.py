"""Choosing the transport for a new pod-VM."""

from __future__ import annotations

import os
from pathlib import Path

from agent.vm.config import Transport, VirtioSerialTransport, VsockTransport

VHOST_VSOCK = Path("/dev/vhost-vsock")
AGENT_VSOCK_PORT = 1024


def vhost_vsock_available(device: Path = VHOST_VSOCK) -> bool:
    """Whether the host can give guests a vsock device (the node opens read-write)."""
    try:
        fd = os.open(device, os.O_RDWR | os.O_CLOEXEC)
    except OSError:
        return False
    os.close(fd)
    return True


def choose(runtime_dir: Path, guest_cid: int, device: Path = VHOST_VSOCK) -> Transport:
    """vsock (port 1024) when vhost-vsock works, else virtio-serial on runtime_dir/agent.sock."""
    if vhost_vsock_available(device):
        return VsockTransport(guest_cid=guest_cid, port=AGENT_VSOCK_PORT)
    return VirtioSerialTransport(socket=runtime_dir / "agent.sock")
