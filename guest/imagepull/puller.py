"""Pull a digest-pinned image into the store and assemble a bundle's rootfs from it.

Order of trust: the reference's digest pins the manifest (or index); the manifest's
descriptors pin the config and the layers; the config's diff_ids pin the uncompressed
layer tars. Each is checked before the next is used. Layers are fetched in parallel
into staging directories and published only after every layer of the image verified,
then the config and manifest blobs are written: a failed pull publishes nothing new.
A second pull of a stored image reads only the store.
"""

from __future__ import annotations

import http.client
import logging
import os
import shutil
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from pathlib import Path

from guest.imagepull import manifest as mf
from guest.imagepull import overlay, reference
from guest.imagepull.config import PullerConfig
from guest.imagepull.digest import Digest, Readable, read_verified
from guest.imagepull.errors import ImagePullError, ManifestError, RegistryError
from guest.imagepull.layer import fetch_layer
from guest.imagepull.registry import RegistryClient, RegistrySource
from guest.imagepull.store import LayerStore, StagedLayer
from guest.imagepull.unpack import Limits

log = logging.getLogger(__name__)
MAX_MANIFEST = 4 << 20
MAX_CONFIG = 8 << 20
DEFAULT_WORKERS = 4


class PullCancelled(ImagePullError):
    """Another layer of the same pull failed; this one stopped early."""


@dataclass(frozen=True)
class PulledImage:
    reference: str
    manifest_digest: Digest
    layers: tuple[Path, ...]  # top-first, as overlayfs wants lowerdir
    fetched: int  # layers downloaded by this pull (0: served from the store)


@dataclass(frozen=True)
class PullerOptions:
    platform: mf.Platform = field(default_factory=mf.Platform)
    limits: Limits = field(default_factory=Limits)
    workers: int = DEFAULT_WORKERS
    timeout: float = 60.0


class _NetworkSource:
    """A response body: stops when another layer failed, names read errors."""

    def __init__(self, body: Readable, what: str, stop: threading.Event | None = None) -> None:
        self._body = body
        self._what = what
        self._stop = stop

    def read(self, size: int = -1, /) -> bytes:
        if self._stop is not None and self._stop.is_set():
            raise PullCancelled("pull cancelled: another layer failed")
        try:
            return self._body.read(size)
        except (OSError, http.client.HTTPException) as err:
            raise RegistryError(f"reading {self._what} from the registry failed: {err}") from err


@dataclass(frozen=True)
class _Resolved:
    blobs: tuple[tuple[Digest, bytes], ...]  # to store, manifest (or index) last
    manifest: mf.Manifest
    config: mf.ImageConfig


class ImagePuller:
    """Pulls images into ``store``; thread-safe, one instance per service."""

    def __init__(
        self,
        store: LayerStore,
        config: PullerConfig | None = None,
        options: PullerOptions | None = None,
        client_factory: Callable[[str], RegistrySource] | None = None,
    ) -> None:
        self.store = store
        self.config = config or PullerConfig()
        self.options = options or PullerOptions()
        self._mount_lock = threading.Lock()
        self._client_factory = client_factory or (
            lambda registry: RegistryClient(registry, self.config, self.options.timeout)
        )

    def pull(self, image_url: str) -> PulledImage:
        """Pull ``image_url`` (must be pinned by digest) into the store.

        Raises InvalidReference, RegistryError/AuthError, VerificationError (naming the
        digest), ManifestError, UnsafeLayerError, StoreError; nothing is published then.
        """
        ref = reference.parse(image_url)
        digest = ref.pinned()
        started = time.monotonic()
        cached = self._from_store(digest, str(ref))
        if cached is not None:
            log.info("image %s served from the store", ref)
            return cached
        client = self._client_factory(ref.registry)
        resolved = self._resolve(client, ref.repository, digest, str(ref))
        fetched = self._fetch_layers(client, ref.repository, resolved)
        for blob_digest, data in resolved.blobs:
            self.store.write_blob(blob_digest, data)
        log.info(
            "pulled %s: %d layers, %d fetched, %.2fs",
            ref,
            len(resolved.manifest.layers),
            fetched,
            time.monotonic() - started,
        )
        return PulledImage(str(ref), digest, self._stack(resolved.manifest), fetched)

    def _stack(self, manifest: mf.Manifest) -> tuple[Path, ...]:
        # A layer listed twice only matters at its topmost position.
        stack: list[Path] = []
        for layer in reversed(manifest.layers):
            path = self.store.layer_path(layer.digest)
            if path not in stack:
                stack.append(path)
        return tuple(stack)

    def _from_store(self, digest: Digest, where: str) -> PulledImage | None:
        data = self.store.read_blob(digest, MAX_MANIFEST)
        if data is None:
            return None
        media_type = mf.media_type_of(data, None, where)
        if media_type in mf.INDEX_TYPES:
            child = mf.parse_index(data, where).select(self.options.platform, where)
            data = self.store.read_blob(child.digest, MAX_MANIFEST)
            if data is None:
                return None
        manifest = mf.parse_manifest(data, where)
        if not all(self.store.has_layer(layer.digest) for layer in manifest.layers):
            return None
        return PulledImage(where, digest, self._stack(manifest), 0)

    def _resolve(
        self, client: RegistrySource, repository: str, digest: Digest, where: str
    ) -> _Resolved:
        response = client.manifest(repository, digest)
        with response.body:
            source = _NetworkSource(response.body, f"manifest {digest}")
            data = read_verified(source, digest, MAX_MANIFEST, what="manifest")
        blobs = [(digest, data)]
        media_type = mf.media_type_of(data, response.content_type, where)
        if media_type in mf.INDEX_TYPES:
            child = mf.parse_index(data, where).select(self.options.platform, where)
            response = client.manifest(repository, child.digest)
            with response.body:
                source = _NetworkSource(response.body, f"manifest {child.digest}")
                data = read_verified(source, child.digest, MAX_MANIFEST, child.size, "manifest")
            blobs.insert(0, (child.digest, data))
            media_type = mf.media_type_of(data, response.content_type, where)
        if media_type not in mf.MANIFEST_TYPES:
            raise ManifestError(f"{where}: unsupported manifest media type {media_type!r}")
        manifest = mf.parse_manifest(data, where)
        response = client.blob(repository, manifest.config.digest)
        with response.body:
            source = _NetworkSource(response.body, f"config {manifest.config.digest}")
            config_data = read_verified(
                source, manifest.config.digest, MAX_CONFIG, manifest.config.size, "config"
            )
        config = mf.parse_config(config_data, where)
        platform = self.options.platform
        if (config.os, config.architecture) != (platform.os, platform.architecture):
            raise ManifestError(
                f"{where}: image is for {config.os}/{config.architecture}, "
                f"not {platform.os}/{platform.architecture}"
            )
        if len(config.diff_ids) != len(manifest.layers):
            raise ManifestError(
                f"{where}: manifest lists {len(manifest.layers)} layers, "
                f"config {len(config.diff_ids)} diff_ids"
            )
        blobs.insert(0, (manifest.config.digest, config_data))
        return _Resolved(tuple(blobs), manifest, config)

    def _fetch_layers(self, client: RegistrySource, repository: str, image: _Resolved) -> int:
        missing: dict[Digest, tuple[mf.Descriptor, Digest]] = {}
        for layer, diff_id in zip(image.manifest.layers, image.config.diff_ids, strict=True):
            if not self.store.has_layer(layer.digest):
                missing.setdefault(layer.digest, (layer, diff_id))
        if not missing:
            return 0
        free = self.store.check_space(
            sum(layer.size for layer, _ in missing.values()), f"{len(missing)} layers"
        )
        limits = self.options.limits
        limits = replace(limits, max_total_size=min(limits.max_total_size, free))
        stop = threading.Event()
        staged: list[StagedLayer] = []
        lock = threading.Lock()

        def one(layer: mf.Descriptor, diff_id: Digest) -> None:
            stage = self.store.stage(layer.digest)
            with lock:
                staged.append(stage)
            try:
                response = client.blob(repository, layer.digest)
                with response.body:
                    source = _NetworkSource(response.body, f"layer {layer.digest}", stop)
                    fetch_layer(source, layer, diff_id, str(stage.path), limits=limits)
            except BaseException:
                stop.set()
                raise

        workers = max(1, min(self.options.workers, len(missing)))
        try:
            with ThreadPoolExecutor(workers, thread_name_prefix="layer") as pool:
                futures = [pool.submit(one, layer, d) for layer, d in missing.values()]
                errors = [e for e in (f.exception() for f in futures) if e is not None]
            if errors:
                real = [e for e in errors if not isinstance(e, PullCancelled)]
                raise (real or errors)[0]
            for stage in staged:
                self.store.publish(stage)
        finally:
            for stage in staged:
                if stage.path.exists():
                    self.store.discard(stage)
        return len(missing)

    def mount_rootfs(self, image: PulledImage, bundle: Path) -> Path:
        """Mount ``image`` at ``<bundle>/rootfs`` with a fresh writable upper layer.

        Raises MountError.
        """
        layers = tuple(self.store.short_path(p) for p in image.layers) or (self._empty_layer(),)
        cdir = self.store.container_dir(bundle)
        rootfs = bundle / "rootfs"
        with self._mount_lock:
            self._sweep_containers()
            cdir.mkdir(parents=True, exist_ok=True)
            (cdir / "bundle").write_text(str(bundle.resolve()))
            overlay.mount(layers, cdir / "upper", cdir / "work", rootfs)
        return rootfs

    def _sweep_containers(self) -> None:
        """Drop upper layers whose rootfs was unmounted by someone else (the agent)."""
        for cdir in (self.store.root / "containers").iterdir():
            try:
                bundle = Path((cdir / "bundle").read_text())
            except OSError:
                bundle = None
            if bundle is None or not os.path.ismount(bundle / "rootfs"):
                log.info("removing stale container layer %s (bundle %s)", cdir, bundle)
                shutil.rmtree(cdir, ignore_errors=True)

    def _empty_layer(self) -> Path:
        path = self.store.root / "empty"
        path.mkdir(exist_ok=True)
        return path

    def pull_into_bundle(self, image_url: str, bundle: Path) -> PulledImage:
        """Pull ``image_url`` and mount it at ``<bundle>/rootfs``. Raises ImagePullError."""
        image = self.pull(image_url)
        self.mount_rootfs(image, bundle)
        return image

    def remove_bundle(self, bundle: Path) -> None:
        """Unmount ``<bundle>/rootfs`` and drop its upper layer. Raises MountError."""
        with self._mount_lock:
            overlay.unmount(bundle / "rootfs", self.store.container_dir(bundle))
