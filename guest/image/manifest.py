"""The JSON manifest describing one built guest image, and loading it back."""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from guest.image.errors import ManifestError

MANIFEST = "manifest.json"
KERNEL = "vmlinuz"
INITRD = "initrd.img"
ROOT = "root.img"


@dataclass(frozen=True)
class Manifest:
    """What was built: file names, verity parameters, sizes and versions."""

    key: str
    kernel_version: str
    cmdline: tuple[str, ...]
    root_hash: str
    verity: dict[str, Any]
    sizes: dict[str, int]
    packages: dict[str, str]
    python_distributions: dict[str, str]
    missing_optional_modules: list[str] = field(default_factory=list)
    build_seconds: float = 0.0

    def to_json(self) -> str:
        data = asdict(self)
        data["cmdline"] = list(self.cmdline)
        return json.dumps(data, indent=2, sort_keys=True) + "\n"


@dataclass(frozen=True)
class GuestImage:
    """A built image on disk: the three boot artifacts and their manifest."""

    directory: Path
    manifest: Manifest

    @property
    def kernel(self) -> Path:
        return self.directory / KERNEL

    @property
    def initrd(self) -> Path:
        return self.directory / INITRD

    @property
    def root(self) -> Path:
        return self.directory / ROOT


def write_manifest(directory: Path, manifest: Manifest) -> None:
    """Write the manifest atomically (temp file, fsync, rename)."""
    tmp = directory / (MANIFEST + ".tmp")
    with tmp.open("w") as f:
        f.write(manifest.to_json())
        f.flush()
        os.fsync(f.fileno())
    tmp.rename(directory / MANIFEST)


def load(directory: Path) -> GuestImage:
    """Load a built image's manifest; raises ManifestError naming what is wrong."""
    path = directory / MANIFEST
    try:
        data = json.loads(path.read_text())
        data["cmdline"] = tuple(data["cmdline"])
        manifest = Manifest(**data)
    except (OSError, ValueError, TypeError, KeyError) as err:
        raise ManifestError(f"{path}: {err}") from err
    image = GuestImage(directory, manifest)
    for artifact in (image.kernel, image.initrd, image.root):
        if not artifact.is_file():
            raise ManifestError(f"{path}: artifact {artifact.name} is missing")
    return image
