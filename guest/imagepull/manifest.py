"""OCI and Docker v2 manifests, indexes and image configs: parsing and validation.

Only structure is checked here; the bytes were verified against their digests before
they reach these parsers.
"""

from __future__ import annotations

import enum
import json
from dataclasses import dataclass
from typing import Any

from guest.imagepull.digest import Digest
from guest.imagepull.errors import ManifestError, VerificationError

OCI_INDEX = "application/vnd.oci.image.index.v1+json"
DOCKER_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
DOCKER_CONFIG = "application/vnd.docker.container.image.v1+json"

INDEX_TYPES = (OCI_INDEX, DOCKER_LIST)
MANIFEST_TYPES = (OCI_MANIFEST, DOCKER_MANIFEST)
CONFIG_TYPES = (OCI_CONFIG, DOCKER_CONFIG)
ACCEPT = ", ".join((*MANIFEST_TYPES, *INDEX_TYPES))


class Compression(enum.Enum):
    NONE = "none"
    GZIP = "gzip"
    ZSTD = "zstd"


LAYER_TYPES: dict[str, Compression] = {
    "application/vnd.oci.image.layer.v1.tar": Compression.NONE,
    "application/vnd.oci.image.layer.v1.tar+gzip": Compression.GZIP,
    "application/vnd.oci.image.layer.v1.tar+zstd": Compression.ZSTD,
    "application/vnd.oci.image.layer.nondistributable.v1.tar": Compression.NONE,
    "application/vnd.oci.image.layer.nondistributable.v1.tar+gzip": Compression.GZIP,
    "application/vnd.oci.image.layer.nondistributable.v1.tar+zstd": Compression.ZSTD,
    "application/vnd.docker.image.rootfs.diff.tar.gzip": Compression.GZIP,
    "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip": Compression.GZIP,
}


@dataclass(frozen=True)
class Platform:
    os: str = "linux"
    architecture: str = "amd64"
    variant: str | None = None


@dataclass(frozen=True)
class Descriptor:
    media_type: str
    digest: Digest
    size: int
    platform: Platform | None = None


@dataclass(frozen=True)
class Index:
    manifests: tuple[Descriptor, ...]

    def select(self, platform: Platform, where: str) -> Descriptor:
        """The first manifest for ``platform`` (variant only checked when asked for).

        Raises ManifestError listing the platforms the index offers.
        """
        for desc in self.manifests:
            p = desc.platform
            if p is None or desc.media_type not in MANIFEST_TYPES:
                continue
            if (p.os, p.architecture) != (platform.os, platform.architecture):
                continue
            if platform.variant is not None and p.variant != platform.variant:
                continue
            return desc
        offered = sorted(
            f"{d.platform.os}/{d.platform.architecture}" for d in self.manifests if d.platform
        )
        raise ManifestError(
            f"{where}: no manifest for {platform.os}/{platform.architecture} "
            f"(index offers {', '.join(offered) or 'no platforms'})"
        )


@dataclass(frozen=True)
class Manifest:
    config: Descriptor
    layers: tuple[Descriptor, ...]


@dataclass(frozen=True)
class ImageConfig:
    os: str
    architecture: str
    diff_ids: tuple[Digest, ...]


def _load(data: bytes, where: str) -> dict[str, Any]:
    try:
        doc = json.loads(data)
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise ManifestError(f"{where}: not valid JSON: {err}") from err
    if not isinstance(doc, dict):
        raise ManifestError(f"{where}: expected a JSON object")
    return doc


def media_type_of(data: bytes, content_type: str | None, where: str) -> str:
    """The document's own ``mediaType``, else the Content-Type the registry sent."""
    declared = _load(data, where).get("mediaType")
    if isinstance(declared, str) and declared:
        return declared
    if content_type:
        return content_type.split(";")[0].strip()
    raise ManifestError(f"{where}: no mediaType in the document and no Content-Type")


def _descriptor(raw: Any, where: str) -> Descriptor:
    if not isinstance(raw, dict):
        raise ManifestError(f"{where}: descriptor is not an object")
    media_type, digest, size = raw.get("mediaType"), raw.get("digest"), raw.get("size")
    if not isinstance(media_type, str) or not isinstance(digest, str):
        raise ManifestError(f"{where}: descriptor lacks mediaType or digest")
    if not isinstance(size, int) or isinstance(size, bool) or size < 0:
        raise ManifestError(f"{where}: descriptor {digest[:80]!r} has no valid size")
    try:
        parsed = Digest.parse(digest)
    except VerificationError as err:
        raise ManifestError(f"{where}: {err}") from err
    platform = None
    plat = raw.get("platform")
    if isinstance(plat, dict):
        os_, arch, variant = plat.get("os"), plat.get("architecture"), plat.get("variant")
        if isinstance(os_, str) and isinstance(arch, str):
            platform = Platform(os_, arch, variant if isinstance(variant, str) else None)
    return Descriptor(media_type, parsed, size, platform)


def parse_index(data: bytes, where: str) -> Index:
    """Parse an OCI index or Docker manifest list. Raises ManifestError."""
    doc = _load(data, where)
    manifests = doc.get("manifests")
    if not isinstance(manifests, list):
        raise ManifestError(f"{where}: index has no manifests list")
    return Index(tuple(_descriptor(m, where) for m in manifests))


def parse_manifest(data: bytes, where: str) -> Manifest:
    """Parse an OCI or Docker v2 image manifest. Raises ManifestError."""
    doc = _load(data, where)
    if doc.get("schemaVersion") != 2:
        raise ManifestError(f"{where}: schemaVersion must be 2")
    config = _descriptor(doc.get("config"), where)
    if config.media_type not in CONFIG_TYPES:
        raise ManifestError(f"{where}: config media type {config.media_type!r} is not an image")
    raw_layers = doc.get("layers")
    if not isinstance(raw_layers, list):
        raise ManifestError(f"{where}: manifest has no layers list")
    layers = tuple(_descriptor(layer, where) for layer in raw_layers)
    for layer in layers:
        if layer.media_type not in LAYER_TYPES:
            raise ManifestError(
                f"{where}: layer {layer.digest} has unsupported media type {layer.media_type!r}"
            )
    return Manifest(config, layers)


def parse_config(data: bytes, where: str) -> ImageConfig:
    """Parse the parts of an image config we use. Raises ManifestError."""
    doc = _load(data, where)
    rootfs = doc.get("rootfs")
    if not isinstance(rootfs, dict) or rootfs.get("type") != "layers":
        raise ManifestError(f"{where}: config has no rootfs of type 'layers'")
    raw = rootfs.get("diff_ids")
    if not isinstance(raw, list) or not all(isinstance(d, str) for d in raw):
        raise ManifestError(f"{where}: config rootfs.diff_ids is not a list of digests")
    try:
        diff_ids = tuple(Digest.parse(d) for d in raw)
    except VerificationError as err:
        raise ManifestError(f"{where}: {err}") from err
    os_, arch = doc.get("os"), doc.get("architecture")
    return ImageConfig(
        os=os_ if isinstance(os_, str) else "",
        architecture=arch if isinstance(arch, str) else "",
        diff_ids=diff_ids,
    )
