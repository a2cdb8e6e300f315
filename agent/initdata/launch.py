"""What the VM manager needs to launch a pod-VM bound to a pod's initdata.

- the initdata disk image file, written atomically into the sandbox's run
  directory and attached read-only as a virtio-blk disk with id and serial
  ``initdata`` (:meth:`InitdataLaunch.disk`);
- the launch binding: SNP ``host-data`` (32 bytes) or TDX ``mrconfigid`` (48 bytes)
  as the VM manager's typed :class:`~agent.vm.config.SnpLaunch` /
  :class:`~agent.vm.config.TdxLaunch`;
- on the insecure platform, kernel command line words carrying the digest instead.

The sandbox layer merges these into its :class:`~agent.vm.config.VMConfig`; the VM
manager itself knows nothing of initdata.
"""

from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

from agent.initdata.errors import InitdataError
from agent.initdata.pod import PodInitdata
from agent.vm.config import Disk, SnpLaunch, TdxLaunch
from agent.vm.config import Platform as VmPlatform
from guest.initdata import disk
from guest.initdata import errors as guest_errors
from guest.initdata.binding import Platform, insecure_cmdline

DISK_NAME = "initdata.img"
DEVICE_ID = "initdata"

_BINDING = {
    VmPlatform.SNP: Platform.SNP,
    VmPlatform.TDX: Platform.TDX,
    VmPlatform.INSECURE: Platform.INSECURE,
}


@dataclass(frozen=True)
class InitdataLaunch:
    """The launch material for one pod-VM."""

    platform: VmPlatform
    digest: bytes
    bound_value: bytes
    disk_path: Path

    def disk(self) -> Disk:
        """The read-only virtio-blk disk carrying the document."""
        return Disk(id=DEVICE_ID, path=self.disk_path, read_only=True, serial=DEVICE_ID)

    def snp(self, **params: int) -> SnpLaunch | None:
        """SNP launch parameters with ``host_data`` bound (``params``: cbitpos, policy...)."""
        if self.platform is not VmPlatform.SNP:
            return None
        return SnpLaunch(host_data=self.bound_value, **params)

    def tdx(self) -> TdxLaunch | None:
        """TDX launch parameters with ``mrconfigid`` bound."""
        if self.platform is not VmPlatform.TDX:
            return None
        return TdxLaunch(mrconfigid=self.bound_value)

    def kernel_cmdline(self) -> tuple[str, ...]:
        """Extra kernel command line words (insecure platform only)."""
        if self.platform is VmPlatform.INSECURE:
            return insecure_cmdline(self.digest)
        return ()


def disk_image(pod: PodInitdata) -> bytes:
    """The raw initdata disk image for ``pod`` (magic, length, gzip, 512-byte padding)."""
    try:
        return disk.encode(pod.raw)
    except guest_errors.InitdataError as err:
        raise InitdataError(f"cannot build the initdata disk: {err}") from err


def write_disk(path: Path, image: bytes) -> None:
    """Write ``image`` to ``path`` atomically (temp file, rename), without fsync.

    The rename keeps QEMU from ever seeing half a disk. No fsync: the disk is only read
    by the pod-VM launched right after, through the same page cache; a crash of the
    daemon loses no written page, and a crash of the host ends that pod-VM too (its run
    directory, on tmpfs ``/run`` by default, goes with it). Two fsyncs here blocked the
    daemon's event loop for every pod (2.7 ms median on this machine's ext4 /tmp)."""
    folder = path.parent
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=folder)
    except OSError as err:
        raise InitdataError(f"cannot write the initdata disk in {folder}: {err}") from err
    try:
        with os.fdopen(fd, "wb") as out:
            out.write(image)
            os.fchmod(out.fileno(), 0o644)
        Path(tmp).rename(path)
    except OSError as err:
        Path(tmp).unlink(missing_ok=True)
        raise InitdataError(f"cannot write the initdata disk {path}: {err}") from err


def prepare(pod: PodInitdata, platform: VmPlatform, state_dir: Path) -> InitdataLaunch:
    """Write the disk into ``state_dir`` and return the launch material for ``platform``."""
    path = state_dir / DISK_NAME
    write_disk(path, disk_image(pod))
    return InitdataLaunch(
        platform=platform,
        digest=pod.digest,
        bound_value=pod.bound_value(_BINDING[platform]),
        disk_path=path,
    )
