"""What the VM manager needs to launch a pod-VM bound to a pod's initdata.

- the initdata disk image file (raw, attached read-only as virtio-blk with id and
  serial ``initdata``), written atomically into the sandbox's state directory;
- the confidential-guest property: SNP ``host-data`` (base64 of 32 bytes) on the
  ``sev-snp-guest`` object, TDX ``mrconfigid`` (base64 of 48 bytes) on ``tdx-guest``;
- on the insecure platform, kernel command line words carrying the digest instead.

The VM manager merges these into its own typed QEMU configuration; nothing here knows
about the rest of the command line.
"""

from __future__ import annotations

import base64
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

from agent.initdata.errors import InitdataError
from agent.initdata.pod import PodInitdata
from guest.initdata import disk
from guest.initdata import errors as guest_errors
from guest.initdata.binding import Platform, insecure_cmdline

DISK_NAME = "initdata.img"
DEVICE_ID = "initdata"


@dataclass(frozen=True)
class InitdataLaunch:
    """The launch material for one pod-VM."""

    platform: Platform
    digest: bytes
    bound_value: bytes
    disk_path: Path

    def confidential_properties(self) -> dict[str, str]:
        """Properties for the platform's confidential-guest QEMU object."""
        encoded = base64.b64encode(self.bound_value).decode("ascii")
        if self.platform is Platform.SNP:
            return {"host-data": encoded}
        if self.platform is Platform.TDX:
            return {"mrconfigid": encoded}
        return {}

    def kernel_cmdline(self) -> tuple[str, ...]:
        """Extra kernel command line words (insecure platform only)."""
        if self.platform is Platform.INSECURE:
            return insecure_cmdline(self.digest)
        return ()

    def qemu_disk_args(self) -> list[str]:
        """``-drive``/``-device`` arguments attaching the disk read-only as virtio-blk."""
        path = qemu_escape(str(self.disk_path))
        return [
            "-drive",
            f"if=none,id={DEVICE_ID},file={path},format=raw,readonly=on",
            "-device",
            f"virtio-blk-pci,drive={DEVICE_ID},serial={DEVICE_ID}",
        ]


def qemu_escape(value: str) -> str:
    """Escape a value for a QEMU option list: a comma is written twice."""
    return value.replace(",", ",,")


def disk_image(pod: PodInitdata) -> bytes:
    """The raw initdata disk image for ``pod`` (magic, length, gzip, 512-byte padding)."""
    try:
        return disk.encode(pod.raw)
    except guest_errors.InitdataError as err:
        raise InitdataError(f"cannot build the initdata disk: {err}") from err


def write_disk(path: Path, image: bytes) -> None:
    """Write ``image`` to ``path`` atomically (temp file, fsync, rename, fsync dir)."""
    folder = path.parent
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=folder)
    except OSError as err:
        raise InitdataError(f"cannot write the initdata disk in {folder}: {err}") from err
    try:
        with os.fdopen(fd, "wb") as out:
            out.write(image)
            out.flush()
            os.fsync(out.fileno())
        Path(tmp).chmod(0o644)
        Path(tmp).rename(path)
        dir_fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)
    except OSError as err:
        Path(tmp).unlink(missing_ok=True)
        raise InitdataError(f"cannot write the initdata disk {path}: {err}") from err


def prepare(pod: PodInitdata, platform: Platform, state_dir: Path) -> InitdataLaunch:
    """Write the disk into ``state_dir`` and return the launch material for ``platform``."""
    path = state_dir / DISK_NAME
    write_disk(path, disk_image(pod))
    return InitdataLaunch(
        platform=platform,
        digest=pod.digest,
        bound_value=pod.bound_value(platform),
        disk_path=path,
    )
