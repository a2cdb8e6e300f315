"""The steps of a secure mount, in order, and what is mounted.

1. the device: resolved from its number, big enough, writable and not in use;
2. the store: the mount point is the image puller's store, and nothing was pulled
   into it yet (those images would be hidden, and were never on the encrypted disk);
3. ``luksFormat`` under a fresh key from the guest's RNG (getrandom, into a bytearray),
   then the header copied into guest memory, checked, and the device opened with
   that copy (:mod:`guest.securemount.luks`);
4. ext4 (:mod:`guest.securemount.ext4`), mounted over the store, whose layout is
   made again on the new file system.

The key exists only in this process's memory and in cryptsetup's stdin pipe, and is
overwritten once the device is open. A failure after the open closes the mapping
again, so a retry formats afresh. Asked again for the same device, the mounted store
is answered (Kata's agent may ask once per container); for another device, refused.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from dataclasses import dataclass
from pathlib import Path

from guest.agent.children import Reaper
from guest.securemount import command, ext4, luks
from guest.securemount.device import BlockDevice, check_unused, resolve
from guest.securemount.errors import DeviceError, InvalidRequest, StateError, StepError

log = logging.getLogger(__name__)

# LUKS2 header and keyslots (16 MiB), the integrity tags (~1%), a usable ext4.
MIN_DEVICE_BYTES = 64 << 20
MAPPING = luks.Mapping("contrast-store")
WORK_DIR = Path("/run/contrast/securemount")  # tmpfs: guest memory
# Subfolders of the image puller's store holding pulled content (guest.imagepull.store).
PULLED = ("sha256", "sha512", "blobs/sha256", "blobs/sha512", "containers")
TIMEOUT = 300.0  # per program: TCG on a loaded host is slow
# noinit_itable: ext4 would otherwise zero the lazily initialised inode tables in the
# background after the mount (about 160 MiB for 10 GiB, each block through AES and
# HMAC), competing with the first pull; it never reads a table block it did not write.
MOUNT_OPTIONS = "nosuid,nodev,noinit_itable"


@dataclass(frozen=True)
class Mounted:
    device: BlockDevice
    mapping: luks.Mapping
    mount_point: Path
    seconds: float


class SecureStore:
    """Formats and mounts the pod's block device as the image store, once."""

    def __init__(
        self,
        reaper: Reaper,
        store_root: Path,
        *,
        work_dir: Path = WORK_DIR,
        sys: Path = Path("/sys"),
        dev: Path = Path("/dev"),
        mapping: luks.Mapping = MAPPING,
        min_bytes: int = MIN_DEVICE_BYTES,
        lock_dir: Path = Path("/run/cryptsetup"),  # cryptsetup's locks
    ) -> None:
        self.reaper = reaper
        self.store_root = store_root
        self.work_dir = work_dir
        self.sys = sys
        self.dev = dev
        self.mapping = mapping
        self.min_bytes = min_bytes
        self.lock_dir = lock_dir
        self.mounted: Mounted | None = None
        self._lock = asyncio.Lock()

    async def mount(self, device_id: str, mount_point: Path) -> Mounted:
        """Format the device ``device_id`` (major:minor) and mount it at ``mount_point``.

        Raises InvalidRequest (not the store's path), DeviceError (no such block
        device, too small), StateError (mounted from another device, images already
        pulled) or StepError (a program failed), each naming the device and the step.
        """
        async with self._lock:
            try:
                device = resolve(device_id, self.sys, self.dev)
            except DeviceError as err:
                raise DeviceError(
                    f"secure mount of deviceId {device_id}: device lookup failed: {err}"
                ) from err
            if device.size_bytes < self.min_bytes:
                raise DeviceError(
                    f"secure mount of {device}: size check failed: {device.size_bytes} "
                    f"bytes, the secure image store needs at least {self.min_bytes}"
                )
            if os.path.normpath(mount_point) != os.path.normpath(self.store_root):
                raise InvalidRequest(
                    f"mount_point {str(mount_point)!r} is not the image store {self.store_root}"
                )
            if self.mounted is not None:
                if self.mounted.device.device_id == device.device_id:
                    return self.mounted
                raise StateError(
                    f"secure mount of {device}: the image store is already on {self.mounted.device}"
                )
            check_unused(device, self.sys)
            self._check_store(device)
            started = time.monotonic()
            await self._format_and_mount(device)
            seconds = time.monotonic() - started
            self.mounted = Mounted(device, self.mapping, self.store_root, seconds)
            log.info(
                "image store on %s: LUKS2 %s + %s, ext4, mounted at %s in %.1f s",
                device, luks.CIPHER, luks.INTEGRITY, self.store_root, self.mounted.seconds,
            )  # fmt: skip
            return self.mounted

    def _check_store(self, device: BlockDevice) -> None:
        root = self.store_root
        if os.path.ismount(root):
            raise StateError(f"secure mount of {device}: {root} is already a mount point")
        pulled = [sub for sub in PULLED if (root / sub).is_dir() and any((root / sub).iterdir())]
        if pulled:
            raise StateError(
                f"secure mount of {device}: the image store {root} already holds pulled "
                f"content ({', '.join(pulled)}); the secure mount must come before the "
                "first pull"
            )

    async def _run(
        self, device: BlockDevice, step: str, args: list[str], secret: bytearray | None = None
    ) -> str:
        _, output = await command.run(
            self.reaper, args, device=str(device), step=step, timeout=TIMEOUT, secret=secret
        )
        return output

    async def _load_cpu_crypto(self, device: BlockDevice) -> None:
        """The CPU's aes and sha256 for the store (luks.CPU_CRYPTO_MODULES). Without them
        (a CPU lacking the instructions) the kernel's generic ones do the same work, more
        slowly: a warning, not a failure."""
        try:
            await self._run(device, "CPU crypto modules", luks.cpu_crypto_args())
        except StepError as err:
            log.warning("%s; the store uses the kernel's generic aes and sha256", err)

    async def _format_and_mount(self, device: BlockDevice) -> None:
        self.work_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        self.lock_dir.mkdir(parents=True, exist_ok=True)
        backup = self.work_dir / f"header-{device.name}"
        backup.unlink(missing_ok=True)
        try:
            key = luks.new_key()
        except OSError as err:
            raise StepError(str(device), "key generation", str(err)) from err
        opened = False
        try:
            await self._load_cpu_crypto(device)
            await self._run(device, "luksFormat", luks.format_args(device.path), key)
            await self._run(device, "header backup", luks.header_backup_args(device.path, backup))
            dump = await self._run(device, "header check", luks.dump_args(backup))
            luks.check_header(str(device), dump)
            await self._run(device, "open", luks.open_args(device.path, backup, self.mapping), key)
            opened = True
            key[:] = bytes(len(key))
            backup.unlink()
            mapped = self.mapping.path
            # The head first: mke2fs (the dry run too) probes the first blocks for old
            # signatures; unwritten, each probe would log an integrity error.
            head = list(range(ext4.HEAD_BLOCKS))
            await asyncio.to_thread(ext4.zero_blocks, str(device), mapped, head)
            dry_run = await self._run(device, "mkfs.ext4 dry run", ext4.mkfs_args(mapped, True))
            blocks = [b for b in ext4.superblock_blocks(str(device), dry_run) if b not in head]
            await asyncio.to_thread(ext4.zero_blocks, str(device), mapped, blocks)
            await self._run(device, "mkfs.ext4", ext4.mkfs_args(mapped))
            self.store_root.mkdir(parents=True, exist_ok=True)
            mount = ["mount", "-t", "ext4", "-o", MOUNT_OPTIONS, str(mapped), str(self.store_root)]
            await self._run(device, "mount", mount)
        except BaseException:
            if opened:
                try:
                    await self._run(device, "close after failure", luks.close_args(self.mapping))
                except StepError as err:
                    log.warning("%s", err)
            raise
        finally:
            key[:] = bytes(len(key))
            backup.unlink(missing_ok=True)
        self._make_layout(device)

    def _make_layout(self, device: BlockDevice) -> None:
        from guest.imagepull.errors import StoreError
        from guest.imagepull.store import LayerStore

        try:
            LayerStore(self.store_root)
        except (StoreError, OSError) as err:
            raise StepError(str(device), "store layout", str(err)) from err
