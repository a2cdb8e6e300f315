"""A root directory as a one-layer OCI image layout, byte for byte the same for the same tree.

Entries go in sorted order with one mtime, numeric owners only, hard links kept;
the contents of /dev, /proc, /sys, /run and /tmp are left out (the runtime mounts
them). The layer is gzip (every runtime and registry reads it) with no name or time
in its header.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import os
import shutil
import tarfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from devkit.ocibuild import CONFIG_MEDIA, INDEX_MEDIA, LAYER_MEDIA, MANIFEST_MEDIA

EMPTY_DIRS = ("dev", "proc", "sys", "run", "tmp")
_CHUNK = 1 << 20


@dataclass(frozen=True)
class Built:
    """The layout written, its manifest's digest, the layer's sizes."""

    layout: Path
    manifest_digest: str
    layer_bytes: int  # compressed
    tree_bytes: int  # uncompressed tar


def _walk(root: Path) -> Iterator[str]:
    """Paths below ``root`` (relative, POSIX), parents before children, sorted."""
    for dirpath, dirnames, filenames in os.walk(root):
        rel = os.path.relpath(dirpath, root)
        dirnames.sort()
        if rel == "." or rel.split("/")[0] not in EMPTY_DIRS:
            names = sorted(dirnames + filenames)
        else:
            names, dirnames[:] = [], []
        for name in names:
            yield name if rel == "." else f"{rel}/{name}"


def write_layer_tar(root: Path, out: Path, mtime: int) -> None:
    def normalise(info: tarfile.TarInfo) -> tarfile.TarInfo:
        info.mtime = mtime
        info.uname = info.gname = ""
        return info

    with tarfile.open(out, "w", format=tarfile.PAX_FORMAT) as tar:
        for rel in _walk(root):
            tar.add(root / rel, arcname=rel, recursive=False, filter=normalise)


def _digest_of(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(_CHUNK):
            h.update(chunk)
    return "sha256:" + h.hexdigest()


def _blob(layout: Path, data: bytes) -> dict[str, object]:
    digest = "sha256:" + hashlib.sha256(data).hexdigest()
    (layout / "blobs/sha256" / digest.removeprefix("sha256:")).write_bytes(data)
    return {"digest": digest, "size": len(data)}


def write_layout(
    root: Path,
    layout: Path,
    *,
    name: str,
    tag: str,
    cmd: list[str],
    labels: dict[str, str],
    mtime: int,
) -> Built:
    """Write ``root`` as the OCI image layout ``layout`` whose one manifest is ``tag``
    (``name:tag`` for containerd's import)."""
    blobs = layout / "blobs/sha256"
    blobs.mkdir(parents=True)
    tar_path = layout / "layer.tar"
    write_layer_tar(root, tar_path, mtime)
    diff_id = _digest_of(tar_path)
    gz_path = layout / "layer.tar.gz"
    with (
        tar_path.open("rb") as src,
        gz_path.open("wb") as raw,
        gzip.GzipFile(filename="", fileobj=raw, mode="wb", compresslevel=6, mtime=0) as gz,
    ):
        shutil.copyfileobj(src, gz, _CHUNK)
    tree_bytes = tar_path.stat().st_size
    tar_path.unlink()
    layer_digest = _digest_of(gz_path)
    layer_bytes = gz_path.stat().st_size
    gz_path.rename(blobs / layer_digest.removeprefix("sha256:"))
    config = {
        "architecture": "amd64",
        "os": "linux",
        "created": "1970-01-01T00:00:00Z",
        "config": {
            "Cmd": cmd,
            "Env": ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"],
            "Labels": labels,
        },
        "rootfs": {"type": "layers", "diff_ids": [diff_id]},
    }
    config_desc = _blob(layout, json.dumps(config, sort_keys=True).encode())
    manifest = {
        "schemaVersion": 2,
        "mediaType": MANIFEST_MEDIA,
        "config": {"mediaType": CONFIG_MEDIA, **config_desc},
        "layers": [{"mediaType": LAYER_MEDIA["gzip"], "digest": layer_digest, "size": layer_bytes}],
        "annotations": labels,
    }
    manifest_desc = _blob(layout, json.dumps(manifest, sort_keys=True).encode())
    index = {
        "schemaVersion": 2,
        "mediaType": INDEX_MEDIA,
        "manifests": [
            {
                "mediaType": MANIFEST_MEDIA,
                **manifest_desc,
                "annotations": {
                    "org.opencontainers.image.ref.name": tag,
                    # ctr images import names the image after this
                    "io.containerd.image.name": f"{name}:{tag}",
                },
            }
        ],
    }
    (layout / "index.json").write_text(json.dumps(index, sort_keys=True))
    (layout / "oci-layout").write_text('{"imageLayoutVersion": "1.0.0"}')
    return Built(layout, str(manifest_desc["digest"]), layer_bytes, tree_bytes)


def archive(layout: Path, out: Path) -> Path:
    """``layout`` as one tar (what ``ctr images import`` reads)."""
    with tarfile.open(out, "w") as tar:
        for rel in ["oci-layout", "index.json", "blobs", *_blob_names(layout)]:
            tar.add(layout / rel, arcname=rel, recursive=False)
    return out


def _blob_names(layout: Path) -> list[str]:
    return ["blobs/sha256"] + [
        f"blobs/sha256/{p.name}" for p in sorted((layout / "blobs/sha256").iterdir())
    ]
