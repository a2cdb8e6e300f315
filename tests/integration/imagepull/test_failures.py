"""Wrong bytes from the registry and hostile layers: the pull fails, nothing is published."""

from __future__ import annotations

from pathlib import Path

import pytest

from devkit import ocibuild as ob
from devkit.registry import Registry, registry_settings_toml
from guest.imagepull import config
from guest.imagepull.errors import UnsafeLayerError, VerificationError
from guest.imagepull.puller import ImagePuller, PullerOptions
from guest.imagepull.store import LayerStore
from guest.imagepull.unpack import Limits


def puller(registry: Registry, store: Path, limits: Limits | None = None) -> ImagePuller:
    return ImagePuller(
        LayerStore(store),
        config.parse(registry_settings_toml(registry)),
        PullerOptions(limits=limits or Limits()),
    )


def published(store: Path) -> list[str]:
    """Layers, blobs and leftovers in the store (empty when nothing was published)."""
    return sorted(
        str(p.relative_to(store))
        for sub in ("sha256", "blobs/sha256", "staging", "containers")
        for p in (store / sub).iterdir()
    )


def three_layers(tag: str) -> ob.Image:
    return ob.build_image(
        [
            ob.Layer(ob.layer_tar([ob.directory("d"), ob.file(f"d/{tag}{i}", bytes(200_000))]))
            for i in range(3)
        ]
    )


def test_registry_serving_wrong_layer_bytes(registry: Registry, store_dir: Path) -> None:
    image = three_layers("wrong")
    digest = registry.upload(image.blobs, image.manifest, "fail/layer", "v1")
    bad, blob = image.layers[1]
    data = registry.blob_data(bad)
    corrupt = bytearray(blob)
    corrupt[len(corrupt) // 3] ^= 0x55
    data.write_bytes(bytes(corrupt))

    with pytest.raises(VerificationError, match=f"layer {bad}: content does not match"):
        puller(registry, store_dir).pull(f"{registry.host}/fail/layer@{digest}")
    assert published(store_dir) == []


def test_registry_serving_a_manifest_that_does_not_match(
    registry: Registry, store_dir: Path
) -> None:
    image = three_layers("manifest")
    digest = registry.upload(image.blobs, image.manifest, "fail/manifest", "v1")
    # Still a valid manifest, other bytes: the registry serves what its storage holds.
    registry.blob_data(digest).write_bytes(image.manifest.replace(b'"size": ', b'"size":  ', 1))

    with pytest.raises(VerificationError, match=f"manifest {digest}"):
        puller(registry, store_dir).pull(f"{registry.host}/fail/manifest@{digest}")
    assert published(store_dir) == []


def test_config_not_matching_its_digest(registry: Registry, store_dir: Path) -> None:
    image = three_layers("config")
    digest = registry.upload(image.blobs, image.manifest, "fail/config", "v1")
    config_digest = ob.sha256(image.config)
    registry.blob_data(config_digest).write_bytes(image.config.replace(b"amd64", b"AMD64"))
    with pytest.raises(VerificationError, match=f"config {config_digest}"):
        puller(registry, store_dir).pull(f"{registry.host}/fail/config@{digest}")
    assert published(store_dir) == []


@pytest.mark.parametrize(
    ("entries", "message"),
    [
        ([ob.symlink("evil", "/"), ob.file("evil/tmp/pwned", b"x")], "refusing to follow it"),
        ([ob.symlink("up", ".."), ob.file("up/pwned", b"x")], "refusing to follow it"),
        ([ob.file("../../pwned", b"x")], "'..' components are refused"),
        ([ob.file("/pwned", b"x")], "absolute paths are refused"),
        ([ob.hardlink("h", "../../../etc/passwd")], "'..' components are refused"),
        ([ob.symlink("s", "/etc"), ob.hardlink("h", "s/passwd")], "refusing to follow it"),
        ([ob.chardev("mem", 1, 1)], "character device 1:1 is refused"),
        ([ob.file(f"f{i}", b"") for i in range(300)], "more than 200 entries"),
        ([ob.file(f"z{i}", bytes(400_000)) for i in range(5)], "tar bomb"),
    ],
)
def test_hostile_layer(
    registry: Registry, tmp_path: Path, entries: list[ob.Entry], message: str
) -> None:
    store = tmp_path / "store"
    canary = tmp_path / "pwned"
    good = ob.Layer(ob.layer_tar([ob.file("fine", b"fine")]))
    image = ob.build_image([good, ob.Layer(ob.layer_tar(entries))])
    digest = registry.upload(image.blobs, image.manifest, "fail/hostile", "v1")
    limits = Limits(max_entries=200, max_total_size=1_000_000)
    with pytest.raises(UnsafeLayerError, match=message):
        puller(registry, store, limits).pull(f"{registry.host}/fail/hostile@{digest}")
    assert published(store) == []
    assert not canary.exists() and not Path("/pwned").exists() and not Path("/tmp/pwned").exists()
