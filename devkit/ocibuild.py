"""Build layer tars and OCI image layouts in Python (the demo, the image puller's tests).

Tests describe entries (files, dirs, links, whiteouts, xattrs, owners, modes); this
module writes them as PAX tars, compresses them, and lays out an OCI image directory
(``oci-layout``, ``index.json``, ``blobs/sha256``) that skopeo and umoci read.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import tarfile
from dataclasses import dataclass, field
from pathlib import Path

import zstandard

LAYER_MEDIA = {
    "none": "application/vnd.oci.image.layer.v1.tar",
    "gzip": "application/vnd.oci.image.layer.v1.tar+gzip",
    "zstd": "application/vnd.oci.image.layer.v1.tar+zstd",
}
MANIFEST_MEDIA = "application/vnd.oci.image.manifest.v1+json"
INDEX_MEDIA = "application/vnd.oci.image.index.v1+json"
CONFIG_MEDIA = "application/vnd.oci.image.config.v1+json"
MTIME = 1_700_000_000


@dataclass(frozen=True)
class Entry:
    name: str
    kind: str = "file"  # file dir symlink hardlink char fifo raw
    data: bytes = b""
    mode: int = 0o644
    uid: int = 0
    gid: int = 0
    link: str = ""
    xattrs: dict[str, str] = field(default_factory=dict)
    dev: tuple[int, int] = (0, 0)


def file(  # noqa: PLR0917 (the tests pass data and mode positionally)
    name: str,
    data: bytes = b"",
    mode: int = 0o644,
    uid: int = 0,
    gid: int = 0,
    xattrs: dict[str, str] | None = None,
) -> Entry:
    return Entry(name, "file", data, mode, uid, gid, xattrs=xattrs or {})


def directory(name: str, mode: int = 0o755, uid: int = 0, gid: int = 0) -> Entry:
    return Entry(name, "dir", mode=mode, uid=uid, gid=gid)


def symlink(name: str, target: str, uid: int = 0, gid: int = 0) -> Entry:
    return Entry(name, "symlink", mode=0o777, link=target, uid=uid, gid=gid)


def hardlink(name: str, target: str) -> Entry:
    return Entry(name, "hardlink", link=target)


def whiteout(path: str) -> Entry:
    head, _, base = path.rpartition("/")
    return file(f"{head}/.wh.{base}" if head else f".wh.{base}")


def opaque(directory_path: str) -> Entry:
    return file(f"{directory_path}/.wh..wh..opq")


def chardev(name: str, major: int, minor: int) -> Entry:
    return Entry(name, "char", mode=0o666, dev=(major, minor))


_TYPES = {
    "file": tarfile.REGTYPE,
    "dir": tarfile.DIRTYPE,
    "symlink": tarfile.SYMTYPE,
    "hardlink": tarfile.LNKTYPE,
    "char": tarfile.CHRTYPE,
    "block": tarfile.BLKTYPE,
    "fifo": tarfile.FIFOTYPE,
}


def layer_tar(entries: list[Entry]) -> bytes:
    """A PAX tar of ``entries`` in order."""
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for e in entries:
            info = tarfile.TarInfo(e.name)
            info.type = _TYPES[e.kind]
            info.mode = e.mode
            info.uid, info.gid = e.uid, e.gid
            info.mtime = MTIME
            info.linkname = e.link
            info.devmajor, info.devminor = e.dev
            info.pax_headers = {f"SCHILY.xattr.{k}": v for k, v in e.xattrs.items()}
            if e.kind == "file":
                info.size = len(e.data)
                tar.addfile(info, io.BytesIO(e.data))
            else:
                tar.addfile(info)
    return out.getvalue()


def compress(tar: bytes, compression: str) -> bytes:
    if compression == "gzip":
        return gzip.compress(tar, compresslevel=1, mtime=0)
    if compression == "zstd":
        return zstandard.ZstdCompressor(level=1).compress(tar)
    return tar


def sha256(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


@dataclass(frozen=True)
class Layer:
    tar: bytes
    compression: str = "gzip"

    @property
    def blob(self) -> bytes:
        return compress(self.tar, self.compression)


@dataclass(frozen=True)
class Image:
    """The blobs of one image; ``manifest_digest`` pins it."""

    blobs: dict[str, bytes]
    manifest: bytes
    config: bytes
    layers: list[tuple[str, bytes]]  # (digest, blob)

    @property
    def manifest_digest(self) -> str:
        return sha256(self.manifest)


def build_image(layers: list[Layer], architecture: str = "amd64") -> Image:
    blobs: dict[str, bytes] = {}
    descriptors = []
    diff_ids = []
    layer_list = []
    for layer in layers:
        blob = layer.blob
        digest = sha256(blob)
        blobs[digest] = blob
        layer_list.append((digest, blob))
        descriptors.append(
            {"mediaType": LAYER_MEDIA[layer.compression], "digest": digest, "size": len(blob)}
        )
        diff_ids.append(sha256(layer.tar))
    config = json.dumps(
        {
            "architecture": architecture,
            "os": "linux",
            "config": {"Cmd": ["/bin/sh"]},
            "rootfs": {"type": "layers", "diff_ids": diff_ids},
        }
    ).encode()
    blobs[sha256(config)] = config
    manifest = json.dumps(
        {
            "schemaVersion": 2,
            "mediaType": MANIFEST_MEDIA,
            "config": {"mediaType": CONFIG_MEDIA, "digest": sha256(config), "size": len(config)},
            "layers": descriptors,
        }
    ).encode()
    blobs[sha256(manifest)] = manifest
    return Image(blobs, manifest, config, layer_list)


def write_layout(image: Image, path: Path, tag: str = "latest") -> Path:
    """Write ``image`` as an OCI image layout at ``path`` with ``tag``."""
    (path / "blobs" / "sha256").mkdir(parents=True, exist_ok=True)
    (path / "oci-layout").write_text('{"imageLayoutVersion": "1.0.0"}')
    for digest, data in image.blobs.items():
        (path / "blobs" / "sha256" / digest.removeprefix("sha256:")).write_bytes(data)
    index = {
        "schemaVersion": 2,
        "mediaType": INDEX_MEDIA,
        "manifests": [
            {
                "mediaType": MANIFEST_MEDIA,
                "digest": image.manifest_digest,
                "size": len(image.manifest),
                "annotations": {"org.opencontainers.image.ref.name": tag},
            }
        ],
    }
    (path / "index.json").write_text(json.dumps(index))
    return path
