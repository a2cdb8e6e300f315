"""The pull orchestration against an in-memory registry: publish-all-or-nothing, cache."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest

from devkit import ocibuild as ob
from guest.imagepull import manifest as mf
from guest.imagepull.digest import Digest
from guest.imagepull.errors import (
    InvalidReference,
    ManifestError,
    RegistryError,
    StoreError,
    VerificationError,
)
from guest.imagepull.puller import ImagePuller
from guest.imagepull.registry import Response
from guest.imagepull.store import LayerStore

HOST = "registry.test"


class FakeRegistry:
    def __init__(self, blobs: dict[str, bytes]) -> None:
        self.blobs = dict(blobs)
        self.calls: list[str] = []

    def _get(self, digest: Digest) -> Response:
        self.calls.append(str(digest))
        data = self.blobs.get(str(digest))
        if data is None:
            raise RegistryError(f"{digest}: HTTP 404")
        return Response(io.BytesIO(data), None, len(data))

    def manifest(self, repository: str, digest: Digest) -> Response:
        return self._get(digest)

    def blob(self, repository: str, digest: Digest) -> Response:
        return self._get(digest)


def image(n: int = 3) -> ob.Image:
    layers = [
        ob.Layer(ob.layer_tar([ob.file(f"f{i}", f"layer {i}".encode() * 100)]), c)
        for i, c in zip(range(n), ["gzip", "zstd", "none"] * n, strict=False)
    ]
    return ob.build_image(layers)


def puller(tmp_path: Path, fake: FakeRegistry, reserve: int = 0) -> ImagePuller:
    return ImagePuller(LayerStore(tmp_path / "store", reserve), client_factory=lambda _r: fake)


def published(store: Path) -> list[str]:
    return sorted(
        str(p.relative_to(store))
        for sub in ("sha256", "blobs/sha256", "staging")
        for p in (store / sub).iterdir()
    )


def test_pull_then_cached_pull(tmp_path: Path) -> None:
    img = image()
    fake = FakeRegistry(img.blobs)
    p = puller(tmp_path, fake)
    pulled = p.pull(f"{HOST}/app@{img.manifest_digest}")
    assert pulled.fetched == 3
    # top-first: the manifest's last layer is the first lowerdir
    assert [x.name for x in pulled.layers] == [d[7:] for d, _ in reversed(img.layers)]
    assert (pulled.layers[0] / "f2").read_bytes() == b"layer 2" * 100
    calls = len(fake.calls)
    again = p.pull(f"{HOST}/app@{img.manifest_digest}")
    assert again.fetched == 0 and again.layers == pulled.layers
    assert len(fake.calls) == calls, "a stored image must not touch the registry"


def test_present_layers_are_not_fetched_again(tmp_path: Path) -> None:
    base = ob.Layer(ob.layer_tar([ob.file("base", b"b")]))
    first = ob.build_image([base])
    second = ob.build_image([base, ob.Layer(ob.layer_tar([ob.file("top", b"t")]))])
    fake = FakeRegistry({**first.blobs, **second.blobs})
    p = puller(tmp_path, fake)
    p.pull(f"{HOST}/a@{first.manifest_digest}")
    fake.calls.clear()
    assert p.pull(f"{HOST}/a@{second.manifest_digest}").fetched == 1
    assert first.layers[0][0] not in fake.calls


def test_corrupt_layer_publishes_nothing(tmp_path: Path) -> None:
    img = image()
    fake = FakeRegistry(img.blobs)
    bad_digest, blob = img.layers[1]
    fake.blobs[bad_digest] = blob[:-10] + bytes(10)
    p = puller(tmp_path, fake)
    with pytest.raises(VerificationError, match=bad_digest):
        p.pull(f"{HOST}/app@{img.manifest_digest}")
    assert published(tmp_path / "store") == []


def test_manifest_not_matching_its_digest(tmp_path: Path) -> None:
    img = image(1)
    fake = FakeRegistry(img.blobs)
    fake.blobs[img.manifest_digest] = img.manifest.replace(
        b'"schemaVersion": 2', b'"schemaVersion":2'
    )
    with pytest.raises(VerificationError, match=f"manifest {img.manifest_digest}"):
        puller(tmp_path, fake).pull(f"{HOST}/app@{img.manifest_digest}")
    assert published(tmp_path / "store") == []


def test_index_resolves_to_linux_amd64(tmp_path: Path) -> None:
    amd = image(1)
    arm = ob.build_image([ob.Layer(ob.layer_tar([ob.file("arm", b"")]))], architecture="arm64")
    index = json.dumps(
        {
            "schemaVersion": 2,
            "mediaType": mf.OCI_INDEX,
            "manifests": [
                {
                    "mediaType": mf.OCI_MANIFEST,
                    "digest": i.manifest_digest,
                    "size": len(i.manifest),
                    "platform": {"os": "linux", "architecture": a},
                }
                for i, a in ((arm, "arm64"), (amd, "amd64"))
            ],
        }
    ).encode()
    fake = FakeRegistry({**amd.blobs, **arm.blobs, ob.sha256(index): index})
    pulled = puller(tmp_path, fake).pull(f"{HOST}/app@{ob.sha256(index)}")
    assert pulled.layers[0].name == amd.layers[0][0][7:]
    assert arm.layers[0][0] not in fake.calls


def test_single_arch_image_for_another_platform(tmp_path: Path) -> None:
    arm = ob.build_image([ob.Layer(ob.layer_tar([]))], architecture="arm64")
    with pytest.raises(ManifestError, match="image is for linux/arm64, not linux/amd64"):
        puller(tmp_path, FakeRegistry(arm.blobs)).pull(f"{HOST}/app@{arm.manifest_digest}")


def test_unpinned_reference(tmp_path: Path) -> None:
    with pytest.raises(InvalidReference, match="not pinned by digest"):
        puller(tmp_path, FakeRegistry({})).pull(f"{HOST}/app:latest")


def test_not_enough_space(tmp_path: Path) -> None:
    img = image(1)
    p = puller(tmp_path, FakeRegistry(img.blobs), reserve=1 << 62)
    with pytest.raises(StoreError, match="not enough space"):
        p.pull(f"{HOST}/app@{img.manifest_digest}")
    assert published(tmp_path / "store") == []


def test_docker_v2_media_types(tmp_path: Path) -> None:
    img = image(2)
    manifest = json.loads(img.manifest)
    manifest["mediaType"] = mf.DOCKER_MANIFEST
    manifest["config"]["mediaType"] = mf.DOCKER_CONFIG
    for layer in manifest["layers"]:
        if layer["mediaType"].endswith("gzip"):
            layer["mediaType"] = "application/vnd.docker.image.rootfs.diff.tar.gzip"
    data = json.dumps(manifest).encode()
    fake = FakeRegistry({**img.blobs, ob.sha256(data): data})
    pulled = puller(tmp_path, fake).pull(f"{HOST}/app@{ob.sha256(data)}")
    assert (pulled.layers[-1] / "f0").read_bytes() == b"layer 0" * 100


class BrokenBody(io.BytesIO):
    def read(self, size: int | None = -1, /) -> bytes:
        if self.tell() > 100:
            raise ConnectionResetError("connection reset by peer")
        return super().read(min(50, size if size is not None and size >= 0 else 50))


def test_connection_lost_mid_layer(tmp_path: Path) -> None:
    img = image(2)
    fake = FakeRegistry(img.blobs)
    broken = img.layers[0][0]
    real_blob = fake.blob

    def blob(repository: str, digest: Digest) -> Response:
        if str(digest) == broken:
            return Response(BrokenBody(img.blobs[broken]), None, None)
        return real_blob(repository, digest)

    fake.blob = blob  # type: ignore[method-assign]
    with pytest.raises(RegistryError, match=f"reading layer {broken} .* connection reset"):
        puller(tmp_path, fake).pull(f"{HOST}/app@{img.manifest_digest}")
    assert published(tmp_path / "store") == []
