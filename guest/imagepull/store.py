"""The content-addressed store: layer directories, verified metadata blobs, staging.

```
<root>/sha256/<hex>/            unpacked layer, named by its blob digest (published whole)
<root>/blobs/sha256/<hex>       verified manifest, index or config bytes
<root>/staging/<random>/        layers being fetched; discarded on failure
<root>/containers/<id>/         per-bundle overlay upper and work directories
<root>/l/<16 hex>               short symlink to a layer, to fit many layers into the
                                one page of mount options overlayfs accepts
```

A layer appears under its digest only by ``rename`` of a staging directory that was
verified completely, so a reader never sees half a layer. The manifest blob is written
last: its presence means every layer of the image is present.
"""

from __future__ import annotations

import hashlib
import logging
import os
import shutil
import tempfile
import threading
from dataclasses import dataclass
from pathlib import Path

from guest import fsatomic
from guest.imagepull.digest import Digest
from guest.imagepull.errors import StoreError, VerificationError

log = logging.getLogger(__name__)
# Kept free for everything else on the disk; pulls needing more fail early.
DEFAULT_RESERVE = 64 << 20
SHORT = 16


@dataclass(frozen=True)
class StagedLayer:
    digest: Digest
    path: Path


class LayerStore:
    """A store rooted at ``root`` (created if missing)."""

    def __init__(self, root: Path, reserve: int = DEFAULT_RESERVE) -> None:
        if any(c in str(root) for c in ":,\\"):
            raise StoreError(f"store path {root} must not contain ':', ',' or '\\' (overlayfs)")
        self.root = root
        self.reserve = reserve
        subs = ("sha256", "sha512", "blobs/sha256", "blobs/sha512", "staging", "containers", "l")
        for sub in subs:
            (root / sub).mkdir(parents=True, exist_ok=True)

    def layer_path(self, digest: Digest) -> Path:
        return self.root / digest.algorithm / digest.hex

    def short_path(self, layer: Path) -> Path:
        """A short symlink naming the stored layer directory ``layer``.

        Named by 16 hex digits of the digest; an existing link pointing elsewhere (a
        prefix collision) raises StoreError instead of mounting the wrong layer.
        """
        target = f"../{layer.parent.name}/{layer.name}"
        link = self.root / "l" / layer.name[:SHORT]
        try:
            current = str(link.readlink())
        except FileNotFoundError:
            tmp = link.with_name(f".{link.name}.{os.getpid()}.{threading.get_ident()}")
            tmp.unlink(missing_ok=True)
            tmp.symlink_to(target)
            tmp.rename(link)
            current = str(link.readlink())
        if current != target:
            raise StoreError(f"short layer name {link} already names {current}, not {target}")
        return link

    def has_layer(self, digest: Digest) -> bool:
        return self.layer_path(digest).is_dir()

    def blob_path(self, digest: Digest) -> Path:
        return self.root / "blobs" / digest.algorithm / digest.hex

    def read_blob(self, digest: Digest, limit: int) -> bytes | None:
        """A stored blob, re-verified against its digest; None when absent.

        Raises StoreError when the stored bytes no longer match (the entry is removed).
        """
        path = self.blob_path(digest)
        try:
            with path.open("rb") as f:
                data = f.read(limit + 1)
        except FileNotFoundError:
            return None
        if len(data) > limit or hashlib.new(digest.algorithm, data).hexdigest() != digest.hex:
            path.unlink(missing_ok=True)
            raise StoreError(f"stored blob {digest} is corrupt; removed it, pull again")
        return data

    def write_blob(self, digest: Digest, data: bytes) -> None:
        """Publish verified bytes under their digest: temp file, fsync, rename, fsync dir.

        Raises VerificationError when ``data`` does not match ``digest``, StoreError
        (naming the blob, its path and the failed step) when it cannot be written.
        """
        if Digest.of(data, digest.algorithm) != digest:
            raise VerificationError(f"refusing to store {digest}: content does not match")
        path = self.blob_path(digest)
        if path.exists():
            return

        def error(what: str, err: OSError) -> StoreError:
            return StoreError(f"cannot store blob {digest} at {path}: {what}: {err}")

        fsatomic.write_file(path, data, prefix=".tmp-", error=error)

    def free_bytes(self) -> int:
        st = os.statvfs(self.root)
        return st.f_bavail * st.f_frsize

    def check_space(self, needed: int, what: str) -> int:
        """Raise StoreError unless ``needed`` bytes (plus the reserve) are free; return free."""
        free = self.free_bytes()
        if needed + self.reserve > free:
            raise StoreError(
                f"not enough space in {self.root} for {what}: need {needed} bytes "
                f"plus {self.reserve} reserved, {free} free"
            )
        return free - self.reserve

    def stage(self, digest: Digest) -> StagedLayer:
        path = Path(tempfile.mkdtemp(dir=self.root / "staging", prefix=f"{digest.hex[:16]}-"))
        path.chmod(0o755)  # layer roots are world-readable like any rootfs
        return StagedLayer(digest, path)

    def discard(self, staged: StagedLayer) -> None:
        shutil.rmtree(staged.path, ignore_errors=True)

    def publish(self, staged: StagedLayer) -> Path:
        """Move a verified staging directory to its digest; a concurrent winner is kept."""
        final = self.layer_path(staged.digest)
        _syncfs(staged.path)
        try:
            staged.path.rename(final)
        except OSError as err:
            if not final.is_dir():
                raise StoreError(f"cannot publish layer {staged.digest}: {err}") from err
            self.discard(staged)  # another pull published the same layer first
        else:
            fsatomic.sync_dir(final.parent)
        return final

    def clean_staging(self) -> None:
        """Remove leftovers of interrupted pulls (call when no pull is running)."""
        for entry in (self.root / "staging").iterdir():
            shutil.rmtree(entry, ignore_errors=True)

    def container_dir(self, bundle: Path) -> Path:
        key = hashlib.sha256(os.fsencode(bundle.resolve())).hexdigest()[:32]
        return self.root / "containers" / key


def _syncfs(path: Path) -> None:
    """Flush the file system holding ``path`` once, instead of an fsync per file."""
    import ctypes

    libc = ctypes.CDLL(None, use_errno=True)
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        if libc.syncfs(fd) != 0:
            err = ctypes.get_errno()
            raise StoreError(f"syncfs {path}: {os.strerror(err)}")
    finally:
        os.close(fd)
