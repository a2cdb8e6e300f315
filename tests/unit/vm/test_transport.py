"""Transport choice: vsock only where vhost-vsock really opens."""

from pathlib import Path

from agent.transport.choose import choose
from agent.vm.config import VirtioSerialTransport, VsockTransport


def test_virtio_serial_without_vhost_vsock(tmp_path: Path) -> None:
    transport = choose(tmp_path, guest_cid=5, device=tmp_path / "no-vhost-vsock")
    assert transport == VirtioSerialTransport(socket=tmp_path / "agent.sock")


def test_vsock_when_the_device_opens(tmp_path: Path) -> None:
    device = tmp_path / "vhost-vsock"
    device.write_bytes(b"")
    assert choose(tmp_path, guest_cid=5, device=device) == VsockTransport(guest_cid=5, port=1024)
